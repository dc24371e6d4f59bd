"""One small training loop: seeded data order, ``torch.optim`` SGD/Adam/AdamW with
parameter groups, schedules and clipping, any per-example loss, probes, periodic
evaluation, and the early-stopping iteration (minimum validation loss) recorded as in
Frankle & Carbin (2019), Section 2: "we use the iteration of minimum validation loss as a
proxy for learning speed".

This is the reference semantics every population engine reproduces per member.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from weightlab.core.selectors import plain_name
from weightlab.core.snapshots import take_snapshot
from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.models.dropout import (
    dropout_layers,
    dropout_step,
    functional_dropout,
    replace_dropout,
)
from weightlab.progress import progress_bar
from weightlab.train.callbacks import StepCallback, StepContext
from weightlab.train.config import TrainConfig
from weightlab.train.losses import LossFn, check_per_example, resolve_loss
from weightlab.train.metrics import correct_count, r2_and_rel_err, sse_per_output, target_stats
from weightlab.train.optim import clip_gradients, make_optimizer, set_lr
from weightlab.train.order import batch_indices, steps_per_epoch
from weightlab.train.probes import Probe, ProbeContext, check_probes, run_probes
from weightlab.train.samplers import check_order

__all__ = [
    "EvalPoint",
    "TrainResult",
    "cast_data",
    "check_snapshot_steps",
    "eval_steps",
    "evaluate",
    "evaluate_split",
    "make_optimizer",
    "train",
]


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
        """The evaluation with minimum validation loss (the first one on ties). Without any
        finite validation loss (an empty validation split) there is nothing to stop early
        on: the final evaluation."""
        if not any(math.isfinite(p.val_loss) for p in self.history):
            return self.history[-1]
        return min(
            self.history,
            key=lambda p: (p.val_loss if math.isfinite(p.val_loss) else math.inf, p.step),
        )

    def to_dict(self) -> dict:
        """JSON-able record for a run's unit metrics (and so ``metrics.jsonl``): the
        evaluation history, probe values, divergence and the early-stopping step.
        Snapshots are tensors and are not included."""
        return {
            "history": [p.to_dict() for p in self.history],
            "probes": [dict(row) for row in self.probes],
            "diverged": bool(self.diverged),
            "diverged_step": self.diverged_step,
            "early_stop_step": self.best.step if self.history else None,
            "last_step": self.final.step if self.history else None,
        }

    @property
    def early_stop_step(self) -> int:
        return self.best.step

    @property
    def final(self) -> EvalPoint:
        return self.history[-1]


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    split: Split,
    kind: str,
    loss_fn: LossFn,
    chunk: int = 8192,
    *,
    stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Metrics of ``model`` on ``split`` in eval mode (mode restored after).

    Returns ``{"loss", "acc"}`` for classification and ``{"loss", "r2", "rel_err"}`` for
    regression; ``loss`` is the mean of ``loss_fn``'s per-example losses (see
    :mod:`weightlab.train.metrics` for R² and the relative error). ``stats``: the split's
    :func:`~weightlab.train.metrics.target_stats` (regression), for callers that evaluate
    the same split repeatedly; ``None`` computes them. An empty split (a task without
    validation examples) gives NaN metrics, written as ``null`` in run files.
    """
    if len(split) == 0:
        nan = float("nan")
        if kind == "classification":
            return {"loss": nan, "acc": nan}
        return {"loss": nan, "r2": nan, "rel_err": nan}
    was_training = model.training
    model.eval()
    n = len(split)
    loss_sum, correct, sse = 0.0, 0, None
    try:
        for i in range(0, n, chunk):
            pred = model(split.x[i : i + chunk])
            y = split.y[i : i + chunk]
            loss_sum += float(loss_fn(pred, y).sum())
            if kind == "classification":
                correct += int(correct_count(pred, y))
            else:
                if pred.numel() != y.numel():
                    raise ConfigError(
                        f"model outputs of shape {tuple(pred.shape)} do not match targets of "
                        f"shape {tuple(y.shape)}; change the model's output layer"
                    )
                part = sse_per_output(pred.reshape(y.shape), y)
                sse = part if sse is None else sse + part
    finally:
        model.train(was_training)
    if kind == "classification":
        return {"loss": loss_sum / n, "acc": correct / n}
    ss_tot, y_sq = stats if stats is not None else target_stats(split.y)
    r2, rel = r2_and_rel_err(sse, ss_tot.to(sse.device), y_sq.to(sse.device))
    return {"loss": loss_sum / n, "r2": float(r2), "rel_err": float(rel)}


def evaluate(
    model: nn.Module,
    split: Split,
    chunk: int = 8192,
    *,
    kind: str = "classification",
    loss: str | LossFn = "auto",
) -> tuple[float, ...]:
    """``(loss, accuracy)`` for classification (cross-entropy by default), or
    ``(loss, r2, rel_err)`` for ``kind="regression"`` (MSE by default)."""
    ndim = split.y.ndim - 1 if kind == "regression" else 1
    m = evaluate_split(model, split, kind, resolve_loss(loss, kind, ndim), chunk)
    if kind == "classification":
        return m["loss"], m["acc"]
    return m["loss"], m["r2"], m["rel_err"]


