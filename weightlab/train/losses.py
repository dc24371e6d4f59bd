"""Per-example losses shared by the single-model loop and the population engines.

Every loss here maps ``pred`` and ``target`` to one loss per example: ``pred`` is
``(B, *out)`` in the loop and ``(N, B, *out)`` in a population (``N`` members), and the
result is ``(B,)`` or ``(N, B)``. The training loss of a step is the mean over the batch.

- ``cross_entropy``: ``-log softmax(pred)[y]`` over the last dim (classes);
  ``target`` holds int64 labels ``(B,)`` or ``(N, B)``.
- ``mse``: mean over the output coordinates of ``(pred - target)**2``, so the batch mean
  equals ``F.mse_loss(pred, target, reduction="mean")``. Integer targets (classification
  task trained with MSE, as in NTK-style experiments) are one-hot encoded to the last
  dim of ``pred``.
- a callable ``loss(pred, target)`` supplied by a recipe, returning per-example losses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from weightlab.errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy_per_example(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-log softmax(pred)[target]`` per example; ``pred (..., B, C)``, ``target`` int labels
    broadcastable to ``pred.shape[:-1]``. Returns ``pred.shape[:-1]``."""
    if target.is_floating_point():
        raise ConfigError(
            "cross-entropy needs integer class labels; use loss 'mse' for float targets"
        )
    lead = pred.shape[:-1]
    try:
        t = target.expand(lead) if target.shape != lead else target
    except RuntimeError:
        raise ConfigError(
            f"model outputs of shape {tuple(pred.shape)} do not fit labels of shape "
            f"{tuple(target.shape)}; the model must output (batch, classes) logits"
        ) from None
    out = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), t.reshape(-1), reduction="none")
    return out.view(lead)


def mse_per_example(
    pred: torch.Tensor, target: torch.Tensor, output_ndim: int | None = None
) -> torch.Tensor:
    """Mean over output coordinates of ``(pred - target)**2``.

    Args:
        pred: ``(..., B, *out)``.
        target: float ``(B, *out)`` or ``(..., B, *out)``; int64 labels ``(B,)`` /
            ``(..., B)`` are one-hot encoded to ``pred.shape[-1]`` classes.
        output_ndim: ``len(out)``; ``None`` infers it as ``target.ndim - 1`` (a target
            without member dim). A population passing ``(N, B, *out)`` targets must give it.

    Returns:
        ``pred.shape[:-output_ndim]`` (``(B,)`` or ``(N, B)``).
    """
    if not target.is_floating_point():
        target = F.one_hot(target, pred.shape[-1]).to(pred.dtype)
        output_ndim = 1
    k = target.ndim - 1 if output_ndim is None else output_ndim
    if pred.ndim < k + 1 or tuple(pred.shape[-k - 1 :]) != tuple(target.shape[-k - 1 :]):
        want = tuple(target.shape[-k:]) if k else ()
        raise ConfigError(
            f"model outputs of shape {tuple(pred.shape)} do not match targets of shape "
            f"{tuple(target.shape)}; the model must output (batch, *{want})"
        )
    sq = (pred - target).square()
    return sq.mean(dim=tuple(range(-k, 0))) if k else sq


def resolve_loss(loss: str | LossFn, task_kind: str, output_ndim: int | None = None) -> LossFn:
    """The per-example loss function for ``TrainConfig.loss`` on a task of ``task_kind``.

    ``"auto"`` is cross-entropy for classification and MSE for regression. Cross-entropy on
    a regression task is a :class:`ConfigError`. A callable is returned unchanged (it must
    return per-example losses; the loop checks the shape). ``output_ndim`` is passed to
    :func:`mse_per_example` (``len(task.output_shape)``; give it when targets carry a
    member dim).
    """
    if callable(loss) and not isinstance(loss, str):
        return loss
    if loss == "auto":
        loss = "cross_entropy" if task_kind == "classification" else "mse"
    if loss == "cross_entropy":
        if task_kind != "classification":
            raise ConfigError(
                "loss 'cross_entropy' needs a classification task; use 'mse' or 'auto' for "
                "regression"
            )
        return cross_entropy_per_example
    if loss == "mse":
        if output_ndim is None:
            return mse_per_example

        def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return mse_per_example(pred, target, output_ndim)

        return mse
    raise ConfigError(f"unknown loss {loss!r}; choose auto, cross_entropy, mse or a callable")


def check_per_example(losses: object, expected: tuple[int, ...]) -> torch.Tensor:
    """Check a (user) loss returned per-example losses of shape ``expected``."""
    if not isinstance(losses, torch.Tensor) or tuple(losses.shape) != tuple(expected):
        got = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ConfigError(
            f"the loss must return per-example losses of shape {tuple(expected)}, got {got}; "
            "return one value per example (no mean)"
        )
    return losses
