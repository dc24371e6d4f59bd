"""Typed training configuration (every field defaulted and documented).

One contract for the single-model loop (:func:`weightlab.train.train`) and the population
engines (:class:`weightlab.population.Population`): optimizer, parameter groups, gradient
clipping, learning-rate schedule and loss all live here, so members of a population can
differ in any of them and a recipe's run hash covers them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from weightlab.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd", "sgld")
SCHEDULES = ("constant", "step", "cosine")
LOSSES = ("auto", "cross_entropy", "mse")


@dataclass(frozen=True)
class Schedule:
    """Per-step learning-rate multiplier, applied to every parameter group.

    The update of step ``t`` (1-based) uses ``lr * factor(t - 1, total_steps)``:

    - linear warm-up over the first ``warmup_steps`` updates: ``(s + 1) / warmup_steps``;
    - then, with ``u = s - warmup_steps`` and ``U = total_steps - warmup_steps``:
      ``constant``: 1; ``step``: ``gamma ** (u // step_size)`` (``torch.optim.lr_scheduler.StepLR``);
      ``cosine``: ``r + (1 - r) * (1 + cos(pi * u / U)) / 2`` with ``r = min_lr_ratio``
      (Loshchilov & Hutter 2017, SGDR, Eq. 5 without restarts).
    """

    kind: str = "constant"
    warmup_steps: int = 0
    step_size: int = 0
    gamma: float = 0.1
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ConfigError(
                f"unknown schedule {self.kind!r}; choose one of: {', '.join(SCHEDULES)}"
            )
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.kind == "step" and self.step_size <= 0:
            raise ConfigError(
                f"a step schedule needs step_size > 0 (steps between decays), got {self.step_size}"
            )
        if self.step_size < 0:
            raise ConfigError(f"step_size must be >= 0, got {self.step_size}")
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ConfigError(f"schedule gamma must be > 0, got {self.gamma}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")

    def check(self, total_steps: int) -> None:
        """Reject a warm-up longer than the run (one line, :class:`ConfigError`)."""
        if self.warmup_steps > total_steps:
            raise ConfigError(
                f"warm-up of {self.warmup_steps} steps is longer than the run ({total_steps} steps); "
                "shorten --warmup-steps or train longer"
            )

    def factor(self, s: int, total_steps: int) -> float:
        """Multiplier for the update after ``s`` completed steps (``0 <= s < total_steps``)."""
        w = self.warmup_steps
        if s < w:
            return (s + 1) / w
        u, big_u = s - w, max(1, total_steps - w)
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            return self.gamma ** (u // self.step_size)
        r = self.min_lr_ratio
        return r + (1 - r) * 0.5 * (1 + math.cos(math.pi * min(u, big_u) / big_u))


@dataclass(frozen=True)
class ParamGroup:
    """Learning-rate and weight-decay multipliers for some parameters.

    ``match`` is a :class:`weightlab.core.Selector` or a tuple of ``fnmatch`` globs over plain
    parameter names (``("layers.2.*",)``, ``("*.bias",)``). Among an
    :class:`OptimConfig`'s groups the first match wins; unmatched parameters get 1 and 1.
    A group that matches no parameter of the model is an error.
    """

    match: object
    lr_mult: float = 1.0
    wd_mult: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.match, str):
            object.__setattr__(self, "match", (self.match,))
        if isinstance(self.match, list):
            object.__setattr__(self, "match", tuple(self.match))
        if not (math.isfinite(self.lr_mult) and self.lr_mult >= 0):
            raise ConfigError(f"a parameter group's lr_mult must be >= 0, got {self.lr_mult}")
        if not (math.isfinite(self.wd_mult) and self.wd_mult >= 0):
            raise ConfigError(f"a parameter group's wd_mult must be >= 0, got {self.wd_mult}")

    @property
    def globs(self) -> tuple[str, ...] | None:
        """The ``fnmatch`` globs of ``match``, or ``None`` when it is a Selector."""
        m = self.match
        return m if isinstance(m, tuple) and all(isinstance(p, str) for p in m) else None


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer settings with PyTorch's semantics (``torch.optim.SGD`` / ``Adam`` / ``AdamW``).

    ``weight_decay``: for ``sgd`` and ``adam`` it is L2 added to the gradient
    (``g + wd * w``); for ``adamw`` it is decoupled (``w <- w - lr * wd * w``, Loshchilov &
    Hutter 2019). ``nesterov`` needs ``momentum > 0`` (SGD only). ``sgld``: full-batch
    Langevin dynamics ``θ <- θ - (lr/2)(∇L + wd·θ) + √lr·ξ`` (Welling & Teh 2011, Eq. 4;
    :mod:`weightlab.dynamics.sgld`), noise seeded by the member's seed and the step. Gradient clipping happens
    after masking and before the update: ``clip_value`` clamps each entry to
    ``[-clip_value, clip_value]``; ``clip_norm`` rescales a member's whole gradient by
    ``min(1, clip_norm / (‖g‖₂ + 1e-6))`` (``torch.nn.utils.clip_grad_norm_``). 0 disables.
    ``schedule`` multiplies every group's lr per step; ``groups`` set per-parameter
    multipliers (first match wins).
    """

    name: str = "adam"
    lr: float = 1.2e-3
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    groups: tuple[ParamGroup, ...] = ()
    clip_value: float = 0.0
    clip_norm: float = 0.0
    schedule: Schedule = field(default_factory=Schedule)

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer {self.name!r}; choose one of: {', '.join(OPTIMIZERS)}"
            )
        if self.name == "sgld":
            from weightlab.dynamics.sgld import check_step_size

            check_step_size(self.lr)
            if self.momentum or self.nesterov:
                raise ConfigError("SGLD has no momentum; set momentum to 0 for optimizer 'sgld'")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError("weight_decay must be >= 0 and momentum in [0, 1)")
        if not (0 <= self.betas[0] < 1 and 0 <= self.betas[1] < 1) or self.eps <= 0:
            raise ConfigError("Adam betas must lie in [0, 1) and eps must be > 0")
        if self.nesterov and (self.name != "sgd" or self.momentum <= 0):
            raise ConfigError("nesterov needs the sgd optimizer with momentum > 0")
        if not (self.clip_value >= 0 and self.clip_norm >= 0):
            raise ConfigError("clip_value and clip_norm must be >= 0 (0 disables clipping)")
        if isinstance(self.groups, list):
            object.__setattr__(self, "groups", tuple(self.groups))
        if any(not isinstance(g, ParamGroup) for g in self.groups):
            raise ConfigError("OptimConfig.groups must hold weightlab.train.ParamGroup objects")
        if not isinstance(self.schedule, Schedule):
            raise ConfigError("OptimConfig.schedule must be a weightlab.train.Schedule")

    def to_dict(self) -> dict:
        """JSON-able form (for manifests and run hashes); inverse of :meth:`from_dict`."""
        d = {k: v for k, v in asdict(self).items() if k not in ("groups", "schedule")}
        d["betas"] = list(self.betas)
        d["schedule"] = asdict(self.schedule)
        d["groups"] = [_group_to_dict(g) for g in self.groups]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> OptimConfig:
        """Rebuild from :meth:`to_dict` output; a malformed dict is a :class:`ConfigError`."""
        if not isinstance(d, dict):
            raise ConfigError(f"optimizer settings must be a JSON object, got {type(d).__name__}")
        src = d
        try:
            d = dict(d)
            d["betas"] = tuple(d.get("betas", (0.9, 0.999)))
            d["schedule"] = Schedule(**d.get("schedule", {}))
            d["groups"] = tuple(_group_from_dict(g) for g in d.get("groups", ()))
            return cls(**d)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise ConfigError(f"malformed optimizer settings {src!r}: {e}") from e


