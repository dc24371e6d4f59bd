"""Signal-propagation diagnostics: effective rank known answers, K/G measurement against a
hand-written autograd reference, the mean field beside it, the ReLU band at C_W = 2 over
many seeds, Jacobian singular values, the batched population path, the plot and errors."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.init.registry import initialize
from weightlab.init.signal import (
    Setting,
    effective_rank,
    jacobian_singular_values,
    loglog_slope,
    plot_signal,
    propagate_population,
    signal_propagation,
)
from weightlab.models.mlp import MLP

pytestmark = pytest.mark.usefixtures("one_thread")


def test_effective_rank_known_answers():
    assert effective_rank(torch.eye(7)) == pytest.approx(7.0)
    assert effective_rank(torch.outer(torch.arange(1.0, 5), torch.ones(3))) == pytest.approx(1.0)
    assert effective_rank(torch.zeros(3, 4)) == 0.0
    p = torch.tensor([0.75, 0.25])  # singular values 3 and 1
    h = -(p * p.log()).sum()
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(float(h.exp()))
    conv = torch.zeros(4, 2, 3)
    conv[:, 0, 1] = torch.tensor([1.0, 0, 0, 0])
    assert effective_rank(conv) == pytest.approx(1.0)


def test_measured_k_and_g_equal_a_hand_written_reference_and_the_mean_field_is_close():
    torch.manual_seed(0)  # not read by the code under test; the MLP is re-initialized
    m = MLP([30, 800, 800, 800, 800], "tanh")
    initialize(m, "critical", seed=1, C_W=1.5, C_b=0.1)
    x = torch.randn(6, 30, generator=torch.Generator().manual_seed(2))
    rep = signal_propagation(m, x, generator=torch.Generator().manual_seed(3), jacobian_inputs=0)
    # reference: forward with retained pre-activations, the same cotangent
    zs, h = [], x
    for i, lin in enumerate(m.layers):
        z = lin(h)
        z.retain_grad()
        zs.append(z)
        h = torch.tanh(z) if i < 3 else z
    u = torch.randn(zs[-1].shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    (zs[-1] * u.float()).sum().backward()
    for i, z in enumerate(zs):
        assert rep.K[i] == pytest.approx(float((z.detach().double() ** 2).mean()), rel=1e-6)
        assert rep.G[i] == pytest.approx(float((z.grad.double() ** 2).mean()), rel=1e-6)
    # the mean field (from the measured scales) is within finite-width error at n = 800
    for k, kmf in zip(rep.K, rep.K_mf, strict=True):
        assert k == pytest.approx(kmf, rel=0.1)
    for g, gmf in zip(rep.G, rep.G_mf, strict=True):
        assert g == pytest.approx(gmf, rel=0.15)
    assert rep.layers[0].C_W == pytest.approx(1.5, rel=0.05)
    assert rep.layers[-1].chi_perp is None and rep.layers[0].chi_perp > 0
    assert all(100 < x.effective_rank <= 800 for x in rep.layers[1:])


def _relu_band_inputs(n0: int = 64) -> torch.Tensor:
    x = torch.randn(2, n0, generator=torch.Generator().manual_seed(0))
    return x / x.pow(2).mean(1, keepdim=True).sqrt() / math.sqrt(2)  # K_1 = 2|x|²/n0 = 1


def test_relu_at_criticality_keeps_variance_in_the_band_over_50_layers_on_many_seeds():
    """24 nets of depth 50 at C_W = 2 (width 256, batched): the seed-mean K_50/K_1 and
    G_1/G_50 lie in [0.5, 2], and so does the median net's."""
    nets, width, depth = 24, 256, 50
    x = _relu_band_inputs().unsqueeze(0)

    def draw(layer):
        z = torch.empty(nets, width, 64 if layer == 1 else width)
        for j in range(nets):
            z[j].normal_(generator=torch.Generator().manual_seed(1000 * j + layer))
        return z, None

    cot = torch.randn(nets, 1, 2, width, generator=torch.Generator().manual_seed(1))
    sig = propagate_population(draw, x, [Setting("relu", 2.0, 0.0)], depth, cot)
    k = sig.K[:, 0, -1] / sig.K[:, 0, 0]
    g = sig.G[:, 0, 0] / sig.G[:, 0, -1]
    assert 0.5 <= float(k.mean()) <= 2 and 0.5 <= float(g.mean()) <= 2, (k, g)
    assert 0.5 <= float(k.median()) <= 2 and 0.5 <= float(g.median()) <= 2


