"""The initializer registry: contexts, per-tensor generators, masks, errors, basic schemes."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from weightlab.core import Selector, apply_masks
from weightlab.errors import ConfigError
from weightlab.init.registry import (
    Initializer,
    get_initializer,
    initialize,
    orthogonal,
    registered_schemes,
)
from weightlab.models import build
from weightlab.models.mlp import MLP
from weightlab.seeding import generator


def _mlp(widths=(20, 64, 64, 10), activation="relu") -> MLP:
    return build(MLP, list(widths), seed=0, activation=activation)


def test_contexts_carry_fans_depth_activation_and_the_scheme_variances_hold():
    model = _mlp((300, 400, 500, 10))
    ctxs = initialize(model, "he", seed=1)
    assert [c.name for c in ctxs] == [f"layers.{i}.weight" for i in range(3)]
    assert [(c.fan_in, c.fan_out, c.index, c.depth) for c in ctxs] == [
        (300, 400, 0, 3),
        (400, 500, 1, 3),
        (500, 10, 2, 3),
    ]
    assert all(c.activation == "relu" for c in ctxs)
    w = model.layers[1].weight.detach().double()
    assert w.var().item() == pytest.approx(2.0 / 400, rel=0.02)
    assert torch.all(model.layers[1].bias == 0)
    initialize(model, "glorot", seed=1, dist="uniform")
    w = model.layers[1].weight.detach().double()
    assert w.var().item() == pytest.approx(2.0 / 900, rel=0.02)
    assert w.abs().max().item() <= math.sqrt(6.0 / 900)


def test_each_tensor_has_its_own_generator_and_the_global_rng_is_untouched():
    a, b = _mlp(), _mlp()
    state = torch.get_rng_state()
    initialize(a, "normal", seed=3, std=0.1)
    initialize(b, "normal", seed=3, std=0.1, selector=Selector(include=("layers.1",)))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.layers[1].weight, b.layers[1].weight)  # selection-independent
    assert not torch.equal(a.layers[0].weight, b.layers[0].weight)
    c = _mlp()
    initialize(c, "normal", seed=4, std=0.1)
    assert not torch.equal(a.layers[1].weight, c.layers[1].weight)


def test_orthogonal_rows_or_columns_conv_and_delta():
    g = generator(0)
    for rows, cols in ((5, 9), (9, 5), (7, 7)):
        q = orthogonal(rows, cols, g)
        small = min(rows, cols)
        gram = q @ q.T if rows <= cols else q.T @ q
        torch.testing.assert_close(gram, torch.eye(small, dtype=torch.float64))
    conv = nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    initialize(conv, "orthogonal", seed=0, gain=2.0)
    flat = conv[0].weight.detach().double().reshape(8, -1)
    torch.testing.assert_close(
        flat @ flat.T, 4 * torch.eye(8, dtype=torch.float64), atol=1e-5, rtol=0
    )
    initialize(conv, "orthogonal", seed=0, delta=True)
    w = conv[2].weight.detach().double()
    centre = w[:, :, 1, 1]
    torch.testing.assert_close(
        centre @ centre.T, torch.eye(8, dtype=torch.float64), atol=1e-6, rtol=0
    )
    assert float(w.abs().sum() - centre.abs().sum()) == 0.0


def test_zero_and_identity_for_residual_branches():
    model = _mlp((8, 8, 8, 8))
    initialize(model, "identity", seed=0, selector=Selector(roles=("hidden",)))
    assert torch.equal(model.layers[1].weight, torch.eye(8))
    initialize(model, "zero", seed=0, selector=Selector(roles=("last",)))
    assert torch.all(model.layers[2].weight == 0)
    x = torch.randn(3, 8)
    assert torch.all(model(x) == model.layers[2].bias)


def test_masks_stay_zero_and_transforms_are_respected():
    model = _mlp()
    mask = (torch.rand(64, 20, generator=generator(0)) < 0.3).float()
    apply_masks(model, {"layers.0.weight": mask})
    initialize(model, "he", seed=0)
    stored = model.layers[0].parametrizations.weight.original
    assert torch.all(stored[mask == 0] == 0) and torch.all(stored[mask == 1] != 0)


def test_bad_input_is_one_line_config_error_and_nothing_is_written():
    model = _mlp()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError, match="unknown init scheme 'nope'; choose one of:"):
        initialize(model, "nope", seed=0)
    with pytest.raises(ConfigError, match="std must be a positive number"):
        initialize(model, "normal", seed=0, std=-1)
    with pytest.raises(ConfigError, match="init scheme 'he':"):
        get_initializer("he", bogus=1)

    class NeedsData(Initializer):
        needs = ("data",)

        def weight(self, shape, ctx):
            return torch.zeros(shape)

    with pytest.raises(ConfigError, match=r"needs data; pass data=\.\.\."):
        initialize(model, NeedsData(), seed=0)

    class Broken(Initializer):
        def weight(self, shape, ctx):
            if ctx.index == 2:
                raise ConfigError("boom")
            return torch.zeros(shape)

    with pytest.raises(ConfigError, match="boom"):
        initialize(model, Broken(), seed=0)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {"normal", "uniform", "glorot", "he", "orthogonal", "zero", "identity"} <= set(
        registered_schemes()
    )


def test_in_place_fill_equals_the_drawn_weight_in_both_dtypes():
    """normal/uniform/glorot/he draw straight into the stored weight (no copy of every
    draw held first); the values equal what ``weight()`` returns for the same context."""
    from weightlab.init.registry import contexts

    cases = [
        ("normal", {"std": 0.1}),
        ("uniform", {}),
        ("glorot", {"dist": "uniform"}),
        ("he", {"mode": "fan_out"}),
    ]
    for name, kw in cases:
        for dtype in (torch.float32, torch.float64):
            model = _mlp().to(dtype)
            initialize(model, name, seed=5, **kw)
            init = get_initializer(name, **kw)
            for ctx in contexts(model, seed=5):
                want = init.weight(ctx.module.weight.shape, ctx)
                assert want.dtype == dtype and torch.equal(want, ctx.module.weight.detach())
