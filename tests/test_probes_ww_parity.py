"""Parity with weightwatcher 0.7.7 (a test extra): ESD α, xmin, KS distance, stable rank,
σ_max and the refused layers on MiniLM and on small models with layers below min_evals and
in weightwatcher's small-N range; the finger guard against its ``fix_fingers="clip_xmax"``.

weightwatcher is pinned to ``min_evals=8, randomize=False, mp_fit=False, plot=False``
(``fix_fingers=False`` for the plain α, ``"clip_xmax"`` for the guarded one); it prints log
lines on import, so this module is ``slow`` (~5 s import)."""

from __future__ import annotations

import contextlib
import io
import logging

import pytest
import torch
from torch import nn

from weightlab.probes.spectra import spectra

pytestmark = pytest.mark.slow

ALPHA_TOL = 0.02  # the parity tolerance (measured: agreement to ~1e-12)
CONV2D_NORM = 0.5**0.5  # weightwatcher's conv2d_norm factor √(conv2d_count/2), count 1


@pytest.fixture(scope="module")
def ww():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import weightwatcher

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    return weightwatcher


def analyze(ww, model: nn.Module, fix_fingers) -> dict:
    watcher = ww.WeightWatcher(model=model)
    with contextlib.redirect_stdout(io.StringIO()):
        df = watcher.analyze(
            min_evals=8, fix_fingers=fix_fingers, randomize=False, mp_fit=False, plot=False
        )
    return {row.longname: row for row in df.itertuples()}


def check(ww, model: nn.Module) -> list[str]:
    ours = spectra(model)
    ref = analyze(ww, model, False)
    clipped = analyze(ww, model, "clip_xmax")
    assert {x.name for x in ours.fitted} == set(ref), "the same layers are fitted"
    for layer in ours.fitted:
        r = ref[layer.name]
        assert abs(layer.alpha - r.alpha) <= ALPHA_TOL
        scale = CONV2D_NORM**2 if layer.kind == "conv2d" else 1.0
        assert layer.xmin * scale == pytest.approx(r.xmin, rel=1e-9)  # the same eigenvalue
        assert layer.ks_distance == pytest.approx(r.D, rel=1e-6, abs=1e-9)
        assert layer.stable_rank == pytest.approx(r.stable_rank, rel=1e-6)
        assert layer.n_evals == r.num_evals
        if layer.kind == "conv2d":  # weightwatcher rescales conv weights (conv2d_norm)
            assert layer.sigma_max == pytest.approx(r.sv_max / CONV2D_NORM, rel=1e-6)
        else:
            assert layer.sigma_max == pytest.approx(r.sv_max, rel=1e-6)
        c = clipped[layer.name]
        assert abs(layer.alpha_clipped - c.alpha) <= 1e-6
        # weightwatcher reports k − 1 fingers for a clip of the top k eigenvalues
        assert layer.n_fingers == (c.num_fingers + 1 if c.num_fingers else 0)
    return [x.name for x in ours.layers if x.refused]


def test_minilm(ww):
    from weightlab.models.minilm import load_minilm

    model = load_minilm().model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    refused = check(ww, model)
    assert refused == ["embeddings.token_type_embeddings"]  # 2 × 384
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class Small(nn.Module):
    """Layers from 3 to 64 eigenvalues: refused (3, 5), weightwatcher's small-N fit (8, 12,
    19) and its standard fit (20, 64)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        sizes = [(40, 3), (5, 40), (8, 30), (12, 50), (60, 19), (20, 20), (64, 100)]
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.layers = nn.ModuleList(nn.Linear(i, o) for o, i in sizes)
        for lin in self.layers:
            scale = torch.rand(lin.in_features, generator=g) ** -1.5  # heavy-tailed columns
            lin.weight.data.copy_(torch.randn(lin.weight.shape, generator=g) * scale)


def test_small_layers_and_refusals(ww):
    refused = check(ww, Small())
    assert refused == ["layers.0", "layers.1"]


def test_conv2d(ww):
    torch.manual_seed(0)
    with torch.random.fork_rng():
        model = nn.Sequential(
            nn.Conv2d(8, 16, 3), nn.Conv2d(16, 24, 3), nn.Conv2d(3, 16, 5), nn.Conv2d(3, 16, 1)
        )
    refused = check(ww, model)
    # weightwatcher pools the slices: 25 slices of 3 eigenvalues fit, one slice of 3 does not
    assert refused == ["3"]
