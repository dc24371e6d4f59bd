"""The verdicts site without a browser: index, run and sweep pages, the sweep plot, smoke
mode and bad input (weightlab/site)."""

from __future__ import annotations

import copy
import html
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.registry import all_recipes
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.site import MARKER, build_site
from weightlab.site import cli as site_cli
from weightlab.site.collect import RunInfo, SweepInfo, grid_order
from weightlab.site.pages import fmt
from weightlab.site.plots import arrange, sweep_png, use_log_x

RECIPE = "random-pruning"  # a real smoke run of ~1 s
LRS = [1e-4, 1e-3, 1e-2]
INITS = ["glorot_normal", "he"]


def _fake_run(root: Path, name: str, src: Path, non_default: dict, summary: dict) -> Path:
    """A run directory made from the real run ``src``: its config with ``non_default``, the
    given summary, its timing and figures."""
    d = root / name
    d.mkdir()
    config = json.loads((src / "config.json").read_text())
    config["config"].update(non_default)
    config["non_default"] = non_default
    (d / "config.json").write_text(json.dumps(config))
    (d / "summary.json").write_text(json.dumps(summary))
    shutil.copy(src / "timing.json", d / "timing.json")
    for p in src.glob("*.png"):
        shutil.copy(p, d / p.name)
    return d