def eval_steps(total_steps: int, spe: int, eval_every: int) -> list[int]:
    """Steps after which to evaluate: every ``eval_every`` (or every epoch) and the last."""
    every = eval_every or spe
    steps = list(range(every, total_steps + 1, every))
    if not steps or steps[-1] != total_steps:
        steps.append(total_steps)
    return steps


def check_snapshot_steps(snapshot_steps: Sequence[int], total_steps: int) -> set[int]:
    """The requested snapshot steps as a set; any outside ``[0, total_steps]`` is a
    :class:`ConfigError` (raised before training starts)."""
    steps = set()
    for s in snapshot_steps:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise ConfigError(f"snapshot steps must be integers, got {s!r}")
        s = int(s)
        if not 0 <= s <= total_steps:
            raise ConfigError(
                f"snapshot step {s} is outside the run (0..{total_steps} steps); "
                "choose a step within the training budget"
            )
        steps.add(s)
    return steps


def cast_data(data: TaskData, dtype: torch.dtype) -> TaskData:
    """``data`` with float inputs (and float targets) cast to ``dtype``; labels unchanged."""

    def cast(split: Split) -> Split:
        x = split.x.to(dtype) if split.x.is_floating_point() else split.x  # token ids stay ints
        y = split.y.to(dtype) if split.y.is_floating_point() else split.y
        return Split(x, y)

    return TaskData(
        data.name,
        cast(data.train),
        cast(data.val),
        cast(data.test),
        data.num_classes,
        data.kind,
        data.output_shape,
        data.info,
    )


def _check_outputs(pred: torch.Tensor, data: TaskData) -> None:
    """One line if the model's outputs cannot be the task's (checked on the first batch)."""
    want = tuple(data.output_shape)
    if tuple(pred.shape[1:]) != want:
        raise ConfigError(
            f"model outputs of shape {tuple(pred.shape[1:])} per example, task "
            f"{data.name!r} needs {want}; change the model's output layer"
        )


def _eval_point(
    model: nn.Module,
    data: TaskData,
    loss_fn: LossFn,
    step: int,
    spe: int,
    train_loss: float,
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]],
) -> EvalPoint:
    val = evaluate_split(model, data.val, data.kind, loss_fn, stats=stats.get("val"))
    test = evaluate_split(model, data.test, data.kind, loss_fn, stats=stats.get("test"))
    if data.kind == "classification":
        return EvalPoint(
            step, step / spe, train_loss, val["loss"], val["acc"], test["loss"], test["acc"]
        )
    return EvalPoint(
        step,
        step / spe,
        train_loss,
        val["loss"],
        None,
        test["loss"],
        None,
        val_r2=val["r2"],
        test_r2=test["r2"],
        val_rel_err=val["rel_err"],
        test_rel_err=test["rel_err"],
    )


