"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", Eq. 3:
``h = W₀x + ΔWx = W₀x + BAx``, scaled by α/r) on Linear, Conv1d and Conv2d layers of any
module, chosen by a :class:`~weightlab.core.Selector`.

Two paths, same numbers:

- **activation** (:class:`LoRALayer`, the training path, as PEFT): the frozen layer's
  output plus ``s·(x Aᵀ) Bᵀ``; the base weight gets no gradient (``requires_grad=False``),
  so no dense weight gradient is formed.
- **transform** (:class:`LoRADelta`, a :class:`~weightlab.core.transforms.Transform`):
  ``W_eff = W₀ + s·BA`` attached to the weight, so it composes with other transforms in
  attach order, e.g. a mask attached afterwards gives ``(W₀ + s·BA) ⊙ M``; it pays the
  dense weight gradient.

``A`` is ``(r, in·k)`` and ``B`` ``(out, r)`` on both paths (for a convolution ``A`` is
viewed as an ``(r, in, *kernel)`` convolution and ``B`` as a 1×1 one, PEFT's form).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from weightlab.adapters.inits import (
    AdapterInit,
    AdapterInitContext,
    BaseWeightsModifiedWarning,
    get_adapter_init,
)
from weightlab.core.selectors import Selector
from weightlab.core.transforms import Transform, attach
from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator

__all__ = [
    "AdapterPlan",
    "AdapterSet",
    "LoRADelta",
    "LoRALayer",
    "add_adapters",
    "adapter_modules",
    "format_plans",
    "merge_adapters",
    "preview_adapters",
    "remove_adapters",
    "unmerge_adapters",
]

SUPPORTED: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)
PATHS = ("activation", "transform")


@dataclass(frozen=True)
class AdapterPlan:
    """One target of a dry run: module name and kind, weight shape, rank, α, s = α/r,
    and the adapter's trainable parameter count r·(in·k + out)."""

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    in_features: int
    out_features: int
    rank: int
    alpha: float

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    @property
    def trainable(self) -> int:
        return self.rank * (self.in_features + self.out_features)


