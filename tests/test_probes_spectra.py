"""Weight spectra: which matrices (Linear, Conv, Embedding, RNN per gate or stacked), ESD
eigenvalues against prescribed singular values, stable rank and σ_max by hand, refusal,
selection errors, and that the probe never changes the model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.models.minilm import tiny_bert
from weightlab.probes.powerlaw import fit_power_law
from weightlab.probes.spectra import esd, layer_matrices, spectra


def close(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> None:
    """``torch.allclose`` with a message (``torch.testing.assert_close`` imports
    torch.distributed on first use, seconds on a loaded machine)."""
    assert a.shape == b.shape and torch.allclose(a, b, rtol=rtol, atol=atol), (a, b)


def orthogonal(n: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def with_singular_values(rows: int, cols: int, s: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = min(rows, cols)
    u, v = orthogonal(rows, g)[:, :k], orthogonal(cols, g)[:, :k]
    return u @ torch.diag(s) @ v.T


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.emb = nn.Embedding(50, 24)
            self.conv = nn.Conv2d(16, 12, 3)
            self.conv1 = nn.Conv1d(10, 9, 5)
            self.lstm = nn.LSTM(10, 12, num_layers=2, bidirectional=True)
            self.gru = nn.GRU(10, 12)
            self.head = nn.Linear(24, 40)
            self.tiny = nn.Linear(40, 5)
        for p in self.parameters():
            p.data.copy_(torch.randn(p.shape, generator=g))


def test_prescribed_singular_values():
    s = torch.linspace(0.5, 6.0, 30, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(30, 50, bias=False), nn.Linear(50, 30, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(with_singular_values(50, 30, s, 1))
        model[1].weight.copy_(with_singular_values(30, 50, s.flip(0), 2))
    ev = esd(model)
    assert list(ev) == ["0", "1"]
    want = torch.sort(s.to(torch.float32).double() ** 2).values
    for e in ev.values():
        assert e.dtype == torch.float64 and e.numel() == 30
        close(e, want, rtol=1e-5, atol=1e-5)
    res = spectra(model)
    layer = res["0"]
    assert layer.sigma_max == pytest.approx(6.0, rel=1e-6)
    assert layer.stable_rank == pytest.approx(float((s**2).sum() / 36.0), rel=1e-5)
    assert layer.alpha == pytest.approx(fit_power_law(ev["0"]).alpha, rel=1e-9)
    assert layer.shape == (50, 30) and layer.kind == "linear" and layer.refused is None


def test_stable_rank_by_hand_and_refusal():
    model = nn.Sequential(nn.Linear(2, 3, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0], [0.0, 0.0]]))
    (layer,) = spectra(model).layers
    assert layer.stable_rank == pytest.approx(25.0 / 16.0)  # (9 + 16) / 4²
    assert layer.sigma_max == pytest.approx(4.0)
    assert layer.alpha is None and layer.alpha_clipped is None
    assert layer.refused == "spectrum too small to fit: 2 eigenvalues < min_evals=8"


def test_matrices_of_every_kind():
    mats = layer_matrices(Mixed())
    assert mats["emb"].shape == (50, 24) and mats["emb"].kind == "embedding"
    assert mats["conv"].n_matrices == 9 and mats["conv"].shape == (12, 16)
    assert mats["conv1"].n_matrices == 5 and mats["conv1"].shape == (9, 10)
    gates = [n for n in mats if n.startswith("lstm.weight_ih_l1_reverse.")]
    assert gates == [f"lstm.weight_ih_l1_reverse.{g}" for g in "ifgo"]
    assert mats["lstm.weight_ih_l1_reverse.f"].shape == (12, 24)  # bidirectional input
    assert [n for n in mats if n.startswith("gru.weight_hh_l0")] == [
        f"gru.weight_hh_l0.{g}" for g in "rzn"
    ]
    stacked = layer_matrices(Mixed(), lstm="stacked")
    assert stacked["lstm.weight_hh_l0"].shape == (48, 12)
    assert stacked["gru.weight_ih_l0"].shape == (36, 10)
    assert "lstm.weight_hh_l0.i" not in stacked


def test_conv_esd_pools_the_kernel_slices():
    model = Mixed()
    ev = esd(model, select=["conv", "conv1"])
    w = model.conv.weight.detach().double()
    want = torch.cat([torch.linalg.svdvals(w[:, :, i, j]) ** 2 for i in range(3) for j in range(3)])
    close(ev["conv"], torch.sort(want).values, rtol=1e-9, atol=1e-9)
    w1 = model.conv1.weight.detach().double()
    want1 = torch.cat([torch.linalg.svdvals(w1[:, :, t]) ** 2 for t in range(5)])
    close(ev["conv1"], torch.sort(want1).values, rtol=1e-9, atol=1e-9)
    layer = spectra(model, select="conv")["conv"]
    assert layer.n_evals == 108
    assert layer.stable_rank == pytest.approx(float((w**2).sum() / want.max()), rel=1e-9)


def test_lstm_per_gate_and_stacked():
    model = Mixed()
    per_gate = esd(model, select="lstm.weight_hh_l0.*")
    stacked = esd(model, lstm="stacked", select="lstm.weight_hh_l0")
    w = model.lstm.weight_hh_l0.detach().double()
    for gate, chunk in zip("ifgo", w.chunk(4), strict=True):
        want = torch.linalg.svdvals(chunk) ** 2
        close(per_gate[f"lstm.weight_hh_l0.{gate}"], torch.sort(want).values, rtol=1e-9, atol=1e-9)
    # stacked: eigenvalues of Σ_g W_gᵀW_g, so the traces add up
    total = sum(float(e.sum()) for e in per_gate.values())
    assert float(stacked["lstm.weight_hh_l0"].sum()) == pytest.approx(total, rel=1e-10)
    close(
        stacked["lstm.weight_hh_l0"],
        torch.sort(torch.linalg.svdvals(w) ** 2).values,
        rtol=1e-9,
        atol=1e-9,
    )


def test_spectra_of_a_mixed_model_never_change_it():
    model = Mixed().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = spectra(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training
    assert res["tiny"].refused is not None and res["head"].refused is None
    fitted = res.fitted
    assert all(x.alpha > 1 and x.alpha_clipped <= x.alpha for x in fitted)
    assert all(x.xmin > 0 and 0 <= x.ks_distance <= 1 for x in fitted)
    json.dumps(res.to_dict())  # run-file ready
    assert res.to_dict()["settings"]["fingers"] == "clip_xmax"


def test_tiny_bert_layers_and_refusals():
    model = tiny_bert(0, hidden=32, intermediate=64, layers=2)
    res = spectra(model, fingers=None)
    names = res.names
    assert names[0] == "embeddings.word_embeddings"
    assert "encoder.layer.1.attention.self.query" in names and "pooler.dense" in names
    refused = [x.name for x in res.layers if x.refused]
    assert refused == ["embeddings.token_type_embeddings"]  # 2 × 32
    assert all(x.alpha_clipped is None for x in res.layers)
    assert res["encoder.layer.0.intermediate.dense"].shape == (64, 32)


def test_selection_and_bad_input():
    model = Mixed()
    quiet, shown = esd(model, progress=False), esd(model, progress=True)
    assert all(torch.equal(quiet[k], shown[k]) for k in quiet)
    assert list(layer_matrices(model, select="lstm")) == [
        n for n in layer_matrices(model) if n.startswith("lstm.")
    ]
    with pytest.raises(ConfigError, match="no weight layer named 'nope'; the model has: emb, conv"):
        spectra(model, select=["head", "nope"])
    with pytest.raises(ConfigError, match="lstm mode"):
        esd(model, lstm="gates")
    with pytest.raises(ConfigError, match="finger guard"):
        spectra(model, fingers="xmin_peak")
    with pytest.raises(ConfigError, match="no layer 'x'"):
        spectra(model, select="head")["x"]
