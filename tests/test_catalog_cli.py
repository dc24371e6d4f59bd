"""``weightlab runs``: golden outputs of list, show and compare from two real smoke runs,
filters, and bad input (one line, exit 2, nothing written).

Volatile fields are normalized before the comparison: dates, wall times, host, pid,
threads and versions (text and JSON), and floats in JSON to 6 significant digits (the
text already prints 6). ``WEIGHTLAB_UPDATE_GOLDEN=1`` rewrites tests/golden/catalog/.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import pytest

from weightlab.catalog import open_catalog
from weightlab.cli import main as cli_main
from weightlab.recipes.runner import make_config, run_recipe

GOLDEN = Path(__file__).parent / "golden" / "catalog"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Two lottery-ticket smoke runs, recorded at start and end: the default lr (claim a did
    not hold: worst gap -2.45 pts, needed >= -1) and lr 0.005 (held: +3.00 pts)."""
    root = tmp_path_factory.mktemp("catalog") / "runs"
    cat = open_catalog(root)
    for lr in (None, 0.005):
        cfg = make_config("lottery-ticket", smoke=True, **({"lr": lr} if lr else {}))
        path, _ = run_recipe(
            "lottery-ticket", cfg, root=root, on_open=lambda rd: cat.record_start(rd.path)
        )
        cat.record_end(path, "done")
    cat.close()
    return root


