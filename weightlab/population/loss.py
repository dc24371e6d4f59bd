"""The training loss and evaluation statistics as a population engine computes them.

The loss itself comes from :func:`weightlab.train.losses.resolve_loss`, the one the
single-model loop uses; :class:`EngineLoss` only adds what an engine needs on top: which
closed-form gradient applies (the MLP fast path writes ``∂L/∂pred`` by hand for
cross-entropy and MSE), how a batch's targets get their member dim, and per-member
evaluation statistics from which :mod:`weightlab.train.metrics` computes accuracy or R² and
relative error.

Shapes: ``pred`` is ``(N, B, *out)``; targets are ``(B, *t)`` when members share the data
order or ``(N, B, *t)`` otherwise (``t = ()`` for class labels, ``output_shape`` for float
targets).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from weightlab.errors import ConfigError
from weightlab.train.losses import (
    LossFn,
    check_per_example,
    cross_entropy_per_example,
    mse_per_example,
    resolve_loss,
)
from weightlab.train.metrics import correct_count, sse_per_output


@dataclass(frozen=True)
class EngineLoss:
    """A resolved per-example loss plus the shape facts an engine needs.

    Attributes:
        fn: per-example loss (``resolve_loss(cfg.loss, task.kind)``).
        kind: ``"cross_entropy"``, ``"mse"`` (closed-form gradients exist) or ``"callable"``.
        target_ndim: dims of one example's target (0 for class labels).
        regression: the task is regression (metrics R² / relative error, else accuracy).
    """

    fn: LossFn = cross_entropy_per_example
    kind: str = "cross_entropy"
    target_ndim: int = 0
    regression: bool = False

    @classmethod
    def resolve(cls, loss: object, task_kind: str, output_shape: tuple[int, ...]) -> EngineLoss:
        """The engine loss for ``TrainConfig.loss`` on a task (errors as ``resolve_loss``)."""
        fn = resolve_loss(loss, task_kind)
        kind = "callable"
        if fn is cross_entropy_per_example:
            kind = "cross_entropy"
        elif fn is mse_per_example:
            kind = "mse"
        regression = task_kind == "regression"
        return cls(fn, kind, len(output_shape) if regression else 0, regression)

    def member_targets(self, y: torch.Tensor, n: int) -> torch.Tensor:
        """``y`` with a leading member dim (a stride-0 expand when members share it)."""
        if y.dim() == 1 + self.target_ndim:
            return y.unsqueeze(0).expand(n, *y.shape)
        return y

    def per_example(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(N, B)`` per-example losses of ``pred (N, B, *out)`` against member targets."""
        lead = tuple(pred.shape[:2])
        if self.kind == "cross_entropy":
            if target.is_floating_point() or pred.dim() != 3:
                return cross_entropy_per_example(pred, target)  # its checks and messages
            # classes on dim 1: the same per-example values; kept from the engines' first
            # version, whose rounding the population/loop equivalence tests were tuned on
            return F.cross_entropy(pred.transpose(1, 2), target, reduction="none")
        if self.kind == "mse":
            ndim = target.dim() - 2 if target.is_floating_point() else None
            return mse_per_example(pred, target, ndim)
        return check_per_example(self.fn(pred, target), lead)

    def check_output(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Refuse a model output that does not fit float targets (one line)."""
        if target.is_floating_point() and tuple(pred.shape[2:]) != tuple(target.shape[2:]):
            raise ConfigError(
                f"model output shape {tuple(pred.shape[2:])} does not match the target shape "
                f"{tuple(target.shape[2:])}; give the model {tuple(target.shape[2:])} outputs"
            )

    def mse_grad(self, pred: torch.Tensor, target: torch.Tensor, out: torch.Tensor):
        """Closed-form MSE: ``(loss (N,), ∂L/∂pred)`` with ``L_n`` the batch mean of the
        per-example loss, so ``∂L_n/∂pred = 2 (pred - target) / (B · D)``. ``out`` is a
        buffer of ``pred``'s shape that receives the gradient."""
        if not target.is_floating_point():
            target = F.one_hot(target, pred.shape[-1]).to(pred.dtype)
        else:
            self.check_output(pred, target)
        diff = torch.sub(pred, target, out=out)
        count = diff[0].numel()
        loss = diff.square().sum(dim=tuple(range(1, diff.dim()))).div_(count)
        return loss, diff.mul_(2.0 / count)

    def autograd_grad(self, pred: torch.Tensor, target: torch.Tensor):
        """``(loss (N,), ∂L/∂pred)`` by autograd on the output only: ``Σ_n`` of each
        member's batch-mean loss, differentiated once with respect to ``pred``."""
        p = pred.detach().requires_grad_(True)
        with torch.enable_grad():
            losses = self.per_example(p, target)
            loss = losses.mean(1)
            (grad,) = torch.autograd.grad(loss.sum(), p)
        return loss.detach(), grad

    # -- evaluation ----------------------------------------------------------------------
    def eval_stats(self, pred: torch.Tensor, target: torch.Tensor):
        """``(Σ loss (N,) float64, correct (N,) | SSE per output (N, *out))`` for one chunk."""
        losses = self.per_example(pred, target).sum(1, dtype=torch.float64)
        if self.regression:
            return losses, sse_per_output(pred.reshape(target.shape), target, self.target_ndim)
        return losses, correct_count(pred, target)
