"""Pruning-at-init scores (SNIP, GraSP, SynFlow), SynFlow's iterative schedule, the score
lookup and layer-collapse reports, checked against hand-computed formulas."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from weightlab.core import apply_masks, take_snapshot
from weightlab.models import MLP
from weightlab.seeding import generator
from weightlab.sparsity.saliency import grasp_scores, snip_scores, synflow_scores


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
