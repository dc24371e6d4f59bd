"""The verdicts site in headless Chromium (Debian's ``chromium``), driven over
``--remote-debugging-pipe`` by tests/chromium.py (standard library only): open the index
built from two real smoke runs, click a run's link, read the page's text, and check that
every request stayed on ``file://``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from weightlab.recipes.runner import make_config, run_recipe
from weightlab.site import build_site
from weightlab.site.pages import fmt

sys.path.insert(0, str(Path(__file__).parent))
from chromium import Chromium, find_chromium  # noqa: E402

RECIPES = ("lottery-ticket", "random-pruning")


@pytest.fixture(scope="module")
def browser_binary() -> str:
    binary = find_chromium()
    if binary is None:
        if os.environ.get("WEIGHTLAB_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium not found (apt-get install chromium)")
        pytest.skip("chromium not found (apt-get install chromium)")
    return binary


def test_site_in_chromium(browser_binary, tmp_path):
    root = tmp_path / "runs"
    runs = {name: run_recipe(name, make_config(name, smoke=True), root=root) for name in RECIPES}
    index = build_site(tmp_path / "site", root)
    run_dir, summary = runs["lottery-ticket"]
    claim = summary["claims"][0]
    name, value = next(iter(summary["metrics"].items()))
    assert name.startswith(f"{claim['id']}.")
    with Chromium(browser_binary) as c:
        c.navigate(index.as_uri())
        assert c.evaluate("document.title") == "weightlab verdicts"
        assert "random-pruning" in c.evaluate("document.body.innerText")
        c.click_and_wait(f'a[href*="{run_dir.name}"]')
        assert c.evaluate("location.href").endswith(f"runs/{run_dir.name}.html")
        text = c.evaluate("document.body.innerText")
        width = c.evaluate("document.querySelector('img').naturalWidth")
        requests = list(c.requests)
    assert f"{claim['id']}: {claim['verdict']}" in text
    assert claim["detail"] in text  # the claim's numbers, as the run wrote them
    assert fmt(value) in text  # and its deciding metric
    assert json.loads((run_dir / "config.json").read_text())["recipe"] in text
    assert width > 0  # the figure, a file next to the page, loaded
    assert requests and all(u.startswith("file://") for u in requests), requests
    assert any(u.endswith(".png") for u in requests)


def test_reproduce_smoke_then_its_site_in_chromium(browser_binary, tmp_path, monkeypatch, capsys):
    """``weightlab reproduce --smoke`` over two recipes runs both, then writes ROOT/site:
    the index says it holds smoke runs (no verdicts there), and a run's page carries its
    claims with the numbers from its summary."""
    from weightlab.cli import main
    from weightlab.sweep import reproduce

    monkeypatch.setattr(reproduce, "selected_recipes", lambda all_, family: list(RECIPES))
    root = tmp_path / "runs"
    assert main(["reproduce", "--all", "--smoke", "--out", str(root)]) == 0
    out = capsys.readouterr().out
    assert "reproduce: 2 of 2 finished, 0 failed" in out, out
    index = root / "site" / "index.html"
    run_dir = next(root.glob("random-pruning-*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    claim = summary["claims"][0]
    with Chromium(browser_binary) as c:
        c.navigate(index.as_uri())
        assert "smoke runs: no verdicts" in c.evaluate("document.body.innerText")
        c.click_and_wait(f'a[href*="{run_dir.name}"]')
        text = c.evaluate("document.body.innerText")
        requests = list(c.requests)
    assert f"{claim['id']}: {claim['verdict']}" in text and claim["detail"] in text
    assert all(u.startswith("file://") for u in requests), requests
    # a second reproduce resumes: nothing recomputed, the site rebuilt in place
    assert main(["reproduce", "--all", "--smoke", "--out", str(root)]) == 0
    assert capsys.readouterr().out.count("already done") == 2


def test_reproduce_needs_all_or_family(capsys):
    from weightlab.cli import main

    assert main(["reproduce"]) == 2
    err = capsys.readouterr().err
    assert "reproduce needs --all" in err and "lottery-ticket" in err and len(err.splitlines()) == 1
    assert main(["reproduce", "--family", "nope"]) == 2
    assert "unknown family 'nope'" in capsys.readouterr().err
