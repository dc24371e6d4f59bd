"""``seed_units``: one resumable unit per seed; finished units are read back, not recomputed."""

from dataclasses import dataclass

import pytest

from weightlab.errors import RunFileError
from weightlab.recipes.units import seed_units
from weightlab.runs.rundir import RunDir


@dataclass(frozen=True)
class _Cfg:
    a: int = 1


def _rd(path):
    return RunDir(path, "demo", _Cfg()).open()


def _check(m: dict) -> None:
    if not isinstance(m.get("members"), list):
        raise RunFileError("bad unit")


def test_members_in_seed_order_and_resume_reads_back(tmp_path):
    calls = []

    def compute(s):
        calls.append(s)
        return {"members": [{"seed": s, "v": 10 * s}, {"seed": s, "v": 10 * s + 1}]}, {}

    rd = _rd(tmp_path / "run")
    got = seed_units(rd, "demo", 3, compute, _check)
    assert [m["v"] for m in got] == [0, 1, 10, 11, 20, 21] and calls == [0, 1, 2]
    rd2 = _rd(tmp_path / "run")
    assert seed_units(rd2, "demo", 3, compute, _check) == got
    assert calls == [0, 1, 2]  # nothing recomputed


def test_a_failing_seed_keeps_the_finished_units(tmp_path):
    def compute(s):
        if s == 1:
            raise ValueError("boom")
        return {"members": [{"seed": s}]}, {}

    rd = _rd(tmp_path / "run")
    with pytest.raises(ValueError):
        seed_units(rd, "demo", 3, compute, _check)
    assert (tmp_path / "run" / "units" / "seed-00.json").exists()
    assert not (tmp_path / "run" / "units" / "seed-01.json").exists()
