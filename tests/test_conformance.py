"""Conformance of every registered recipe (discovered, never listed by hand).

For each recipe:

- its declaration is complete (family, row, paper, claim, tasks, smoke, broken, timing);
- the smoke run writes ``summary.json`` whose claims each carry a quote, a verdict in
  {held, did not hold, not tested} and evidence, and ``report.html`` renders;
- running it again resumes: no unit is recomputed, the summary is byte-identical;
- the ``broken`` override (smoke size, one epoch, training wrecked) leaves no claim
  "held". Recipes that do not train skip this and are listed.

A recipe whose recorded smoke time (``smoke_seconds``) exceeds the budget is marked
``slow`` with that time, so the default suite stays fast as recipes are added.
"""

from __future__ import annotations

import dataclasses
import html
import json
import time
from pathlib import Path

import pytest
import torch
from conftest import unit_mtimes

from weightlab.data import TASKS, task_names
from weightlab.recipes import FAMILIES, all_recipes
from weightlab.recipes.base import SMOKE_BUDGET_S
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json
from weightlab.runs.schema import VERDICTS, expect_summary

pytestmark = pytest.mark.usefixtures("one_thread")

REGISTRY = all_recipes()
NOT_TRAINING = sorted(n for n, c in REGISTRY.items() if not c.trains)


def _smoke_param(name: str):
    t = REGISTRY[name].smoke_seconds
    if t is not None and t > SMOKE_BUDGET_S:
        reason = f"smoke run measured {t:.1f} s > {SMOKE_BUDGET_S:g} s budget"
        return pytest.param(name, id=name, marks=pytest.mark.slow(reason=reason))
    return pytest.param(name, id=name)


def _broken_param(name: str):
    if not REGISTRY[name].trains:
        reason = f"{name} does not train: no broken run"
        return pytest.param(name, id=name, marks=pytest.mark.skip(reason=reason))
    return _smoke_param(name)


SMOKE = [_smoke_param(n) for n in REGISTRY]
BROKEN = [_broken_param(n) for n in REGISTRY]


def _check_claims(summary: dict) -> list[str]:
    expect_summary(summary)
    assert summary["claims"], "a recipe checks at least one claim"
    # the flat numbers the claims decide on, for the catalog and sweep plots
    assert isinstance(summary.get("metrics"), dict), "every summary has a flat 'metrics' dict"
    tested = [c for c in summary["claims"] if c["held"] is not None]
    if tested:
        assert summary["metrics"], "a claim was decided, so its deciding numbers are in metrics"
    for c in summary["claims"]:
        assert c["quote"].strip() and c["statement"].strip() and c["detail"].strip()
        assert c["verdict"] in VERDICTS and VERDICTS[c["verdict"]] is c["held"]
        assert isinstance(c["evidence"], dict)
    assert len({c["id"] for c in summary["claims"]}) == len(summary["claims"])
    return [c["verdict"] for c in summary["claims"]]


def test_registry_is_discovered_from_the_family_packages():
    assert "lottery-ticket" in REGISTRY
    assert REGISTRY["lottery-ticket"].__module__ == "weightlab.recipes.sparsity.lottery_ticket"
    for name, cls in REGISTRY.items():
        assert cls.__module__.startswith(f"weightlab.recipes.{cls.family}."), name


@pytest.mark.parametrize("name", list(REGISTRY))
def test_recipe_declares_its_contract(name):
    cls = REGISTRY[name]
    assert cls.name == name and cls.family in FAMILIES
    assert isinstance(cls.row, int) and not isinstance(cls.row, bool) and cls.row >= 1
    assert cls.paper.strip() and cls.claim.strip()
    assert cls.tasks and all(isinstance(t, str) for t in cls.tasks)
    assert set(cls.tasks) <= set(task_names()), "declare registered tasks only"
    assert {TASKS[t].kind for t in cls.tasks} <= set(cls.kinds)
    assert set(cls.kinds) <= {"classification", "regression"} and cls.kinds
    field_names = {f.name for f in dataclasses.fields(cls.Config)}
    assert set(cls.smoke) <= field_names and set(cls.broken) <= field_names
    assert set(cls.task_fields) <= field_names
    assert cls.Config().data == cls.tasks[0], "the default task is the first one declared"
    assert isinstance(cls.trains, bool)
    if cls.trains:
        assert cls.broken, f"{name} trains, so it needs a broken override"
    assert isinstance(cls.smoke_seconds, int | float) and cls.smoke_seconds > 0, (
        f"{name}: record the measured smoke time in smoke_seconds"
    )


