"""Quantized base + LoRA (issue 21, Deliver 5): int4 group-64 min-max base, LoRA on both
adapter paths, the float and re-quantized merges, and the full composition
``W_eff = (dequant(Q(W₀)) + ΔLoRA) ⊙ M`` with a mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from weightlab.adapters.lora import LoRALayer, adapter_modules, add_adapters
from weightlab.core import apply_masks
from weightlab.errors import ConfigError
from weightlab.quant.export import independent_copy
from weightlab.quant.qlora import (
    QLORA_SPEC,
    add_quantized_adapters,
    merge_output_errors,
    merge_quantized_adapter,
    transform_chain,
)
from weightlab.quant.quantizer import QuantSpec, quantize, quantizers

PATHS = ("activation", "transform")


def _model(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return m


def _randomize_adapters(model: nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in adapter_modules(model).values():
            a.lora_A.copy_(torch.randn(a.lora_A.shape, generator=g) * 0.3)
            a.lora_B.copy_(torch.randn(a.lora_B.shape, generator=g) * 0.3)


def _x(n: int = 32, seed: int = 2) -> torch.Tensor:
    return torch.randn(n, 128, generator=torch.Generator().manual_seed(seed))


def _q4_group64(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hand-written reference: int4 symmetric, min-max scale absmax/7 per group of 64."""
    out, row = w.shape
    v = w.reshape(out, row // 64, 64)
    s = v.abs().amax(-1, keepdim=True) / 7
    q = torch.clamp(torch.round(v * (1.0 / s)), -7, 7)
    return (q * s).reshape(w.shape), s


def test_qlora_spec_names_all_four_factors():
    assert QLORA_SPEC.describe() == "uniform4 × minmax × nearest × group64"


@pytest.mark.parametrize("path", PATHS)
def test_base_is_int4_group64_and_the_delta_stays_float(path):
    m = _model()
    w0 = {n: p.detach().clone() for n, p in m.named_parameters()}
    add_quantized_adapters(m, ["0", "2"], rank=4, path=path)
    _randomize_adapters(m)
    suffix = ".base_layer" if path == "activation" else ""
    base = f"0{suffix}"
    assert set(quantizers(m)) == {f"0{suffix}.weight", f"2{suffix}.weight"}
    qw, s = _q4_group64(w0["0.weight"])
    a = adapter_modules(m)["0"]
    if path == "transform":
        assert transform_chain(m[0]) == ["quantizer", "lora"]
        # W_eff = dequant(Q(W0)) + s·BA
        torch.testing.assert_close(m[0].weight, qw + a.delta(), rtol=0, atol=1e-6)
    else:
        assert isinstance(m[0], LoRALayer)
        assert torch.equal(m[0].base_layer.weight, qw)
        x = _x()
        ref = F.linear(x, qw, w0["0.bias"]) + a.scaling * (x @ a.lora_A.T) @ a.lora_B.T
        torch.testing.assert_close(m[0](x), ref, rtol=0, atol=1e-5)
    qz = quantizers(m)[f"{base}.weight"]
    torch.testing.assert_close(qz.scale, s)
    assert int(qz.level_indices(w0["0.weight"]).abs().max()) == 7


def test_group_size_must_divide_the_input_dimension_before_anything_changes():
    m = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 10))
    with pytest.raises(ConfigError, match="group size 64 does not divide the input dimension 40"):
        add_quantized_adapters(m, ["0", "2"])
    assert not adapter_modules(m) and not quantizers(m)


@pytest.mark.parametrize("path", PATHS)
def test_float_merge_gives_the_adapted_outputs(path):
    m = _model()
    add_quantized_adapters(m, ["0", "2"], rank=4, path=path)
    _randomize_adapters(m)
    x = _x()
    with torch.no_grad():
        ref = m(x)
    assert merge_quantized_adapter(m, "float") == "float"
    assert not adapter_modules(m) and not quantizers(m)
    assert all(type(layer) is nn.Linear for layer in (m[0], m[2]))
    assert not any(p.requires_grad for p in (m[0].weight, m[2].weight))
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("path", PATHS)
def test_requantized_merge_is_within_half_a_step_of_the_float_merge(path):
    m = _model()
    add_quantized_adapters(m, ["0", "2"], rank=4, path=path)
    _randomize_adapters(m)
    flo = independent_copy(m)
    merge_quantized_adapter(flo, "float")
    assert merge_quantized_adapter(m, "requantize") == "requantize"
    assert not adapter_modules(m)
    qs = quantizers(m)
    assert set(qs) == {"0.weight", "2.weight"}
    for i in (0, 2):
        q = qs[f"{i}.weight"]
        assert q.spec == QLORA_SPEC
        w_float = flo[i].weight.detach()
        # fresh scales, estimated from the float sum: absmax/7 per group of 64
        _, s = _q4_group64(w_float)
        torch.testing.assert_close(q.scale, s)
        diff = (m[i].weight.detach() - w_float).reshape(s.shape[0], s.shape[1], 64).abs()
        assert bool((diff <= s / 2 * (1 + 1e-6)).all())
        assert float(diff.max()) > 0  # it really rounded
    # the output error against the adapted model is reported, not bounded
    m2 = _model()
    add_quantized_adapters(m2, ["0", "2"], rank=4, path=path)
    _randomize_adapters(m2)
    errs = merge_output_errors(m2, _x())
    assert errs["float"] <= 1e-5 and errs["requantize"] > errs["float"]
    assert adapter_modules(m2)  # the model itself was not merged