def train(
    model: nn.Module,
    data: TaskData,
    cfg: TrainConfig,
    data_seed: int,
    *,
    seed: int = 0,
    snapshot_steps: Sequence[int] = (),
    probes: Sequence[Probe] = (),
    on_eval: Callable[[EvalPoint, nn.Module], None] | None = None,
    callbacks: Sequence[StepCallback] = (),
    progress: bool = False,
    dtype: torch.dtype | None = None,
    order: torch.Tensor | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data.train`` and evaluate on val/test.

    Each step ``t = 1..T``: set the scheduled learning rates, forward a batch (dropout
    masks of member ``seed`` at step ``t``, see :mod:`weightlab.models.dropout`), mean
    per-example loss, backward, clip, update; then the step callbacks, snapshot, probes and
    evaluation if due.

    Divergence: if the mean training loss since the last evaluation is non-finite at an
    evaluation, the evaluation is still recorded (metrics may be NaN), ``diverged`` and
    ``diverged_step`` are set, and training stops there. No exception is raised.

    Args:
        model: any module mapping ``x`` to outputs; masks and other transforms attached
            with :mod:`weightlab.core` are respected (pruned weights stay zero).
            ``nn.Dropout`` modules are replaced in place by weightlab's seeded ``Dropout``.
        data: the task, already on the model's device.
        cfg: epochs, batch size (the train split's size gives full-batch gradient
            descent), evaluation interval, optimizer and loss.
        data_seed: seeds the data order (see :func:`batch_indices`).
        seed: the member's init seed; seeds the dropout masks and SGLD's noise.
        snapshot_steps: steps after which to keep a copy of the weights (0 = before
            training); each must lie in ``[0, T]``.
        probes: :class:`~weightlab.train.probes.Probe` s run every ``probe.every`` steps.
        on_eval: called with each :class:`EvalPoint` and the model.
        callbacks: :data:`~weightlab.train.callbacks.StepCallback` s called after every
            update with the model and a :class:`~weightlab.train.callbacks.StepContext`
            (pruning schedules, dynamic sparse training, hard thresholding).
        progress: show a progress bar.
        dtype: cast the model and the data to this dtype first (e.g. ``torch.float64``
            for equivalence tests).
        order: an explicit data order, a ``(T, cfg.batch_size)`` integer tensor of
            training-example indices (a sampler's, :mod:`weightlab.train.samplers`): step
            ``t`` trains on ``order[t - 1]`` and the run has ``T`` steps (``cfg.epochs`` and
            ``data_seed`` are then unused). Epochs in evaluations, and the default
            evaluation interval, still count passes of the whole train split
            (``n // batch_size`` steps). ``None``: :func:`batch_indices`.

    Raises:
        ConfigError: a snapshot step outside the run, a warm-up longer than the run, a
            parameter group matching nothing, a batch larger than the train split,
            dropout inside a functional call, or a malformed ``order``.
    """
    if dtype is not None:
        model.to(dtype)
        data = cast_data(data, dtype)
    n = len(data.train)
    spe = steps_per_epoch(n, cfg.batch_size)
    total = spe * cfg.epochs
    if order is not None:
        order = check_order(order, n, cfg.batch_size)
        total = order.shape[0]
    snaps = check_snapshot_steps(snapshot_steps, total)
    cfg.optim.schedule.check(total)
    probes = check_probes(probes)
    hidden = functional_dropout(model)
    if hidden:
        raise ConfigError(
            f"module(s) {', '.join(hidden)} apply dropout with the global RNG; set their "
            "dropout to 0 and use nn.Dropout modules (seeded by weightlab) instead"
        )
    replace_dropout(model)
    drop = dropout_layers(model)
    loss_fn = resolve_loss(cfg.loss, data.kind, len(data.output_shape))
    custom_loss = not isinstance(cfg.loss, str)
    opt = make_optimizer(model, cfg.optim, seed=seed)
    params = [p for g in opt.param_groups for p in g["params"]]
    named = [(plain_name(k), p) for k, p in model.named_parameters() if p.requires_grad]
    if order is None:
        order = batch_indices(n, cfg.batch_size, cfg.epochs, data_seed)
    order = order.to(data.device)
    evals = set(eval_steps(total, spe, cfg.eval_every))
    stats = {}  # regression: each split's target statistics, computed once (not per eval)
    if data.kind == "regression":
        stats = {"val": target_stats(data.val.y), "test": target_stats(data.test.y)}

    result = TrainResult(history=[])
    ctx = None
    if probes:
        init = {k: p.detach().clone() for k, p in named}
        ctx = ProbeContext(0, data, loss_fn, init, None, seed)
    if 0 in snaps:
        result.snapshots[0] = take_snapshot(model)
    if ctx is not None:
        row = run_probes(probes, model, ctx)
        if row is not None:
            result.probes.append(row)
    bar = progress_bar(total, "train", "step", progress, leave=False)
    running, count = torch.zeros((), device=data.device, dtype=torch.float64), 0
    model.train()
    try:
        for step in range(1, total + 1):
            idx = order[step - 1]
            x, y = data.train.x[idx], data.train.y[idx]
            set_lr(opt, cfg.optim, step - 1, total)
            if drop:
                with dropout_step(drop, seed, step):
                    pred = model(x)
            else:
                pred = model(x)
            if step == 1 and not custom_loss:
                _check_outputs(pred, data)
            losses = loss_fn(pred, y)
            if custom_loss:
                check_per_example(losses, (len(idx),))
            loss = losses.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            due = [p for p in probes if p.due(step)]
            if any(p.reads_grads for p in due):  # copy gradients only for probes that read them
                ctx.grads = {
                    k: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                    for k, p in named
                }
            clip_gradients(params, cfg.optim)
            opt.step()
            if callbacks:
                sctx = StepContext(step, total, x, y, loss_fn, opt, seed, data, loss.detach())
                for cb in callbacks:
                    cb(model, sctx)
                # a callback may grow or replace parameters (weightlab.growth rebinds them in
                # the optimizer): clip and probe what the optimizer now holds
                params = [p for g in opt.param_groups for p in g["params"]]
                named = [(plain_name(k), p) for k, p in model.named_parameters() if p.requires_grad]
            running += loss.detach()
            count += 1
            if step in snaps:
                result.snapshots[step] = take_snapshot(model)
            if due:
                ctx.step = step
                result.probes.append(run_probes(probes, model, ctx))
                ctx.grads = None
            if step in evals:
                train_loss = float(running) / count
                running.zero_()
                count = 0
                point = _eval_point(model, data, loss_fn, step, spe, train_loss, stats)
                result.history.append(point)
                if on_eval is not None:
                    on_eval(point, model)
                if not math.isfinite(train_loss):
                    result.diverged, result.diverged_step = True, step
                    break
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return result
