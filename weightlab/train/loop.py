"""One small training loop: seeded data order, SGD or Adam, periodic evaluation, and the
early-stopping iteration (minimum validation loss) recorded as in Frankle & Carbin (2019),
Section 2: "we use the iteration of minimum validation loss as a proxy for learning speed".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from weightlab.core.snapshots import take_snapshot
from weightlab.data.task import Split, TaskData
from weightlab.errors import DivergenceError
from weightlab.progress import progress_bar
from weightlab.train.config import OptimConfig, TrainConfig
from weightlab.train.order import batch_indices, steps_per_epoch


@dataclass(frozen=True)
class EvalPoint:
    """Metrics at one evaluation. ``train_loss`` is the mean over steps since the last one.

    Classification fills ``val_acc``/``test_acc``; regression fills ``*_r2`` (R², uniform
    mean over outputs) and ``*_rel_err`` (``‖ŷ − y‖₂ / ‖y‖₂`` over the split) and leaves the
    accuracies ``None``. :meth:`to_dict` drops the fields that are ``None``.
    """

    step: int
    epoch: float
    train_loss: float
    val_loss: float
    val_acc: float | None
    test_loss: float
    test_acc: float | None
    val_r2: float | None = None
    test_r2: float | None = None
    val_rel_err: float | None = None
    test_rel_err: float | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class TrainResult:
    """History of evaluations, weight snapshots taken at requested steps, and probe values.

    ``probes`` holds one ``{"step": t, name: value, ...}`` dict per step at which probes
    ran. ``diverged``: the training loss was non-finite at evaluation ``diverged_step``;
    the member stopped updating there and ``history`` ends with that evaluation.
    """

    history: list[EvalPoint]
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    diverged: bool = False
    diverged_step: int | None = None
    probes: list[dict] = field(default_factory=list)

    @property
    def best(self) -> EvalPoint:
        """The evaluation with minimum validation loss (the first one on ties)."""
        return min(
            self.history,
            key=lambda p: (p.val_loss if math.isfinite(p.val_loss) else math.inf, p.step),
        )

    @property
    def early_stop_step(self) -> int:
        return self.best.step

    @property
    def final(self) -> EvalPoint:
        return self.history[-1]


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, chunk: int = 8192) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split`` (eval mode, restored after)."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(split), chunk):
        logits = model(split.x[i : i + chunk])
        y = split.y[i : i + chunk]
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
    model.train(was_training)
    return loss_sum / len(split), correct / len(split)


def make_optimizer(params: Iterable[torch.Tensor], cfg: OptimConfig) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` or ``SGD`` with the settings of ``cfg``."""
    if cfg.name == "adam":
        return torch.optim.Adam(
            params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def eval_steps(total_steps: int, spe: int, eval_every: int) -> list[int]:
    """Steps after which to evaluate: every ``eval_every`` (or every epoch) and the last."""
    every = eval_every or spe
    steps = list(range(every, total_steps + 1, every))
    if not steps or steps[-1] != total_steps:
        steps.append(total_steps)
    return steps


def train(
    model: nn.Module,
    data: TaskData,
    cfg: TrainConfig,
    data_seed: int,
    *,
    snapshot_steps: Sequence[int] = (),
    on_eval: Callable[[EvalPoint, nn.Module], None] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``model`` in place on ``data.train`` and evaluate on val/test.

    Args:
        model: any module mapping ``x`` to logits; masks and other transforms attached
            with :mod:`weightlab.core` are respected (pruned weights stay zero).
        data: the task, already on the model's device.
        cfg: epochs, batch size, evaluation interval and optimizer.
        data_seed: seeds the data order (see :func:`batch_indices`).
        snapshot_steps: steps after which to keep a copy of the weights (0 = before training).
        on_eval: called with each :class:`EvalPoint` and the model.
        progress: show a tqdm progress bar.

    Raises:
        DivergenceError: the training loss became NaN or infinite.
    """
    n = len(data.train)
    spe = steps_per_epoch(n, cfg.batch_size)
    order = batch_indices(n, cfg.batch_size, cfg.epochs, data_seed).to(data.device)
    total = order.shape[0]
    evals = set(eval_steps(total, spe, cfg.eval_every))
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg.optim)
    result = TrainResult(history=[])
    if 0 in snapshot_steps:
        result.snapshots[0] = take_snapshot(model)
    bar = progress_bar(total, "train", "step", progress, leave=False)
    running, count = torch.zeros((), device=data.device), 0
    model.train()
    for step in range(1, total + 1):
        idx = order[step - 1]
        loss = F.cross_entropy(model(data.train.x[idx]), data.train.y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.detach()
        count += 1
        if step in snapshot_steps:
            result.snapshots[step] = take_snapshot(model)
        if step in evals:
            train_loss = float(running) / count
            if not math.isfinite(train_loss):
                raise DivergenceError(
                    f"training diverged (loss {train_loss}) by step {step}; lower the learning rate"
                )
            running.zero_()
            count = 0
            val_loss, val_acc = evaluate(model, data.val)
            test_loss, test_acc = evaluate(model, data.test)
            point = EvalPoint(step, step / spe, train_loss, val_loss, val_acc, test_loss, test_acc)
            result.history.append(point)
            if on_eval is not None:
                on_eval(point, model)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return result
