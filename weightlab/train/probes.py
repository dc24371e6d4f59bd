"""Probes: measurements taken every ``k`` steps during training.

A :class:`Probe` ``(name, every, fn)`` runs after the update of every step ``t`` with
``t % every == 0``, *including step 0* (before the first update); the last step gets a
probe only if it is divisible by ``every``. Probes run after snapshots and before that
step's evaluation, in eval mode under ``torch.no_grad()``; the model's train/eval mode and
its buffers (BatchNorm running statistics) are restored afterwards, so a probe never
changes training.

A probe that needs gradients (e.g. a Hessian-vector product for sharpness) may open
``torch.enable_grad()`` inside ``fn``; gradients it leaves in ``.grad`` are cleared before
the next update. It must not change parameters.

``fn(model, ctx) -> value`` gets a :class:`ProbeContext` and returns either a dict
``{key: value}`` (recorded as ``"<name>/<key>"``) or one value (recorded as ``"<name>"``);
a value is a float or a tensor of at most :data:`MAX_ELEMENTS` elements. Values are stored
JSON-ready (0-dim tensors -> float, other tensors -> nested lists) in
``TrainResult.probes`` as ``{"step": t, "<name>/<key>": value, ...}``.

Built-ins (named constructors; ``Probe.kind`` tells a population engine which vectorized
computation to run; user probes have ``kind="user"`` and run per member; a
:func:`param_probe` (``kind="params"``) is a function of the parameters alone, written with
leading member dims, which a population calls once for all members):

- :func:`weight_norm`: ``‖W‖_F`` of each selected parameter, key = plain parameter name;
- :func:`distance_from_init`: ``‖θ_t − θ_0‖₂`` over all parameters (one value; 0 at step 0);
- :func:`relative_change`: ``‖W_t − W_0‖_F / ‖W_0‖_F`` per selected parameter
  (NaN where ``‖W_0‖ = 0``), as tracked in lazy-training analyses (Chizat et al. 2019);
- :func:`grad_norm`: ``‖g_t‖₂`` of step ``t``'s gradient over all parameters, after masks
  and before clipping (no value at step 0, which has no gradient);
- :func:`train_loss`: mean per-example training loss over the whole train split (eval mode).

``θ_0`` is the parameters at the start of the :func:`~weightlab.train.train` call. Per-layer
built-ins select parameters by ``params`` (``fnmatch`` globs over plain names); the
default ``()`` means every parameter with two or more dims (weight matrices and kernels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import torch
from torch import nn

from weightlab.core.selectors import plain_name
from weightlab.errors import ConfigError

MAX_ELEMENTS = 1024
KINDS = (
    "user",
    "params",
    "weight_norm",
    "distance_from_init",
    "relative_change",
    "grad_norm",
    "train_loss",
)


@dataclass
class ProbeContext:
    """What a probe sees besides the model.

    Attributes:
        step: completed updates (0 = before training).
        data: the :class:`~weightlab.data.TaskData` being trained on.
        loss_fn: the per-example training loss (:func:`weightlab.train.losses.resolve_loss`).
        init: ``θ_0`` as ``{plain_name: tensor}`` (parameters at the start of training).
        grads: step ``step``'s gradients ``{plain_name: tensor}``, masked, before clipping
            (``None`` at step 0, and at steps where only built-ins that do not read
            gradients are due).
        seed: the member's init seed.
    """

    step: int
    data: object
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    init: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor] | None = None
    seed: int = 0


ProbeFn = Callable[[nn.Module, ProbeContext], object]
#: ``fn(params, init, member_dims)``: ``{plain_name: tensor}`` of the parameters and of θ_0,
#: each with ``member_dims`` leading member dims; returns a tensor or ``{key: tensor}`` whose
#: leading ``member_dims`` dims are the members.
StackedFn = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor], int], object]


@dataclass(frozen=True)
class Probe:
    """A measurement every ``every`` steps (see the module docstring for the schedule).

    Args:
        name: prefix of the recorded keys (no ``/``; not ``"step"``).
        every: period in steps (>= 1).
        fn: ``fn(model, ctx) -> dict | float | Tensor``.
        kind: ``"user"`` or the built-in it is (set by the built-in constructors).
        params: parameter globs for the per-layer built-ins (``()`` = all with ndim >= 2).
        stacked: for ``kind="params"``, the member-vectorized function (:data:`StackedFn`);
            build such probes with :func:`param_probe`.
    """

    name: str
    every: int
    fn: ProbeFn = field(compare=False)
    kind: str = "user"
    params: tuple[str, ...] = ()
    stacked: StackedFn | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ConfigError(
                f"probe name must be a non-empty string without '/', got {self.name!r}"
            )
        if self.name == "step":
            raise ConfigError("probe name 'step' is reserved; choose another name")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ConfigError(
                f"probe {self.name!r}: every must be an integer >= 1, got {self.every!r}"
            )
        if self.kind not in KINDS:
            raise ConfigError(
                f"unknown probe kind {self.kind!r}; choose one of: {', '.join(KINDS)}"
            )
        if not callable(self.fn):
            raise ConfigError(f"probe {self.name!r}: fn must be callable")
        if (self.kind == "params") != callable(self.stacked):
            raise ConfigError(
                f"probe {self.name!r}: a 'params' probe needs a callable stacked function and "
                "no other kind takes one; build it with weightlab.train.probes.param_probe"
            )
        if isinstance(self.params, str):
            object.__setattr__(self, "params", (self.params,))
        object.__setattr__(self, "params", tuple(self.params))

    @property
    def reads_grads(self) -> bool:
        """Whether ``fn`` may read ``ctx.grads`` (user probes and :func:`grad_norm`); the
        loop copies a step's gradients only when such a probe is due."""
        return self.kind in ("user", "grad_norm")

    def due(self, step: int) -> bool:
        """Whether this probe runs after ``step`` completed updates."""
        return step % self.every == 0


