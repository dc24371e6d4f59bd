"""Neural-collapse metrics [#73] on constructed simplex-ETF and orthogonal-frame features."""

import math

import numpy as np
import pytest
import torch

from weightlab.errors import ConfigError, DataError
from weightlab.probes.collapse import (
    classifier_inputs,
    collapse_metrics,
    collapse_probe,
    nc1,
    orthogonal_frame,
)


def _rotation(d, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


def _etf(k, d, seed=0):
    """Unit-norm simplex-ETF class means (K, d), rotated into R^d."""
    m = math.sqrt(k / (k - 1)) * (torch.eye(k, dtype=torch.float64) - 1.0 / k)
    m = torch.cat([m, torch.zeros(k, d - k, dtype=torch.float64)], 1)
    return m @ _rotation(d, seed)


def _pairs(means, v, sigma):
    """Two examples per class at mu_k +- sigma v: class means exact, Sigma_W = sigma^2 v v^T."""
    k = len(means)
    h = torch.cat([means + sigma * v, means - sigma * v])
    y = torch.cat([torch.arange(k), torch.arange(k)])
    return h, y


def test_etf_known_answers():
    k, d = 5, 8
    mu = _etf(k, d)
    v = mu[0] - mu[1]
    v = v / v.norm()  # inside the span of the centred means
    h, y = _pairs(mu, v, 0.3)
    r = collapse_metrics(h, y, weight=2.0 * mu, name="head")
    # Sigma_B = P/(K-1), Sigma_W = sigma^2 v v^T  =>  NC1 = sigma^2 (K-1)/K
    assert r.nc1 == pytest.approx(0.09 * (k - 1) / k, rel=1e-10)
    assert r.cos_mean == pytest.approx(-1 / (k - 1), abs=1e-12) and r.cos_std < 1e-12
    assert r.equinorm < 1e-12 and r.etf_distance < 1e-12
    assert r.nc3 < 1e-12 and r.nc4 == 1.0
    assert r.etf_cosine == pytest.approx(-0.25) and r.to_dict()["name"] == "head"
    # variability orthogonal to the means' span is invisible to Sigma_B^+: NC1 = 0
    h2, y2 = _pairs(mu, _rotation(d)[-1], 0.3)  # the rotated (K+1)-th axis: off the span
    assert nc1(h2, y2) == pytest.approx(0.0, abs=1e-10)


def test_nc1_matches_direct_formula_and_shift_invariance():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(60, 6, generator=g, dtype=torch.float64)
    y = torch.arange(60) % 4
    hn, yn = h.numpy(), y.numpy()
    mu = np.stack([hn[yn == c].mean(0) for c in range(4)])
    mg = hn.mean(0)
    sw = sum(np.outer(hn[i] - mu[yn[i]], hn[i] - mu[yn[i]]) for i in range(60)) / 60
    sb = sum(np.outer(mu[c] - mg, mu[c] - mg) for c in range(4)) / 4
    want = np.trace(sw @ np.linalg.pinv(sb)) / 4
    assert nc1(h, y) == pytest.approx(want, rel=1e-8)
    assert nc1(h + 5.0, y) == pytest.approx(want, rel=1e-6)
    assert nc1(h.float(), y) == pytest.approx(want, rel=1e-4)


def test_departures_from_collapse_are_measured():
    k, d = 4, 6
    mu = _etf(k, d)
    mu_bad = mu * torch.tensor([[1.0], [2.0], [1.0], [1.0]], dtype=torch.float64)
    h, y = _pairs(mu_bad, torch.zeros(d, dtype=torch.float64), 0.0)
    r = collapse_metrics(h, y, weight=torch.randn(k, d, dtype=torch.float64))
    assert r.equinorm > 0.1 and r.etf_distance > 0.05 and r.nc3 > 0.1
    assert r.cos_std > 0.05


def test_orthogonal_frame_known_answers():
    sizes = [2, 4, 6, 8]
    norms = torch.tensor([1.0, 1.5, 2.0, 3.0], dtype=torch.float64)
    mu = torch.diag(norms) @ _rotation(6)[:4]  # orthogonal rows, norms rising with size
    h = torch.cat([mu[c].expand(n, -1) for c, n in enumerate(sizes)])
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    r = orthogonal_frame(h, y, name="feat")
    assert r.abs_cos_mean < 1e-12 and r.frame_distance < 1e-12
    assert r.norm_size_spearman == pytest.approx(1.0)
    assert r.class_sizes == tuple(sizes) and r.norms == pytest.approx(norms.tolist())
    assert r.to_dict()["norms"] == pytest.approx(norms.tolist())
    # an ETF is not an orthogonal frame: |cos| = 1/(K-1)
    e = _etf(4, 6)
    r2 = orthogonal_frame(torch.cat([e, e]), torch.cat([torch.arange(4)] * 2))
    assert r2.abs_cos_mean == pytest.approx(1 / 3) and r2.frame_distance > 0.3
    assert r2.norm_size_spearman is None  # balanced: no size ordering


def test_probe_on_a_model_reads_the_classifier_input_and_changes_nothing():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(7, 3)
    )
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(30, 5), torch.arange(30) % 3
    r = collapse_probe(model, x, y, "3")
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    feats = torch.relu(model[0](x)).detach()
    assert torch.allclose(classifier_inputs(model, x, "3"), feats)
    direct = collapse_metrics(feats, y, model[3].weight, model[3].bias)
    assert r.nc1 == pytest.approx(direct.nc1) and r.nc4 == direct.nc4 and r.name == "3"
    with pytest.raises(ConfigError, match="its Linear layers are: 0, 3"):
        collapse_probe(model, x, y, "head")


def test_bad_input():
    h, y = torch.randn(10, 3), torch.arange(10) % 2
    with pytest.raises(DataError, match="no examples"):
        nc1(h, y, num_classes=3)
    with pytest.raises(DataError, match="flatten"):
        nc1(h.view(10, 3, 1), y)
    with pytest.raises(DataError, match="class indices"):
        nc1(h, y.float())
    with pytest.raises(DataError, match=r"classifier weight must be \(2, 3\)"):
        collapse_metrics(h, y, weight=torch.randn(3, 3))
