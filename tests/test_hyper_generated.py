"""Generated weights: the GeneratedWeight transform (replace / add, a mask after it, merge)
and generate_population (one generator call, N functional targets, one backward)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from weightlab.core.mask import apply_masks
from weightlab.core.transforms import merge
from weightlab.errors import ConfigError
from weightlab.hyper.generated import (
    GeneratedWeight,
    attach_generated,
    generate_population,
    generated_params,
    parameter_shapes,
    split_flat,
)
from weightlab.models.factory import build
from weightlab.models.mlp import MLP
from weightlab.seeding import generator

pytestmark = pytest.mark.usefixtures("one_thread")


class Table(nn.Module):
    """A generator whose output is a learned table times the condition's first entry."""

    def __init__(self, size: int, seed: int = 0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(size, generator=generator(seed)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z[..., :1] * self.w


class LinearGen(nn.Module):
    """z (.., d) -> flat weights (.., P): one Linear."""

    def __init__(self, d: int, size: int, seed: int = 0) -> None:
        super().__init__()
        g = generator(seed)
        self.lin = nn.Linear(d, size)
        with torch.no_grad():
            self.lin.weight.normal_(0, 0.3, generator=g)
            self.lin.bias.normal_(0, 0.3, generator=g)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.lin(z)


def _mlp(seed: int = 0) -> nn.Module:
    return build(MLP, [5, 4, 3], seed=seed)


def test_replace_mode_uses_the_generated_weights_and_freezes_the_stored_ones():
    model = _mlp()
    shapes = parameter_shapes(model)
    assert list(shapes) == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]
    gen = LinearGen(2, sum(s.numel() for s in shapes.values()))
    z = torch.tensor([0.5, -1.0])
    ts = attach_generated(model, gen, z)
    assert set(ts) == set(shapes)
    want = split_flat(gen(z), shapes)
    torch.testing.assert_close(model.layers[0].weight, want["layers.0.weight"])
    x = torch.randn(7, 5, generator=generator(1))
    h = torch.relu(x @ want["layers.0.weight"].T + want["layers.0.bias"])
    torch.testing.assert_close(model(x), h @ want["layers.1.weight"].T + want["layers.1.bias"])
    model(x).sum().backward()
    assert gen.lin.weight.grad is not None and gen.lin.weight.grad.abs().sum() > 0
    original = model.layers[0].parametrizations.weight.original
    assert not original.requires_grad and original.grad is None
    # merge bakes G(z) into plain weights that load into a fresh MLP
    out = model(x).detach()
    merge(model)
    fresh = _mlp(seed=5)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh(x), out)


@pytest.mark.parametrize("train_base", [False, True])
def test_add_mode_adds_to_the_stored_weight(train_base):
    model = _mlp()
    base = model.layers[1].weight.detach().clone()
    shapes = {"layers.1.weight": model.layers[1].weight.shape}
    gen = LinearGen(3, 12)
    z = nn.Parameter(torch.tensor([1.0, 0.0, 2.0]))
    attach_generated(model, gen, z, shapes=shapes, mode="add", train_base=train_base)
    torch.testing.assert_close(model.layers[1].weight, base + gen(z).view(3, 4))
    model(torch.randn(4, 5, generator=generator(2))).square().sum().backward()
    original = model.layers[1].parametrizations.weight.original
    assert (original.grad is not None) == train_base
    assert z.grad is not None and z.grad.abs().sum() > 0  # a Parameter condition trains
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.endswith("condition") for n in names)


def test_mask_after_generated_weight_gives_zero_generator_gradient_where_masked():
    model = _mlp()
    shapes = {"layers.0.weight": torch.Size((4, 5))}
    gen = Table(20)
    attach_generated(model, gen, torch.tensor([2.0]), shapes=shapes)
    mask = (torch.rand(4, 5, generator=generator(3)) > 0.5).float()
    apply_masks(model, {"layers.0.weight": mask})
    torch.testing.assert_close(model.layers[0].weight, 2.0 * gen.w.detach().view(4, 5) * mask)
    model(torch.randn(8, 5, generator=generator(4))).sum().backward()
    grad = gen.w.grad.view(4, 5)
    assert torch.all(grad[mask == 0] == 0)
    assert torch.all(grad[mask == 1] != 0)


def test_generator_output_of_the_wrong_shape_names_both():
    model = _mlp()

    class Bad(nn.Module):
        def forward(self, z):
            return {"layers.0.weight": torch.zeros(5, 4)}

    with pytest.raises(ConfigError, match=r"'layers.0.weight' has shape \(5, 4\).*\(4, 5\)"):
        attach_generated(model, Bad(), torch.zeros(1), ["layers.0.weight"])
    with pytest.raises(ConfigError, match="has 10 values.*need 20"):
        attach_generated(
            model, Table(10), torch.ones(1), shapes={"layers.0.weight": torch.Size((4, 5))}
        )
    assert not hasattr(model.layers[0], "parametrizations")  # nothing attached
    with pytest.raises(ConfigError, match="mode"):
        GeneratedWeight(Table(20), torch.ones(1), "w", {"w": torch.Size((20,))}, mode="mul")
    with pytest.raises(ConfigError, match="no parameter 'layers.9.weight'"):
        parameter_shapes(model, ["layers.9.weight"])


