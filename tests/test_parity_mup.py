"""Parity of weightlab's μP with mup 1.0.0 (installed --no-deps) on an MLP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from weightlab.init.parametrization import BaseShapes, lr_multipliers, parametrize

mup = pytest.importorskip("mup")

D_IN, D_OUT = 8, 3


class Net(nn.Module):
    """8-w-w-3 tanh MLP; the readout class is swappable for mup's MuReadout."""

    def __init__(self, width: int, readout: type[nn.Linear] = nn.Linear) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.Linear(D_IN, width), nn.Linear(width, width), readout(width, D_OUT)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.tanh(x)  # no exact-zero gradients: Adam with ε = 0 stays finite
        return x


BASE_W, WIDTH = 4, 32  # width_mult 8


def _pair(width: int = WIDTH, scheme: str = "mup", seed: int = 0):
    """mup's model after set_base_shapes and ours after parametrize, from the same raw
    weights (float64)."""
    torch.manual_seed(seed)
    ref = Net(width, mup.MuReadout).double()
    ours = Net(width).double()
    ours.load_state_dict(ref.state_dict())
    mup.set_base_shapes(ref, Net(BASE_W, mup.MuReadout), delta=Net(BASE_W + 2, mup.MuReadout))
    rec = parametrize(ours, scheme, BaseShapes.infer(Net(BASE_W), Net(BASE_W + 2)))
    return ref, ours, rec


def _x(seed: int = 1, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D_IN, generator=g, dtype=torch.float64), torch.randint(
        0, D_OUT, (n,), generator=g
    )


def test_outputs_equal_mureadout_after_set_base_shapes():
    ref, ours, _ = _pair()
    x, _ = _x()
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-14)
    # the stored readout weights carry mup's √width_mult rescaling
    torch.testing.assert_close(ours.layers[2].weight, ref.layers[2].weight, rtol=0, atol=0)
    torch.testing.assert_close(ours.layers[1].bias, ref.layers[1].bias, rtol=0, atol=0)


@pytest.mark.parametrize("name,opt", [("sgd", "MuSGD"), ("adam", "MuAdam"), ("adamw", "MuAdamW")])
def test_every_lr_equals_mups(name, opt):
    ref, ours, rec = _pair()
    o = getattr(mup, opt)(ref.parameters(), lr=0.1, weight_decay=0.01)
    pid = {id(p): n for n, p in ref.named_parameters()}
    lrs = {pid[id(p)]: g["lr"] / 0.1 for g in o.param_groups for p in g["params"]}
    wds = {pid[id(p)]: g["weight_decay"] / 0.01 for g in o.param_groups for p in g["params"]}
    mults = lr_multipliers(ours, rec, name)
    assert mults == pytest.approx(lrs, rel=1e-15)
    assert mults["layers.0.weight"] == (8.0 if name == "sgd" else 1.0)
    assert mults["layers.1.weight"] == (1.0 if name == "sgd" else 0.125)
    from weightlab.init.parametrization import lr_groups

    for g in lr_groups(ours, rec, name):
        assert g.wd_mult == pytest.approx(wds[g.match[0]])


def _train(model, mults, kind, steps=10, lr=0.05):
    """Plain torch steps with per-tensor lrs (the reference side of the parity test)."""
    groups = [{"params": [p], "lr": lr * mults[n]} for n, p in model.named_parameters()]
    opt = torch.optim.SGD(groups, lr=lr) if kind == "sgd" else torch.optim.Adam(groups, eps=0.0)
    outs = []
    for s in range(steps):
        x, y = _x(10 + s)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        outs.append(model(_x(99)[0]).detach())
    return outs


def _mup_reference(kind, lr):
    ref, _, _ = _pair()
    o = (mup.MuSGD if kind == "sgd" else mup.MuAdam)(
        ref.parameters(), lr=lr, **({} if kind == "sgd" else {"eps": 0.0})
    )
    outs = []
    for s in range(10):
        x, y = _x(10 + s)
        o.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        o.step()
        outs.append(ref(_x(99)[0]).detach())
    return outs


@pytest.mark.parametrize("kind,lr", [("sgd", 0.05), ("adam", 0.01)])
@pytest.mark.parametrize("scheme", ["mup", "mup-table", "mup-folded", "mf"])
def test_abc_equivalent_forms_train_like_mup(kind, lr, scheme):
    """Tensor Programs IV's table form and the folded form store differently scaled
    weights; after 10 SGD / Adam (ε = 0) steps their outputs equal mup's to 1e-5."""
    want = _mup_reference(kind, lr)
    _, ours, rec = _pair(scheme=scheme)
    got = _train(ours, lr_multipliers(ours, rec, kind), kind, lr=lr)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5)
    if scheme == "mup-table":  # really stored differently: input weights × √8 smaller
        ref, _, _ = _pair()
        _, fresh, _ = _pair(scheme=scheme)
        ratio = (ref.layers[0].weight / fresh.layers[0].weight).mean().item()
        assert ratio == pytest.approx(8**0.5)


def test_mup_breaks_where_ours_does_not():
    """The issue's motivation: new Parameter objects (FSDP-style) lose mup's infshape, so
    MuSGD raises; ours keeps μP because nothing lives on the parameters."""
    ref, ours, rec = _pair()
    x, _ = _x()
    with pytest.raises(AssertionError):
        mup.MuSGD([nn.Parameter(p.detach().clone()) for p in ref.parameters()], lr=0.1)
    for layer in ours.layers:
        layer.weight = nn.Parameter(layer.weight.detach().clone())
    torch.testing.assert_close(ours(x), ref(x))
    assert lr_multipliers(ours, rec, "sgd")["layers.2.weight"] == 8.0