def ids(root: Path) -> list[str]:
    """The two runs: the default lr's first, then lr 0.005's."""
    runs = {
        p.parent.name: json.loads(p.read_text())["non_default"].get("lr")
        for p in root.glob("*/config.json")
    }
    return sorted(runs, key=lambda r: runs[r] is not None)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli_main(["runs", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- normalization -----------------------------------------------------------------------
_TEXT = [
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d"), "<date>"),
    (re.compile(r"host \S+, pid \d+"), "host <host>, pid <pid>"),
    (re.compile(r"threads \d+"), "threads <threads>"),
    (re.compile(r"^versions .*$", re.M), "versions     <versions>"),
    (re.compile(r"\b(\d+\.\d s|\d+ min \d\d s|\d+ h \d\d min) *"), "<wall> "),
]


def norm_text(text: str) -> str:
    for pattern, repl in _TEXT:
        text = pattern.sub(repl, text)
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


_VOLATILE = {"start", "end", "wall_s", "host", "pid", "threads", "versions", "seconds"}


def norm_json(obj):
    if isinstance(obj, dict):
        return {
            k: (f"<{k}>" if k in _VOLATILE and v is not None else norm_json(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [norm_json(v) for v in obj]
    if isinstance(obj, float):
        return float(f"{obj:.6g}")
    return obj


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("WEIGHTLAB_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with WEIGHTLAB_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from {path}"


# -- golden outputs ------------------------------------------------------------------------
def test_golden_list_show_compare(root, capsys):
    a, b = ids(root)
    ra, rb = a[: len("lottery-ticket-") + 5], b[: len("lottery-ticket-") + 5]
    for name, argv in (
        ("list", ["list"]),
        ("show", ["show", ra]),
        ("compare", ["compare", ra, rb]),
    ):
        code, out, err = run_cli(capsys, *argv, "--root", str(root))
        assert (code, err) == (0, ""), err
        check_golden(f"{name}.txt", norm_text(out))
        code, out, err = run_cli(capsys, *argv, "--root", str(root), "--json")
        assert (code, err) == (0, ""), err
        check_golden(f"{name}.json", json.dumps(norm_json(json.loads(out)), indent=2) + "\n")
    # a path to a run directory names the same run
    code, out, _ = run_cli(capsys, "show", str(root / b), "--root", str(root), "--json")
    assert code == 0 and json.loads(out)["id"] == b
    assert json.loads(out)["environment"]["pid"] == os.getpid()


def test_list_filters(root, capsys):
    def listed(*argv: str) -> list[str]:
        code, out, err = run_cli(capsys, "list", "--root", str(root), "--json", *argv)
        assert (code, err) == (0, ""), err
        return [r["id"] for r in json.loads(out)["runs"]]

    both = ids(root)
    assert listed() == both  # in start order
    assert listed("--recipe", "lottery-ticket", "--family", "sparsity") == both
    assert listed("--status", "done", "--not-held") == [both[0]]  # its claim a did not hold
    assert listed("--held") == [] and listed("--recipe", "other") == []
    assert listed("--sweep", "s1") == [] and listed("--status", "failed") == []
    code, out, _ = run_cli(capsys, "list", "--root", str(root), "--held")
    assert out == f"no runs in {root / 'catalog.sqlite'} match\n"
    code, out, _ = run_cli(capsys, "--root", str(root), "--json", "list", "--not-held")
    assert code == 0 and [r["id"] for r in json.loads(out)["runs"]] == [both[0]]


# -- bad input ----------------------------------------------------------------------------
def _snapshot(root: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in root.iterdir()}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["show", "nope"], "unknown run 'nope' in {root}/catalog.sqlite; see 'weightlab runs list --root {root}'"),
        (["show", "lottery-ticket-"], "run prefix 'lottery-ticket-' matches 2 runs: {ab}; give more of the name"),
        (["compare", "{a}", "nope"], "unknown run 'nope'"),
        (["list", "--held", "--not-held"], "--held and --not-held exclude each other; give one"),
        (["list", "--status", "gone"], "argument --status: invalid choice: 'gone'"),
        ([], "choose a command: list, show, compare or reindex"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_nothing_written(root, capsys, argv, message):
    a, b = ids(root)
    before = _snapshot(root)
    argv = [x.format(a=a) for x in argv] + (["--root", str(root)] if argv else [])
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("weightlab: error: ")
    assert message.format(root=root, a=a, ab=", ".join(sorted([a, b]))) in err
    assert _snapshot(root) == before


def test_absent_root_is_named_and_not_created(tmp_path, capsys):
    for argv in (["list"], ["show", "x"], ["reindex"]):
        code, out, err = run_cli(capsys, *argv, "--root", str(tmp_path / "absent"))
        assert code == 2 and len(err.splitlines()) == 1
        assert f"run folder {tmp_path / 'absent'} does not exist" in err
    assert not (tmp_path / "absent").exists()


def test_corrupt_catalog_rebuilt_with_one_warning_and_reindex(root, tmp_path, capsys):
    copy = tmp_path / "runs"
    shutil.copytree(root, copy)
    path = copy / "catalog.sqlite"
    path.write_bytes(random.Random(1).randbytes(8192))
    code, out, err = run_cli(capsys, "list", "--root", str(copy))
    assert code == 0 and len(err.splitlines()) == 1, err
    assert "could not be read (file is not a database); moved it to catalog.sqlite.corrupt-1" in err
    assert all(i in out for i in ids(root)) and out.splitlines()[-1] == "2 runs"
    (copy / ids(root)[0] / "timing.json").write_text("{")
    code, out, err = run_cli(capsys, "reindex", "--root", str(copy))
    assert code == 0 and err == ""
    assert out.startswith(f"reindexed 2 runs into {path} in ")
    assert out.splitlines()[1:] == [
        "1 unreadable run file(s):",
        f"  {copy / ids(root)[0] / 'timing.json'}: is not valid JSON "
        "(Expecting property name enclosed in double quotes at line 1, column 2)",
    ]
    shutil.rmtree(copy / ids(root)[0] / "units")  # not needed by the catalog
    (copy / "catalog.sqlite").unlink()  # a missing catalog is built on first use
    code, out, err = run_cli(capsys, "show", ids(root)[1], "--root", str(copy))
    assert code == 0 and err == "" and out.startswith(f"run          {ids(root)[1]}\n")