def test_generate_population_matches_per_condition_targets_with_one_backward():
    target = _mlp()
    shapes = parameter_shapes(target)
    size = sum(s.numel() for s in shapes.values())
    gen = LinearGen(3, size)
    z = torch.randn(4, 3, generator=generator(5))
    x = torch.randn(6, 5, generator=generator(6))
    out = generate_population(gen, target, z, x)
    assert out.shape == (4, 6, 3)
    out.square().sum().backward()
    g_pop = gen.lin.weight.grad.clone()
    gen.zero_grad()
    total = 0
    for n in range(4):
        w = split_flat(gen(z[n]), shapes)
        y = torch.func.functional_call(target, w, (x,))
        torch.testing.assert_close(out[n].detach(), y.detach())
        total = total + y.square().sum()
    total.backward()
    torch.testing.assert_close(g_pop, gen.lin.weight.grad)
    # per-member inputs, and the add mode
    xs = torch.randn(4, 6, 5, generator=generator(7))
    per = generate_population(gen, target, z, xs, x_per_member=True)
    w1 = split_flat(gen(z[1]), shapes)
    torch.testing.assert_close(per[1], torch.func.functional_call(target, w1, (xs[1],)))
    add = generated_params(gen, target, z, mode="add")
    w2 = split_flat(gen(z[2]), shapes)
    torch.testing.assert_close(add["layers.1.bias"][2], target.layers[1].bias + w2["layers.1.bias"])
    with pytest.raises(ConfigError, match="x_per_member"):
        generate_population(gen, target, z, x, x_per_member=True)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("activation", ["relu", "tanh", "linear"])
@pytest.mark.parametrize("per_member", [False, True])
def test_fused_mlp_targets_equal_the_vmap_path_outputs_and_gradients(activation, per_member):
    """generate_population's MLP fast path (mlp_targets: baddbmm, hand-written backward)
    against vmap(functional_call) on the same flat rows: outputs, generator and input
    gradients to float32 rounding (max relative difference <= 1e-6)."""
    target = build(MLP, [5, 7, 6, 3], activation=activation, seed=0)
    shapes = parameter_shapes(target)
    gen = LinearGen(3, sum(s.numel() for s in shapes.values()))
    z = torch.randn(4, 3, generator=generator(5))
    shape = (4, 6, 5) if per_member else (6, 5)
    x = torch.randn(*shape, generator=generator(6), requires_grad=True)
    w = torch.randn(4, 6, 3, generator=generator(7))

    def run(fast: bool):
        gen.zero_grad()
        x.grad = None
        if fast:
            out = generate_population(gen, target, z, x, x_per_member=per_member)
        else:
            params = generated_params(gen, target, z)

            def one(p, xx):
                return torch.func.functional_call(target, p, (xx,))

            out = torch.func.vmap(one, in_dims=(0, 0 if per_member else None))(params, x)
        (out * w).sum().backward()
        return out.detach(), gen.lin.weight.grad.clone(), gen.lin.bias.grad.clone(), x.grad

    fast, ref = run(True), run(False)
    assert fast[0].shape == (4, 6, 3)
    for a, b in zip(fast, ref, strict=True):
        assert _rel(a, b) <= 1e-6
    # not fused: add mode, a subset of names, a dict output, a gelu target (vmap path)
    gelu = build(MLP, [5, 4, 3], activation="gelu", seed=0)
    from weightlab.hyper.generated import fast_mlp_dims

    assert fast_mlp_dims(gelu) is None
    assert fast_mlp_dims(target) == ((7, 5), (6, 7), (3, 6))


def test_chunked_hypernet_population_equals_the_autograd_vmap_path():
    """The bench's path: ChunkedMLPHypernet generating N MLP targets (the targets' backward
    hands its gradient to the generator in the generator's padded layout) = the autograd
    hypernetwork and vmap(functional_call) targets: outputs and gradients <= 1e-6 rel."""
    from weightlab.hyper.continual import ChunkedMLPHypernet

    target = build(MLP, [6, 9, 8, 3], seed=0)
    total = sum(p.numel() for p in target.parameters())
    hnet = ChunkedMLPHypernet(total, chunk_size=40, cond_emb_size=5, layers=(16,), seed=2)
    z = torch.randn(4, 5, generator=generator(3))
    x = torch.randn(7, 6, generator=generator(4))
    w = torch.randn(4, 7, 3, generator=generator(5))
    results = []
    for fused in (True, False):
        hnet.zero_grad()
        if fused:
            out = generate_population(hnet, target, z, x)
        else:
            params = generated_params(None, target, z, outputs=hnet.forward_autograd(z))
            out = torch.func.vmap(lambda p: torch.func.functional_call(target, p, (x,)))(params)
        (out * w).sum().backward()
        grads = [p.grad for n, p in hnet.named_parameters() if not n.startswith("cond")]
        results.append([out.detach(), *grads])
    for a, b in zip(*results, strict=True):
        assert _rel(a, b) <= 1e-6
