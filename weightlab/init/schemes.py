"""Initialization schemes, every draw from an explicit ``torch.Generator``.

- ``kaiming_uniform``: PyTorch's default for Linear/Conv (He et al. 2015 with
  ``a = sqrt(5)``): ``W ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, bias likewise (with the
  fan-in of the weight it is added to).
- ``glorot_normal``: Glorot & Bengio (2010, Eq. 12, Gaussian form),
  ``W ~ N(0, 2/(fan_in+fan_out))``, bias zero; the initialization of the lottery-ticket
  paper (Frankle & Carbin 2019, App. G).
- ``kaiming_normal``: He et al. (2015, Eq. 10), ``W ~ N(0, 2/fan_in)``, bias zero.

Fans per layer type are in :mod:`weightlab.init.fans`. Coverage:

- Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d, Embedding / EmbeddingBag (padding row
  zero, as PyTorch), RNN / LSTM / GRU and their cells (each gate block ``(H, n)`` drawn
  separately, in parameter order; biases per block as above), MultiheadAttention
  (``in_proj_weight`` as three ``E × E`` blocks, or ``q/k/v_proj_weight``;
  ``out_proj.weight`` as a Linear). MultiheadAttention biases are zero in every scheme
  (PyTorch's own policy for ``in_proj_bias`` and ``out_proj.bias``); ``bias_k``/``bias_v``
  are ``N(0, 1/E)`` (PyTorch's ``xavier_normal_`` on a ``(1, 1, E)`` tensor).
- Normalization layers (BatchNorm*, InstanceNorm*, LayerNorm, GroupNorm, RMSNorm): weight
  1, bias 0, fresh running statistics (mean 0, variance 1, no batches tracked).
- Any other module owning parameters: its own ``reset_parameters()`` under a forked CPU
  RNG seeded from ``derive_seed(seed, module_name)``; none -> :class:`ConfigError`.

Everything is first turned into a *plan* (:func:`init_plan`): a list of draws, each a
block of one tensor with a distribution. :func:`init_module_` runs it on one model;
:func:`weightlab.init.stacked.draw_stacked` replays the same plan for N seeds straight into
stacked buffers, so both give the same bits. Draw ops: uniform
``(rand(float64) * 2 - 1) * bound``, rounded to float32; normal ``randn(float32) * std``.
Values are therefore float32-representable whatever the parameter's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from weightlab.errors import ConfigError
from weightlab.init.fans import conv_fans, conv_transpose_fans, embedding_fans, linear_fans
from weightlab.seeding import derive_seed, generator, seeded_global_cpu_rng


@dataclass(frozen=True)
class Dist:
    """``uniform``: U(-scale, scale); ``normal``: N(0, scale²); ``const``: the value scale."""

    kind: str
    scale: float


@dataclass(frozen=True)
class Scheme:
    """An initialization scheme: ``(fan_in, fan_out) -> Dist`` for weights and biases."""

    weight: Callable[[int, int], Dist]
    bias: Callable[[int, int], Dist]


_ZERO = Dist("const", 0.0)
_ONE = Dist("const", 1.0)


def _inv_sqrt(fan: int) -> float:
    return 1.0 / math.sqrt(fan) if fan > 0 else 0.0


INIT_SCHEMES: dict[str, Scheme] = {
    "kaiming_uniform": Scheme(
        weight=lambda fi, fo: Dist("uniform", _inv_sqrt(fi)),
        bias=lambda fi, fo: Dist("uniform", _inv_sqrt(fi)),
    ),
    "glorot_normal": Scheme(
        weight=lambda fi, fo: Dist("normal", math.sqrt(2.0 / (fi + fo)) if fi + fo else 0.0),
        bias=lambda fi, fo: _ZERO,
    ),
    "kaiming_normal": Scheme(
        weight=lambda fi, fo: Dist("normal", math.sqrt(2.0 / fi) if fi else 0.0),
        bias=lambda fi, fo: _ZERO,
    ),
}


@dataclass(frozen=True)
class Draw:
    """Fill rows ``rows`` (``None``: all) of tensor ``name`` (parameter or buffer name of
    the model) with ``dist``; ``shape`` is the block's shape."""

    name: str
    rows: tuple[int, int] | None
    shape: tuple[int, ...]
    dist: Dist


@dataclass(frozen=True)
class Reset:
    """Re-initialize module ``module`` with its own ``reset_parameters()``."""

    module: str


Plan = list[Draw | Reset]