def test_merge_refuses_bad_input():
    m = _model()
    with pytest.raises(ConfigError, match="no adapter to merge"):
        merge_quantized_adapter(m)
    add_quantized_adapters(m, ["0"], rank=2)
    with pytest.raises(ConfigError, match="merge mode must be"):
        merge_quantized_adapter(m, "int4")
    plain = _model()
    add_adapters(plain, ["0"], rank=2)
    with pytest.raises(ConfigError, match="no quantized base"):
        merge_quantized_adapter(plain)


def test_full_composition_with_a_mask_and_a_zero_free_level_set():
    """(dequant(Q(W0)) + ΔLoRA) ⊙ M: a pruned weight is exactly 0 under the zero-free
    shift levels, and the stats scale 2·mean|W| reads the kept entries only."""
    m = _model()
    add_adapters(m, ["0"], rank=4, path="transform")
    _randomize_adapters(m)
    g = torch.Generator().manual_seed(5)
    mask = (torch.rand(64, 128, generator=g) > 0.5).float()
    apply_masks(m, {"0.weight": mask})
    w0 = m[0].parametrizations.weight.original.detach().clone()  # pruned entries zeroed
    spec = QuantSpec(3, "shift", "stats", granularity="channel")
    q = quantize(m, spec, ["0"])["0.weight"]
    assert transform_chain(m[0]) == ["quantizer", "lora", "mask"]
    w = m[0].weight.detach()
    assert bool((w[mask == 0] == 0).all())  # exactly zero although no level is 0
    assert q.levels.zero_free and bool((q(w0) != 0).all())
    kept_mean = (w0.abs() * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(q.scale.reshape(64, 1), 2 * kept_mean)
    all_mean = w0.abs().mean(1, keepdim=True)
    assert bool((2 * all_mean < 0.8 * 2 * kept_mean).all())  # zeros would have shrunk it
    delta = adapter_modules(m)["0"].delta()
    torch.testing.assert_close(w, (q(w0) + delta) * mask, rtol=0, atol=1e-6)


def test_masked_qlora_merges_keep_the_mask_last():
    m = _model()
    add_adapters(m, ["0"], rank=4, path="transform")
    _randomize_adapters(m)
    mask = (torch.rand(64, 128, generator=torch.Generator().manual_seed(6)) > 0.3).float()
    apply_masks(m, {"0.weight": mask})
    quantize(m, QLORA_SPEC, ["0"])
    x = _x()
    with torch.no_grad():
        ref = m(x)
    flo = independent_copy(m)
    merge_quantized_adapter(flo, "float")
    assert transform_chain(flo[0]) == ["mask"]
    with torch.no_grad():
        torch.testing.assert_close(flo(x), ref, rtol=0, atol=1e-5)
    merge_quantized_adapter(m, "requantize")
    assert transform_chain(m[0]) == ["quantizer", "mask"]
    w = m[0].weight.detach()
    assert bool((w[mask == 0] == 0).all())
    # the fresh scales ignore the pruned entries of the float sum
    s_stored = m[0].parametrizations.weight.original.detach()
    kept_max = (s_stored.abs() * mask).reshape(64, 2, 64).amax(-1, keepdim=True) / 7
    torch.testing.assert_close(quantizers(m)["0.weight"].scale, kept_max)


def test_lora_trains_on_a_frozen_quantized_base():
    from weightlab.data import load_dataset
    from weightlab.models import MLP
    from weightlab.train import LossRecorder, TrainConfig, train
    from weightlab.train.config import OptimConfig

    data = load_dataset("teacher_mlp", "cpu", d_in=64)
    torch.manual_seed(0)
    model = MLP([64, 64, 1])
    add_quantized_adapters(
        model, ["layers.0", "layers.1"], rank=8, overrides={"layers.1": {"rank": 1}}
    )
    qs = quantizers(model)
    scales = {n: q.scale.clone() for n, q in qs.items()}
    stored = {n: p.detach().clone() for n, p in model.named_parameters() if "lora" not in n}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    rec = LossRecorder()
    cfg = TrainConfig(epochs=5, batch_size=100, optim=OptimConfig(lr=1e-2))
    train(model, data, cfg, data_seed=0, callbacks=[rec])
    for n, p in model.named_parameters():
        if "lora" not in n:
            assert torch.equal(p, stored[n]), n  # the quantized base stays frozen
    for n, q in qs.items():
        assert torch.equal(q.scale, scales[n])
    first, last = sum(rec.losses[:5]) / 5, sum(rec.losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)
