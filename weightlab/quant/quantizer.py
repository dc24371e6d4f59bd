"""The quantizer: level set × scale estimator × rounding × granularity, as a Transform.

:class:`QuantSpec` names all four factors (plus the STE and when a static scale is
re-estimated); :class:`Quantizer` is the :class:`~weightlab.core.transforms.Transform` that
applies one spec to one weight; :func:`quantize` attaches quantizers to the weights a
:class:`~weightlab.core.Selector` picks.

Composition order (fixed): ``W_eff = (dequant(Q(W₀)) + ΔLoRA) ⊙ M``. A quantizer is always
the *first* transform on its weight: :func:`quantize` re-attaches any transforms already
there (a LoRA delta, a mask) after it, so a pruned weight is exactly 0 even on a zero-free
level set, and a LoRA delta stays in float. A quantizer reads the weight's mask, when one
is attached, so its scale estimators ignore pruned entries.

PTQ: static estimators (``minmax``, ``percentile``, ``mse``, ``meanabs``) run once when the
quantizer is attached (``update="once"``) or at every training forward
(``update="step"``, an observer that stays on). ``stats`` is re-estimated at every forward;
``lsq`` learns the scale (a ``Parameter``). :func:`~weightlab.core.transforms.merge` bakes
the quantized weights into plain parameters.

Instrumentation: with ``track=True`` a quantizer keeps, after each training-mode forward,
the integer level index of every weight (``last_q``) and its pre-rounding grid position
(``last_t``), which :mod:`weightlab.quant.instrument` turns into oscillation and freezing
metrics; ``keep`` (a 0/1 buffer or None) gates the weight gradient (confidence-guided
annealing).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn
from torch.nn.utils import parametrize

from weightlab.core.selectors import Selector
from weightlab.core.transforms import Transform, _resolve, attach, transforms_of
from weightlab.errors import ConfigError
from weightlab.quant.fake import ROUNDINGS, STES, fake_quant, torch_fake_quant_channels
from weightlab.quant.granularity import Granularity, check_granularity, group_view
from weightlab.quant.levels import LEVEL_SETS, LevelSet, Uniform, check_bits, make_levels
from weightlab.quant.scales import ESTIMATORS, MSE_SEARCHES, STATIC, estimate
from weightlab.seeding import derive_seed, generator

UPDATES = ("once", "step")


@dataclass(frozen=True)
class QuantSpec:
    """One quantizer design. ``levels`` ∈ :data:`~weightlab.quant.levels.LEVEL_SETS`,
    ``scale`` ∈ :data:`~weightlab.quant.scales.ESTIMATORS`, ``rounding`` ∈ nearest /
    stochastic, ``granularity`` ``"tensor"`` / ``"channel"`` / a group size."""

    bits: int = 8
    levels: str = "uniform"
    scale: str = "minmax"
    rounding: str = "nearest"
    granularity: Granularity = "channel"
    ste: str = "clipped"
    exponent: float = 1.0  # the power level set's a
    percentile: float = 99.9
    mse_ratios: int = 100
    mse_search: str = "coarse"
    update: str = "once"  # static estimators: once at attach, or at every training forward
    # float32, uniform, nearest, clipped STE: a fast path equal to PyTorch's fused kernels
    fused: bool = True

    def __post_init__(self) -> None:
        check_bits(self.bits)
        if self.levels not in LEVEL_SETS:
            raise ConfigError(
                f"unknown level set {self.levels!r}; choose one of {', '.join(LEVEL_SETS)}"
            )
        if self.scale not in ESTIMATORS:
            raise ConfigError(
                f"unknown scale estimator {self.scale!r}; choose one of {', '.join(ESTIMATORS)}"
            )
        if self.rounding not in ROUNDINGS:
            raise ConfigError(
                f"rounding must be one of {', '.join(ROUNDINGS)}, got {self.rounding!r}"
            )
        if self.ste not in STES:
            raise ConfigError(f"ste must be one of {', '.join(STES)}, got {self.ste!r}")
        if self.update not in UPDATES:
            raise ConfigError(f"update must be 'once' or 'step', got {self.update!r}")
        if self.mse_search not in MSE_SEARCHES:
            raise ConfigError(f"mse_search must be coarse or exhaustive, got {self.mse_search!r}")
        if not 0.0 < self.percentile <= 100.0:
            raise ConfigError(f"the percentile must lie in (0, 100], got {self.percentile}")
        check_granularity(self.granularity)
        self.level_set()  # bits / exponent checks of the level set itself
        if self.scale == "lsq" and self.levels not in ("uniform", "uniform_full", "uniform_asym"):
            raise ConfigError("the learned LSQ scale needs a uniform level set")

    def level_set(self) -> LevelSet:
        return make_levels(self.levels, self.bits, self.exponent)

    def describe(self) -> str:
        """The four factors, e.g. ``uniform4 × mse × nearest × channel``."""
        g = self.granularity if isinstance(self.granularity, str) else f"group{self.granularity}"
        return f"{self.level_set().describe()} × {self.scale} × {self.rounding} × {g}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> QuantSpec:
        known = {f.name for f in fields(cls)}
        extra = set(d) - known
        if extra:
            raise ConfigError(f"unknown quantizer fields {sorted(extra)}; known: {sorted(known)}")
        return cls(**d)


class Quantizer(Transform):
    """Fake-quantizes one weight (see the module doc). Buffers: ``scale`` ``(A, G, 1)``
    (a ``Parameter`` under LSQ), ``zero_point`` (asymmetric grids), ``valid`` (the mask's
    kept entries, shared with the weight's :class:`~weightlab.core.Mask`, or None)."""

    def __init__(
        self,
        spec: QuantSpec,
        weight: torch.Tensor,
        *,
        valid: torch.Tensor | None = None,
        seed: int = 0,
        name: str = "",
    ) -> None:
        super().__init__()
        check_granularity(spec.granularity, tuple(weight.shape))
        self.spec = spec
        self.levels = spec.level_set()
        self.name = name
        self.seed = seed
        self.track = False
        self.last_q: torch.Tensor | None = None
        self.last_t: torch.Tensor | None = None
        self.keep: torch.Tensor | None = None
        self._valid_ref = valid
        self._gen = (
            generator(derive_seed("quant-rounding", seed, name))
            if spec.rounding == "stochastic"
            else None
        )
        wv = group_view(weight.detach(), spec.granularity)
        self.numel_per_scale = wv.shape[-1]
        scale, zp = self._estimate(wv)
        if spec.scale == "lsq":
            self.scale = nn.Parameter(scale.clone())
        else:
            self.register_buffer("scale", scale.clone())
        self.register_buffer("zero_point", None if zp is None else zp.clone())

    # -- scales ------------------------------------------------------------------------
    def _valid_view(self, like: torch.Tensor) -> torch.Tensor | None:
        if self._valid_ref is None:
            return None
        return group_view(self._valid_ref.to(like.dtype), self.spec.granularity)

    def _estimate(self, wv: torch.Tensor):
        s = self.spec
        method = "lsq" if s.scale == "lsq" else s.scale
        return estimate(
            self.levels,
            wv,
            method,
            self._valid_view(wv),
            percentile=s.percentile,
            mse_ratios=s.mse_ratios,
            mse_search=s.mse_search,
        )

    def recalibrate(self, weight: torch.Tensor) -> None:
        """Re-estimate a static scale from ``weight`` (e.g. after loading other weights)."""
        with torch.no_grad():
            scale, zp = self._estimate(group_view(weight.detach(), self.spec.granularity))
            self.scale.copy_(scale)
            if zp is not None:
                self.zero_point.copy_(zp)

    @property
    def grad_factor(self) -> float:
        """LSQ's gradient scale ``1/√(N·Q_max)``, N = weights per scale."""
        return 1.0 / math.sqrt(self.numel_per_scale * max(1, self.levels.qmax))

    def current_scale(self, wv: torch.Tensor):
        s = self.spec
        if s.scale == "stats" or (s.scale in STATIC and s.update == "step" and self.training):
            scale, zp = self._estimate(wv)
            with torch.no_grad():
                self.scale.copy_(scale)
                if zp is not None:
                    self.zero_point.copy_(zp)
            return scale, zp
        return self.scale, self.zero_point

    # -- forward -----------------------------------------------------------------------
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        s = self.spec
        wv = group_view(weight, s.granularity)
        scale, zp = self.current_scale(wv)
        learn = s.scale == "lsq"
        tracking = self.track and self.training
        if (
            s.fused
            and isinstance(self.levels, Uniform)
            and s.rounding == "nearest"
            and s.ste == "clipped"
            and self.keep is None
            and weight.dtype == torch.float32
            and not tracking
        ):
            if learn:
                out = _torch_learnable(wv, self.levels, scale, zp, self.grad_factor)
            else:
                out = uniform_fake_quant(wv, self.levels, scale, zp)
            return out.reshape(weight.shape)
        keep = None if self.keep is None else group_view(self.keep.to(weight.dtype), s.granularity)
        out, q = fake_quant(
            wv,
            self.levels,
            scale,
            zp,
            rounding=s.rounding,
            ste=s.ste,
            generator=self._gen,
            grad_factor=self.grad_factor if learn else 1.0,
            keep=keep,
        )
        if tracking:
            with torch.no_grad():
                t = self.levels.encode(wv.detach() * (1.0 / scale.detach()))
                if zp is not None:
                    t = t + zp
                self.last_t = t.reshape(weight.shape)
                self.last_q = q.detach().to(torch.int32).reshape(weight.shape)
        return out.reshape(weight.shape)

    def level_indices(self, weight: torch.Tensor) -> torch.Tensor:
        """The integer level index of every weight under the current scale (nearest)."""
        with torch.no_grad():
            wv = group_view(weight.detach(), self.spec.granularity)
            from weightlab.quant.fake import quantize_levels

            _, q = quantize_levels(wv, self.levels, self.scale.detach(), self.zero_point)
            return q.to(torch.int32).reshape(weight.shape)

    def extra_repr(self) -> str:
        return self.spec.describe()


class _UniformSTE(torch.autograd.Function):
    """``x̂ = (clamp(round(x·(1/s)) + z, qmin, qmax) − z)·s`` with the clipped STE (gradient
    1 where ``round(x·(1/s)) + z`` lies in ``[qmin, qmax]``, else 0): the arithmetic of
    ``torch.fake_quantize_per_channel_affine``, bitwise in forward and gradient (tested),
    as a few vectorized in-place passes (PyTorch's per-channel CPU kernel is scalar: on
    MiniLM's 36 weights, one thread, ~130 ms forward + backward against ~20 ms here). When
    no entry is clipped (a min-max scale) no mask is kept and the gradient passes
    unchanged. The scale gets no gradient."""

    @staticmethod
    def forward(ctx, x, scale, zp, qmin, qmax):
        t = x * (1.0 / scale)
        t.round_().add_(0.0)  # −0.0 → +0.0, as PyTorch's integer round trip
        if zp is not None:
            t.add_(zp)
        lo, hi = torch.aminmax(t)
        ctx.clipped = not (bool(lo >= qmin) and bool(hi <= qmax))  # NaN counts as clipped
        if ctx.clipped:
            q = t.clamp(qmin, qmax)
            ctx.save_for_backward(q == t)
            t = q
        if zp is not None:
            t.sub_(zp)
        return t.mul_(scale)

    @staticmethod
    def backward(ctx, dy):
        if not ctx.clipped:
            return dy, None, None, None, None
        (inside,) = ctx.saved_tensors
        return dy * inside, None, None, None, None


def uniform_fake_quant(
    x: torch.Tensor, levels: Uniform, scale: torch.Tensor, zp: torch.Tensor | None
) -> torch.Tensor:
    """Fake-quantize ``x`` viewed ``(A, G, g)`` on a uniform grid (nearest, clipped STE,
    no gradient to ``scale`` or ``zp``); equals
    :func:`~weightlab.quant.fake.torch_fake_quant_channels` bitwise, faster. Under
    ``torch.func`` transforms (vmap, grad), which the autograd function and its clipping
    check do not support, PyTorch's kernel runs instead."""
    if torch._C._are_functorch_transforms_active():
        return torch_fake_quant_channels(x, levels, scale, zp)
    scale = scale.detach()
    zp = None if zp is None else zp.detach()
    if torch.is_grad_enabled() and x.requires_grad:
        return _UniformSTE.apply(x, scale, zp, levels.qmin, levels.qmax)
    with torch.no_grad():
        t = (x * (1.0 / scale)).round_().add_(0.0)
        if zp is not None:
            t.add_(zp)
        t.clamp_(levels.qmin, levels.qmax)
        if zp is not None:
            t.sub_(zp)
        return t.mul_(scale)


def _torch_learnable(wv, levels, scale, zp, grad_factor):
    a, g, n = wv.shape
    flat = wv.reshape(a * g, n)
    z = (
        torch.zeros(a * g, dtype=torch.float32, device=wv.device)
        if zp is None
        else zp.reshape(a * g)
    )
    out = torch._fake_quantize_learnable_per_channel_affine(
        flat, scale.reshape(a * g), z, 0, levels.qmin, levels.qmax, grad_factor
    )
    return out.reshape(a, g, n)


# -- attaching ---------------------------------------------------------------------------
def _as_selector(select) -> Selector:
    if select is None:
        return Selector()
    if isinstance(select, Selector):
        return select
    items = [select] if isinstance(select, str) else list(select)
    return Selector(include=tuple(items))


def quantizers(model: nn.Module) -> dict[str, Quantizer]:
    """``{plain weight name: Quantizer}`` of every quantized weight."""
    from weightlab.core.transforms import parametrized_names

    out = {}
    for name in parametrized_names(model):
        for t in transforms_of(model, name):
            if isinstance(t, Quantizer):
                out[name] = t
    return out


def quantize(
    model: nn.Module,
    spec: QuantSpec,
    select: Selector | str | list[str] | None = None,
    *,
    seed: int = 0,
    specs: dict[str, QuantSpec] | None = None,
    cls: type[Quantizer] | None = None,
) -> dict[str, Quantizer]:
    """Attach a :class:`Quantizer` (``spec``, or ``specs[name]`` per weight) to every weight
    ``select`` picks (default: every Linear and Conv weight), first in each weight's
    transform chain. Static scales are estimated now, from the stored weights (a mask's
    pruned entries ignored). Returns ``{name: Quantizer}``. Refuses a weight that already
    has a quantizer. ``cls``: a :class:`Quantizer` subclass to build instead (same
    constructor), e.g. DenseShift's :class:`~weightlab.quant.shift.SignScale`."""
    picked = _as_selector(select)(model)
    if not picked:
        raise ConfigError("the quantizer selector matches no weight; fix the name globs or types")
    # check every target before changing anything
    for name, (module, attr) in picked.items():
        if any(isinstance(t, Quantizer) for t in transforms_of(model, name)):
            raise ConfigError(f"weight {name!r} is already quantized; remove its quantizer first")
        sp = (specs or {}).get(name, spec)
        w = _stored(module, attr)
        check_granularity(sp.granularity, tuple(w.shape))
    out = {}
    for name, (module, attr) in picked.items():
        sp = (specs or {}).get(name, spec)
        out[name] = _attach_first(model, name, module, attr, sp, seed, cls or Quantizer)
    return out


def _stored(module: nn.Module, attr: str) -> torch.Tensor:
    if parametrize.is_parametrized(module, attr):
        return module.parametrizations[attr].original
    return getattr(module, attr)


def _attach_first(model, name, module, attr, spec, seed, cls=None) -> Quantizer:
    from weightlab.core.mask import Mask

    existing = []
    if parametrize.is_parametrized(module, attr):
        existing = list(module.parametrizations[attr])
        parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
    weight = getattr(module, attr)
    mask = next((t for t in existing if isinstance(t, Mask)), None)
    valid = None if mask is None else mask.mask
    q = (cls or Quantizer)(spec, weight, valid=valid, seed=seed, name=name)
    attach(model, name, q)
    for t in existing:
        parametrize.register_parametrization(module, attr, t, unsafe=True)
    return q


def remove_quantizers(model: nn.Module) -> nn.Module:
    """Take every quantizer off (the float weights come back); other transforms stay."""
    for name in list(quantizers(model)):
        module, attr = _resolve(model, name)
        chain = list(module.parametrizations[attr])
        parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
        for t in chain:
            if not isinstance(t, Quantizer):
                parametrize.register_parametrization(module, attr, t, unsafe=True)
    return model