def test_recipes_that_do_not_train_are_listed():
    """Recipes with ``trains = False`` skip the broken run; this is their list."""
    print(f"recipes that do not train (no broken run): {NOT_TRAINING or 'none'}")
    for name in NOT_TRAINING:
        assert REGISTRY[name].broken == {}, f"{name} does not train but declares broken"
    assert NOT_TRAINING == sorted(n for n, c in REGISTRY.items() if c.trains is False)


@pytest.mark.parametrize("name", SMOKE)
def test_smoke_run_writes_claims_renders_and_resumes(name, tmp_path, capsys):
    cfg = make_config(name, smoke=True)
    out = tmp_path / "run"
    t0, c0 = time.perf_counter(), time.process_time()
    path, summary = run_recipe(name, cfg, out=out)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    with capsys.disabled():
        print(f"\n[conformance] {name}: smoke run {wall:.2f} s wall, {cpu:.2f} s CPU")
    # a recipe not marked slow must not have grown far past its recorded time
    assert cpu <= 3 * max(REGISTRY[name].smoke_seconds, SMOKE_BUDGET_S), (wall, cpu)

    written = read_json(out / "summary.json")
    assert written == json.loads(json.dumps(written))
    _check_claims(written)
    assert written["recipe"] == name
    assert isinstance(written.get("members"), int) and isinstance(
        written.get("diverged_members"), list
    )

    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    for c in written["claims"]:
        assert f"({html.escape(c['id'])}) {c['verdict'].upper()}" in page
        assert html.escape(c["quote"]) in page
    assert (out / "report.md").read_text().startswith(f"# {name}")

    # re-run: resumes without recomputing any unit, same summary
    units = unit_mtimes(out)
    assert sorted(read_json(out / "timing.json")["computed_units"]) == sorted(units_keys(out))
    before = (out / "summary.json").read_bytes()
    run_recipe(name, cfg, out=out)
    assert read_json(out / "timing.json")["computed_units"] == []
    assert unit_mtimes(out) == units
    assert (out / "summary.json").read_bytes() == before


def units_keys(run: Path) -> list[str]:
    return [p.stem for p in (run / "units").glob("*.json")]


@pytest.mark.parametrize("name", BROKEN)
def test_broken_run_holds_no_claim(name, tmp_path):
    cfg = make_config(name, smoke=True, broken=True)
    if "epochs" in {f.name for f in dataclasses.fields(cfg)}:
        assert cfg.epochs == 1, "the broken run trains one epoch"
    _, summary = run_recipe(name, cfg, out=tmp_path / "broken")
    verdicts = _check_claims(summary)
    assert "held" not in verdicts, [(c["id"], c["verdict"], c["detail"]) for c in summary["claims"]]


# -- the registry ------------------------------------------------------------------------

FAKE = """
from dataclasses import dataclass

from weightlab.recipes.base import Recipe, RecipeConfig


@dataclass(frozen=True)
class FakeConfig(RecipeConfig):
    pass


class _Base(Recipe):  # no name of its own: not registered
    family = "quant"


class Fake(_Base):
    name = "{name}"
    family = "{family}"
    row = 99
    paper = "A. Author 2024, A Paper"
    claim = "something"
    Config = FakeConfig
    tasks = ("mnist1d",)
"""


@pytest.fixture
def extra_quant_module(tmp_path, monkeypatch):
    """``add(name, family)``: a module dropped into ``weightlab/recipes/quant/`` (via a
    temporary folder on the package's ``__path__``), seen by a fresh discovery."""
    import sys

    import weightlab.recipes.quant as quant

    monkeypatch.setattr(quant, "__path__", [*quant.__path__, str(tmp_path)])

    def add(name: str, family: str = "quant", module: str = "fake_recipe") -> None:
        (tmp_path / f"{module}.py").write_text(FAKE.format(name=name, family=family))
        monkeypatch.delitem(sys.modules, f"weightlab.recipes.quant.{module}", raising=False)

    yield add
    for m in [m for m in sys.modules if m.startswith("weightlab.recipes.quant.fake")]:
        del sys.modules[m]


