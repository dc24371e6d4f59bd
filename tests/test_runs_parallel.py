"""run_units: independent units in spawned worker processes, recorded in order."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.base import RecipeConfig
from weightlab.runs import RunDir
from weightlab.runs.parallel import UnitJob, run_units


@dataclass(frozen=True)
class TinyConfig(RecipeConfig):
    pass


def square_unit(i: int) -> tuple[dict, dict]:
    """A unit whose numbers come from a matmul (the worker's thread count matters)."""
    g = torch.Generator().manual_seed(i)
    a = torch.randn(64, 64, generator=g)
    return {"i": i, "threads": torch.get_num_threads(), "trace": float((a @ a).trace())}, {
        "a": a @ a
    }


def failing_unit(i: int) -> tuple[dict, dict]:
    raise ConfigError(f"unit {i} has a bad setting; fix it")


def test_workers_compute_the_same_units_as_inline_and_record_them_in_order(tmp_path):
    jobs = [UnitJob(f"u{i}", square_unit, (i,)) for i in (3, 1, 2)]
    inline = run_units(RunDir(tmp_path / "a", "tiny", TinyConfig()).open(), jobs, workers=1)
    rd = RunDir(tmp_path / "b", "tiny", TinyConfig()).open()
    pooled = run_units(rd, jobs, workers=2)
    assert [m for m, _ in pooled] == [m for m, _ in inline]
    assert all(m["threads"] == 1 for m, _ in pooled)
    for (_, ta), (_, tb) in zip(inline, pooled, strict=True):
        assert torch.equal(ta["a"], tb["a"])
    lines = (rd.path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["unit"] for x in lines] == ["u3", "u1", "u2"]
    # a resumed run reads every unit back and computes none (failing_unit would raise)
    again = [UnitJob(j.key, failing_unit, j.args) for j in jobs]
    resumed = run_units(RunDir(tmp_path / "b", "tiny", TinyConfig()).open(), again, workers=2)
    assert [m for m, _ in resumed] == [m for m, _ in pooled]


def test_a_worker_error_reaches_the_caller_and_earlier_units_stay_recorded(tmp_path):
    rd = RunDir(tmp_path / "r", "tiny", TinyConfig()).open()
    jobs = [UnitJob("ok", square_unit, (0,)), UnitJob("bad", failing_unit, (1,))]
    with pytest.raises(ConfigError, match="unit 1 has a bad setting"):
        run_units(rd, jobs, workers=2)
    assert rd.unit_done("ok") and not rd.unit_done("bad")


def test_bad_arguments(tmp_path):
    rd = RunDir(tmp_path / "r", "tiny", TinyConfig()).open()
    with pytest.raises(ConfigError, match="same unit key"):
        run_units(rd, [UnitJob("u", square_unit, (0,)), UnitJob("u", square_unit, (1,))])
    with pytest.raises(ConfigError, match="workers and threads"):
        run_units(rd, [UnitJob("u", square_unit, (0,))], workers=0)
