"""The single-model training loop (the reference semantics the population engine matches)."""

from weightlab.train.config import OptimConfig, ParamGroup, Schedule, TrainConfig
from weightlab.train.loop import EvalPoint, TrainResult, evaluate, make_optimizer, train
from weightlab.train.order import batch_indices, steps_per_epoch

__all__ = [
    "EvalPoint",
    "OptimConfig",
    "ParamGroup",
    "Schedule",
    "TrainConfig",
    "TrainResult",
    "batch_indices",
    "evaluate",
    "make_optimizer",
    "steps_per_epoch",
    "train",
]
