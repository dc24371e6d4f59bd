"""The DSD task (Lahoti et al. 2024 [#32]): shapes, the signal in exactly one patch, w* a
seeded unit vector, determinism, the registered task and its bad input."""

from __future__ import annotations

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.data.dsd import DSDTask
from weightlab.errors import DataError
from weightlab.seeding import generator


def test_signal_sits_in_one_patch():
    task = DSDTask(k=5, d=6, s=6.0, seed=3)
    w = task.w_star
    assert w.shape == (6,)
    assert abs(float(w.norm()) - 1) < 1e-6
    x, y, j = task.sample(4000, generator(1))
    assert x.shape == (4000, 30) and y.dtype == torch.int64
    proj = x.view(4000, 5, 6) @ w  # (n, k): w*ᵀx_j
    sign = (2 * y - 1).float()
    signal = proj[torch.arange(4000), j] * sign
    assert abs(float(signal.mean()) - 6.0) < 0.1  # y·s + N(0, 1)
    assert abs(float(signal.std()) - 1.0) < 0.1
    others = torch.ones(4000, 5, dtype=torch.bool)
    others[torch.arange(4000), j] = False
    rest = proj[others]
    assert abs(float(rest.mean())) < 0.05 and abs(float(rest.std()) - 1) < 0.05
    assert 0.45 < float(y.float().mean()) < 0.55
    assert torch.bincount(j, minlength=5).min() > 700  # the signal patch is uniform


def test_deterministic_and_seeded():
    a, b = DSDTask(4, 8, 6.0, seed=0), DSDTask(4, 8, 6.0, seed=1)
    assert torch.equal(a.w_star, DSDTask(4, 8, 6.0, seed=0).w_star)
    assert not torch.allclose(a.w_star, b.w_star)
    x1, y1, _ = a.sample(10, generator(5))
    x2, y2, _ = a.sample(10, generator(5))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_registered_task():
    t = load_dataset("dsd", k=3, d=4, n_train=50, n_test=30, seed=2)
    assert t.input_shape == (12,) and len(t.train) == 50 and len(t.test) == 30
    assert len(t.val) == 0 and t.num_classes == 2
    torch.testing.assert_close(t.info["w_star"], DSDTask(3, 4, 6.0, seed=2).w_star)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"k": 0}, "k"), ({"d": 0}, "d"), ({"s": 0.0}, "s"), ({"s": -1.0}, "s")],
)
def test_bad_input_is_one_line(kwargs, match):
    for make in (
        lambda: load_dataset("dsd", **kwargs),
        lambda: DSDTask(**{"k": 2, "d": 2, **kwargs}),
    ):
        with pytest.raises(DataError, match=match) as e:
            make()
        assert "\n" not in str(e.value)
