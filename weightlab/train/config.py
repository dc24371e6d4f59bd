"""Typed training configuration (every field defaulted and documented)."""

from __future__ import annotations

from dataclasses import dataclass, field

from weightlab.errors import ConfigError

OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer settings, with PyTorch's semantics for ``torch.optim.Adam`` / ``SGD``.

    ``weight_decay`` is L2 added to the gradient (``g + wd * w``), as in those optimizers.
    """

    name: str = "adam"
    lr: float = 1.2e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer {self.name!r}; choose one of: {', '.join(OPTIMIZERS)}"
            )
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError("weight_decay must be >= 0 and momentum in [0, 1)")
        if not (0 <= self.betas[0] < 1 and 0 <= self.betas[1] < 1) or self.eps <= 0:
            raise ConfigError("Adam betas must lie in [0, 1) and eps must be > 0")


@dataclass(frozen=True)
class TrainConfig:
    """How long and how to train.

    Args:
        epochs: passes over the training split (the last partial batch is dropped).
        batch_size: examples per step.
        eval_every: steps between evaluations on val and test; 0 means once per epoch.
        optim: optimizer settings.
    """

    epochs: int = 30
    batch_size: int = 60
    eval_every: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size <= 0 or self.eval_every < 0:
            raise ConfigError("epochs and batch_size must be > 0 and eval_every >= 0")
