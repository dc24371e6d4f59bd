"""The single-model training loop (the reference semantics the population engine matches)."""

from weightlab.train.callbacks import LossRecorder, StepCallback, StepContext
from weightlab.train.config import OptimConfig, ParamGroup, Schedule, TrainConfig
from weightlab.train.loop import EvalPoint, TrainResult, evaluate, train
from weightlab.train.losses import resolve_loss
from weightlab.train.optim import make_optimizer
from weightlab.train.order import batch_indices, steps_per_epoch
from weightlab.train.probes import (
    Probe,
    ProbeContext,
    distance_from_init,
    grad_norm,
    param_probe,
    relative_change,
    train_loss,
    weight_norm,
)
from weightlab.train.samplers import rs2_order, static_subset_order

__all__ = [
    "EvalPoint",
    "LossRecorder",
    "OptimConfig",
    "ParamGroup",
    "Probe",
    "ProbeContext",
    "Schedule",
    "StepCallback",
    "StepContext",
    "TrainConfig",
    "TrainResult",
    "batch_indices",
    "distance_from_init",
    "evaluate",
    "grad_norm",
    "make_optimizer",
    "param_probe",
    "relative_change",
    "resolve_loss",
    "rs2_order",
    "static_subset_order",
    "steps_per_epoch",
    "train",
    "train_loss",
    "weight_norm",
]
