"""Adapter inits: random (PEFT's default, Gaussian), PiSSA (full / randomized), OLoRA,
flags, warnings, exact restore, and the AdapterInit plug-in hooks (EVA/LoLDU/Bone style)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from weightlab.adapters.inits import (
    AdapterInit,
    BaseWeightsModifiedWarning,
    OLoRA,
    PiSSA,
    RandomInit,
    randomized_svd,
)
from weightlab.adapters.lora import add_adapters, rebind, remove_adapters


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(24, 32), nn.ReLU(), nn.Linear(32, 12))


def test_flags():
    assert not RandomInit().needs_data and not RandomInit().modifies_base
    assert PiSSA().modifies_base and PiSSA(4).modifies_base and OLoRA().modifies_base
    assert not PiSSA().needs_data and PiSSA(4).peft_init() == "pissa_niter_4"
    assert RandomInit("gaussian").peft_init() == "gaussian" and RandomInit().peft_init() is True


def test_random_kaiming_and_gaussian():
    m = _mlp()
    x = torch.randn(5, 24)
    y0 = m(x).detach()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a random init must not warn
        s = add_adapters(m, nn.Linear, rank=4, seed=7)
    a = s.adapters["0"].lora_A
    assert a.abs().max() <= 1 / math.sqrt(24) and a.abs().max() > 0.8 / math.sqrt(24)
    assert a.std().item() == pytest.approx(1 / math.sqrt(24) / math.sqrt(3), rel=0.25)
    assert torch.count_nonzero(s.adapters["0"].lora_B) == 0
    torch.testing.assert_close(m(x), y0, rtol=0, atol=0)
    again = add_adapters(_mlp(), nn.Linear, rank=4, seed=7)
    assert torch.equal(again.adapters["0"].lora_A, a)
    other = add_adapters(_mlp(), nn.Linear, rank=4, seed=8)
    assert not torch.equal(other.adapters["0"].lora_A, a)
    g = add_adapters(_mlp(), nn.Linear, rank=8, init="gaussian", seed=1)
    big = torch.cat([g.adapters[k].lora_A.flatten() for k in g.adapters])
    assert big.std().item() == pytest.approx(1 / 8, rel=0.15)


def test_pissa_full_is_principal_part():
    m = _mlp()
    w0 = m[0].weight.detach().clone()
    x = torch.randn(5, 24)
    y0 = m(x).detach()
    with pytest.warns(BaseWeightsModifiedWarning):
        s = add_adapters(m, nn.Linear, rank=4, alpha=8.0, init="pissa")
    a = s.adapters["0"]
    u, sv, vh = torch.linalg.svd(w0, full_matrices=False)
    best = u[:, :4] @ torch.diag(sv[:4]) @ vh[:4]
    torch.testing.assert_close(a.scaling * a.lora_B @ a.lora_A, best, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.base_layer.weight + a.delta(), w0, rtol=1e-5, atol=1e-6)
    # A's rows are sqrt(S_r / s)-scaled right singular vectors
    torch.testing.assert_close(a.lora_A.norm(dim=1) ** 2, sv[:4] / a.scaling, rtol=1e-4, atol=0)
    torch.testing.assert_close(m(x), y0, rtol=1e-5, atol=1e-5)
    assert torch.equal(a.original_weight, w0) and a.init_A.shape == (4, 24)


def test_randomized_svd_and_pissa_niter():
    g = torch.Generator().manual_seed(0)
    low = torch.randn(40, 5, generator=g) @ torch.randn(5, 30, generator=g)
    w = low + 1e-3 * torch.randn(40, 30, generator=g)
    u, s, v = randomized_svd(w, 5, 2, torch.Generator().manual_seed(1))
    full = torch.linalg.svdvals(w)[:5]
    torch.testing.assert_close(s, full, rtol=1e-4, atol=0)
    assert torch.allclose(u.mT @ u, torch.eye(5), atol=1e-5)
    m1, m2 = _mlp(), _mlp()
    with pytest.warns(BaseWeightsModifiedWarning):
        s1 = add_adapters(m1, nn.Linear, rank=4, init=PiSSA())
        s2 = add_adapters(m2, nn.Linear, rank=4, init=PiSSA(niter=16))
    for k in s1.adapters:
        # random weights have a flat spectrum, so the rank-r subspace is ill-determined;
        # the randomized residual is near-optimal (Eckart-Young) all the same
        r1, r2 = s1.adapters[k].base_layer.weight, s2.adapters[k].base_layer.weight
        assert r1.norm() <= r2.norm() <= 1.02 * r1.norm()


def test_olora_qr():
    m = _mlp()
    w0 = m[2].weight.detach().clone()
    with pytest.warns(BaseWeightsModifiedWarning, match="olora"):
        s = add_adapters(m, nn.Linear, rank=3, alpha=6.0, init="olora")
    a = s.adapters["2"]
    torch.testing.assert_close(a.lora_B.mT @ a.lora_B, torch.eye(3), rtol=0, atol=1e-5)
    assert torch.count_nonzero(torch.tril(a.lora_A[:, :3], diagonal=-1)) == 0
    torch.testing.assert_close(a.base_layer.weight + a.delta(), w0, rtol=1e-5, atol=1e-6)
    remove_adapters(m)
    assert torch.equal(m[2].weight, w0)


def test_transform_path_inits_and_restore():
    m = _mlp()
    w0 = m[0].weight.detach().clone()
    with pytest.warns(BaseWeightsModifiedWarning):
        add_adapters(m, ["0"], rank=2, init="pissa", path="transform")
    torch.testing.assert_close(m[0].weight, w0, rtol=1e-5, atol=1e-6)
    assert not torch.equal(m[0].parametrizations.weight.original, w0)
    remove_adapters(m)
    assert type(m[0]) is nn.Linear and torch.equal(m[0].weight, w0)


class _DataRankInit(AdapterInit):
    """An EVA-shaped init: reads data in ``plan`` (before layers exist) and sets each
    layer's rank from it; fills A with the top right-singular vectors of its inputs."""

    name = "toy-eva"
    needs_data = True

    def __init__(self, x):
        self.x = x
        self.inputs = {}

    def plan(self, model, plans):
        hooks = [
            model.get_submodule(p.name).register_forward_hook(
                lambda mod, inp, out, n=p.name: self.inputs.__setitem__(n, inp[0].detach())
            )
            for p in plans
        ]
        with torch.no_grad():
            model(self.x)
        for h in hooks:
            h.remove()
        return [rebind(p, rank=i + 1, alpha=float(i + 1)) for i, p in enumerate(plans)]

    @torch.no_grad()
    def __call__(self, adapter, ctx):
        _, _, vh = torch.linalg.svd(self.inputs[ctx.name], full_matrices=False)
        adapter.lora_A.copy_(vh[: adapter.rank])
        adapter.lora_B.zero_()


def test_custom_init_changes_ranks_before_optimizer():
    m = _mlp()
    init = _DataRankInit(torch.randn(64, 24))
    s = add_adapters(m, nn.Linear, rank=8, init=init)
    assert [s.adapters[k].lora_A.shape for k in ("0", "2")] == [(1, 24), (2, 32)]
    assert s.adapters["0"].lora_A.norm(dim=1).sub(1).abs().max() < 1e-5
    opt = torch.optim.AdamW(s.parameters(), lr=1e-3)
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == 1 * 56 + 2 * 44