def format_plans(plans: Sequence[AdapterPlan]) -> str:
    """A printable table of a dry run (one row per layer, then the total)."""
    rows = [("layer", "kind", "weight", "rank", "alpha", "trainable")]
    for p in plans:
        shape = "x".join(map(str, p.weight_shape))
        rows.append((p.name, p.kind, shape, str(p.rank), f"{p.alpha:g}", f"{p.trainable:,}"))
    rows.append(("total", "", "", "", "", f"{sum(p.trainable for p in plans):,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def _as_selector(select) -> Selector:
    if isinstance(select, Selector):
        return select
    items = [select] if isinstance(select, str | type) else list(select)
    globs = tuple(s for s in items if isinstance(s, str) and s not in ("linear", "conv"))
    kinds = tuple(s for s in items if isinstance(s, type) or s in ("linear", "conv"))
    bad = [s for s in items if not isinstance(s, str | type)]
    if bad:
        raise ConfigError(f"adapter targets must be a Selector, name globs or module types: {bad}")
    return Selector(types=kinds or ("linear", "conv"), include=globs)


def _targets(model: nn.Module, select) -> list[tuple[str, nn.Module]]:
    sel = _as_selector(select)
    picked = sel(model)
    wrapped = {id(m.base_layer) for m in model.modules() if isinstance(m, LoRALayer)}
    out = []
    for pname, (module, _attr) in picked.items():
        name = pname.rpartition(".")[0]
        if id(module) in wrapped or _lora_delta(module) is not None:
            name = name.removesuffix(".base_layer")
            raise ConfigError(f"layer {name!r} already has an adapter; remove_adapters first")
        if type(module) not in SUPPORTED and not isinstance(module, SUPPORTED):
            raise ConfigError(
                f"layer {name!r} is a {type(module).__name__}; LoRA supports Linear, Conv1d "
                "and Conv2d: exclude it from the selector"
            )
        if isinstance(module, nn.Conv1d | nn.Conv2d) and module.groups != 1:
            raise ConfigError(
                f"layer {name!r} is a grouped convolution (groups={module.groups}); exclude it"
            )
        out.append((name, module))
    if not out:
        names = [n for n, m in model.named_modules() if isinstance(m, SUPPORTED)]
        shown = ", ".join(names[:12]) + (f" ... ({len(names)} in all)" if len(names) > 12 else "")
        raise ConfigError(
            f"the adapter selector matches no layer; layers that exist: {shown or 'none'}; "
            "fix the name globs or types"
        )
    return out


def _dims(module: nn.Module) -> tuple[int, int]:
    w = module.weight
    return int(w[0].numel()), int(w.shape[0])


def preview_adapters(
    model: nn.Module,
    select,
    *,
    rank: int = 8,
    alpha: float | None = None,
    overrides: dict[str, dict] | None = None,
) -> list[AdapterPlan]:
    """Dry run: the layers ``add_adapters`` would adapt, with weight shapes, rank, α and
    trainable-parameter counts; nothing is changed. ``print(format_plans(plans))``.

    Args:
        select: a Selector, name glob(s) and/or module types (``nn.Linear``, ``"conv"``).
        rank: default rank r (>= 1, <= min(in·k, out) of every target).
        alpha: default α (``None``: α = r, so s = 1, PEFT's default at r = 8).
        overrides: ``{name_glob: {"rank": .., "alpha": ..}}`` per target; the first
            matching glob wins (α follows an overridden rank unless given).
    """
    overrides = dict(overrides or {})
    for glob, spec in overrides.items():
        extra = set(spec) - {"rank", "alpha"}
        if extra:
            raise ConfigError(
                f"override {glob!r} has unknown keys {sorted(extra)}; use rank, alpha"
            )
    plans = []
    for name, module in _targets(model, select):
        r, a = rank, alpha
        for glob, spec in overrides.items():
            if fnmatchcase(name, glob):
                r = spec.get("rank", r)
                a = spec.get("alpha", a if "rank" not in spec or alpha is not None else None)
                break
        a = float(r if a is None else a)
        fan_in, out = _dims(module)
        if not isinstance(r, int) or r < 1 or r > min(fan_in, out):
            raise ConfigError(
                f"rank {r} for layer {name!r} (weight {tuple(module.weight.shape)}) must be an "
                f"integer in 1..{min(fan_in, out)} = min(in, out); lower the rank"
            )
        if not math.isfinite(a) or a <= 0:
            raise ConfigError(f"alpha {a} for layer {name!r} must be a positive number")
        plans.append(
            AdapterPlan(name, type(module).__name__, tuple(module.weight.shape), fan_in, out, r, a)
        )
    return plans


class _LoRAState(nn.Module):
    """Shared state of both paths: ``lora_A (r, in·k)``, ``lora_B (out, r)``, α, r, s."""

    def _init_lora(self, plan: AdapterPlan, dtype: torch.dtype, device) -> None:
        self.rank, self.alpha, self.scaling = plan.rank, plan.alpha, plan.scaling
        self.plan = plan
        kw = {"dtype": dtype, "device": device}
        self.lora_A = nn.Parameter(torch.zeros(plan.rank, plan.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(plan.out_features, plan.rank, **kw))

    def delta(self) -> torch.Tensor:
        """``s·BA`` in the weight's shape."""
        return (self.scaling * (self.lora_B @ self.lora_A)).view(self.plan.weight_shape)

    def _weight_param(self) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def base_matrix(self) -> torch.Tensor:
        """The current base weight as a float32 ``(out, in·k)`` copy."""
        return self._weight_param().detach().reshape(self.plan.out_features, -1).float().clone()

    @torch.no_grad()
    def set_base_matrix(self, w: torch.Tensor) -> None:
        """Overwrite the base weight (used by base-modifying inits)."""
        p = self._weight_param()
        p.copy_(w.reshape(p.shape).to(p.dtype))


class LoRALayer(_LoRAState):
    """Activation-side LoRA around a frozen ``base_layer`` (Linear, Conv1d or Conv2d):
    ``y = base_layer(x) + s·B(A(dropout(x)))``. The base weight and bias have
    ``requires_grad=False``; for Linear the add and the scale are one ``addmm``."""

    def __init__(self, base_layer: nn.Module, plan: AdapterPlan, dropout: float = 0.0) -> None:
        super().__init__()
        self.base_layer = base_layer
        for p in base_layer.parameters():
            p.requires_grad_(False)
        self._init_lora(plan, base_layer.weight.dtype, base_layer.weight.device)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def _weight_param(self) -> torch.Tensor:
        return self.base_layer.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        h = self.dropout(x)
        base = self.base_layer
        if isinstance(base, nn.Linear):
            h = F.linear(h, self.lora_A)
            out = y.shape[-1]
            return torch.addmm(
                y.reshape(-1, out), h.reshape(-1, self.rank), self.lora_B.t(), alpha=self.scaling
            ).view(y.shape)
        a = self.lora_A.view(self.rank, *base.weight.shape[1:])
        conv = F.conv1d if isinstance(base, nn.Conv1d) else F.conv2d
        if base.padding_mode != "zeros":
            h = F.pad(h, base._reversed_padding_repeated_twice, mode=base.padding_mode)
            h = conv(h, a, None, base.stride, 0, base.dilation)
        else:
            h = conv(h, a, None, base.stride, base.padding, base.dilation)
        b = self.lora_B.view(*self.lora_B.shape, *([1] * (base.weight.dim() - 2)))
        return y + self.scaling * conv(h, b)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


class LoRADelta(Transform, _LoRAState):
    """Transform-path LoRA: ``W_eff = W₀ + s·BA`` (Hu et al. 2021, Eq. 3). Attach with
    :func:`add_adapters` (``path="transform"``), which also freezes W₀. Masks or
    quantizers attached after it act on the sum."""

    def __init__(self, plan: AdapterPlan, dtype: torch.dtype, device=None) -> None:
        super().__init__()
        self._init_lora(plan, dtype, device)
        self._owner: tuple[nn.Module, str] | None = None

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        out = self.lora_B.shape[0]
        d = torch.mm(self.lora_B, self.lora_A).view(out, -1)
        return torch.add(weight.view(out, -1), d, alpha=self.scaling).view(weight.shape)

    def _weight_param(self) -> torch.Tensor:
        module, attr = self._owner
        return module.parametrizations[attr].original

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


def _lora_delta(module: nn.Module) -> LoRADelta | None:
    if parametrize.is_parametrized(module, "weight"):
        for t in module.parametrizations["weight"]:
            if isinstance(t, LoRADelta):
                return t
    return None


def adapter_modules(model: nn.Module) -> dict[str, _LoRAState]:
    """``{target module name: LoRALayer | LoRADelta}`` for every (unmerged) adapter."""
    out: dict[str, _LoRAState] = {}
    for name, m in model.named_modules():
        if isinstance(m, LoRALayer):
            out[name] = m
        elif not isinstance(m, Transform):
            d = _lora_delta(m)
            if d is not None:
                out[name] = d
    return out


class AdapterSet:
    """What :func:`add_adapters` returns: the plans, the adapters by target name, and
    their trainable parameters (hand ``parameters()`` to an optimizer)."""

    def __init__(self, model: nn.Module, plans: list[AdapterPlan], adapters: dict, path: str):
        self.model, self.plans, self.adapters, self.path = model, plans, adapters, path

    def parameters(self):
        for a in self.adapters.values():
            yield from (p for p in a.parameters(recurse=False) if p.requires_grad)
            if not isinstance(a, LoRALayer | LoRADelta):  # custom delta forms (H3)
                yield from (p for n, p in a.named_parameters() if p.requires_grad and "." in n)

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def __len__(self) -> int:
        return len(self.adapters)

    def __repr__(self) -> str:
        return f"AdapterSet({len(self)} layers, path={self.path!r}, {self.num_trainable():,} trainable)"


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def add_adapters(
    model: nn.Module,
    select,
    *,
    rank: int = 8,
    alpha: float | None = None,
    init: str | AdapterInit = "random",
    overrides: dict[str, dict] | None = None,
    dropout: float = 0.0,
    path: str = "activation",
    seed: int = 0,
    freeze_base: bool = True,
) -> AdapterSet:
    """Add LoRA adapters in place and return the :class:`AdapterSet`.

    Args:
        select, rank, alpha, overrides: as :func:`preview_adapters`.
        init: ``"random"`` (PEFT's default), ``"gaussian"``, ``"pissa"``,
            ``"pissa_niter_N"``, ``"olora"`` or an :class:`AdapterInit` (EVA, LoLDU...);
            its ``plan`` hook runs first (it may change ranks), then each adapter is built
            and filled, all before any optimizer exists.
        dropout: dropout on the adapter's input (activation path only).
        path: ``"activation"`` (training, as PEFT) or ``"transform"`` (``W₀ + s·BA`` as a
            Transform; composes with masks attached afterwards).
        seed: adapter draws come from ``generator(derive_seed(seed, name))`` per target.
        freeze_base: set ``requires_grad=False`` on every parameter the model had (PEFT's
            behaviour); the adapted layers' weights are frozen in any case.

    A base-modifying init (PiSSA, OLoRA) warns with :class:`BaseWeightsModifiedWarning`
    and keeps W₀ (buffer ``original_weight``, not saved in ``state_dict``) and its initial
    A, B (``init_A``, ``init_B``), so :func:`remove_adapters` restores W₀ exactly and
    PEFT export can write the rank-2r form.
    """
    if path not in PATHS:
        raise ConfigError(f"unknown adapter path {path!r}; use 'activation' or 'transform'")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"adapter dropout {dropout} must be in [0, 1)")
    if path == "transform" and dropout > 0:
        raise ConfigError("dropout needs the activation path; set dropout=0 or path='activation'")
    init = get_adapter_init(init)
    plans = preview_adapters(model, select, rank=rank, alpha=alpha, overrides=overrides)
    plans = init.plan(model, plans)
    if freeze_base:
        for p in model.parameters():
            p.requires_grad_(False)
    adapters: dict[str, nn.Module] = {}
    for plan in plans:
        base = model.get_submodule(plan.name)
        adapter = init.make(base, plan, path)
        if adapter is None:
            if path == "activation":
                adapter = LoRALayer(base, plan, dropout)
                _set_submodule(model, plan.name, adapter)
            else:
                adapter = LoRADelta(plan, base.weight.dtype, base.weight.device)
                base.weight.requires_grad_(False)
                attach(model, f"{plan.name}.weight", adapter)
                adapter._owner = (base, "weight")
        if init.modifies_base:
            adapter.register_buffer(
                "original_weight", adapter._weight_param().detach().clone(), persistent=False
            )
        ctx = AdapterInitContext(plan.name, plan, generator(derive_seed(seed, plan.name)), model)
        init(adapter, ctx)
        if init.modifies_base:
            for attr in ("lora_A", "lora_B"):
                if hasattr(adapter, attr):
                    t = getattr(adapter, attr).detach().clone()
                    adapter.register_buffer(attr.replace("lora", "init"), t, persistent=False)
        adapter.init_name = init.name
        adapter.peft_init = init.peft_init()
        adapters[plan.name] = adapter
    if init.modifies_base:
        warnings.warn(
            f"adapter init {init.name!r} rewrote the base weights of {len(plans)} layers to "
            "the residual W0 - s*BA; remove_adapters(model) restores the originals exactly",
            BaseWeightsModifiedWarning,
            stacklevel=2,
        )
    return AdapterSet(model, plans, adapters, path)


_MERGED = "_weightlab_lora_merged"


@torch.no_grad()
def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every adapter into its layer's weight (``W₀ + s·BA``), in place; the model is
    then made of plain modules (no wrappers, no parametrizations; ``state_dict`` keys of
    the original architecture). The pre-merge weight and the adapter are kept off the
    module tree (not in ``state_dict``), so :func:`unmerge_adapters` restores them exactly.
    Other transforms on a merged weight (a mask) are baked in too and re-attached on
    unmerge."""
    for name, a in adapter_modules(model).items():
        if isinstance(a, LoRALayer):
            base = a.base_layer
            old = base.weight
            base.weight = nn.Parameter(old + a.delta().to(old.dtype), requires_grad=False)
            base.__dict__[_MERGED] = (a, old, None)
            _set_submodule(model, name, base)
        else:
            module = model.get_submodule(name)
            chain = list(module.parametrizations["weight"])
            # remove_parametrizations writes the merged value into ``original`` in place
            old = nn.Parameter(module.parametrizations["weight"].original.detach().clone())
            old.requires_grad_(False)
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            module.weight.requires_grad_(False)
            module.__dict__[_MERGED] = (a, old, chain)
    return model


@torch.no_grad()
def unmerge_adapters(model: nn.Module) -> nn.Module:
    """Undo :func:`merge_adapters`: the adapters are back, the base weights exactly W₀."""
    for name, m in list(model.named_modules()):
        rec = m.__dict__.pop(_MERGED, None)
        if rec is None:
            continue
        adapter, old, chain = rec
        m.weight = old
        if chain is None:
            adapter.base_layer = m
            _set_submodule(model, name, adapter)
        else:
            for t in chain:
                parametrize.register_parametrization(m, "weight", t, unsafe=True)
            m.parametrizations["weight"].original = old
    return model


@torch.no_grad()
def remove_adapters(model: nn.Module) -> nn.Module:
    """Drop every adapter (merged or not) without merging: the layers are plain again
    with their original weights W₀, restored exactly also after a base-modifying init.
    Other transforms attached to those weights (masks) are removed unmerged."""
    unmerge_adapters(model)
    for name, a in adapter_modules(model).items():
        original = getattr(a, "original_weight", None)
        if isinstance(a, LoRALayer):
            base = a.base_layer
            if original is not None:
                base.weight = nn.Parameter(original.clone(), requires_grad=False)
            _set_submodule(model, name, base)
        else:
            module = model.get_submodule(name)
            stored = module.parametrizations["weight"].original
            w = original.clone() if original is not None else stored.detach().clone()
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
            module.weight = nn.Parameter(w, requires_grad=False)
    return model


def rebind(plan: AdapterPlan, **changes) -> AdapterPlan:
    """A copy of ``plan`` with fields changed (for ``AdapterInit.plan``: e.g. EVA's ranks)."""
    return replace(plan, **changes)
