"""Parity: our minibatch CKA equals torch-cka's ``CKA.compare`` (0.21) on the same features
and batches. torch-cka hooks the named modules, flattens each output per example
(``feat.flatten(1)``), forms ``K = X Xᵀ`` with a zero diagonal and averages HSIC_u
(Song et al. 2012, Eq. 5) over the dataloader's batches (each weighted 1/num_batches)
before the ratio (Nguyen et al. 2021) — ours with ``pool="flattened"``,
``estimator="debiased"`` and the same batches. torch-cka computes in the default dtype
(float32) on uncentred Grams; ours forms centred Grams in the features' dtype and the HSICs
in float64. In float32 they agree to torch-cka's own rounding (its error against a float64
evaluation is ~2e-5 on the BERT case, ours ~1e-8); with float64 models and torch-cka run
under a float64 default dtype they agree to 1e-9. Its import (with matplotlib) takes ~3 s
of CPU, hence slow."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from weightlab.data.sentences import sentences
from weightlab.models.bert import SentenceEncoder, pack_inputs
from weightlab.models.minilm import tiny_bert, tiny_tokenizer
from weightlab.probes.cka import cka_matrix
from weightlab.probes.features import hidden_state_cka, hidden_states

pytestmark = pytest.mark.slow


def _torch_cka(model1, model2, layers1, layers2, loader, float64=False) -> torch.Tensor:
    torch_cka = pytest.importorskip("torch_cka")
    default = torch.get_default_dtype()
    try:
        if float64:  # torch-cka builds its ones vector and sums in the default dtype
            torch.set_default_dtype(torch.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = torch_cka.CKA(
                model1,
                model2,
                model1_name="a",
                model2_name="b",
                model1_layers=layers1,
                model2_layers=layers2,
            )
            ref.compare(loader)
    finally:
        torch.set_default_dtype(default)
    for m in (model1, model2):  # torch-cka leaves its hooks in place
        for mod in m.modules():
            mod._forward_hooks.clear()
    return ref.export()["CKA"].double()


def _close(ours, ref: torch.Tensor, tol: float = 1e-5) -> None:
    got = ours.tensor()
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=tol, rtol=0), (got - ref).abs().max()


def test_minibatch_cka_equals_torch_cka_on_an_mlp():
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4)
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    x = torch.randn(96, 10, generator=g)
    layers = ["0", "1", "2", "3", "4"]
    loader = DataLoader(TensorDataset(x), batch_size=16)
    ref = _torch_cka(net, net, layers, layers, loader)
    ours = hidden_state_cka(net, [(x[i : i + 16],) for i in range(0, 96, 16)], layers)
    assert ours.rows == tuple(layers) and ours.batches == 6
    _close(ours, ref)
    # the same from extracted features (one forward for all of them)
    feats = hidden_states(net, [x], layers).features
    _close(cka_matrix(feats, batch_size=16), ref)


def _bert(seed: int, vocab: int, layers: int) -> SentenceEncoder:
    """A tiny BERT whose encoder weights are N(0, 0.3²), so its layers differ (at BERT's
    0.02 init every hidden state is nearly the embedding and every CKA is ~1)."""
    bert = tiny_bert(seed, vocab_size=vocab, layers=layers)
    g = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for name, p in bert.named_parameters():
            if p.ndim == 2 and name.startswith("encoder"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return SentenceEncoder(bert)


def test_minibatch_cka_equals_torch_cka_on_bert_hidden_states():
    texts = sentences(64, seed=0)
    tok = tiny_tokenizer(texts)
    a, b = _bert(0, len(tok.vocab), 3), _bert(1, len(tok.vocab), 2)
    ids, mask = tok.encode(texts, max_length=12)
    packed = pack_inputs(ids, mask)
    la = ["embeddings", "encoder.layer.0", "encoder.layer.1", "encoder.layer.2"]
    lb = ["embeddings", "encoder.layer.0", "encoder.layer.1"]
    loader = DataLoader(TensorDataset(packed), batch_size=16)
    batches = [(packed[i : i + 16],) for i in range(0, 64, 16)]
    ours = hidden_state_cka(a, batches, la)
    assert min(min(r) for r in ours.values) < 0.6  # not a degenerate all-ones matrix
    _close(ours, _torch_cka(a, a, la, la, loader), tol=5e-5)
    feats = hidden_states(a, batches, la).features
    exact = cka_matrix({k: v.double() for k, v in feats.items()}, batch_size=16)
    _close(ours, exact.tensor(), tol=1e-6)
    two = hidden_state_cka(a, batches, la, other=b, other_layers=lb)
    _close(two, _torch_cka(a, b, la, lb, loader), tol=5e-5)
    # float64 throughout: equal to 1e-9
    a64, b64 = a.double(), b.double()
    ref64 = _torch_cka(a64, b64, la, lb, loader, float64=True)
    _close(hidden_state_cka(a64, batches, la, other=b64, other_layers=lb), ref64, tol=1e-9)
