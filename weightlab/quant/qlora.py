"""Quantized base + LoRA adapter (issue 21, Deliver 5; after QLoRA, Dettmers et al. 2023,
"QLoRA: Efficient Finetuning of Quantized LLMs", Eq. 5: ``Y = X·doubleDequant(W) + X·L₁L₂``
with the base frozen and quantized, the adapter in higher precision).

The base quantizer is :data:`QLORA_SPEC`: int4 uniform symmetric, one min-max scale per
group of 64 along the input dimension (QLoRA's NF4 level set is not included). The
composition is the fixed order of :mod:`weightlab.quant.quantizer`:
``W_eff = (dequant(Q(W₀)) + ΔLoRA) ⊙ M``; ``Q`` acts on the frozen base only and ΔLoRA
stays in float.

Both adapter paths of :mod:`weightlab.adapters.lora`:

- **transform** (:class:`~weightlab.adapters.lora.LoRADelta`): the quantizer is first in
  the weight's chain, then the delta, then any mask (``quantize`` re-attaches the delta and
  masks after it), so the mask also zeroes the delta;
- **activation** (:class:`~weightlab.adapters.lora.LoRALayer`): the wrapped
  ``base_layer``'s weight gets the quantizer; the delta is added outside the layer, so a
  mask on the base layer does not mask it (``(Q(W₀) ⊙ M)x + ΔLoRA·x``).

Two merges (:func:`merge_quantized_adapter`), which PEFT's discussion of merging into a
quantized base motivates (the rounding cannot be avoided; merge into the dequantized base):

- ``"float"``: ``W = dequant(Q(W₀)) + ΔLoRA`` kept in float: the merged model computes the
  adapted model's outputs (to float rounding);
- ``"requantize"``: ``Q`` applied again to that sum, with fresh scales estimated from it
  (same spec, masked entries ignored): every merged weight lies within half a step of its
  group's float merge (min-max scales never clip); the output error against the adapted
  model is reported (:func:`merge_output_errors`), not bounded — it grows with ``‖x‖₁``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from weightlab.adapters.inits import AdapterInit
from weightlab.adapters.lora import AdapterSet, LoRADelta, LoRALayer, adapter_modules, add_adapters
from weightlab.core.mask import Mask
from weightlab.errors import ConfigError
from weightlab.quant.export import independent_copy
from weightlab.quant.quantizer import Quantizer, QuantSpec, quantize, quantizers

QLORA_SPEC = QuantSpec(4, "uniform", "minmax", granularity=64)
MERGE_MODES = ("float", "requantize")


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def base_module_name(name: str, adapter: nn.Module) -> str:
    """The module holding an adapter's base weight: ``NAME.base_layer`` on the activation
    path, ``NAME`` itself on the transform path."""
    return f"{name}.base_layer" if isinstance(adapter, LoRALayer) else name


def add_quantized_adapters(
    model: nn.Module,
    select,
    *,
    spec: QuantSpec = QLORA_SPEC,
    rank: int = 8,
    alpha: float | None = None,
    path: str = "activation",
    init: str | AdapterInit = "random",
    seed: int = 0,
    **adapter_kwargs,
) -> AdapterSet:
    """Add LoRA adapters (:func:`~weightlab.adapters.lora.add_adapters`, same arguments)
    and quantize their frozen base weights with ``spec`` (default :data:`QLORA_SPEC`), in
    place. Scales are estimated after the adapter init (a base-modifying init such as PiSSA
    quantizes the residual). Checks every base weight's group size before changing
    anything. Returns the :class:`~weightlab.adapters.lora.AdapterSet` (train its
    ``parameters()``)."""
    from weightlab.adapters.lora import preview_adapters
    from weightlab.quant.granularity import check_granularity

    overrides = adapter_kwargs.get("overrides")
    plans = preview_adapters(model, select, rank=rank, alpha=alpha, overrides=overrides)
    for p in plans:
        check_granularity(spec.granularity, p.weight_shape)
    aset = add_adapters(
        model, select, rank=rank, alpha=alpha, path=path, init=init, seed=seed, **adapter_kwargs
    )
    names = [base_module_name(n, a) for n, a in aset.adapters.items()]
    quantize(model, spec, names, seed=seed)
    return aset


def _base_quantizer(model: nn.Module, name: str, adapter: nn.Module) -> Quantizer:
    wname = f"{base_module_name(name, adapter)}.weight"
    q = quantizers(model).get(wname)
    if q is None:
        raise ConfigError(
            f"adapter {name!r} has no quantized base (no quantizer on {wname!r}); use "
            "weightlab.adapters.merge_adapters for a float base"
        )
    return q


def _chain(module: nn.Module) -> list[nn.Module]:
    return list(module.parametrizations["weight"]) if parametrize.is_parametrized(module) else []


@torch.no_grad()
def _merged_sum(module: nn.Module, chain: list, upto: int) -> torch.Tensor:
    """Apply ``chain[:upto]`` to the stored weight."""
    w = module.parametrizations["weight"].original
    for t in chain[:upto]:
        w = t(w)
    return w.detach().clone()


@torch.no_grad()
def merge_quantized_adapter(
    model: nn.Module, mode: str = "float", spec: QuantSpec | None = None
) -> str:
    """Fold every adapter on a quantized base into its layer, in place, and return the
    merge done (``"float"`` or ``"requantize"``, see the module doc).

    ``"float"``: the layer's weight becomes the float ``dequant(Q(W₀)) + ΔLoRA``; the base
    quantizer is removed. ``"requantize"``: a fresh quantizer (``spec``, default the base
    quantizer's) is attached to that sum, first in the chain, scales estimated from it.
    Transform path: masks after the delta stay attached after the (new) quantizer.
    Activation path: the wrapper is removed and base-layer masks are baked into the base
    before the delta is added (they never masked the delta). Merged weights are frozen.
    Evaluates the base in eval mode (``stats`` and observer scales as at inference)."""
    if mode not in MERGE_MODES:
        raise ConfigError(f"merge mode must be 'float' or 'requantize', got {mode!r}")
    adapters = adapter_modules(model)
    if not adapters:
        raise ConfigError("the model has no adapter to merge; add one with add_quantized_adapters")
    plan = {name: _base_quantizer(model, name, a) for name, a in adapters.items()}
    was = model.training
    model.eval()
    try:
        for name, adapter in adapters.items():
            quantizer = plan[name]
            new_spec = spec or quantizer.spec
            if isinstance(adapter, LoRALayer):
                base = adapter.base_layer
                w = base.weight.detach().clone() + adapter.delta().to(base.weight.dtype)
                parametrize.remove_parametrizations(base, "weight", leave_parametrized=False)
                base.weight = nn.Parameter(w, requires_grad=False)
                _set_submodule(model, name, base)
                after: list = []
                module = base
            else:
                module = model.get_submodule(name)
                chain = _chain(module)
                i = next(k for k, t in enumerate(chain) if t is adapter)
                if any(t is not quantizer for t in chain[:i]):
                    raise ConfigError(
                        f"layer {name!r} has a transform between its quantizer and its adapter; "
                        "merge it with weightlab.core.merge"
                    )
                w = _merged_sum(module, chain, i + 1)
                after = chain[i + 1 :]
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
                module.weight = nn.Parameter(w, requires_grad=False)
                for t in after:
                    parametrize.register_parametrization(module, "weight", t, unsafe=True)
            if mode == "requantize":
                _requantize(model, name, module, new_spec)
    finally:
        model.train(was)
    return mode


def _requantize(model: nn.Module, name: str, module: nn.Module, spec: QuantSpec) -> None:
    mname = next(n for n, m in model.named_modules() if m is module)
    quantize(model, spec, [mname])


def merge_output_errors(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Max absolute output difference between the adapted model and each merge (on deep
    copies; ``model`` is not changed), evaluated in eval mode on ``x``. The re-quantized
    merge's error is a measurement, not a bound (it grows with ``‖x‖₁``)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        ref = model(x)
    model.train(was)
    out = {}
    for mode in MERGE_MODES:
        m = independent_copy(model)
        merge_quantized_adapter(m, mode)
        m.eval()
        with torch.no_grad():
            out[mode] = float((m(x) - ref).abs().max())
    return out


def transform_chain(module: nn.Module) -> list[str]:
    """Names of the transforms on ``module.weight`` in application order (for checking
    the composition ``(dequant(Q(W₀)) + ΔLoRA) ⊙ M``)."""
    names = {Quantizer: "quantizer", LoRADelta: "lora", Mask: "mask"}
    return [names.get(type(t), type(t).__name__) for t in _chain(module)]
