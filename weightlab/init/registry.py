"""The initializer registry: every scheme as ``init(shape, ctx)``, applied to any model.

An :class:`Initializer` turns a weight's shape and an :class:`InitContext` (fans, the
layer's index among the selected weights and their number, the activation, the layer's
own generator, optional data / target / graph) into a tensor. :func:`initialize` applies
one to the weights a :class:`~weightlab.core.Selector` picks (default: every Linear and
Conv weight, in module order) and their biases, in place:

- every tensor draws from its own generator, ``generator(derive_seed("init", seed,
  name))``: the global RNG is never read, and a layer's values do not depend on which
  other layers were selected; the basic schemes draw in place in the weight's own float
  dtype (float32 draws for float32 weights; float64 ones for float64), one pass each;
- a scheme may return any float dtype: the one ``copy_`` into the stored tensor converts;
- the *stored* weight is written (a mask's ``original`` when transforms are attached);
  where a mask is attached the stored weight is re-zeroed where it is pruned;
- a scheme that needs data, a target or a graph and got none is a one-line
  :class:`ConfigError` before anything is written; so is an unknown name.

Schemes register themselves with :func:`register` under a name; :func:`get_initializer`
builds one from its name and parameters. This module holds the data-free basics:
``normal``, ``uniform``, ``glorot`` (Glorot & Bengio 2010, Eq. 12 and 16), ``he`` (He et
al. 2015, Eq. 10), ``orthogonal`` (Saxe et al. 2014, Sec. 3; Mezzadri 2007's
sign-corrected QR), and ``zero`` / ``identity`` for residual branches. The family modules
add the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from weightlab.core.selectors import Selector
from weightlab.errors import ConfigError
from weightlab.init.fans import conv_fans, linear_fans
from weightlab.seeding import derive_seed, generator

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class InitContext:
    """What a scheme may read about the weight it initializes.

    ``name``: plain parameter name (``layers.0.weight``); ``module``: its module;
    ``fan_in`` / ``fan_out``: :mod:`weightlab.init.fans`; ``index`` / ``depth``: the
    weight's 0-based position among the selected weights and their number (``index /
    depth`` is the relative depth ℓ/L); ``activation``: the nonlinearity after the layer
    (``None`` if unknown); ``generator``: this tensor's own generator; ``data``,
    ``target``, ``graph``: optional inputs for data-driven schemes; ``dtype``/``device``:
    those of the stored weight."""

    name: str
    module: nn.Module
    fan_in: int
    fan_out: int
    index: int
    depth: int
    activation: str | None
    generator: torch.Generator
    data: Any = None
    target: Any = None
    graph: Any = None
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


class Initializer:
    """A scheme: :meth:`weight` (required) and :meth:`bias` (default zero). ``needs``
    lists the context fields it cannot work without (``"data"``, ``"target"``,
    ``"graph"``). :meth:`after` runs once after every selected tensor is written, for
    schemes that refine the model as a whole (e.g. data-driven rescaling)."""

    name: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()

    def weight(self, shape: torch.Size, ctx: InitContext) -> torch.Tensor:
        raise NotImplementedError

    def bias(self, shape: torch.Size, ctx: InitContext) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float64)

    def after(self, model: nn.Module, contexts: list[InitContext]) -> None:
        """Called after all weights are written (default: nothing)."""

    def fill_(self, tensor: torch.Tensor, ctx: InitContext) -> None:
        """Optional: draw straight into ``tensor`` (the stored weight), the same values
        :meth:`weight` would return. Only for schemes that cannot fail once built (the
        whole model is then written tensor by tensor, with no copy of every draw held
        first). Not overridden: :func:`initialize` draws everything, then writes."""
        raise NotImplementedError

    def __call__(self, shape: torch.Size, ctx: InitContext) -> torch.Tensor:
        return self.weight(shape, ctx)


SCHEMES: dict[str, Callable[..., Initializer]] = {}


def register(name: str) -> Callable[[type[Initializer]], type[Initializer]]:
    """Class decorator: make ``cls(**params)`` available as :func:`get_initializer(name)`."""

    def deco(cls: type[Initializer]) -> type[Initializer]:
        if name in SCHEMES:
            raise ConfigError(f"init scheme {name!r} is registered twice")
        cls.name = name
        SCHEMES[name] = cls
        return cls

    return deco


# Modules that register more schemes when imported (lazily here: they import this one).
FAMILY_MODULES = (
    "weightlab.init.critical",
    "weightlab.init.depth_aware",
    "weightlab.init.lowrank",
    "weightlab.init.generalized_gaussian",
    "weightlab.init.lsuv",
    "weightlab.init.winner",
    "weightlab.init.virgo",
    "weightlab.init.random_feature_samplers",
)


def _load_families() -> None:
    import importlib

    for mod in FAMILY_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # not (yet) part of this installation
            if e.name != mod:
                raise


def get_initializer(name: str | Initializer, **params: Any) -> Initializer:
    """The scheme ``name`` built with ``params`` (an :class:`Initializer` passes through).
    An unknown name or a bad parameter is a one-line :class:`ConfigError`."""
    if isinstance(name, Initializer):
        if params:
            raise ConfigError("pass parameters to the scheme's constructor, not with an instance")
        return name
    _load_families()
    if name not in SCHEMES:
        raise ConfigError(
            f"unknown init scheme {name!r}; choose one of: {', '.join(sorted(SCHEMES))}"
        )
    try:
        return SCHEMES[name](**params)
    except TypeError as e:
        raise ConfigError(f"init scheme {name!r}: {e}") from None


def weight_fans(module: nn.Module, weight: torch.Tensor) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a Linear or Conv weight (any other 2-D weight as Linear)."""
    if isinstance(module, _CONV) or weight.dim() > 2:
        return conv_fans(tuple(weight.shape))
    if weight.dim() == 2:
        return linear_fans(tuple(weight.shape))
    n = weight.numel()
    return n, n