# --- vectorizable math (leading ``member_dims`` dims are members; the rest is the tensor) ---


def _norm(t: torch.Tensor, member_dims: int) -> torch.Tensor:
    return t.reshape(*t.shape[:member_dims], -1).norm(dim=-1)


def layer_norms(
    params: Mapping[str, torch.Tensor], member_dims: int = 0
) -> dict[str, torch.Tensor]:
    """``{name: ‖p‖_F}``, norms over all but the first ``member_dims`` dims."""
    return {n: _norm(p, member_dims) for n, p in params.items()}


def total_norm(tensors: Mapping[str, torch.Tensor], member_dims: int = 0) -> torch.Tensor:
    """``‖concat(tensors)‖₂`` (per member): ``sqrt(Σ_name ‖t‖²)``."""
    sq = [_norm(t, member_dims).square() for t in tensors.values()]
    return torch.stack(sq).sum(0).sqrt()


def total_distance(
    params: Mapping[str, torch.Tensor],
    init: Mapping[str, torch.Tensor],
    member_dims: int = 0,
) -> torch.Tensor:
    """``‖θ − θ_0‖₂`` over all names of ``params``."""
    return total_norm({n: p - init[n] for n, p in params.items()}, member_dims)


def relative_changes(
    params: Mapping[str, torch.Tensor],
    init: Mapping[str, torch.Tensor],
    member_dims: int = 0,
) -> dict[str, torch.Tensor]:
    """``{name: ‖W − W_0‖_F / ‖W_0‖_F}`` (NaN where ``‖W_0‖ = 0``)."""
    out = {}
    for n, p in params.items():
        base = _norm(init[n], member_dims)
        diff = _norm(p - init[n], member_dims)
        out[n] = torch.where(base > 0, diff / torch.where(base > 0, base, 1.0), math.nan)
    return out


def probe_param_names(probe: Probe, shapes: Mapping[str, Sequence[int]]) -> list[str]:
    """The parameter names a per-layer built-in reports, given ``{plain_name: shape}``
    (per member, without a member dim), in the order of ``shapes``."""
    if probe.params:
        picked = [n for n in shapes if any(fnmatchcase(n, g) for g in probe.params)]
        if not picked:
            raise ConfigError(
                f"probe {probe.name!r}: params {list(probe.params)} match no parameter; "
                f"parameters are: {', '.join(shapes)}"
            )
        return picked
    return [n for n, s in shapes.items() if len(s) >= 2]


