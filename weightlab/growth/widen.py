"""Function-preserving widening: Net2WiderNet (Chen, Goodfellow & Shlens 2016, "Net2Net:
Accelerating Learning via Knowledge Transfer", Sec. 3.1, Eq. 2 and Algorithm 1).

A layer with ``n`` units (a Linear's outputs, a Conv1d/2d's channels) grows to ``width`` units
by a random mapping ``g: {0..width-1} -> {0..n-1}``: ``g(j) = j`` for the old units, and a
seeded uniform source for each new one. With ``k_j = |{i : g(i) = j}|`` copies of unit ``j``,

    U'[i, :] = U[g(i), :]            (incoming weights, bias, the next BatchNorm's γ, β and
                                      running statistics)
    V'[:, i] = V[:, g(i)] / k_{g(i)}  (outgoing weights of the consumer)

so the consumer receives ``Σ_{i: g(i)=j} h_j / k_j = h_j`` and the network computes the same
function, in train mode too (copied units have identical batch statistics). After a
``Flatten``, a conv channel feeds ``H·W`` consecutive inputs of the Linear; the block moves as
one. ``noise > 0`` adds Gaussian noise to the outgoing weights (std = ``noise`` × their std)
centred over each source's copies, so the noise sums to zero over them: the function is still
preserved (to rounding) while the copies' gradients differ (Chen et al.: "add a small amount
of noise to break symmetry").

The consumers are found on a ``torch.fx`` trace: from the layer's output, only element-wise
functions and modules (activations, dropout), BatchNorm, per-channel pooling and ``Flatten``
may lie between it and the Linear/Conv that reads it; anything else (a residual add, a
concatenation, the model's output, a module called twice) is refused with one line naming the
layer. Optimizer state follows :mod:`weightlab.growth.optim_state`; masks widen with the same
index map (no division). For a population, :func:`widen_state` grows each member's plain
weights (``Population.state(i)``) with a map seeded by that member's seed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize

from weightlab.core.mask import Mask
from weightlab.errors import ConfigError
from weightlab.growth.optim_state import check_known_state, check_state, rebind
from weightlab.models.ghost_bn import GhostBatchNorm1d
from weightlab.seeding import derive_seed, generator

__all__ = [
    "WidenEntry",
    "WidenPlan",
    "index_map",
    "widen",
    "widen_masks",
    "widen_plan",
    "widen_state",
]

F = nn.functional

_NORMS = (_BatchNorm, GhostBatchNorm1d)
_CONSUMERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
_LEAVES = (*_CONSUMERS, *_NORMS)
# Modules and functions that act on each unit (or channel) alone: pass-through for the walk.
_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.ELU,
    nn.Hardtanh, nn.Softplus, nn.Mish, nn.SELU, nn.Identity, nn.Dropout, nn.Dropout1d,
    nn.Dropout2d,
)  # fmt: skip
_CHANNEL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)  # fmt: skip
_ELEMENTWISE_FUNCTIONS = {
    F.relu, F.relu6, F.gelu, F.silu, F.leaky_relu, F.elu, F.hardtanh, F.softplus, F.mish,
    F.selu, F.dropout, F.tanh, F.sigmoid, torch.relu, torch.tanh, torch.sigmoid, torch.sin,
    torch.cos, torch.abs,
}  # fmt: skip
_CHANNEL_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
}  # fmt: skip
_ELEMENTWISE_METHODS = {"relu", "tanh", "sigmoid", "sin", "cos", "abs", "contiguous", "clone"}


@dataclass(frozen=True)
class WidenEntry:
    """One tensor the widening changes: ``module.attr`` (a parameter or buffer).

    ``role="copy"``: dim 0 is indexed by the map (incoming weights, bias, BatchNorm γ, β,
    running statistics). ``role="split"``: dim 1 is indexed by the map and divided by the copy
    count (the consumer's weight); ``block`` inputs per unit (``H·W`` after a Flatten)."""

    module: str
    attr: str
    role: str
    block: int = 1

    @property
    def name(self) -> str:
        """Plain name, e.g. ``layers.1.weight``."""
        return f"{self.module}.{self.attr}" if self.module else self.attr


@dataclass(frozen=True)
class WidenPlan:
    """Every tensor that widening ``layer`` (``n`` units) touches, found on the model graph."""

    layer: str
    n: int
    entries: tuple[WidenEntry, ...]

    def entry(self, name: str) -> WidenEntry | None:
        """The entry for plain name ``name`` (None if widening leaves it alone)."""
        return next((e for e in self.entries if e.name == name), None)


class _Tracer(fx.Tracer):
    """Keeps Linear, Conv, BatchNorm (incl. weightlab's ghost BN and parametrized layers) and
    childless modules as leaves, so data-dependent code inside them is never traced."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, _LEAVES) or not list(m.children()):
            return True
        return super().is_leaf_module(m, qualname)


def _refuse(layer: str, what: str) -> ConfigError:
    return ConfigError(
        f"cannot widen {layer!r}: its units feed {what}, which cannot be remapped; widen a "
        "layer whose outputs pass only through activations, BatchNorm, pooling or Flatten "
        "into one Linear/Conv"
    )


def _units(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def _ndim(module: nn.Module) -> int:
    """Rank of the layer's output: 2 for Linear (batch, units), 3 for Conv1d, 4 for Conv2d."""
    return {nn.Linear: 2, nn.Conv1d: 3, nn.Conv2d: 4}[
        next(t for t in (nn.Linear, nn.Conv1d, nn.Conv2d) if isinstance(module, t))
    ]


def _defaults(model: nn.Module) -> dict[str, object]:
    """forward's optional arguments at their defaults (e.g. ResMLP's ``skip=()``): traced as
    constants, so the graph is the one a plain ``model(x)`` call runs."""
    params = list(inspect.signature(model.forward).parameters.values())
    return {
        p.name: p.default
        for p in params[1:]
        if p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD
    }


def _flatten_start(node: fx.Node) -> int | None:
    """start_dim of a flatten node (call_method or torch.flatten), None if not a flatten."""
    if node.op == "call_method" and node.target == "flatten":
        pass
    elif node.op == "call_function" and node.target is torch.flatten:
        pass
    else:
        return None
    args = list(node.args[1:])
    start = node.kwargs.get("start_dim", args[0] if args else 0)
    end = node.kwargs.get("end_dim", args[1] if len(args) > 1 else -1)
    return start if end == -1 else -2


def widen_plan(model: nn.Module, layer: str) -> WidenPlan:
    """The tensors that widening ``layer`` changes, found on a ``torch.fx`` trace of ``model``.

    Raises a one-line :class:`ConfigError` naming the layer when it is not a Linear or a
    Conv1d/2d (groups 1), when the model cannot be traced, or when its units reach anything
    but element-wise ops, BatchNorm, per-channel pooling and Flatten before one Linear/Conv.
    """
    try:
        module = model.get_submodule(layer)
    except AttributeError as e:
        raise ConfigError(f"model has no layer {layer!r}; name a Linear or Conv module") from e
    if not isinstance(module, _CONSUMERS) or getattr(module, "groups", 1) != 1:
        raise ConfigError(
            f"cannot widen {layer!r} ({type(module).__name__}): widen a Linear or a "
            "Conv1d/Conv2d with groups=1"
        )
    try:
        graph = _Tracer().trace(model, concrete_args=_defaults(model) or None)
    except Exception as e:  # noqa: BLE001 - any tracing failure is the same user problem
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise ConfigError(
            f"cannot widen {layer!r}: torch.fx cannot trace {type(model).__name__} ({msg}); "
            "give the model a forward without Python control flow on tensors (as nn.Sequential, "
            "weightlab's MLP)"
        ) from e
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    nodes = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
    if len(nodes) != 1:
        what = "is never called" if not nodes else f"is called {len(nodes)} times"
        raise ConfigError(f"cannot widen {layer!r}: it {what} in forward; widen a layer used once")
    n = _units(module)
    entries = [WidenEntry(layer, "weight", "copy")]
    if module.bias is not None:
        entries.append(WidenEntry(layer, "bias", "copy"))

    def once(target: str) -> None:
        if calls.get(target, 0) != 1:
            raise _refuse(layer, f"{target!r}, called {calls.get(target, 0)} times")

    def walk(node: fx.Node, ndim: int, flat: bool) -> None:
        for user in node.users:
            if user.all_input_nodes != [node] or not user.args or user.args[0] is not node:
                name = getattr(user.target, "__name__", str(user.target))
                raise _refuse(layer, f"{name!r} together with other tensors (e.g. a residual add)")
            step(user, ndim, flat)

    def step(user: fx.Node, ndim: int, flat: bool) -> None:
        if user.op == "output":
            raise _refuse(layer, "the model's output")
        if user.op == "call_module":
            m = model.get_submodule(user.target)
            if isinstance(m, _NORMS) and not flat:
                once(user.target)
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    if getattr(m, attr, None) is not None:
                        entries.append(WidenEntry(user.target, attr, "copy"))
                return walk(user, ndim, flat)
            if isinstance(m, nn.Linear) and (ndim == 2 or flat):
                once(user.target)
                if m.in_features % n:
                    raise _refuse(layer, f"{user.target!r} with {m.in_features} inputs")
                entries.append(WidenEntry(user.target, "weight", "split", m.in_features // n))
                return None
            if isinstance(m, (nn.Conv1d, nn.Conv2d)) and not flat and ndim == _ndim(m):
                once(user.target)
                if m.groups != 1 or m.in_channels != n:
                    raise _refuse(layer, f"{user.target!r} (groups {m.groups})")
                entries.append(WidenEntry(user.target, "weight", "split"))
                return None
            if isinstance(m, nn.Flatten) and m.end_dim == -1 and m.start_dim == 1:
                return walk(user, 2, flat or ndim > 2)
            if isinstance(m, _ELEMENTWISE_MODULES) or (
                isinstance(m, _CHANNEL_MODULES) and ndim > 2 and not flat
            ):
                return walk(user, ndim, flat)
            raise _refuse(layer, f"{user.target!r} ({type(m).__name__})")
        start = _flatten_start(user)
        if start == 1:
            return walk(user, 2, flat or ndim > 2)
        target = user.target
        if user.op == "call_function" and (
            target in _ELEMENTWISE_FUNCTIONS
            or (target in _CHANNEL_FUNCTIONS and ndim > 2 and not flat)
        ):
            return walk(user, ndim, flat)
        if user.op == "call_method" and target in _ELEMENTWISE_METHODS:
            return walk(user, ndim, flat)
        name = getattr(target, "__name__", str(target))
        raise _refuse(layer, f"{user.op} {name!r}")

    walk(nodes[0], _ndim(module), False)
    _refuse_shared(model, layer, entries)
    return WidenPlan(layer, n, tuple(entries))


def _refuse_shared(model: nn.Module, layer: str, entries: list[WidenEntry]) -> None:
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    for e in entries:
        t = _stored(model, e)
        if isinstance(t, nn.Parameter) and seen.get(id(t), 0) > 1:
            raise ConfigError(
                f"cannot widen {layer!r}: {e.name} is shared by several modules (tied "
                "weights); untie it first"
            )


def index_map(n: int, width: int, seed: int, layer: str = "") -> torch.Tensor:
    """``g``: the old units ``0..n-1`` in place, then ``width − n`` sources drawn uniformly
    from ``0..n-1`` by a generator seeded from ``(seed, layer)`` (Chen et al. 2016, Eq. 2)."""
    g = generator(derive_seed("growth.widen", layer, int(seed)))
    extra = torch.randint(0, n, (width - n,), generator=g)
    return torch.cat([torch.arange(n), extra])


def _regrow(t: torch.Tensor, e: WidenEntry, g: torch.Tensor, power: int) -> torch.Tensor:
    """``t`` re-indexed by ``g``; ``split`` entries divided by ``k ** power``."""
    if e.role == "copy":
        return t.index_select(0, g.to(t.device))
    rows, n = t.shape[0], t.shape[1] // e.block
    v = t.reshape(rows, n, e.block, *t.shape[2:]) if e.block > 1 else t
    out = v.index_select(1, g.to(t.device))
    if power:
        k = torch.bincount(g, minlength=n).to(t.device, t.dtype)[g.to(t.device)]
        out = out / k.pow(power).view(1, -1, *([1] * (out.dim() - 2)))
    return out.reshape(rows, len(g) * e.block, *t.shape[2:]) if e.block > 1 else out


def _noise(
    old: torch.Tensor, new: torch.Tensor, e: WidenEntry, g: torch.Tensor, noise: float, seed: int
) -> torch.Tensor:
    """Gaussian noise shaped like ``new`` (a split entry), std ``noise · std(old)``, minus its
    mean over each source's copies (so it sums to zero over them; zero for uncopied units)."""
    rows, width = new.shape[0], len(g)
    n = old.shape[1] // e.block
    shape = (rows, width, e.block, *new.shape[2:]) if e.block > 1 else new.shape
    gen = generator(derive_seed("growth.widen.noise", e.name, int(seed)))
    z = torch.randn(shape, generator=gen, dtype=torch.float64)
    sums = torch.zeros(rows, n, *z.shape[2:], dtype=torch.float64).index_add_(1, g, z)
    k = torch.bincount(g, minlength=n).to(torch.float64).view(1, n, *([1] * (z.dim() - 2)))
    z = z - (sums / k).index_select(1, g)
    scale = noise * old.detach().to(torch.float64).std().item()
    return (z * scale).reshape(new.shape).to(new.device, new.dtype)


def _stored(model: nn.Module, e: WidenEntry) -> torch.Tensor:
    module = model.get_submodule(e.module)
    if parametrize.is_parametrized(module, e.attr):
        return module.parametrizations[e.attr].original
    return getattr(module, e.attr)


def _set(model: nn.Module, e: WidenEntry, value: torch.Tensor) -> torch.Tensor:
    """Store ``value`` in place of ``e``'s tensor (a new Parameter for parameters)."""
    module = model.get_submodule(e.module)
    old = _stored(model, e)
    if isinstance(old, nn.Parameter):
        value = nn.Parameter(value, requires_grad=old.requires_grad)
    if parametrize.is_parametrized(module, e.attr):
        module.parametrizations[e.attr].original = value
    else:
        setattr(module, e.attr, value)
    return value


def _check_width(plan: WidenPlan, width: int) -> int:
    if isinstance(width, bool) or int(width) != width or int(width) <= plan.n:
        raise ConfigError(
            f"cannot widen {plan.layer!r} to {width}: it has {plan.n} units already; "
            f"pass an integer width > {plan.n}"
        )
    return int(width)


def _check_noise(noise: float) -> float:
    if not noise >= 0:
        raise ConfigError(f"widen noise must be >= 0 (a fraction of the weights' std), got {noise}")
    return float(noise)


def _widen_dict(
    tensors: dict[str, torch.Tensor],
    plan: WidenPlan,
    g: torch.Tensor,
    seed: int,
    noise: float,
    masks: dict[str, torch.Tensor] | None,
    power: int,
) -> dict[str, torch.Tensor]:
    out = dict(tensors)
    for e in plan.entries:
        if e.name not in tensors:
            continue
        t = tensors[e.name]
        new = _regrow(t, e, g, power)
        if noise and e.role == "split" and power:
            z = _noise(t, new, e, g, noise, seed)
            if masks is not None and e.name in masks:
                if masks[e.name].shape != new.shape:
                    raise ConfigError(
                        f"mask {e.name!r} has shape {tuple(masks[e.name].shape)}, the widened "
                        f"weight {tuple(new.shape)}; pass masks widened by widen_masks"
                    )
                z = z * masks[e.name].to(z)
            new = new + z
        out[e.name] = new
    return out


def widen_masks(
    masks: dict[str, torch.Tensor], model: nn.Module, layer: str, width: int, seed: int
) -> dict[str, torch.Tensor]:
    """``{plain_name: mask}`` widened like :func:`widen` widens the weights (same index map,
    no division): a pruned weight stays pruned in every copy. ``model`` gives the graph (its
    current, unwidened architecture); other masks are returned unchanged."""
    plan = widen_plan(model, layer)
    width = _check_width(plan, width)
    _check_shapes(masks, model, plan, "mask")
    return _widen_dict(masks, plan, index_map(plan.n, width, seed, layer), seed, 0.0, None, 0)


def widen_state(
    state: dict[str, torch.Tensor],
    model: nn.Module,
    layer: str,
    width: int,
    seed: int,
    noise: float = 0.0,
    masks: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Plain weights (``take_snapshot`` / ``Population.state(i)`` format) widened exactly as
    :func:`widen` would widen a model holding them with this ``seed``; ``model`` gives only
    the graph (an unwidened instance of the architecture). ``masks`` (already widened, e.g. by
    :func:`widen_masks`) keep the noise off pruned weights. Returns a new dict.

    For a population: widen each member with its own seed and start a wider population from
    the results (``MemberSpec(seed, init_state=widen_state(pop.state(i), template, layer,
    width, seed))``); see docs/architecture.md, "Function-preserving growth"."""
    plan = widen_plan(model, layer)
    width = _check_width(plan, width)
    noise = _check_noise(noise)
    _check_shapes(state, model, plan, "weight")
    g = index_map(plan.n, width, seed, layer)
    return _widen_dict(state, plan, g, seed, noise, masks, 1)


def _check_shapes(
    tensors: dict[str, torch.Tensor], model: nn.Module, plan: WidenPlan, kind: str
) -> None:
    for e in plan.entries:
        if e.name in tensors and tensors[e.name].shape != _stored(model, e).shape:
            raise ConfigError(
                f"{kind} {e.name!r} has shape {tuple(tensors[e.name].shape)}, the model's is "
                f"{tuple(_stored(model, e).shape)}; pass {kind}s of the unwidened model"
            )


def _set_sizes(model: nn.Module, plan: WidenPlan, width: int) -> None:
    for e in plan.entries:
        module = model.get_submodule(e.module)
        if e.role == "split":
            if isinstance(module, nn.Linear):
                module.in_features = width * e.block
            else:
                module.in_channels = width
        elif e.module == plan.layer:
            if isinstance(module, nn.Linear):
                module.out_features = width
            else:
                module.out_channels = width
        elif hasattr(module, "num_features"):
            module.num_features = width
    widths = getattr(model, "widths", None)
    head, _, idx = plan.layer.partition(".")
    if head == "layers" and idx.isdigit() and isinstance(widths, list):
        widths[int(idx) + 1] = width


@torch.no_grad()
def widen(
    model: nn.Module,
    layer: str,
    width: int,
    seed: int,
    noise: float = 0.0,
    optimizer: torch.optim.Optimizer | None = None,
    state: str = "carry",
    masks: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Widen ``layer`` of ``model`` in place to ``width`` units without changing its function
    (Net2WiderNet, Chen et al. 2016, Sec. 3.1). Returns the index map ``g`` (``g[i]`` = the
    source of unit ``i``; ``g[:n] = 0..n-1``).

    Args:
        model: any ``torch.fx``-traceable module (``nn.Sequential``, weightlab's MLP, MLPBN).
        layer: module name of a Linear or Conv1d/2d, e.g. ``"layers.0"``.
        width: new number of units, > the current one.
        seed: seeds the sources of the new units (and the noise).
        noise: std of symmetry-breaking noise on the outgoing weights, as a fraction of their
            std; it sums to zero over each source's copies.
        optimizer: rebinds each grown Parameter in its param group and moves its state.
        state: ``"carry"`` (copies get their source's moments; outgoing entries divided by
            ``k`` get ``m/k``, ``v/k²``, ``buf/k``) or ``"reset"`` (grown tensors start empty).
        masks: ``{plain_name: 0/1 tensor}``, widened with the same map *in place* (the dict
            you pass comes back widened). Mask transforms attached to the model are widened
            too; other transforms on a grown tensor are refused (``merge`` them first).
    """
    check_state(state)
    noise = _check_noise(noise)
    plan = widen_plan(model, layer)
    width = _check_width(plan, width)
    attached: dict[str, list[Mask]] = {}
    for e in plan.entries:
        module = model.get_submodule(e.module)
        if parametrize.is_parametrized(module, e.attr):
            ts = list(module.parametrizations[e.attr])
            if not all(isinstance(t, Mask) for t in ts):
                raise ConfigError(
                    f"cannot widen {layer!r}: {e.name} has a non-Mask transform attached; "
                    "merge() it first"
                )
            attached[e.name] = ts
    if masks is not None:
        _check_shapes(masks, model, plan, "mask")
    params = [_stored(model, e) for e in plan.entries]
    if optimizer is not None and state == "carry":
        check_known_state(optimizer, [p for p in params if isinstance(p, nn.Parameter)])

    g = index_map(plan.n, width, seed, layer)
    new_masks = {}
    for e in plan.entries:  # widened masks first: the noise must stay off pruned weights
        if e.name in attached:
            new_masks[e.name] = _regrow(attached[e.name][0].mask, e, g, 0)
        elif masks is not None and e.name in masks:
            new_masks[e.name] = _regrow(masks[e.name], e, g, 0)
    for e, old in zip(plan.entries, params, strict=True):
        new = _widen_dict({e.name: old.detach()}, plan, g, seed, noise, new_masks, 1)[e.name]
        new = _set(model, e, new.clone())
        for t in attached.get(e.name, []):
            t.mask = _regrow(t.mask, e, g, 0)
        if optimizer is not None and isinstance(old, nn.Parameter):
            regrow = None if state == "reset" else (lambda v, p, e=e: _regrow(v, e, g, p))
            rebind(optimizer, old, new, regrow)
    if masks is not None:
        for e in plan.entries:
            if e.name in masks:
                masks[e.name] = _regrow(masks[e.name], e, g, 0)
    _set_sizes(model, plan, width)
    return g
