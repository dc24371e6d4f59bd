"""Knowledge distillation in the one training loop's terms.

The loop (:func:`weightlab.train.train`) and the population engines train on a
:class:`~weightlab.data.TaskData` with a per-example loss ``loss(pred, target)``; they pass
the loss the batch's targets only (no indices, no inputs). Distillation therefore puts the
teacher into the *targets*: :func:`distillation_task` turns a classification task into a
regression task whose targets are the teacher's logits on every split (computed once, in
eval mode). A student then trains with

- ``loss="mse"``: squared error between student and teacher logits, the logit matching of
  Ba & Caruana (2014), which N2N (Ashok et al. 2018) uses for its students;
- ``loss=kd_loss(T)``: Hinton et al. (2015)'s soft-target term,
  ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` per example, as in TAS (Dong & Yang 2019).

The hard-label term of Hinton's loss is left out: the loss sees only the targets, which
here are logits (a reduced version; with ``T = 1`` and the labels folded in, it would be a
cross-entropy with soft labels). The loop's val/test metrics on such a task are the
student's fidelity to the teacher (R² of the logits); accuracy on the real labels comes
from :func:`label_accuracy` on the original task.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.seeding import generator
from weightlab.train.losses import LossFn

__all__ = ["distillation_task", "kd_loss", "label_accuracy", "teacher_logits"]


@torch.no_grad()
def teacher_logits(teacher: nn.Module, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """The teacher's outputs on ``x`` in eval mode (its mode is restored), float32."""
    was = teacher.training
    teacher.eval()
    try:
        outs = [teacher(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    finally:
        teacher.train(was)
    return torch.cat(outs).float()


def distillation_task(
    task: TaskData, teacher: nn.Module, *, n_train: int | None = None, seed: int = 0
) -> TaskData:
    """``task`` with the teacher's logits as regression targets on every split.

    Args:
        task: a classification task (its inputs are kept).
        teacher: a module mapping the task's inputs to ``(n, num_classes)`` logits.
        n_train: keep a seeded random subset of this many training examples (the N2N
            recipe distils each student on 1,000); ``None`` keeps all.
        seed: seeds that subset.

    Returns:
        A ``"regression"`` task named ``<task>-distill`` with ``output_shape
        (num_classes,)``; ``info["labels"]`` holds the subset's train labels.
    """
    if task.kind != "classification":
        raise ConfigError(f"distillation needs a classification task; {task.name!r} is {task.kind}")
    train = task.train
    if n_train is not None:
        if not 1 <= n_train <= len(train):
            raise ConfigError(
                f"cannot distil on {n_train} examples: the train split has {len(train)}; "
                f"choose 1..{len(train)}"
            )
        idx = torch.randperm(len(train), generator=generator(seed))[:n_train].sort().values
        idx = idx.to(train.x.device)
        train = Split(train.x[idx], train.y[idx])

    def soft(split: Split) -> Split:
        return Split(split.x, teacher_logits(teacher, split.x))

    out = TaskData(
        f"{task.name}-distill",
        soft(train),
        soft(task.val),
        soft(task.test),
        0,
        "regression",
        (task.num_classes,),
        {"labels": train.y, "distilled_from": task.name},
    )
    return out


def kd_loss(temperature: float = 4.0) -> LossFn:
    """Hinton et al. (2015)'s soft-target loss as a per-example loss over the last dim:
    ``T² · Σ_c q_c (log q_c − log p_c)`` with ``q = softmax(teacher/T)``,
    ``p = softmax(student/T)``; the ``T²`` keeps gradient magnitudes comparable across
    temperatures (their Sec. 2). ``pred (..., B, C)``, ``target`` teacher logits
    broadcastable to it; returns ``pred.shape[:-1]``."""
    if not (temperature > 0 and temperature == temperature):
        raise ConfigError(f"distillation temperature must be > 0, got {temperature}")
    t = float(temperature)

    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not target.is_floating_point() or target.shape[-1] != pred.shape[-1]:
            raise ConfigError(
                f"kd_loss needs teacher logits of shape (..., {pred.shape[-1]}) as targets, "
                f"got {tuple(target.shape)} ({target.dtype}); build the task with "
                "distillation_task"
            )
        log_q = F.log_softmax(target / t, dim=-1)
        log_p = F.log_softmax(pred / t, dim=-1)
        return (t * t) * (log_q.exp() * (log_q - log_p)).sum(-1)

    loss.__qualname__ = f"kd_loss(T={t:g})"
    return loss


@torch.no_grad()
def label_accuracy(model: nn.Module, split: Split, chunk: int = 8192) -> float:
    """Fraction of ``split`` (integer labels) whose argmax prediction is right, in eval
    mode (the model's mode is restored)."""
    logits = teacher_logits(model, split.x, chunk)
    return float((logits.argmax(-1) == split.y).float().mean())
