"""Confidence-guided annealing (OFQ): the boundary band, frozen weights bit-identical under
Adam, boundary weights moving, the mask equal to the one the next forward's ``last_t`` gives."""

from __future__ import annotations

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.models import build
from weightlab.models.mlp import MLP
from weightlab.quant.cga import ConfidenceGuidedAnnealing, boundary_mask
from weightlab.quant.quantizer import QuantSpec, quantize
from weightlab.train import train
from weightlab.train.config import OptimConfig, TrainConfig


def test_boundary_band_between_levels_only():
    # uniform_full 2 bits: levels -2..1, boundaries at -1.5, -0.5, 0.5
    t = torch.tensor([0.5, 0.503, 0.51, -0.497, 1.5, 2.5, -1.5, 0.2, -2.5, -0.505])
    keep = boundary_mask(t, -2, 1, 0.005)
    assert keep.tolist() == [True, True, False, True, False, False, True, False, False, True]


def test_masks_use_the_quantizers_grid():
    lin = torch.nn.Sequential(torch.nn.Linear(8, 1, bias=False))
    # StatsQ 2 bits: s = 2 mean|W| = 2, grid t = 2u - 0.5 with u = w/2: t = w - 0.5;
    # boundaries at t = -1.5, -0.5, 0.5 <=> w = -1, 0, 1
    w = torch.tensor([[1.0, -1.0, 0.003, 1.6, -1.6, 1.004, 1.2, 0.593]])
    assert w.abs().mean().item() == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():
        lin[0].weight.copy_(w)
    qs = quantize(lin, QuantSpec(2, "midrise", "stats", ste="identity"))
    cga = ConfidenceGuidedAnnealing(qs)
    (keep,) = cga.masks(lin).values()
    stored = lin[0].parametrizations.weight.original[0].detach()
    expect = [abs(float(x) - round(float(x))) <= 0.005 and abs(float(x)) < 1.5 for x in stored]
    assert expect == [True, True, True, False, False, True, False, False]
    assert keep[0].tolist() == expect


def _run(fraction=0.5, restore=True, epochs=4):
    data = load_dataset("iris", "cpu")
    model = build(MLP, (4, 32, 3), seed=0)
    qs = quantize(model, QuantSpec(2, "midrise", "stats", ste="identity"), seed=0)
    for q in qs.values():
        q.track = True
    cga = ConfidenceGuidedAnnealing(qs, fraction=fraction, boundary=0.05, restore=restore)
    log = []

    def before(model, ctx):  # runs before CGA: the weights right after update ctx.step
        log.append(
            {
                "step": ctx.step,
                "w": {n: _stored(model, n).detach().clone() for n in qs},
                "keep": {n: None if q.keep is None else q.keep.clone() for n, q in qs.items()},
                "last_t": {n: q.last_t.clone() for n, q in qs.items()},
            }
        )

    def after(model, ctx):  # runs after CGA: the weights the next update starts from
        log[-1]["w_after_cga"] = {n: _stored(model, n).detach().clone() for n in qs}

    cfg = TrainConfig(epochs=epochs, batch_size=30, optim=OptimConfig("adam", lr=0.02))
    train(model, data, cfg, 0, seed=0, callbacks=[before, cga, after])
    return cga, qs, log


def _stored(model, name):
    return model.get_submodule(name.rpartition(".")[0]).parametrizations.weight.original


def test_frozen_weights_stay_bit_identical_and_boundary_weights_move():
    cga, qs, log = _run()
    total = len(log)
    assert total == 12 and cga.start == 6
    assert cga.steps == list(range(6, 12))
    moved_keep, frozen_n = 0, 0
    for s in range(cga.start, total):  # update s + 1 (log index s) is annealed
        prev, cur = log[s - 1], log[s]
        for n in qs:
            keep = cur["keep"][n].bool()
            start = prev["w_after_cga"][n]
            end = cur["w_after_cga"][n]  # restored
            assert torch.equal(end[~keep], start[~keep])  # frozen: bit-identical
            moved_keep += int((end[keep] != start[keep]).sum())
            frozen_n += int((~keep).sum())
            # the mask equals the boundary test on the last_t the annealed forward recorded
            lt = cur["last_t"][n]
            band = boundary_mask(lt, qs[n].levels.qmin, qs[n].levels.qmax, 0.05)
            assert torch.equal(band, keep)
    assert moved_keep > 0 and frozen_n > 0
    # before the phase nothing is gated and weights move freely
    assert all(v is None for v in log[2]["keep"].values())
    # the gates are removed at the end
    assert all(q.keep is None for q in qs.values())
    assert all(0.0 < f < 1.0 for f in cga.frozen_share)


def test_the_gradient_gate_alone_does_not_stop_adam():
    """Positive control for the restore: with the gate only, Adam's momentum moves frozen
    weights during the annealing phase."""
    cga, qs, log = _run(restore=False)
    moved = 0
    for s in range(cga.start + 1, len(log)):
        prev, cur = log[s - 1], log[s]
        for n in qs:
            frozen = ~cur["keep"][n].bool()
            moved += int((cur["w_after_cga"][n][frozen] != prev["w_after_cga"][n][frozen]).sum())
    assert moved > 0


def test_bad_options_are_one_line_errors():
    qs = quantize(torch.nn.Sequential(torch.nn.Linear(3, 2)), QuantSpec(2, "midrise", "stats"))
    with pytest.raises(ConfigError, match="fraction"):
        ConfidenceGuidedAnnealing(qs, fraction=1.0)
    with pytest.raises(ConfigError, match="boundary"):
        ConfidenceGuidedAnnealing(qs, boundary=0.5)
    with pytest.raises(ConfigError, match="quantizers"):
        ConfidenceGuidedAnnealing({})
