"""Fourier spectrum and concentration of first-layer weights on one-hot Z_p (row [#27])."""

import math

import numpy as np
import pytest
import torch

from weightlab.dynamics.fourier import (
    concentration,
    concentration_summary,
    fourier_probe,
    frequencies,
    neuron_concentration,
    neuron_spectrum,
    power_spectrum,
)
from weightlab.errors import ConfigError
from weightlab.models import build
from weightlab.models.mlp import MLP
from weightlab.seeding import generator
from weightlab.train.probes import ProbeContext, run_probes


def _numpy_power(x: np.ndarray) -> np.ndarray:
    """One-sided power at k = 1..p//2 from numpy's full FFT: |X_k|^2 + |X_{p-k}|^2 (once
    at the Nyquist bin)."""
    p = x.shape[-1]
    full = np.abs(np.fft.fft(x, axis=-1)) ** 2
    out = []
    for k in range(1, p // 2 + 1):
        out.append(full[..., k] if 2 * k == p else full[..., k] + full[..., p - k])
    return np.stack(out, -1)


@pytest.mark.parametrize("p", [7, 8, 59, 60])
def test_power_matches_numpy_fft(p):
    x = torch.randn(5, 3, p, generator=generator(p), dtype=torch.float64)
    ours = power_spectrum(x).numpy()
    np.testing.assert_allclose(ours, _numpy_power(x.numpy()), rtol=1e-12, atol=1e-10)
    assert frequencies(p).tolist() == list(range(1, p // 2 + 1))


@pytest.mark.parametrize("p,k", [(59, 1), (59, 7), (59, 29), (12, 6), (12, 5)])
def test_pure_cosine_is_fully_concentrated_at_its_frequency(p, k):
    a = torch.arange(p, dtype=torch.float64)
    x = 3.0 * torch.cos(2 * math.pi * k * a / p + 0.4) + 1.7  # a DC offset is ignored
    if 2 * k == p:  # at the Nyquist frequency the phase must not null the cosine
        x = 3.0 * torch.cos(math.pi * a) + 1.7
    conc, freq = concentration(power_spectrum(x))
    assert float(conc) == pytest.approx(1.0, abs=1e-12)
    assert int(freq) == k
    # Parseval: the one-sided powers sum to p * ||x - mean||^2
    total = power_spectrum(x).sum()
    assert float(total) == pytest.approx(p * float((x - x.mean()).square().sum()), rel=1e-12)


def test_two_equal_cosines_give_one_half():
    p = 31
    a = torch.arange(p, dtype=torch.float64)
    x = torch.cos(2 * math.pi * 3 * a / p) + torch.cos(2 * math.pi * 5 * a / p + 1.0)
    conc, _ = concentration(power_spectrum(x))
    assert float(conc) == pytest.approx(0.5, abs=1e-12)


def test_random_gaussian_weights_at_p59_average_the_dirichlet_max():
    # the 29 powers of white noise are i.i.d. exponential, so the concentration is the
    # largest of 29 uniform spacings: mean H_29 / 29 = 0.1376
    p, n = 59, 4000
    expected = sum(1 / i for i in range(1, 30)) / 29
    w = torch.randn(n, 2 * p, generator=generator(0), dtype=torch.float64)
    conc, freq = neuron_concentration(w, p)
    assert conc.shape == (n, 2) and freq.shape == (n, 2)
    assert float(conc.mean()) == pytest.approx(expected, abs=0.002)
    assert 0.13 < expected < 0.14
    assert int(freq.min()) >= 1 and int(freq.max()) <= 29


def test_operands_are_split_a_then_b():
    p = 11
    a = torch.arange(p, dtype=torch.float64)
    w = torch.cat([torch.cos(2 * math.pi * 2 * a / p), torch.cos(2 * math.pi * 4 * a / p)])
    conc, freq = neuron_concentration(w[None], p)
    assert freq.tolist() == [[2, 4]]
    assert conc[0].tolist() == pytest.approx([1.0, 1.0])


def test_vectorized_over_members_equals_one_at_a_time():
    p = 13
    w = torch.randn(4, 3, 6, 2 * p, generator=generator(1))
    spec = neuron_spectrum(w, p, member_dims=2)
    assert spec.shape == (4, 3, 6, 2, p // 2)
    conc, _ = concentration(spec)
    stats = concentration_summary(conc, member_dims=2)
    for i in range(4):
        for j in range(3):
            one, _ = neuron_concentration(w[i, j], p)
            assert torch.equal(spec[i, j], neuron_spectrum(w[i, j], p))
            assert float(stats["median"][i, j]) == float(one.flatten().median())
            assert float(stats["mean"][i, j]) == pytest.approx(float(one.mean()))
            assert float(stats["max"][i, j]) == float(one.max())
            assert float(stats["min"][i, j]) == float(one.min())


def test_constant_vector_has_no_concentration_and_is_left_out_of_summaries():
    p = 7
    w = torch.zeros(2, 2 * p, dtype=torch.float64)
    w[1, :p] = torch.cos(2 * math.pi * torch.arange(p) / p)
    conc, freq = neuron_concentration(w, p)
    assert math.isnan(conc[0, 0]) and int(freq[0, 0]) == 0
    s = concentration_summary(conc)
    assert float(s["max"]) == pytest.approx(1.0) and float(s["min"]) == pytest.approx(1.0)


def test_bad_shapes_are_one_line_errors():
    with pytest.raises(ConfigError, match="2p = 14"):
        neuron_spectrum(torch.zeros(3, 13), 7)
    with pytest.raises(ConfigError, match="p must be an integer >= 3"):
        frequencies(2)
    with pytest.raises(ConfigError, match="expected p = 9"):
        power_spectrum(torch.zeros(8), 9)


def test_probe_runs_on_a_model_and_names_a_missing_parameter():
    p = 11
    model = build(MLP, [2 * p, 16, p], seed=0)
    probe = fourier_probe(5, p)
    ctx = ProbeContext(step=0, data=None, loss_fn=None, init={})
    row = run_probes([probe], model, ctx)
    conc, freq = neuron_concentration(model.layers[0].weight.detach(), p)
    assert row["fourier/median"] == pytest.approx(float(conc.flatten().median()))
    assert row["fourier/peak_share"] == pytest.approx(
        float((freq[:, 0] == freq[:, 1]).double().mean())
    )
    with pytest.raises(ConfigError, match="no parameter 'nope'"):
        run_probes([fourier_probe(5, p, param="nope")], model, ctx)