def _metric(lr: float, init: str) -> float:
    return 10.0 * LRS.index(lr) + (5.0 if init == "he" else 0.0)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A root with one real smoke run, two default-config copies (the newer
    one must be linked), a run whose detail holds markup, and a 3 x 2 sweep (lr x init)
    with known metrics and a hand-written sweep record."""
    root = tmp_path_factory.mktemp("site") / "runs"
    real, summary = run_recipe(RECIPE, make_config(RECIPE, smoke=True), root=root)
    old = _fake_run(root, "random-pruning-0000000old", real, {}, summary)
    new = _fake_run(root, "random-pruning-0000000new", real, {}, summary)
    os.utime(old / "summary.json", (1_000_000, 1_000_000))
    os.utime(new / "summary.json", (2_000_000, 2_000_000))
    evil = copy.deepcopy(summary)
    evil["claims"][0]["detail"] = "<script>alert(1)</script> & <b>bold</b>"
    _fake_run(root, "random-pruning-0000000evil", real, {"lr": 0.5}, evil)
    busy = _fake_run(root, "random-pruning-000000busy", real, {"lr": 0.25}, summary)
    (busy / "summary.json").unlink()
    (busy / "running.json").write_text(json.dumps({"pid": 1, "host": "h", "start": 0.0}))
    bad = _fake_run(root, "random-pruning-0000000bad", real, {"lr": 0.125}, summary)
    (bad / "summary.json").write_text('{"recipe": "random-pruning"}')
    runs, groups = [], {}
    for lr in LRS:
        for init in INITS:
            name = f"random-pruning-sw{LRS.index(lr)}{init[:2]}"
            s = copy.deepcopy(summary)
            s["metrics"] = {"a.dense": _metric(lr, init), "a.other": -1.0}
            _fake_run(root, name, real, {"lr": lr, "init": init}, s)
            gid = f"g{LRS.index(lr):02d}"
            groups.setdefault(gid, []).append(name)
            (root / name / "batch.json").write_text(
                json.dumps({"sweep": "sw1", "group": gid, "group_runs": groups[gid]})
            )
            runs.append(
                {"run": name, "point": {"lr": lr, "init": init}, "non_default": {}, "group": gid}
            )
    runs.append({"run": "random-pruning-notthere", "point": {"lr": 1e-2, "init": "xx"}})
    record = {
        "format": 1,
        "id": "sw1",
        "spec": {
            "recipe": RECIPE,
            "seeds": None,
            "smoke": True,
            "set": {},
            "grid": {"lr": LRS, "init": INITS},
            "executor": {"kind": "local"},
        },
        "runs": runs,
        "groups": [{"id": g, "runs": rs} for g, rs in groups.items()],
    }
    (root / "sweeps").mkdir()
    (root / "sweeps" / "sw1.json").write_text(json.dumps(record))
    (root / "sweeps" / "broken.json").write_text("{not json")
    return root


@pytest.fixture(scope="module")
def site(root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "site"
    assert build_site(out, root) == out / "index.html"
    return out


def _text(p: Path) -> str:
    return p.read_text(encoding="utf-8")


def test_index_lists_every_recipe_and_links_the_newest_default_run(site, root):
    index = _text(site / "index.html")
    for name, cls in all_recipes().items():
        assert f"<code>{name}</code>" in index
        assert f"[#{cls.row}]" in index
    ours = index.split(f'<section id="{RECIPE}">')[1].split("</section>")[0]
    assert 'default-config run: <a href="runs/random-pruning-0000000new.html">' in ours
    assert 'href="runs/random-pruning-0000000old.html"' in ours  # listed below
    summary = json.loads(_text(root / "random-pruning-0000000new" / "summary.json"))
    for c in summary["claims"]:
        assert f'<span class="{c["verdict"].replace(" ", "-")}">{c["verdict"]}</span>' in ours
    k, v = next(iter(summary["metrics"].items()))
    assert f"{k} = {fmt(v)}" in ours  # a deciding number, named
    # other recipes (lottery-ticket here) have no default-config run
    rp = index.split('<section id="lottery-ticket">')[1].split("</section>")[0]
    assert '<span class="no-run">no run</span>' in rp
    n_claims = len(summary["claims"])
    counted = sum(
        int(m) for m in re.findall(r"</span>: (\d+)", index.split("<h2")[0].split("</h1>")[1])
    )
    assert counted == n_claims + len(all_recipes()) - 1
    assert "torch:" in index and "CPUs:" in index
    assert 'href="sweeps/sw1.html"' in index
    assert "broken.json" in index  # the unreadable sweep record is listed, not fatal
    assert "0000000bad/summary.json: the summary has no &#x27;claims&#x27;" in index
    assert "random-pruning-000000busy</a> (lr=0.25; running)" in index
    assert "random-pruning-0000000bad</a> (lr=0.125; incomplete)" in index
    assert (site / MARKER).exists()


def test_run_page_config_claims_tables_plots_timing_batch(site, root):
    name = "random-pruning-sw1he"
    page = _text(site / "runs" / f"{name}.html")
    assert '<tr class="nd"><td>lr</td><td>0.001</td><td>non-default</td></tr>' in page
    assert "<tr><td>device</td><td>cpu</td><td></td></tr>" in page
    summary = json.loads(_text(root / name / "summary.json"))
    for c in summary["claims"]:
        assert f"<blockquote>{html.escape(c['quote'])}</blockquote>" in page
    recipe = all_recipes()[RECIPE]()
    for title, _, _ in recipe.tables(summary):
        assert f"<h2>{html.escape(title)}</h2>" in page
    png = next((root / name).glob("*.png"))
    assert (site / "runs" / name / png.name).read_bytes() == png.read_bytes()
    assert f'<img src="{name}/{png.name}"' in page
    timing = json.loads(_text(root / name / "timing.json"))
    assert f"{timing['wall_s']:.2f} s" in page and "torch" in page
    assert 'sweep <a href="../sweeps/sw1.html">sw1</a>, group g01' in page
    assert 'href="random-pruning-sw1gl.html"' in page  # batch mate


def test_sweep_page_table_and_plot(site):
    page = _text(site / "sweeps" / "sw1.html")
    rows = page.split("<h2>Runs</h2>")[1].count("<tr>") - 1
    assert rows == 7  # six runs and the missing one
    assert "missing" in page
    for lr in LRS:
        for init in INITS:
            assert f"<td>{fmt(_metric(lr, init))}</td>" in page
    assert '<img src="sw1.png" alt="a.dense">' in page  # default: the first metric
    assert (site / "sweeps" / "sw1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_arrange_lines_panels_and_log_x(root):
    from weightlab.site.collect import collect_runs, collect_sweeps

    runs = {r.name: r for r in collect_runs(root)[0]}
    sweep = collect_sweeps(root)[0][0]
    (panel,) = arrange(sweep, runs, "a.dense")
    assert set(panel.lines) == {"init=glorot_normal", "init=he", "init=xx"}
    assert panel.lines["init=he"] == [(lr, _metric(lr, "he")) for lr in LRS]
    assert panel.lines["init=xx"] == []  # its run is missing
    assert use_log_x(LRS) and not use_log_x([1, 5, 10]) and not use_log_x([0.0, 100.0])
    assert not use_log_x(["a", "b"])
    # a third key: one panel per value, in grid order; runs of depth 2 did not finish, and
    # the record lists the runs in product order (w slowest) with depth's values 3, 1, 2
    spec = {"grid": {"w": [16, 8], "lr": [0.1, 0.2], "depth": [3, 1, 2]}}
    entries, mem = [], {}
    for w in (16, 8):
        for lr in (0.1, 0.2):
            for d in (3, 1, 2):
                name = f"r{w}-{lr}-{d}"
                entries.append({"run": name, "point": {"w": w, "lr": lr, "depth": d}})
                if d != 2:
                    m = {"m": w * d + lr}
                    mem[name] = RunInfo(name, Path(name), "x", {}, {}, summary={"metrics": m})
    panels = arrange(SweepInfo("s", Path("s.json"), spec, entries, []), mem, "m")
    assert [p.title for p in panels] == ["depth=3", "depth=1", "depth=2"]
    assert panels[1].lines == {
        "lr=0.1": [(16, 16.1), (8, 8.1)],
        "lr=0.2": [(16, 16.2), (8, 8.2)],
    }
    assert panels[2].lines == {"lr=0.1": [], "lr=0.2": []}
    assert sweep_png(SweepInfo("s", Path("s.json"), spec, entries, []), mem, "m")[:4] == b"\x89PNG"


def test_metric_option_and_unknown_metric(root, tmp_path):
    build_site(tmp_path / "s", root, metric="a.other")
    assert '<img src="sw1.png" alt="a.other">' in _text(tmp_path / "s" / "sweeps" / "sw1.html")
    with pytest.raises(ConfigError, match="--metric 'nope' is in no finished sweep run"):
        site_cli.main([str(tmp_path / "t"), "--root", str(root), "--metric", "nope"])
    assert not (tmp_path / "t").exists()


def test_smoke_site_shows_no_verdicts(root, tmp_path):
    index = _text(build_site(tmp_path / "s", root, smoke=True))
    assert "smoke runs: no verdicts" in index
    assert not re.search(r'class="(held|did-not-hold|not-tested|no-run)"', index)
    assert 'href="runs/random-pruning-0000000new.html"' in index


def test_escaping_and_nothing_external(site):
    page = _text(site / "runs" / "random-pruning-0000000evil.html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    for p in site.rglob("*.html"):
        text = _text(p)
        assert "<script" not in text.lower()
        for ref in re.findall(r'(?:href|src)="([^"]*)"', text):
            assert "://" not in ref and not ref.startswith("//"), (p, ref)
            target = ref.split("#")[0]
            if target:
                assert (p.parent / target).resolve().exists(), (p, ref)


def test_bad_out_dir_writes_nothing_and_rebuild_replaces(root, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        site_cli.main([str(f), "--root", str(root)])
    assert f.read_text() == "x"
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not empty and holds no weightlab site"):
        build_site(other, root)
    assert [p.name for p in other.iterdir()] == ["mine.txt"]
    with pytest.raises(ConfigError, match="holds the runs root"):
        build_site(tmp_path / "new", tmp_path / "new" / "runs")
    with pytest.raises(ConfigError, match="is not a folder"):
        build_site(tmp_path / "x", tmp_path / "no-runs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "other"]
    out = tmp_path / "site"
    assert site_cli.main([str(out), "--root", str(root)]) == 0
    (out / "stale.html").write_text("old")
    build_site(out, root)
    assert not (out / "stale.html").exists() and (out / "index.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "other", "site"]


def test_grid_order_recovered_from_the_runs():
    # the record's grid object may come back with sorted keys; the runs are the product in
    # the given order (lr slowest, then init, then rate), as `weightlab sweep` writes them
    import itertools

    grid = {"init": ["g", "k"], "lr": [1e-4, 1e-3, 1e-2], "rate": [0.3, 0.5], "seeds": [2]}
    given = ["lr", "init", "rate", "seeds"]
    points = [
        dict(zip(given, p, strict=True)) for p in itertools.product(*(grid[k] for k in given))
    ]
    assert grid_order(grid, points) == given
    runs = [{"run": f"r{i}", "point": p} for i, p in enumerate(points)]
    assert SweepInfo("s", Path("s"), {"grid": grid}, runs, []).grid_keys == given
    explicit = {"grid": grid, "grid_order": ["rate", "lr", "init", "seeds"]}
    assert SweepInfo("s", Path("s"), explicit, runs, []).grid_keys[0] == "rate"
