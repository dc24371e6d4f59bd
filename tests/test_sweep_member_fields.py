"""Every recipe that declares ``member_fields`` batches in a sweep: its runs over two
learning rates merge their ``train_members`` calls into shared populations, finish, and
reach the verdicts their config-by-config runs reach.

Two recipes run in the default suite; the rest are ``slow`` (each takes 3-15 s: two smoke
runs batched and two alone)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from weightlab.cli import main
from weightlab.recipes.registry import all_recipes
from weightlab.sweep import batching

PAIR = ["--grid", "lr=1e-3,2e-3", "--smoke"]
DEFAULT = ("sparse-rl", "wise-ft")  # the fastest two (about 1 s per smoke run)
BATCHED = sorted(n for n, cls in all_recipes().items() if cls.member_fields)


def test_member_fields_are_config_fields_and_name_the_batched_recipes():
    for name, cls in all_recipes().items():
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        assert set(cls.member_fields) <= fields, name
    assert len(BATCHED) >= 20 and "lottery-ticket" in BATCHED
    assert set(DEFAULT) <= set(BATCHED)


def _verdicts(root: Path) -> dict[str, list]:
    out = {}
    for p in sorted(root.glob("*/summary.json")):
        claims = json.loads(p.read_text())["claims"]
        out[p.parent.name] = [(c["id"], c["verdict"]) for c in claims]
    return out


@pytest.mark.parametrize(
    "name",
    [n if n in DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in BATCHED],
)
def test_batched_sweep_merges_calls_and_matches_config_by_config(
    name, tmp_path, capsys, monkeypatch
):
    merged: list[list[int]] = []
    real = batching.GroupBatcher._train

    def recording(self, batch):
        merged.append([len(c.specs) for c in batch])
        return real(self, batch)

    monkeypatch.setattr(batching.GroupBatcher, "_train", recording)
    a, c = tmp_path / "a", tmp_path / "c"
    assert main(["sweep", name, *PAIR, "--out", str(a)]) == 0
    assert capsys.readouterr().out.count(" done in ") == 2
    assert any(len(sizes) == 2 for sizes in merged), merged  # both runs in one population
    merged.clear()
    assert main(["sweep", name, *PAIR, "--out", str(c), "--no-batch"]) == 0
    assert all(len(sizes) == 1 for sizes in merged)
    assert merged == []  # --no-batch: one run per group, no hub, each run trains alone
    va, vc = _verdicts(a), _verdicts(c)
    assert len(va) == 2 and va == vc
