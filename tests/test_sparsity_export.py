"""CSR export, the 2:4 skip path, and torch.nn.utils.prune interop."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from weightlab.core import apply_masks, get_masks
from weightlab.errors import ConfigError
from weightlab.seeding import generator
from weightlab.sparsity import random_masks
from weightlab.sparsity.export import (
    CSRLinear,
    is_two_four,
    semi_structured_unavailable,
    to_csr,
    to_semi_structured,
)
from weightlab.sparsity.interop import from_torch_prune, pruned_masks, to_torch_prune

pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp(density: float, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 10)
    )
    shapes = {f"{i}.weight": model[i].weight.shape for i in (0, 2, 4)}
    keep = {n: max(1, int(density * s.numel())) for n, s in shapes.items()}
    apply_masks(model, random_masks(shapes, keep=keep, generator=generator(seed)))
    return model


def test_csr_export_matches_dense_outputs_and_leaves_the_input_alone():
    model = _mlp(0.05)
    x = torch.randn(7, 40)
    csr = to_csr(model)
    assert all(isinstance(csr[i], CSRLinear) for i in (0, 2, 4))
    assert csr[0].weight.layout == torch.sparse_csr
    assert csr[0].density == pytest.approx(60 / 1200)
    with torch.no_grad():
        torch.testing.assert_close(csr(x), model(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(csr(x[:1]), model(x[:1]), rtol=1e-5, atol=1e-6)
    assert get_masks(model)  # the input model keeps its masks
    # the 2-D fast path, a batch of sequences (N-D path) and a layer without bias agree
    layer = model[0]
    w = layer.weight.detach()
    for bias in (layer.bias.detach(), None):
        lin = CSRLinear(w, bias)
        for xs in (torch.randn(5, 40), torch.randn(2, 3, 40)):
            want = torch.nn.functional.linear(xs, w, bias)
            torch.testing.assert_close(lin(xs), want, rtol=1e-5, atol=1e-6)


def test_csr_chains_keep_activations_feature_major_and_match_dense():
    """MLPs and Linear/activation Sequentials export to one-transpose chains; anything else
    keeps per-layer CSRLinear calls; every form agrees with the dense model and deep-copies."""
    import copy

    from weightlab.models.mlp import MLP
    from weightlab.sparsity.export import CSRMLP, CSRSequential

    for activation in ("relu", "tanh", "gelu", "sin"):
        torch.manual_seed(1)
        mlp = MLP([12, 40, 30, 5], activation=activation)
        shapes = {f"layers.{i}.weight": mlp.layers[i].weight.shape for i in range(3)}
        keep = {n: max(1, s.numel() // 20) for n, s in shapes.items()}
        apply_masks(mlp, random_masks(shapes, keep=keep, generator=generator(1)))
        csr = to_csr(mlp)
        assert isinstance(csr, CSRMLP) and isinstance(csr.layers[1], CSRLinear)
        x = torch.randn(9, 3, 4)  # flattened like MLP.forward does
        with torch.no_grad():
            want = mlp(x)
            torch.testing.assert_close(csr(x), want, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(copy.deepcopy(csr)(x), want, rtol=1e-5, atol=1e-6)
    seq = to_csr(_mlp(0.05))
    assert type(seq) is CSRSequential and [n for n, _ in seq.named_children()] == list("01234")
    torch.manual_seed(2)
    odd = nn.Sequential(nn.Linear(40, 30), nn.LayerNorm(30), nn.Linear(30, 10))
    with torch.no_grad():
        for i in (0, 2):
            odd[i].weight.mul_((torch.rand_like(odd[i].weight) < 0.05).float())
    out = to_csr(odd)  # LayerNorm is not elementwise: per-layer calls
    assert type(out) is nn.Sequential and isinstance(out[0], CSRLinear)
    xs = torch.randn(4, 40)
    with torch.no_grad():
        torch.testing.assert_close(out(xs), odd(xs), rtol=1e-5, atol=1e-6)
        seq_model = _mlp(0.05)
        batch = torch.randn(2, 3, 40)  # N-D input: the Sequential's own per-layer path
        torch.testing.assert_close(seq(batch), seq_model(batch), rtol=1e-5, atol=1e-6)


def test_csr_refuses_dense_layers_unless_opted_in():
    model = _mlp(0.05)
    with torch.no_grad():
        model[4].parametrizations.weight[0].mask.fill_(1.0)
        model[4].parametrizations.weight.original.fill_(0.5)
    with pytest.raises(ConfigError, match=r"layer '4' has weight density 100.0% > 10%"):
        to_csr(model)
    out = to_csr(model, skip_dense=True)
    assert isinstance(out[0], CSRLinear) and isinstance(out[4], nn.Linear)
    x = torch.randn(3, 40)
    with torch.no_grad():
        torch.testing.assert_close(out(x), model(x), rtol=1e-5, atol=1e-6)
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="density must be in"):
            to_csr(model, bad)


def test_two_four_skip_path_and_pattern_check():
    reason = semi_structured_unavailable("cpu")
    assert reason and "CUDA" in reason
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        to_semi_structured(_mlp(0.05), device="cpu")
    w = torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0]])
    assert is_two_four(w) and not is_two_four(torch.ones(1, 8))


def test_torch_prune_round_trip_gives_same_masks_and_outputs():
    model = _mlp(0.3, seed=1)
    masks = get_masks(model)
    x = torch.randn(5, 40)
    with torch.no_grad():
        before = model(x)
    exported = to_torch_prune(model)
    assert prune.is_pruned(exported)
    assert set(pruned_masks(exported)) == set(masks)
    for name, m in pruned_masks(exported).items():
        assert torch.equal(m, masks[name])
    with torch.no_grad():
        torch.testing.assert_close(exported(x), before)
    back = from_torch_prune(exported)
    assert not prune.is_pruned(back)
    got = get_masks(back)
    assert set(got) == set(masks) and all(torch.equal(got[n], masks[n]) for n in masks)
    with torch.no_grad():
        torch.testing.assert_close(back(x), before)


def test_torch_prune_import_of_torch_pruned_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    mask = model[0].weight_mask.bool().clone()
    x = torch.randn(3, 6)
    with torch.no_grad():
        before = model(x)
    from_torch_prune(model)
    assert torch.equal(get_masks(model)["0.weight"], mask)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)


def test_interop_refuses_bad_masks():
    model = _mlp(0.3)
    with pytest.raises(ConfigError, match="mask for '0.weight' has shape"):
        to_torch_prune(model, {"0.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(ConfigError, match="no masks to export"):
        to_torch_prune(nn.Linear(3, 2))
    with pytest.raises(ConfigError, match="no torch.nn.utils.prune masks"):
        from_torch_prune(nn.Linear(3, 2))
