"""Pruning-at-init scores (SNIP, GraSP, SynFlow), SynFlow's iterative schedule, the score
lookup and layer-collapse reports, checked against hand-computed formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from weightlab.core import apply_masks, take_snapshot
from weightlab.errors import ConfigError
from weightlab.models import MLP
from weightlab.seeding import generator
from weightlab.sparsity import erk_densities, keep_counts
from weightlab.sparsity.collapse import layer_collapse
from weightlab.sparsity.saliency import (
    allocate,
    grasp_scores,
    pai_scores,
    prune_at_init,
    snip_scores,
    synflow_prune,
    synflow_scores,
)


def _toy(bias: bool = True, seed: int = 0) -> nn.Sequential:
    g = generator(seed)
    model = nn.Sequential(nn.Linear(3, 4, bias=bias), nn.ReLU(), nn.Linear(4, 2, bias=bias))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model.double()


def _batch(n: int = 5, d: int = 3, k: int = 2, seed: int = 1):
    g = generator(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    return x, y


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_snip_matches_hand_gradient_of_two_layer_relu_net():
    model = _toy()
    x, y = _batch()
    w1, b1 = model[0].weight, model[0].bias
    w2 = model[2].weight
    z = x @ w1.T + b1
    h = z.clamp_min(0)
    logits = h @ w2.T + model[2].bias
    # d mean-CE / d logits = (softmax - onehot) / n
    G = (torch.softmax(logits, 1) - F.one_hot(y, 2).double()) / len(y)
    dw2 = G.T @ h
    dz = (G @ w2) * (z > 0).double()
    dw1 = dz.T @ x
    scores = snip_scores(model, (x, y))
    assert list(scores) == ["0.weight", "2.weight"]
    torch.testing.assert_close(scores["0.weight"], (w1 * dw1).abs().detach())
    torch.testing.assert_close(scores["2.weight"], (w2 * dw2).abs().detach())


def test_grasp_matches_hand_hessian_gradient_product_for_least_squares():
    # f(x) = W x, L = 1/(2n) ||W X - Y||²: g = (W X - Y) Xᵀ / n, H g = g (X Xᵀ / n)
    g0 = generator(3)
    model = nn.Linear(3, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, 3, generator=g0, dtype=torch.float64))
    x = torch.randn(6, 3, generator=g0, dtype=torch.float64)
    y = torch.randn(6, 2, generator=g0, dtype=torch.float64)

    def loss(m, batch):
        xb, yb = batch
        return 0.5 * ((m(xb) - yb) ** 2).sum(1).mean()

    w = model.weight.detach()
    grad = (x @ w.T - y).T @ x / len(x)
    hg = grad @ (x.T @ x / len(x))
    scores = grasp_scores(model, (x, y), loss=loss)
    torch.testing.assert_close(scores["weight"], w * hg)  # keep-score = -S(-θ) = θ⊙Hg


def test_grasp_matches_finite_difference_hessian_on_two_layer_net():
    model = _toy(bias=True, seed=4)
    batch = _batch(seed=5)
    names = ["0.weight", "2.weight"]

    def grads_at(ws):
        params = dict(model.named_parameters())
        params.update({n: w for n, w in zip(names, ws, strict=True)})
        x, y = batch
        loss = F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)
        return torch.autograd.grad(loss, ws)

    ws = [model.get_parameter(n).detach().clone().requires_grad_(True) for n in names]
    g = [t.detach() for t in grads_at(ws)]
    eps = 1e-6
    plus = grads_at(
        [(w + eps * gi).detach().requires_grad_(True) for w, gi in zip(ws, g, strict=True)]
    )
    minus = grads_at(
        [(w - eps * gi).detach().requires_grad_(True) for w, gi in zip(ws, g, strict=True)]
    )
    scores = grasp_scores(model, batch)
    for n, w, p, m in zip(names, ws, plus, minus, strict=True):
        hg = (p - m) / (2 * eps)
        torch.testing.assert_close(scores[n], w.detach() * hg, rtol=1e-5, atol=1e-8)


def test_synflow_equals_path_sums_of_absolute_weights_on_linear_net():
    g = generator(7)
    model = nn.Sequential(
        nn.Linear(3, 4, bias=False), nn.Linear(4, 5, bias=False), nn.Linear(5, 2, bias=False)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    a1, a2, a3 = (model[i].weight.detach().double().abs() for i in range(3))
    scores = synflow_scores(model, torch.zeros(8, 3))
    # score of W_l[i, j] = |W_l[i, j]| · (paths into j from the all-ones input) ·
    # (paths from i to the summed output), each path weighted by the product of |W|
    into = [torch.ones(3), a1 @ torch.ones(3).double(), a2 @ a1 @ torch.ones(3).double()]
    out = [torch.ones(2).double() @ a3 @ a2, torch.ones(2).double() @ a3, torch.ones(2).double()]
    for i, a in enumerate((a1, a2, a3)):
        expected = a * out[i][:, None] * into[i].double()[None, :]
        torch.testing.assert_close(scores[f"{i}.weight"], expected)
    # brute force: sum over all input->output paths through each weight of Π|W|
    brute = torch.zeros(4, 3, dtype=torch.float64)
    for i in range(4):
        for j in range(3):
            for k in range(5):
                for o in range(2):
                    brute[i, j] += a1[i, j] * a2[k, i] * a3[o, k]
    torch.testing.assert_close(scores["0.weight"], brute)
    assert scores["0.weight"].dtype == torch.float64


def test_synflow_scorer_reuses_its_workspace_and_follows_the_weights():
    """Repeated calls equal one-shot synflow_scores, keep one workspace, read weights the
    model has since changed, apply masks, and never write the model (float64 included)."""
    from weightlab.sparsity.saliency import SynFlowScorer

    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).to(dtype)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        scorer = SynFlowScorer(model, torch.zeros(5, 3))
        first = scorer()
        space = {k: v.data_ptr() for k, v in scorer.workspace.items()}
        again = scorer()
        assert {k: v.data_ptr() for k, v in scorer.workspace.items()} == space
        ref = synflow_scores(model, torch.zeros(5, 3))
        for n in ref:
            assert torch.equal(first[n], ref[n]) and torch.equal(again[n], ref[n])
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        with torch.no_grad():
            model[0].weight.mul_(-2.0)  # signs do not matter, the scale does
        changed = scorer()
        torch.testing.assert_close(changed["0.weight"], 2 * ref["0.weight"])
        mask = {"0.weight": torch.ones(4, 3, dtype=torch.bool)}
        mask["0.weight"][0] = False
        masked = scorer(mask)
        assert torch.all(masked["0.weight"][0] == 0) and torch.all(masked["0.weight"][1:] > 0)


def test_synflow_uses_eval_mode_batchnorm_and_abs_of_buffers():
    g = generator(9)
    model = nn.Sequential(nn.Linear(2, 3, bias=False), nn.BatchNorm1d(3), nn.Linear(3, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        model[1].running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        model[1].running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    model.train()
    before = _state(model)
    s = synflow_scores(model, torch.zeros(4, 2))
    bn = model[1]
    w1 = model[0].weight.detach().double().abs()
    gamma = bn.weight.detach().double().abs()
    var = bn.running_var.double().abs()
    w3 = model[2].weight.detach().double().abs()
    # BN(z) = (z - |μ|) / sqrt(|σ²| + eps) · |γ| + |β|: d out / d z_i = |w3_i| |γ_i| / sqrt(...)
    scale = w3[0] * gamma / torch.sqrt(var + bn.eps)
    torch.testing.assert_close(s["0.weight"], w1 * scale[:, None])
    assert model.training and _same(before, _state(model))


def test_scores_leave_model_weights_grads_buffers_and_global_rng_unchanged():
    model = nn.Sequential(
        nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 2)
    ).double()
    x, y = _batch(n=8)
    model(x).sum().backward()  # existing grads must survive
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    before = _state(model)
    rng = torch.get_rng_state()
    out = [
        snip_scores(model, (x, y)),
        grasp_scores(model, (x, y)),
        synflow_scores(model, x),
    ]
    assert torch.equal(rng, torch.get_rng_state())
    assert _same(before, _state(model)) and model.training
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n])
    for s in out:
        assert all(not t.requires_grad for t in s.values())
    # dropout draws from a fixed forked RNG: scores repeat exactly
    again = snip_scores(model, (x, y))
    assert all(torch.equal(again[k], out[0][k]) for k in again)


def test_scores_read_masked_effective_weights():
    model = MLP([3, 4, 2]).double()
    mask = torch.ones(4, 3, dtype=torch.bool)
    mask[0] = False
    apply_masks(model, {"layers.0.weight": mask})
    snap = take_snapshot(model)
    x, y = _batch()
    for s in (snip_scores(model, (x, y)), grasp_scores(model, (x, y)), synflow_scores(model, x)):
        assert torch.all(s["layers.0.weight"][0] == 0)
        assert s["layers.0.weight"][1:].abs().sum() > 0
    after = take_snapshot(model)
    assert all(torch.equal(snap[k], after[k]) for k in snap)


# -- allocation, SynFlow's schedule, lookup ------------------------------------------


def _lottery(seed: int):
    from weightlab.models import model_factory

    return model_factory(MLP, [40, 300, 100, 10], init="glorot_normal")(seed)


def test_synflow_prune_keeps_exact_density_nested_rounds_and_leaves_model_alone():
    model = _lottery(0)
    before = _state(model)
    masks = synflow_prune(model, torch.zeros(2, 40), 0.01, rounds=10)
    assert _same(before, _state(model))
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.01 * total)
    assert all(m.dtype == torch.bool for m in masks.values())
    # one round is plain one-shot SynFlow + global top-k
    one = synflow_prune(model, torch.zeros(2, 40), 0.01, rounds=1)
    ref = allocate(synflow_scores(model, torch.zeros(1, 40)), 0.01, "global")
    assert all(torch.equal(one[k], ref[k]) for k in ref)
    # layer-wise and ERK: exact per-layer counts
    lw = synflow_prune(model, torch.zeros(2, 40), 0.1, rounds=5, allocation="layerwise")
    assert [int(m.sum()) for m in lw.values()] == [1200, 3000, 100]
    erk = synflow_prune(model, torch.zeros(2, 40), 0.1, rounds=5, allocation="erk")
    shapes = {n: m.shape for n, m in erk.items()}
    want = keep_counts(shapes, erk_densities(shapes, 0.1))
    assert {n: int(m.sum()) for n, m in erk.items()} == want


def test_synflow_iterative_avoids_collapse_where_one_shot_global_scores_collapse():
    """Tanaka et al. 2020, Sec. 6: iterative SynFlow keeps a path at extreme sparsity. On
    the lottery MLP at 0.1% (43 of 43,000 weights), measured for seeds 0-2 with a batch
    of 256 MNIST-1D examples: global magnitude collapses in all three, global SNIP in
    seeds 0 and 2, GraSP in all three, SynFlow (100 rounds) in none. Checked here on seed
    0 (magnitude and SynFlow are data-free)."""
    batch_x = torch.randn(64, 40, generator=generator(11))
    batch = (batch_x, torch.randint(0, 10, (64,), generator=generator(12)))
    for seed in (0,):
        model = _lottery(seed)
        syn = prune_at_init("synflow", model, batch, 0.001)
        report = layer_collapse(model, syn)
        assert not report.collapsed and report.path is True
        assert all(v > 0 for v in report.effective.values())
        mag = layer_collapse(model, prune_at_init("magnitude", model, batch, 0.001))
        assert mag.collapsed and mag.path is False


def test_pai_scores_lookup_and_errors():
    model = _lottery(1)
    x = torch.randn(8, 40, generator=generator(0))
    batch = (x, torch.randint(0, 10, (8,), generator=generator(1)))
    assert torch.equal(
        pai_scores("magnitude", model, batch)["layers.0.weight"], model.layers[0].weight.abs()
    )
    torch.testing.assert_close(
        pai_scores("snip", model, batch)["layers.1.weight"],
        snip_scores(model, batch)["layers.1.weight"],
    )
    r1 = pai_scores("random", model, batch, generator=generator(5))
    r2 = pai_scores("random", model, batch, generator=generator(5))
    assert all(torch.equal(r1[k], r2[k]) for k in r1)
    assert list(pai_scores("synflow", model, batch)) == list(r1)
    for bad, match in (
        (lambda: pai_scores("snipp", model, batch), "unknown score 'snipp'"),
        (lambda: pai_scores("random", model, batch), "generator"),
        (lambda: prune_at_init("snip", model, batch, 0.0), "density"),
        (lambda: prune_at_init("snip", model, batch, 0.5, allocation="local"), "allocation"),
        (lambda: synflow_prune(model, x, 0.5, rounds=0), "rounds"),
    ):
        with pytest.raises(ConfigError, match=match) as e:
            bad()
        assert "\n" not in str(e.value)


# -- layer collapse ----------------------------------------------------------------


def test_layer_collapse_on_chain_names_empty_and_cut_layers():
    shapes = {"a": torch.Size([3, 2]), "b": torch.Size([2, 3]), "c": torch.Size([1, 2])}
    m = {n: torch.zeros(s, dtype=torch.bool) for n, s in shapes.items()}
    m["a"][0, 1] = True  # input 1 -> hidden 0
    m["b"][1, 0] = True  # hidden 0 -> hidden' 1
    m["c"][0, 1] = True  # hidden' 1 -> output
    ok = layer_collapse(shapes, m)
    assert ok.chain and ok.path and not ok.collapsed and ok.effective == {"a": 1, "b": 1, "c": 1}
    # a dead end: b keeps a weight from a unit no input reaches -> signal dies at b
    m["b"][1, 0], m["b"][0, 2] = False, True
    cut = layer_collapse(shapes, m)
    assert cut.path is False and cut.cut == ["b"] and cut.collapsed and cut.empty == []
    assert cut.layers == ["b"] and cut.effective == {"a": 0, "b": 0, "c": 0}
    m["c"][:] = False
    empty = layer_collapse(shapes, m)
    assert empty.empty == ["c"] and empty.to_dict()["collapsed"]
    # boolean product agrees with the report on random masks
    g = generator(0)
    for _ in range(20):
        rm = {n: torch.rand(s, generator=g) < 0.3 for n, s in shapes.items()}
        prod = rm["c"].float() @ rm["b"].float() @ rm["a"].float()
        assert layer_collapse(shapes, rm).path == bool(prod.sum() > 0)


def test_layer_collapse_non_chain_model_checks_only_empty_layers():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.block, self.out = nn.Linear(2, 4), nn.Linear(4, 4), nn.Linear(4, 1)

        def forward(self, x):
            h = self.inp(x)
            return self.out(h + self.block(h))

    model = Res()
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    masks = {n: m for n, m in masks.items() if n.endswith("weight")}
    masks["block.weight"][:] = False  # the skip still carries signal
    r = layer_collapse(model, masks)
    assert not r.chain and r.path is None and r.empty == ["block.weight"] and r.collapsed
    mlp = MLP([2, 3, 1])
    r2 = layer_collapse(
        mlp, {"layers.0.weight": torch.ones(3, 2), "layers.1.weight": torch.ones(1, 3)}
    )
    assert r2.chain and r2.path
    with pytest.raises(ConfigError, match="shape"):
        layer_collapse(
            mlp, {"layers.0.weight": torch.ones(2, 2), "layers.1.weight": torch.ones(1, 3)}
        )


def test_scores_on_a_tiny_bert_with_a_selector_and_grasp_needs_double_backward():
    from weightlab.core import Selector
    from weightlab.models.bert import BertConfig, BertModel, SentenceEncoder, pack_inputs

    cfg = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    from weightlab.seeding import seeded_global_cpu_rng

    with seeded_global_cpu_rng(0):
        bert = BertModel(cfg)
        head = nn.Linear(16, 3)
    enc = SentenceEncoder(bert)
    g = generator(0)
    x = pack_inputs(torch.randint(1, 50, (4, 8), generator=g), torch.ones(4, 8, dtype=torch.long))
    y = torch.randint(0, 3, (4,), generator=g)

    def loss(m, b):
        return F.cross_entropy(head(m(b[0])), b[1])

    sel = Selector(types=("linear",), include=("encoder.*",))
    before = _state(enc)
    snip = snip_scores(enc, (x, y), loss=loss, selector=sel)
    assert len(snip) == 12 and "encoder.layer.1.output.dense.weight" in snip
    assert all(v.sum() > 0 for v in snip.values())
    with pytest.raises(ConfigError, match="double backward.*set_attention") as e:
        grasp_scores(enc, (x, y), loss=loss, selector=sel)  # CPU SDPA
    assert "\n" not in str(e.value)
    bert.set_attention("eager")
    eager = grasp_scores(enc, (x, y), loss=loss, selector=sel)
    bert.set_attention("math")
    math_ = grasp_scores(enc, (x, y), loss=loss, selector=sel)
    for k in eager:
        torch.testing.assert_close(eager[k], math_[k], rtol=1e-4, atol=1e-7)
    assert _same(before, _state(enc))