def _stored(module: nn.Module, attr: str) -> torch.Tensor | None:
    if parametrize.is_parametrized(module, attr):
        return module.parametrizations[attr].original
    return getattr(module, attr, None)


def _activation_of(model: nn.Module) -> str | None:
    act = getattr(model, "activation", None)
    return act if isinstance(act, str) else None


def contexts(
    model: nn.Module,
    *,
    seed: int,
    selector: Selector | None = None,
    activation: str | None = None,
    data: Any = None,
    target: Any = None,
    graph: Any = None,
) -> list[InitContext]:
    """The :class:`InitContext` of every selected weight, in module order."""
    picked = (selector or Selector())(model)
    if not picked:
        raise ConfigError("the selector picked no weights to initialize; check its types and roles")
    act = activation if activation is not None else _activation_of(model)
    out = []
    for i, (name, (module, attr)) in enumerate(picked.items()):
        w = _stored(module, attr)
        fan_in, fan_out = weight_fans(module, w)
        out.append(
            InitContext(
                name=name,
                module=module,
                fan_in=fan_in,
                fan_out=fan_out,
                index=i,
                depth=len(picked),
                activation=act,
                generator=generator(derive_seed("init", int(seed), name)),
                data=data,
                target=target,
                graph=graph,
                dtype=w.dtype,
                device=w.device,
            )
        )
    return out


def _write(stored: torch.Tensor, value: torch.Tensor, what: str) -> None:
    if tuple(value.shape) != tuple(stored.shape):
        raise ConfigError(
            f"init scheme returned shape {tuple(value.shape)} for {what} of shape "
            f"{tuple(stored.shape)}"
        )
    stored.copy_(value)  # converts dtype and device in the one copy


def initialize(
    model: nn.Module,
    scheme: str | Initializer,
    *,
    seed: int,
    selector: Selector | None = None,
    activation: str | None = None,
    data: Any = None,
    target: Any = None,
    graph: Any = None,
    bias: bool = True,
    **params: Any,
) -> list[InitContext]:
    """Initialize the selected weights of ``model`` (and, with ``bias=True``, their
    modules' biases) in place with ``scheme`` (a registered name plus ``params``, or an
    :class:`Initializer`). ``activation`` defaults to ``model.activation`` when it is a
    string (weightlab's MLP). Returns the contexts used, in order."""
    init = get_initializer(scheme, **params)
    given = {"data": data, "target": target, "graph": graph}
    missing = [k for k in init.needs if given[k] is None]
    if missing:
        raise ConfigError(
            f"init scheme {init.name or type(init).__name__!r} needs {' and '.join(missing)}; "
            f"pass {', '.join(f'{k}=...' for k in missing)}"
        )
    ctxs = contexts(
        model,
        seed=seed,
        selector=selector,
        activation=activation,
        data=data,
        target=target,
        graph=graph,
    )
    from weightlab.core.mask import get_masks

    masks = get_masks(model)
    if type(init).fill_ is not Initializer.fill_:  # draws straight into the stored tensors
        with torch.no_grad():
            for ctx in ctxs:
                attr = ctx.name.rpartition(".")[2]
                stored = _stored(ctx.module, attr)
                init.fill_(stored, ctx)
                if ctx.name in masks:
                    stored.mul_(masks[ctx.name].to(stored.device, stored.dtype))
                b_stored = _stored(ctx.module, "bias") if bias and attr == "weight" else None
                if b_stored is not None:
                    _write(b_stored, init.bias(b_stored.shape, ctx), ctx.name[:-6] + "bias")
            init.after(model, ctxs)
        return ctxs
    values = []
    for ctx in ctxs:  # every draw first: a failing scheme leaves the model untouched
        attr = ctx.name.rpartition(".")[2]
        w = init.weight(_stored(ctx.module, attr).shape, ctx)
        b_stored = _stored(ctx.module, "bias") if bias and attr == "weight" else None
        b = None if b_stored is None else init.bias(b_stored.shape, ctx)
        values.append((ctx, attr, w, b_stored, b))
    with torch.no_grad():
        for ctx, attr, w, b_stored, b in values:
            stored = _stored(ctx.module, attr)
            _write(stored, w, ctx.name)
            if ctx.name in masks:
                stored.mul_(masks[ctx.name].to(stored.device, stored.dtype))
            if b_stored is not None and b is not None:
                _write(b_stored, b, ctx.name.rpartition(".")[0] + ".bias")
        init.after(model, ctxs)
    return ctxs


