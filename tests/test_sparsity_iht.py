"""IHT (hard thresholding as a step callback) and teacher-student unit matching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from weightlab.core import apply_masks
from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.sparsity.iht import HardThreshold, hard_threshold, iht_keep_counts, top_k_mask
from weightlab.sparsity.matching import match_units, recovery_metrics, support_f1
from weightlab.train import train
from weightlab.train.config import OptimConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_top_k_mask_exact_k_and_ties_to_lower_index():
    w = torch.tensor([[0.5, -2.0, 1.0], [1.0, -1.0, 0.1]])
    m = top_k_mask(w, 3)
    # |w| sorted: 2.0 (idx 1), then three ties at 1.0 (idx 2, 3, 4): the two lowest win
    assert m.tolist() == [[False, True, True], [True, False, False]]
    assert int(top_k_mask(w, 0).sum()) == 0 and bool(top_k_mask(w, 6).all())
    assert hard_threshold(w, 1).tolist() == [[0.0, -2.0, 0.0], [0.0, 0.0, 0.0]]
    ties = torch.ones(10)
    assert torch.nonzero(top_k_mask(ties, 4)).reshape(-1).tolist() == [0, 1, 2, 3]


def test_top_k_mask_refuses_k_outside_the_layer():
    with pytest.raises(ConfigError, match="cannot keep k=7 of 6 weights; choose k in 0..6"):
        top_k_mask(torch.ones(2, 3), 7)


def test_keep_counts_refuse_bad_density():
    shapes = {"a": torch.Size((10, 10))}
    assert iht_keep_counts(shapes, 0.1) == {"a": 10}
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ConfigError, match="density must be in"):
            iht_keep_counts(shapes, bad)


def _teacher_task(n=256):
    return load_dataset(
        "teacher_linear", "cpu", d_in=12, d_out=1, noise=0.0, n_train=n, n_val=64, n_test=64
    )


def test_callback_keeps_exactly_k_after_every_update_and_matches_manual_iht():
    """The callback inside ``train`` equals a hand-written loop: SGD step, then H_k."""
    data = _teacher_task()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 1))
    ref = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 1))
    ref.load_state_dict(model.state_dict())
    counts = []

    class Count:
        def __call__(self, m, ctx):
            counts.append(int((m[0].weight != 0).sum()))

    cfg = TrainConfig(2, 64, 0, OptimConfig("sgd", lr=0.05))
    train(model, data, cfg, 0, callbacks=[HardThreshold({"0.weight": 9}), Count()])
    assert counts == [9] * 8  # 2 epochs x 4 steps, exactly k after each update
    # reference: the same batches, plain SGD + H_k by hand
    from weightlab.train.order import batch_indices

    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    for idx in batch_indices(256, 64, 2, 0):
        x, y = data.train.x[idx], data.train.y[idx]
        opt.zero_grad()
        ((ref(x) - y) ** 2).mean(1).mean().backward()
        opt.step()
        with torch.no_grad():
            ref[0].weight.copy_(hard_threshold(ref[0].weight, 9))
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_callback_works_on_a_masked_weight_and_support_can_change():
    data = _teacher_task()
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 1))
    apply_masks(model, {"2.weight": torch.tensor([[1.0, 1.0, 0.0, 1.0]])})
    supports = []

    def record(m, ctx):
        supports.append((m[0].weight != 0).clone())

    cfg = TrainConfig(3, 32, 0, OptimConfig("adam", lr=0.05))
    train(model, data, cfg, 0, callbacks=[HardThreshold({"0.weight": 5, "2.weight": 2}), record])
    assert all(int(s.sum()) == 5 for s in supports)
    assert int((model[2].weight != 0).sum()) == 2 and model[2].weight[0, 2] == 0
    # the support is not fixed: a zeroed entry that a step makes large re-enters
    w = model[0].weight
    out = torch.nonzero(w.reshape(-1) == 0)[0, 0]
    with torch.no_grad():
        model[0].weight.view(-1)[out] = 100.0
    HardThreshold({"0.weight": 5}).project(model)
    assert model[0].weight.reshape(-1)[out] == 100.0 and int((model[0].weight != 0).sum()) == 5


def test_callback_refuses_unknown_names_and_k_above_the_layer():
    data = _teacher_task()
    model = nn.Sequential(nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 1))
    cfg = TrainConfig(1, 64, 0, OptimConfig("sgd", lr=0.01))
    with pytest.raises(ConfigError, match="k=49 for '0.weight' exceeds its 48 weights"):
        train(model, data, cfg, 0, callbacks=[HardThreshold({"0.weight": 49})])
    with pytest.raises(ConfigError, match="no parameter 'nope.weight'"):
        train(model, data, cfg, 0, callbacks=[HardThreshold({"nope.weight": 3})])
    with pytest.raises(ConfigError, match="integer >= 0"):
        HardThreshold({"0.weight": -1})


# -- matching -----------------------------------------------------------------------------


def _planted(seed=0):
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(5, 8, generator=g) * (torch.rand(5, 8, generator=g) < 0.4)
    w1[:, 0] = 1.0  # no empty unit
    w2 = torch.randn(1, 5, generator=g)
    return w1, w2


def test_matching_undoes_permutation_and_positive_scaling_exactly():
    w1, w2 = _planted()
    perm = torch.tensor([3, 0, 4, 1, 2])
    c = torch.tensor([0.5, 2.0, 3.0, 1.0, 0.25])
    s1, s2 = w1[perm] * c[:, None], w2[:, perm] / c
    x = torch.randn(20, 8)
    torch.testing.assert_close(torch.relu(x @ s1.T) @ s2.T, torch.relu(x @ w1.T) @ w2.T)
    rec = recovery_metrics((s1, s2), (w1, w2))
    # teacher unit i is student unit perm^-1(i)
    assert [int(perm[j]) for j in rec.perm] == [0, 1, 2, 3, 4]
    assert rec.f1 == 1.0 and rec.rel_error < 1e-6 and rec.signs == [1] * 5


def test_relu_matching_allows_no_sign_flip_but_tanh_does():
    w1, w2 = _planted(1)
    flipped = (-w1, -w2)
    relu = recovery_metrics(flipped, (w1, w2), activation="relu")
    tanh = recovery_metrics(flipped, (w1, w2), activation="tanh")
    assert relu.rel_error > 1.0  # -relu(z) is not relu(-z): a sign flip is an error
    assert tanh.signs == [-1] * 5 and tanh.rel_error < 1e-9 and tanh.f1 == 1.0


def test_support_f1_hand_computed():
    truth = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    rec = torch.tensor([[1, 0, 1, 1]], dtype=torch.bool)
    p, r, f = support_f1(rec, truth)  # tp 1: precision 1/3, recall 1/2
    assert (p, r) == pytest.approx((1 / 3, 1 / 2)) and f == pytest.approx(0.4)


def test_matching_checks_shapes():
    with pytest.raises(ConfigError, match="fewer than the teacher"):
        match_units(torch.ones(2, 4), torch.ones(3, 4))
    with pytest.raises(ConfigError, match="same d"):
        match_units(torch.ones(3, 5), torch.ones(3, 4))
