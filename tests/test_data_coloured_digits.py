"""Coloured digits: shapes, seeded determinism, label noise and colour-label agreement per
environment near their targets, and bad input."""

from __future__ import annotations

import pytest
import torch

from weightlab.data.coloured_digits import load_coloured_digits
from weightlab.errors import ConfigError


def _colour(x: torch.Tensor) -> torch.Tensor:
    ch = x.view(len(x), 2, 64).abs().sum(-1)
    return ch.argmax(1)


def test_shapes_environments_and_agreements():
    cd = load_coloured_digits(seed=0)
    t = cd.task
    assert t.train.x.shape[1] == 128 and t.num_classes == 2
    assert len(t.test) == 360 and len(t.val) == 180 and len(t.train) == 1797 - 540
    assert set(cd.env.tolist()) == {0, 1} and abs(int((cd.env == 0).sum()) * 2 - len(t.train)) <= 1
    # each image lives in exactly one channel
    ch = t.train.x.view(-1, 2, 64).abs().sum(-1)
    assert bool(((ch > 0).sum(1) == 1).all())
    for e, want in enumerate((0.9, 0.8)):
        m = cd.env == e
        agree = float((_colour(t.train.x[m]) == t.train.y[m]).double().mean())
        assert agree == pytest.approx(want, abs=0.04)
    test_agree = float((_colour(t.test.x) == t.test.y).double().mean())
    assert test_agree == pytest.approx(0.1, abs=0.04)


def test_label_noise_and_determinism():
    a, b, c = load_coloured_digits(seed=1), load_coloured_digits(seed=1), load_coloured_digits(2)
    assert torch.equal(a.task.train.x, b.task.train.x) and torch.equal(a.task.test.y, b.task.test.y)
    assert not torch.equal(a.task.train.x, c.task.train.x)
    # without noise, labels are digit >= 5: balanced-ish; with 25% noise, the shape's best
    # rule (digit >= 5) agrees with the noisy label ~75% of the time
    clean = load_coloured_digits(seed=1, label_noise=0.0)
    agree = float((clean.task.train.y == a.task.train.y).double().mean())
    assert agree == pytest.approx(0.75, abs=0.04)


def test_bad_input():
    with pytest.raises(ConfigError, match="label_noise"):
        load_coloured_digits(label_noise=1.5)
    with pytest.raises(ConfigError, match=">= 2 training environments"):
        load_coloured_digits(train_agreements=(0.9,))