def _group_to_dict(g: ParamGroup) -> dict:
    if g.globs is not None:
        match: object = {"globs": list(g.globs)}
    else:
        sel = asdict(g.match)
        if any(not isinstance(t, str) for t in sel["types"]):
            raise ConfigError(
                "a parameter group selecting by module class cannot be saved; "
                "use type names ('linear', 'conv') or name globs"
            )
        match = {"selector": {k: list(v) if isinstance(v, tuple) else v for k, v in sel.items()}}
    return {"match": match, "lr_mult": g.lr_mult, "wd_mult": g.wd_mult}


def _group_from_dict(d: dict) -> ParamGroup:
    from weightlab.core.selectors import Selector

    m = d["match"]
    if "globs" in m:
        match: object = tuple(m["globs"])
    else:
        match = Selector(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in m["selector"].items()}
        )
    return ParamGroup(match, float(d.get("lr_mult", 1.0)), float(d.get("wd_mult", 1.0)))


LossFn = Callable[..., object]


@dataclass(frozen=True)
class TrainConfig:
    """How long and how to train.

    Args:
        epochs: passes over the training split (the last partial batch is dropped).
        batch_size: examples per step; the train split's size gives full-batch gradient descent.
        eval_every: steps between evaluations on val and test; 0 means once per epoch.
        optim: optimizer settings.
        loss: ``"auto"`` (cross-entropy for classification, MSE for regression),
            ``"cross_entropy"``, ``"mse"``, or a callable ``loss(pred, target)`` returning
            per-example losses: ``(B,)`` in the loop, ``(N, B)`` in a population (``pred``
            ``(N, B, *out)``, ``target`` ``(N, B, *)`` or broadcastable). The training
            loss is its mean over the batch.
    """

    epochs: int = 30
    batch_size: int = 60
    eval_every: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: str | LossFn = "auto"

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size <= 0 or self.eval_every < 0:
            raise ConfigError("epochs and batch_size must be > 0 and eval_every >= 0")
        if isinstance(self.loss, str) and self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; choose one of: {', '.join(LOSSES)}")
        if not isinstance(self.loss, str) and not callable(self.loss):
            raise ConfigError("TrainConfig.loss must be a loss name or a callable")