def model_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{plain_name: stored parameter}`` (masked weights are stored as zeros)."""
    return {plain_name(n): p for n, p in model.named_parameters()}


# --- built-in constructors ---


def weight_norm(every: int, params: Sequence[str] = (), name: str = "weight_norm") -> Probe:
    """Per-layer Frobenius norm ``‖W_t‖_F``; keys are plain parameter names."""

    def fn(model: nn.Module, ctx: ProbeContext) -> dict:
        ps = model_params(model)
        names = probe_param_names(probe, {n: p.shape for n, p in ps.items()})
        return layer_norms({n: ps[n] for n in names})

    probe = Probe(name, every, fn, "weight_norm", tuple(params))
    return probe


def param_probe(name: str, every: int, fn: StackedFn) -> Probe:
    """A probe of the parameters alone, vectorized over population members.

    ``fn(params, init, member_dims)`` gets ``{plain_name: tensor}`` of the parameters and of
    θ_0 with ``member_dims`` leading member dims and returns a tensor or ``{key: tensor}``
    whose leading ``member_dims`` dims are the members. The loop calls it with one model's
    tensors (``member_dims = 0``); a population calls it once per probed step with every
    member's tensors stacked (``member_dims = 1``) and records row ``j`` for member ``j``,
    so a member's values equal its solo run's.
    """

    def one(model: nn.Module, ctx: ProbeContext | None) -> object:
        return fn(model_params(model), {} if ctx is None else ctx.init, 0)

    return Probe(name, every, one, "params", stacked=fn)


def distance_from_init(every: int, name: str = "distance_from_init") -> Probe:
    """``‖θ_t − θ_0‖₂`` over all parameters (one value)."""

    def fn(model: nn.Module, ctx: ProbeContext) -> torch.Tensor:
        return total_distance(model_params(model), ctx.init)

    return Probe(name, every, fn, "distance_from_init")


def relative_change(every: int, params: Sequence[str] = (), name: str = "relative_change") -> Probe:
    """Per-layer ``‖W_t − W_0‖_F / ‖W_0‖_F``; keys are plain parameter names."""

    def fn(model: nn.Module, ctx: ProbeContext) -> dict:
        ps = model_params(model)
        names = probe_param_names(probe, {n: p.shape for n, p in ps.items()})
        return relative_changes({n: ps[n] for n in names}, ctx.init)

    probe = Probe(name, every, fn, "relative_change", tuple(params))
    return probe


def grad_norm(every: int, name: str = "grad_norm") -> Probe:
    """``‖g_t‖₂`` of the last step's gradient over all parameters (masked, before clipping)."""

    def fn(model: nn.Module, ctx: ProbeContext) -> dict | torch.Tensor:
        if ctx.grads is None:
            return {}
        return total_norm(ctx.grads)

    return Probe(name, every, fn, "grad_norm")


def train_loss(every: int, name: str = "train_loss", chunk: int = 8192) -> Probe:
    """Mean per-example training loss over the whole train split (eval mode)."""

    def fn(model: nn.Module, ctx: ProbeContext) -> float:
        split = ctx.data.train
        total = 0.0
        for i in range(0, len(split), chunk):
            losses = ctx.loss_fn(model(split.x[i : i + chunk]), split.y[i : i + chunk])
            total += float(losses.sum())
        return total / len(split)

    return Probe(name, every, fn, "train_loss")


# --- running probes (loop side) ---


def to_jsonable(value: object, where: str) -> float | list:
    """A probe value as a float or nested list; tensors larger than MAX_ELEMENTS are refused."""
    if isinstance(value, torch.Tensor):
        if value.numel() > MAX_ELEMENTS:
            raise ConfigError(
                f"probe value {where!r} has {value.numel()} elements (max {MAX_ELEMENTS}); "
                "return a summary or a smaller slice"
            )
        v = value.detach().to("cpu", torch.float64)
        return float(v) if v.ndim == 0 else v.tolist()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"probe value {where!r} must be a float or a tensor, got {type(value).__name__}"
        )
    return float(value)


def flatten_values(probe_name: str, value: object) -> dict[str, float | list]:
    """``{"<name>/<key>": v}`` for a dict, ``{"<name>": v}`` for a single value."""
    if isinstance(value, Mapping):
        return {f"{probe_name}/{k}": to_jsonable(v, f"{probe_name}/{k}") for k, v in value.items()}
    return {probe_name: to_jsonable(value, probe_name)}


def run_probes(
    probes: Sequence[Probe], model: nn.Module, ctx: ProbeContext
) -> dict[str, object] | None:
    """Run the probes due at ``ctx.step``; return ``{"step": t, ...values}`` or ``None`` if
    none is due. Eval mode, ``no_grad``; train mode and all buffers restored afterwards."""
    due = [p for p in probes if p.due(ctx.step)]
    if not due:
        return None
    was_training = model.training
    saved = {n: b.detach().clone() for n, b in model.named_buffers()}
    row: dict[str, object] = {"step": ctx.step}
    try:
        model.eval()
        with torch.no_grad():
            for p in due:
                row.update(flatten_values(p.name, p.fn(model, ctx)))
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n in saved:
                    b.copy_(saved[n])
        model.train(was_training)
    return row


def check_probes(probes: Sequence[Probe]) -> tuple[Probe, ...]:
    """Reject non-probes and duplicate names (one line each)."""
    probes = tuple(probes)
    for p in probes:
        if not isinstance(p, Probe):
            raise ConfigError(
                f"probes must be weightlab.train.Probe objects, got {type(p).__name__}"
            )
    names = [p.name for p in probes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"probe names must be unique; repeated: {', '.join(dup)}")
    return probes