_NORMS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def get_scheme(name: str) -> Scheme:
    """The scheme called ``name``; an unknown name raises a one-line :class:`ConfigError`."""
    if name not in INIT_SCHEMES:
        raise ConfigError(f"unknown init scheme {name!r}; choose one of: {', '.join(INIT_SCHEMES)}")
    return INIT_SCHEMES[name]


def _tensor(module: nn.Module, attr: str) -> torch.Tensor | None:
    if parametrize.is_parametrized(module, attr):
        return module.parametrizations[attr].original
    return getattr(module, attr, None)


def _full(prefix: str, attr: str) -> str:
    return f"{prefix}.{attr}" if prefix else attr


def _weight_bias(
    plan: Plan, prefix: str, m: nn.Module, fans: tuple[int, int], s: Scheme, bias: Dist | None
) -> set[str]:
    w = _tensor(m, "weight")
    plan.append(Draw(_full(prefix, "weight"), None, tuple(w.shape), s.weight(*fans)))
    done = {"weight"}
    b = _tensor(m, "bias")
    if b is not None:
        plan.append(Draw(_full(prefix, "bias"), None, tuple(b.shape), bias or s.bias(*fans)))
        done.add("bias")
    return done


def _rnn(plan: Plan, prefix: str, m: nn.Module, s: Scheme) -> set[str]:
    """RNN family: every gate block of ``weight_ih*``/``weight_hh*`` (and its bias) on its
    own, with ``fan_in`` = the block's input width and ``fan_out`` = hidden size."""
    hidden = int(m.hidden_size)
    done = set()
    for attr, p in m._parameters.items():
        if p is None:
            continue
        kind = attr.split("_")[0]  # weight / bias
        src = attr if kind == "weight" else "weight" + attr[len("bias") :]
        w = _tensor(m, src)
        if src.startswith("weight_hr"):  # LSTM projection (proj_size, H): one Linear block
            fans = linear_fans(tuple(w.shape))
            dist = s.weight(*fans) if kind == "weight" else s.bias(*fans)
            plan.append(Draw(_full(prefix, attr), None, tuple(p.shape), dist))
        else:
            fans = (int(w.shape[1]), hidden)
            dist = s.weight(*fans) if kind == "weight" else s.bias(*fans)
            for g in range(p.shape[0] // hidden):
                block = (g * hidden, (g + 1) * hidden)
                plan.append(Draw(_full(prefix, attr), block, (hidden, *p.shape[1:]), dist))
        done.add(attr)
    return done


def _mha(plan: Plan, prefix: str, m: nn.MultiheadAttention, s: Scheme) -> set[str]:
    e = int(m.embed_dim)
    if m.in_proj_weight is not None:
        for g in range(3):  # query, key, value: three E x E Linear blocks
            dist = s.weight(*linear_fans((e, e)))
            plan.append(Draw(_full(prefix, "in_proj_weight"), (g * e, (g + 1) * e), (e, e), dist))
    else:
        for attr in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            w = getattr(m, attr)
            plan.append(
                Draw(_full(prefix, attr), None, tuple(w.shape), s.weight(*linear_fans(w.shape)))
            )
    done = {"in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"}
    if m.in_proj_bias is not None:
        plan.append(Draw(_full(prefix, "in_proj_bias"), None, tuple(m.in_proj_bias.shape), _ZERO))
        done.add("in_proj_bias")
    for attr in ("bias_k", "bias_v"):
        t = getattr(m, attr)
        if t is not None:
            plan.append(
                Draw(_full(prefix, attr), None, tuple(t.shape), Dist("normal", _inv_sqrt(e)))
            )
            done.add(attr)
    out = m.out_proj
    _weight_bias(plan, _full(prefix, "out_proj"), out, linear_fans(out.weight.shape), s, _ZERO)
    return done


def _norm(plan: Plan, prefix: str, m: nn.Module) -> set[str]:
    done = set()
    for attr, value in (("weight", _ONE), ("bias", _ZERO)):
        t = _tensor(m, attr)
        if isinstance(t, torch.Tensor):
            plan.append(Draw(_full(prefix, attr), None, tuple(t.shape), value))
            done.add(attr)
    for attr, value in (
        ("running_mean", _ZERO),
        ("running_var", _ONE),
        ("num_batches_tracked", _ZERO),
    ):
        t = getattr(m, attr, None)
        if isinstance(t, torch.Tensor):
            plan.append(Draw(_full(prefix, attr), None, tuple(t.shape), value))
    return done


def init_plan(model: nn.Module, scheme: str = "kaiming_uniform") -> Plan:
    """The ordered list of draws that :func:`init_module_` performs on ``model``."""
    s = get_scheme(scheme)
    plan: Plan = []
    covered_by_parent: set[int] = set()
    for name, m in model.named_modules():
        if id(m) in covered_by_parent or "parametrizations" in name.split("."):
            continue  # MultiheadAttention.out_proj, or transform state
        own = {n for n, p in m._parameters.items() if p is not None}
        if parametrize.is_parametrized(m):
            own |= set(m.parametrizations.keys())
        start = len(plan)
        done: set[str] = set()
        if isinstance(m, nn.MultiheadAttention):
            done = _mha(plan, name, m, s)
            covered_by_parent.add(id(m.out_proj))
        elif isinstance(m, nn.Linear):
            done = _weight_bias(plan, name, m, linear_fans(_tensor(m, "weight").shape), s, None)
        elif isinstance(m, nn.modules.conv._ConvTransposeNd):
            fans = conv_transpose_fans(tuple(_tensor(m, "weight").shape), int(m.groups))
            done = _weight_bias(plan, name, m, fans, s, None)
        elif isinstance(m, nn.modules.conv._ConvNd):
            done = _weight_bias(
                plan, name, m, conv_fans(tuple(_tensor(m, "weight").shape)), s, None
            )
        elif isinstance(m, nn.Embedding | nn.EmbeddingBag):
            w = _tensor(m, "weight")
            plan.append(
                Draw(
                    _full(name, "weight"), None, tuple(w.shape), s.weight(*embedding_fans(w.shape))
                )
            )
            if m.padding_idx is not None:
                p = int(m.padding_idx)
                plan.append(Draw(_full(name, "weight"), (p, p + 1), (1, *w.shape[1:]), _ZERO))
            done = {"weight"}
        elif isinstance(m, nn.RNNBase | nn.RNNCellBase):
            done = _rnn(plan, name, m, s)
        elif isinstance(m, _NORMS):
            done = _norm(plan, name, m)
        if own - done:  # an unknown layer, or a known one with extra parameters
            del plan[start:]
            if not hasattr(m, "reset_parameters"):
                raise ConfigError(
                    f"cannot initialize {type(m).__name__} ({name or 'the model'}): it has "
                    "parameters but no reset_parameters(); add one or use a supported layer"
                )
            plan.append(Reset(name))
    return plan


def draw(dist: Dist, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """One block of ``dist`` drawn from ``g``: uniform ``(rand(float64) * 2 - 1) * scale``
    rounded to float32, or normal ``randn(float32) * scale`` (``const`` is not drawn)."""
    if dist.kind == "uniform":
        return (
            (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1).mul_(dist.scale).float()
        )
    return torch.randn(shape, generator=g, dtype=torch.float32) * dist.scale


@torch.no_grad()
def init_module_(
    model: nn.Module, seed: int | torch.Generator, scheme: str = "kaiming_uniform"
) -> nn.Module:
    """Re-initialize ``model`` in place with ``scheme`` (see the module docstring), drawing
    in module order from ``generator(seed)`` (or the given generator); returns ``model``.

    Modules handled by their own ``reset_parameters()`` run it under
    ``torch.random.fork_rng(devices=[])`` with only the CPU default generator seeded
    (``derive_seed(seed, module_name)``; drawn from the generator if one is passed), so
    the caller's CPU and accelerator RNG states are untouched.
    """
    plan = init_plan(model, scheme)
    g = seed if isinstance(seed, torch.Generator) else generator(int(seed))
    modules = dict(model.named_modules())
    for step in plan:
        if isinstance(step, Reset):
            if isinstance(seed, torch.Generator):
                sub = int(torch.randint(0, 2**62, (), generator=g))
            else:
                sub = derive_seed(int(seed), step.module)
            with seeded_global_cpu_rng(sub):
                modules[step.module].reset_parameters()
            continue
        prefix, _, attr = step.name.rpartition(".")
        t = _tensor(modules[prefix], attr)
        target = t if step.rows is None else t[step.rows[0] : step.rows[1]]
        if step.dist.kind == "const":
            target.fill_(step.dist.scale)
        else:
            target.copy_(draw(step.dist, step.shape, g))
    return model


__all__ = [
    "INIT_SCHEMES",
    "Dist",
    "Draw",
    "Reset",
    "Scheme",
    "draw",
    "get_scheme",
    "init_module_",
    "init_plan",
]
