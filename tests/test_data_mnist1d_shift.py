"""MNIST-1D shift task: B is A with one fixed permutation of the 40 positions."""

from __future__ import annotations

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.data.mnist1d_shift import PERMUTATION_SEED, shift_permutation
from weightlab.errors import DataError
from weightlab.seeding import derive_seed

pytest.importorskip("mnist1d")


def test_permutation_is_a_fixed_permutation():
    p = shift_permutation()
    assert sorted(p.tolist()) == list(range(40))
    assert not torch.equal(p, torch.arange(40))
    assert torch.equal(p, shift_permutation())
    assert PERMUTATION_SEED == derive_seed("mnist1d_shift", 0)


def test_part_b_permutes_every_split_of_mnist1d():
    plain = load_dataset("mnist1d")
    a = load_dataset("mnist1d_shift", part="A")
    b = load_dataset("mnist1d_shift", part="B")
    p = shift_permutation()
    for s in ("train", "val", "test"):
        sp, sa, sb = getattr(plain, s), getattr(a, s), getattr(b, s)
        assert torch.equal(sa.x, sp.x) and torch.equal(sa.y, sp.y)
        assert torch.equal(sb.x, sp.x[:, p]) and torch.equal(sb.y, sp.y)
    assert torch.equal(b.info["permutation"], p) and b.info["part"] == "B"


def test_unknown_part_is_one_line_error():
    with pytest.raises(DataError, match="part must be one of A, B"):
        load_dataset("mnist1d_shift", part="C")