def test_a_new_module_in_a_family_package_is_discovered(extra_quant_module):
    from weightlab.recipes.registry import discover

    extra_quant_module("fake-quant")
    found = discover()
    assert "fake-quant" in found and "lottery-ticket" in found
    assert found["fake-quant"].__module__ == "weightlab.recipes.quant.fake_recipe"
    assert "_Base" not in {c.__name__ for c in found.values()}


def test_duplicate_recipe_names_are_refused(extra_quant_module):
    from weightlab.errors import ConfigError
    from weightlab.recipes.registry import discover

    extra_quant_module("lottery-ticket")
    with pytest.raises(ConfigError, match="two recipes are named 'lottery-ticket'.*rename one"):
        discover()


def test_a_recipe_in_the_wrong_family_package_is_refused(extra_quant_module):
    from weightlab.errors import ConfigError
    from weightlab.recipes.registry import discover

    extra_quant_module("fake-quant", family="sparsity")
    with pytest.raises(ConfigError, match="declares family 'sparsity' but lives in recipes/quant"):
        discover()


def test_task_parameters_reach_the_loader_as_flat_config_fields():
    """A recipe exposes the task parameters it needs as flat config fields (``task_opt``,
    listed in ``task_fields``); they are checked like any field and passed to the loader."""
    from dataclasses import dataclass

    from weightlab.data import load_dataset
    from weightlab.errors import ConfigError, DataError
    from weightlab.recipes.base import Recipe, RecipeConfig
    from weightlab.recipes.tasks import task_opt

    @dataclass(frozen=True)
    class XorConfig(RecipeConfig):
        data: str = "xor"
        flip: float = task_opt("xor", "flip")
        n_train: int = task_opt("xor", "n_train")
        d: int = task_opt("xor", "d")

    class XorRecipe(Recipe):  # not in a family package: never registered
        tasks = ("xor",)
        task_fields = ("flip", "n_train", "d")
        Config = XorConfig

    XorRecipe.name = "xor-test"
    flip = {f.name: f for f in dataclasses.fields(XorConfig)}["flip"]
    assert flip.default == 0.1 and flip.metadata["max"] == 1 and "xor" in flip.metadata["help"]
    with pytest.raises(ConfigError, match=r"--flip must be <= 1; got 2\.0$"):
        XorConfig(flip=2.0)
    # the same check, and message, as the task parameter itself
    with pytest.raises(DataError, match=r"parameter flip must be <= 1; got 2\.0;"):
        load_dataset("xor", flip=2.0)
    r = XorRecipe()
    clean = r.load_data(XorConfig(flip=0.0, n_train=50, d=8))
    noisy = r.load_data(XorConfig(flip=0.5, n_train=50, d=8))
    assert len(clean.train) == 50 and clean.input_shape == (8,)
    assert torch.equal(clean.train.x, noisy.train.x)
    assert not torch.equal(clean.train.y, noisy.train.y)  # the flip reached the loader
    with pytest.raises(ConfigError, match="no parameter 'nope'"):
        task_opt("xor", "nope")


def test_a_recipe_over_the_smoke_budget_is_marked_slow_with_its_time(monkeypatch):
    cls = REGISTRY["lottery-ticket"]
    monkeypatch.setattr(cls, "smoke_seconds", 12.0)
    (mark,) = _smoke_param("lottery-ticket").marks
    assert mark.name == "slow" and "12.0 s > 5 s budget" in mark.kwargs["reason"]
    monkeypatch.setattr(cls, "smoke_seconds", 4.9)
    assert _smoke_param("lottery-ticket").marks == ()
    monkeypatch.setattr(cls, "trains", False)
    (skip,) = _broken_param("lottery-ticket").marks
    assert skip.name == "skip" and "does not train" in skip.kwargs["reason"]