# -- the data-free basics ------------------------------------------------------------


def _draw_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _normal(
    shape: torch.Size, std: float, g: torch.Generator, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``N(0, std²)`` drawn in place (one pass, no temporary) in ``dtype``."""
    return torch.empty(tuple(shape), dtype=_draw_dtype(dtype)).normal_(0.0, std, generator=g)


def _uniform(
    shape: torch.Size, bound: float, g: torch.Generator, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``U(-bound, bound)`` drawn in place in ``dtype``."""
    out = torch.empty(tuple(shape), dtype=_draw_dtype(dtype))
    return out.uniform_(-bound, bound, generator=g)


def _check_positive(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return v


def _check_dist(dist: str) -> str:
    if dist not in ("normal", "uniform"):
        raise ConfigError(f"distribution must be 'normal' or 'uniform', got {dist!r}")
    return dist


def _fill(tensor: torch.Tensor, dist: str, scale: float, g: torch.Generator) -> None:
    """Draw ``N(0, scale²)`` or ``U(±scale)`` straight into ``tensor``: in place for a CPU
    float32/float64 tensor (the same values :func:`_normal` / :func:`_uniform` give in that
    dtype), else drawn aside and copied."""
    if tensor.device.type == "cpu" and tensor.dtype in (torch.float32, torch.float64):
        if dist == "normal":
            tensor.normal_(0.0, scale, generator=g)
        else:
            tensor.uniform_(-scale, scale, generator=g)
        return
    draw = _normal if dist == "normal" else _uniform
    tensor.copy_(draw(tensor.shape, scale, g, tensor.dtype))


def _draw(
    dist: str, shape: torch.Size, var: float, g: torch.Generator, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Zero-mean draw of variance ``var``: normal, or uniform on ±√(3 var)."""
    if dist == "normal":
        return _normal(shape, _scale(dist, var), g, dtype)
    return _uniform(shape, _scale(dist, var), g, dtype)


def _scale(dist: str, var: float) -> float:
    """The std (normal) or bound (uniform) of a zero-mean draw of variance ``var``."""
    return math.sqrt(var) if dist == "normal" else math.sqrt(3.0 * var)


@register("normal")
class Normal(Initializer):
    """``W ~ N(0, std²)``."""

    def __init__(self, std: float = 0.02) -> None:
        self.std = _check_positive("std", std)

    def weight(self, shape, ctx):
        return _normal(shape, self.std, ctx.generator, ctx.dtype)

    def fill_(self, tensor, ctx):
        _fill(tensor, "normal", self.std, ctx.generator)


@register("uniform")
class Uniform(Initializer):
    """``W ~ U(-bound, bound)``."""

    def __init__(self, bound: float = 0.05) -> None:
        self.bound = _check_positive("bound", bound)

    def weight(self, shape, ctx):
        return _uniform(shape, self.bound, ctx.generator, ctx.dtype)

    def fill_(self, tensor, ctx):
        _fill(tensor, "uniform", self.bound, ctx.generator)


@register("glorot")
class Glorot(Initializer):
    """Glorot & Bengio (2010), Var W = gain² · 2 / (fan_in + fan_out) (Eq. 12; the
    uniform form is Eq. 16)."""

    def __init__(self, dist: str = "normal", gain: float = 1.0) -> None:
        self.dist = _check_dist(dist)
        self.gain = _check_positive("gain", gain)

    def variance(self, ctx: InitContext) -> float:
        return self.gain**2 * 2.0 / max(ctx.fan_in + ctx.fan_out, 1)

    def weight(self, shape, ctx):
        return _draw(self.dist, shape, self.variance(ctx), ctx.generator, ctx.dtype)

    def fill_(self, tensor, ctx):
        _fill(tensor, self.dist, _scale(self.dist, self.variance(ctx)), ctx.generator)


@register("he")
class He(Initializer):
    """He et al. (2015), Var W = gain² / fan (Eq. 10 with gain² = 2 for ReLU; ``mode``
    ``fan_in`` keeps forward variance, ``fan_out`` backward variance, Eq. 14)."""

    def __init__(self, dist: str = "normal", gain: float = math.sqrt(2.0), mode: str = "fan_in"):
        self.dist = _check_dist(dist)
        self.gain = _check_positive("gain", gain)
        if mode not in ("fan_in", "fan_out"):
            raise ConfigError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
        self.mode = mode

    def variance(self, ctx: InitContext) -> float:
        fan = ctx.fan_in if self.mode == "fan_in" else ctx.fan_out
        return self.gain**2 / max(fan, 1)

    def weight(self, shape, ctx):
        return _draw(self.dist, shape, self.variance(ctx), ctx.generator, ctx.dtype)

    def fill_(self, tensor, ctx):
        _fill(tensor, self.dist, _scale(self.dist, self.variance(ctx)), ctx.generator)


def orthogonal(
    rows: int, cols: int, g: torch.Generator, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """A Haar-random ``rows × cols`` matrix with orthonormal rows (``rows <= cols``) or
    columns: QR of a Gaussian matrix with the signs of ``diag(R)`` moved into ``Q``
    (Mezzadri 2007, "How to generate random matrices from the classical compact groups",
    Sec. 5), in ``dtype`` (float64 by default; float32 for a float32 weight)."""
    tall = rows >= cols
    a = torch.randn((rows, cols) if tall else (cols, rows), generator=g, dtype=_draw_dtype(dtype))
    q, r = torch.linalg.qr(a)
    d = torch.sign(torch.diagonal(r))
    q = q * torch.where(d == 0, torch.ones_like(d), d)
    return q if tall else q.T


@register("orthogonal")
class Orthogonal(Initializer):
    """Random orthogonal weights times ``gain`` (Saxe et al. 2014, Sec. 3: deep linear
    nets learn in depth-independent time from orthogonal init). A conv weight is
    orthogonal as its ``(C_out, C_in·∏k)`` matrix; ``delta=True`` instead puts an
    orthogonal ``(C_out, C_in)`` matrix at the kernel centre and zeros elsewhere (the
    delta-orthogonal init of Xiao et al. 2018, Alg. 1)."""

    def __init__(self, gain: float = 1.0, delta: bool = False) -> None:
        self.gain = _check_positive("gain", gain)
        self.delta = bool(delta)

    def weight(self, shape, ctx):
        shape = tuple(shape)
        if len(shape) < 2:
            raise ConfigError(f"orthogonal init needs a weight of >= 2 dims; {ctx.name} is {shape}")
        dtype = _draw_dtype(ctx.dtype)
        if self.delta and len(shape) > 2:
            out = torch.zeros(shape, dtype=dtype)
            centre = tuple(k // 2 for k in shape[2:])
            q = orthogonal(shape[0], shape[1], ctx.generator, dtype)
            out[(slice(None), slice(None), *centre)] = q
            return out.mul_(self.gain)
        flat = orthogonal(shape[0], math.prod(shape[1:]), ctx.generator, dtype)
        return flat.reshape(shape).mul_(self.gain)


@register("zero")
class Zero(Initializer):
    """All zeros: the last layer of a residual branch starts as the identity map of the
    block (Goyal et al. 2017, Sec. 5.1 "zero γ"; Zhang et al. 2019, Fixup)."""

    def weight(self, shape, ctx):
        return torch.zeros(tuple(shape), dtype=torch.float64)


@register("identity")
class Identity(Initializer):
    """The identity (``eye`` of the weight's first two dims, a centred delta for convs)
    times ``gain``: a layer that starts by passing its input through."""

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = float(gain)

    def weight(self, shape, ctx):
        shape = tuple(shape)
        out = torch.zeros(shape, dtype=torch.float64)
        eye = torch.eye(shape[0], shape[1], dtype=torch.float64) * self.gain
        if len(shape) == 2:
            return eye
        centre = tuple(k // 2 for k in shape[2:])
        out[(slice(None), slice(None), *centre)] = eye
        return out


def registered_schemes() -> Mapping[str, Callable[..., Initializer]]:
    """Every registered scheme by name (family modules loaded)."""
    _load_families()
    return dict(SCHEMES)


__all__ = [
    "SCHEMES",
    "InitContext",
    "Initializer",
    "contexts",
    "get_initializer",
    "initialize",
    "orthogonal",
    "register",
    "registered_schemes",
    "weight_fans",
]