@pytest.mark.slow
def test_relu_band_through_the_critical_scheme_at_width_512():
    """The same band for MLPs built and initialized by the ``critical`` scheme (12 seeds,
    width 512, depth 50), measured by :func:`signal_propagation`."""
    x = _relu_band_inputs()
    ks, gs = [], []
    for seed in range(12):
        m = MLP([64] + [512] * 50, "relu")
        initialize(m, "critical", seed=seed)
        rep = signal_propagation(
            m, x, generator=torch.Generator().manual_seed(seed), jacobian_inputs=0, ranks=False
        )
        ks.append(rep.K[-1] / rep.K[0])
        gs.append(rep.G[0] / rep.G[-1])
    assert 0.5 <= sum(ks) / len(ks) <= 2 and 0.5 <= sum(gs) / len(gs) <= 2, (ks, gs)
    assert 0.5 <= sorted(ks)[len(ks) // 2] <= 2


def test_jacobian_singular_values_match_autograd():
    m = MLP([5, 7, 3], "gelu")
    initialize(m, "critical", seed=0)
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    s = jacobian_singular_values(m, x)
    assert s.shape == (3, 3)
    for i in range(3):
        j = torch.autograd.functional.jacobian(lambda v: m(v.unsqueeze(0)).squeeze(0), x[i])
        assert torch.allclose(s[i], torch.linalg.svdvals(j), atol=1e-5)
    rep = signal_propagation(m, x, jacobian_inputs=2)
    assert len(rep.jacobian_singular_values) == 2
    assert rep.jacobian_singular_values[0] == pytest.approx(s[0].tolist(), abs=1e-5)


def test_population_path_equals_per_net_autograd():
    n_nets, b, n0, n, depth = 3, 2, 5, 9, 4
    sets = [Setting("relu", 2.0, 0.0), Setting("tanh", 1.2, 0.3), Setting("sin", 0.8, 0.0)]
    draws = {
        layer: (
            torch.randn(
                n_nets, n, n0 if layer == 1 else n, generator=torch.Generator().manual_seed(layer)
            ),
            torch.randn(n_nets, n, generator=torch.Generator().manual_seed(100 + layer)),
        )
        for layer in range(1, depth + 1)
    }
    calls = []

    def draw(layer):
        calls.append(layer)
        return draws[layer]

    x = torch.randn(len(sets), b, n0, generator=torch.Generator().manual_seed(7))
    cot = torch.randn(n_nets, len(sets), b, n, generator=torch.Generator().manual_seed(8))
    sig = propagate_population(draw, x, sets, depth, cot)
    assert calls == [1, 2, 3, 4, 4, 3, 2]  # forward, then backward in reverse
    acts = {"relu": torch.relu, "tanh": torch.tanh, "sin": torch.sin}
    for j in range(n_nets):
        for s, st in enumerate(sets):
            h, zs = x[s].double(), []
            for layer in range(1, depth + 1):
                z_d, bias = draws[layer]
                w = z_d[j].double() * math.sqrt(st.C_W / z_d.shape[2])
                z = (h @ w.T + bias[j].double() * math.sqrt(st.C_b)).requires_grad_(True)
                z.retain_grad()
                zs.append(z)
                h = acts[st.activation](z)
            (zs[-1] * cot[j, s].double()).sum().backward()
            for li, z in enumerate(zs):
                k = float((z.detach() ** 2).mean())
                g = float((z.grad**2).mean())
                assert float(sig.K[j, s, li]) == pytest.approx(k, rel=1e-4)
                assert float(sig.G[j, s, li]) == pytest.approx(g, rel=1e-4)


def test_loglog_slope_plot_and_errors(tmp_path):
    vals = [1 / i for i in range(1, 51)]
    assert loglog_slope(vals, 10, 50) == pytest.approx(-1.0)
    assert math.isnan(loglog_slope([1.0, -1.0, 2.0], 1, 3))
    m = MLP([8, 16, 16, 4], "sin")
    initialize(m, "critical", seed=0)
    rep = signal_propagation(m, torch.randn(5, 8, generator=torch.Generator().manual_seed(0)))
    p = plot_signal(rep, tmp_path / "sig.png")
    assert p.read_bytes().startswith(b"\x89PNG")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["sig.png"]  # atomic: no temp left
    with pytest.raises(ConfigError, match="weightlab MLP") as e:
        signal_propagation(torch.nn.Sequential(torch.nn.Linear(3, 3)), torch.randn(2, 3))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError):
        propagate_population(lambda layer: None, torch.zeros(0, 1, 1), [], 3, torch.zeros(1))
