"""Quantizer instrumentation: oscillation (OFQ after Nagel et al. 2022), DenseShift's freezing
metric and level shares, on hand-made level sequences with hand-computed answers, and inside
the training loop (which step a level belongs to)."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.core import apply_masks
from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.models import build
from weightlab.models.mlp import MLP
from weightlab.quant.instrument import (
    FreezingTracker,
    OscillationTracker,
    epoch_means,
    late_mean,
    level_shares,
)
from weightlab.quant.quantizer import QuantSpec, quantize
from weightlab.train import train
from weightlab.train.config import OptimConfig, TrainConfig

# one weight's levels per step; changes: +1 (first), -1 osc, +1 osc, 0, +1, -1 osc, -1, 0,
# -1, +1 osc  -> oscillations at steps 3, 4, 7, 11
SEQ = [0, 1, 0, 1, 1, 2, 1, 0, 0, -1, 0]
OSC_STEPS = [3, 4, 7, 11]


def _feed(tracker, seqs):
    t = torch.tensor(seqs, dtype=torch.int32).T  # (steps, weights)
    for k, row in enumerate(t, start=1):
        tracker.observe({"w": row.clone()}, k)
    return tracker


def test_oscillation_counts_and_ema_match_hand_computation():
    m = 0.01
    tr = _feed(OscillationTracker(momentum=m), [SEQ])
    assert tr.counts["w"] == [1 if k in OSC_STEPS else 0 for k in range(1, len(SEQ) + 1)]
    assert tr.total_counts() == {"w": 4, "overall": 4}
    # f_T = sum over oscillation steps s of m (1 - m)^(T - s)
    T = len(SEQ)
    expect = sum(m * (1 - m) ** (T - s) for s in OSC_STEPS)
    assert tr.rate["w"].item() == pytest.approx(expect, rel=1e-6)
    # the EMA after each step
    f, hist = 0.0, []
    for k in range(1, T + 1):
        if k > 1:
            f = (1 - m) * f + m * (k in OSC_STEPS)
        hist.append(f)
    assert tr.history["w"] == pytest.approx(hist, rel=1e-6)
    assert tr.steps == list(range(1, T + 1))


def test_oscillation_direction_not_size_and_no_first_change():
    # 0 -> 2 -> 0: a jump of two levels back is an oscillation; a first change never is;
    # monotone drift never is; a constant weight never is
    tr = _feed(
        OscillationTracker(momentum=0.5),
        [[0, 2, 0, 0], [0, 1, 2, 3], [1, 1, 1, 1], [0, 0, 0, -1]],
    )
    assert tr.counts["w"] == [0, 0, 1, 0]
    assert tr.rate["w"].tolist() == pytest.approx([0.25, 0.0, 0.0, 0.0])
    assert tr.history["overall"][-1] == pytest.approx(0.25 / 4)
    assert late_mean(tr.history["w"], 0.5) == pytest.approx((0.5 / 4 + 0.25 / 4) / 2)


def test_freezing_share_over_window_matches_hand_computation():
    w1 = [0, 0, 0, 0, 1, 1, 1, 1]  # changes at step 5
    w2 = [0, 1, 1, 1, 1, 1, 1, 1]  # changes at step 2
    tr = _feed(FreezingTracker(window=3), [w1, w2])
    h = tr.history["w"]
    assert all(math.isnan(v) for v in h[:3])  # fewer than 3 changes observable
    assert h[3:] == [0.5, 0.5, 0.5, 0.5, 1.0]
    assert tr.final() == 1.0
    assert epoch_means(h, 4) == [0.5, pytest.approx(0.625)]


def test_level_shares_uniform_and_statsq():
    w = torch.tensor([[0.3, 0.1, 0.1, 0.0, -0.2, -0.3, 0.2, 0.1]])
    q = quantize(torch.nn.Sequential(torch.nn.Linear(8, 1, bias=False)), QuantSpec(3, "uniform"))
    (qz,) = q.values()
    qz.recalibrate(w)  # step 0.1: levels -3..3
    shares = level_shares(qz, w)
    expect = torch.tensor([1, 1, 0, 1, 3, 1, 1], dtype=torch.float64) / 8
    assert torch.allclose(shares, expect)
    # StatsQ: midrise 2 bits, s = 2 mean|W| = 3: levels ±0.75, ±2.25; re-estimated from w
    w2 = torch.tensor([[1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -3.0, 3.0]])
    lin = torch.nn.Sequential(torch.nn.Linear(8, 1, bias=False))
    (qs,) = quantize(lin, QuantSpec(2, "midrise", "stats", ste="identity")).values()
    assert torch.allclose(level_shares(qs, w2), torch.tensor([1, 2, 4, 1], dtype=torch.float64) / 8)


def test_level_shares_and_trackers_leave_out_pruned_weights():
    model = torch.nn.Sequential(torch.nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.2, 0.6, -1.2, 0.5]]))
    apply_masks(model, {"0.weight": torch.tensor([[1.0, 1.0, 1.0, 0.0]])})
    (qz,) = quantize(model, QuantSpec(2, "midrise", "stats")).values()
    # mean|W| over the 3 kept entries = 1, s = 2: levels ±0.5, ±1.5: 1.2 -> k=1, 0.6 -> k=0,
    # -1.2 -> k=-2 (the pruned stored 0 would be k=-1 or 0)
    shares = level_shares(qz, model[0].parametrizations.weight.original)
    assert torch.allclose(shares, torch.tensor([1, 0, 1, 1], dtype=torch.float64) / 3)
    tr = OscillationTracker({"0.weight": qz}, momentum=0.5)
    for k, lv in enumerate([[0, 0, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]], start=1):
        tr.observe({"0.weight": torch.tensor([lv], dtype=torch.int32)}, k)
    # the pruned 4th entry oscillates in the fake sequence but is left out
    assert tr.counts["0.weight"] == [0, 0, 1]
    assert tr.history["0.weight"][-1] == pytest.approx(0.5 / 3)  # m = 0.5, one oscillation


def test_tracker_in_the_loop_sees_the_levels_before_each_update():
    """The callback of step t reads ℓ_t, the levels of the weights before update t: equal to
    the levels of the weights after update t - 1 (a fixed min-max scale here)."""
    data = load_dataset("iris", "cpu")
    model = build(MLP, (4, 16, 3), seed=0)
    qs = quantize(model, QuantSpec(2, "uniform_full", "minmax"), seed=0)
    tracker = OscillationTracker(qs)  # switches tracking on
    seen, after = [], []

    def record(model, ctx):
        seen.append({n: q.last_q.clone() for n, q in qs.items()})
        after.append({n: q.level_indices(_stored(model, n)) for n, q in qs.items()})

    cfg = TrainConfig(epochs=3, batch_size=30, optim=OptimConfig("adam", lr=0.05))
    train(model, data, cfg, 0, seed=0, callbacks=[tracker, record])
    total = len(seen)
    assert total == 9 and tracker.steps == list(range(1, total + 1))
    assert set(tracker.history) == {*qs, "overall"}
    changed = 0
    for t in range(1, total):
        for n in qs:
            assert torch.equal(seen[t][n], after[t - 1][n])  # ℓ_{t+1} = levels after update t
            changed += int((seen[t][n] != seen[t - 1][n]).sum())
    assert changed > 0  # the run moved levels: the test is not vacuous
    counts = tracker.total_counts()
    assert sum(counts[n] for n in qs) == counts["overall"]


def _stored(model, name):
    module = model.get_submodule(name.rpartition(".")[0])
    return module.parametrizations.weight.original


def test_tracker_refuses_untracked_or_stale_levels():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    quantize(model, QuantSpec(4))
    with pytest.raises(ConfigError, match="track=True"):
        OscillationTracker()(model, None)
    qs = quantize(torch.nn.Sequential(torch.nn.Linear(3, 2)), QuantSpec(4))
    tr = FreezingTracker(qs)  # switches tracking on
    (q,) = qs.values()
    assert q.track
    with pytest.raises(ConfigError, match="recorded no level"):
        tr._levels(model)
    with pytest.raises(ConfigError):
        FreezingTracker(window=0)
    with pytest.raises(ConfigError):
        OscillationTracker(momentum=0.0)


def test_freezing_tracker_in_the_loop_all_frozen_when_nothing_moves():
    """With lr 1e-12 no level changes: every weight is frozen once the window has passed."""
    data = load_dataset("iris", "cpu")
    model = build(MLP, (4, 16, 3), seed=0)
    qs = quantize(model, QuantSpec(3, "midrise", "stats", ste="identity"), seed=0)
    tr = FreezingTracker(qs, window=4)
    cfg = TrainConfig(epochs=2, batch_size=30, optim=OptimConfig("sgd", lr=1e-12))
    train(model, data, cfg, 0, seed=0, callbacks=[tr])
    h = tr.history["overall"]
    assert len(h) == 6 and all(math.isnan(v) for v in h[:4]) and h[4:] == [1.0, 1.0]
