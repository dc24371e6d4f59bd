"""WINNER (Chandravamsi et al. 2025): the spectral centroid, the centroid -> noise mapping,
the SIREN base draws, the noise on the first two layers only, determinism and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.init.registry import get_initializer, initialize
from weightlab.init.winner import noise_scales, spectral_centroid
from weightlab.models.siren import SIREN, siren_factory


def _tone(n: int, k: int) -> np.ndarray:
    return np.cos(2 * np.pi * k * np.arange(n) / n)


def test_spectral_centroid_known_answers():
    assert spectral_centroid(np.ones(64)) == 0.0
    assert spectral_centroid(_tone(64, 8)) == pytest.approx(8 / 32)
    assert spectral_centroid(torch.tensor(_tone(64, 32))[:, None]) == pytest.approx(1.0)
    # equal power at bins 4 and 12: the centroid is their mean, 8 / 32
    assert spectral_centroid(_tone(64, 4) + _tone(64, 12)) == pytest.approx(8 / 32)
    # a TaskData gives its training targets; the upper-half band sits near 3/4 of Nyquist
    d = load_dataset("signal1d", "cpu", n=256, f_lo=64, f_hi=127)
    assert 0.7 < spectral_centroid(d) < 0.8


def test_noise_scales_follow_the_mapping():
    assert noise_scales(0.0) == (0.0, 0.0)
    s0, s1 = noise_scales(1.0)
    assert s0 == pytest.approx(3500 * (1 - math.exp(-7))) and s1 == pytest.approx(3.0)
    s0, s1 = noise_scales(0.25, s0_max=100, a=2, b=4)
    assert s0 == pytest.approx(100 * (1 - math.exp(-0.5))) and s1 == pytest.approx(1.0)


def _layers(model: SIREN):
    return [getattr(layer, "linear", layer) for layer in model.layers]


def test_without_noise_it_is_the_siren_init():
    model = siren_factory([1, 64, 64, 64, 1])(0)
    initialize(model, "winner", seed=0, target=_tone(64, 20), s0_max=0, b=0)
    for i, lin in enumerate(_layers(model)):
        n = lin.in_features
        bound = 1.0 / n if i == 0 else math.sqrt(6 / n) / 30
        w = lin.weight.detach().double()
        assert w.abs().max() <= bound * (1 + 1e-6)
        assert w.abs().max() > 0.9 * bound  # spans the interval
        assert lin.bias.detach().abs().max() <= 1 / math.sqrt(n) * (1 + 1e-6)


def test_noise_on_the_first_two_layers_only_with_the_mapped_scales():
    target = _tone(512, 192)  # centroid 0.75
    model = siren_factory([1, 256, 256, 256, 1])(0)
    initialize(model, "winner", seed=0, target=target)
    s0, s1 = noise_scales(0.75)
    lins = _layers(model)
    w0 = lins[0].weight.detach().double()
    w1 = lins[1].weight.detach().double()
    # Var = uniform part + noise part
    assert float(w0.std()) == pytest.approx(math.sqrt(1 / 3 + (s0 / 30) ** 2), rel=0.1)
    b1 = math.sqrt(6 / 256) / 30
    assert float(w1.std()) == pytest.approx(math.sqrt(b1**2 / 3 + (s1 / 30) ** 2), rel=0.05)
    for lin in lins[2:]:
        assert lin.weight.detach().abs().max() <= math.sqrt(6 / 256) / 30 * (1 + 1e-6)


def test_low_frequency_targets_get_little_noise():
    lo = noise_scales(spectral_centroid(_tone(4096, 1)))
    hi = noise_scales(spectral_centroid(_tone(4096, 1800)))
    assert lo[0] < 15 and lo[1] < 0.01
    assert hi[0] > 3000 and hi[1] > 2


def test_deterministic_and_seed_dependent():
    target = _tone(256, 90)

    def run(seed):
        m = siren_factory([1, 32, 32, 1])(0)
        initialize(m, "winner", seed=seed, target=target)
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))


def test_needs_target_and_bad_input_are_one_line_errors():
    model = siren_factory([1, 16, 1])(0)
    with pytest.raises(ConfigError, match="needs target"):
        initialize(model, "winner", seed=0)
    with pytest.raises(ConfigError, match="1-D target"):
        initialize(model, "winner", seed=0, target=np.ones((4, 4)))
    for bad in ({"omega0": 0}, {"s0_max": -1}, {"a": float("nan")}):
        with pytest.raises(ConfigError):
            get_initializer("winner", **bad)
