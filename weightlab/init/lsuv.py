"""LSUV: layer-sequential unit-variance initialization (Mishkin & Matas 2016, "All you need
is a good init", ICLR, Algorithm 1).

1. Every selected weight starts orthonormal (the registry's ``orthogonal``: Saxe et al.
   2014; a conv weight as its ``(C_out, C_in·∏k)`` matrix), biases zero.
2. Then, layer by layer in module order, a mini-batch is pushed through the network and
   the variance ``v`` of the layer's output ``B_L`` is read with a forward hook; while
   ``|v - 1| >= tol`` and fewer than ``max_iter`` passes were made, the weight is divided by
   ``sqrt(v)`` (Algorithm 1: ``W_L = W_L / sqrt(Var(B_L))``).

Cost: one forward pass per iteration, and that pass stops at the hooked layer (the hook
raises, so the layers after it are never computed); at most ``max_iter`` (default 10, the
paper's ``T_max``) iterations per layer. ``tol`` is the paper's ``Tol_var`` (0.1). The
passes run in eval mode (dropout off, BatchNorm on its running statistics; the hooked
output is the layer's own, before any normalization), and the mode is restored after.

``data`` (required): a tensor (``model(data)``), a tuple / list (``model(*data)``), a dict
(``model(**data)``, e.g. MiniLM's ``input_ids`` and ``attention_mask``), or a
:class:`~weightlab.data.task.TaskData` (its training inputs, the first ``batch`` rows).
What happened is kept in :attr:`LSUV.report` (one :class:`LayerRecord` per layer) and
:attr:`LSUV.forward_passes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from weightlab.errors import ConfigError
from weightlab.init.registry import InitContext, Initializer, Orthogonal, register


@dataclass(frozen=True)
class LayerRecord:
    """One layer's LSUV trace: the output variances it measured (one per forward pass,
    before each rescale), the total factor its weight was multiplied by, and whether the
    last measured variance was within ``tol`` of 1."""

    name: str
    variances: tuple[float, ...]
    scale: float
    converged: bool

    @property
    def iterations(self) -> int:
        return len(self.variances)


class _Stop(Exception):
    """Raised by the hook: the rest of the forward pass is not needed."""


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ConfigError(f"LSUV: a selected layer returned {type(out).__name__}, not a tensor")


def _call(model: nn.Module, data: Any, batch: int) -> None:
    from weightlab.data.task import TaskData

    if isinstance(data, TaskData):
        data = data.train.x[:batch]
    if isinstance(data, dict):
        model(**data)
    elif isinstance(data, (tuple, list)):
        model(*data)
    else:
        model(data)


def _stored_weight(module: nn.Module, attr: str) -> torch.Tensor:
    if parametrize.is_parametrized(module, attr):
        return module.parametrizations[attr].original
    return getattr(module, attr)


@register("lsuv")
class LSUV(Initializer):
    """Mishkin & Matas (2016), Algorithm 1: orthonormal init, then per layer ``W /=
    sqrt(Var(output))`` until ``|Var - 1| < tol`` or ``max_iter`` forward passes.

    Args:
        tol: the variance tolerance ``Tol_var`` (paper: 0.1).
        max_iter: forward passes per layer at most (paper's ``T_max``: 10).
        batch: rows of a :class:`TaskData`'s training inputs used as the batch.
        gain: gain of the orthonormal start.
    """

    needs = ("data",)

    def __init__(
        self, tol: float = 0.1, max_iter: int = 10, batch: int = 256, gain: float = 1.0
    ) -> None:
        if not (math.isfinite(float(tol)) and 0 < float(tol) < 1):
            raise ConfigError(f"lsuv tol must be in (0, 1), got {tol!r}")
        if int(max_iter) != max_iter or int(max_iter) < 1:
            raise ConfigError(f"lsuv max_iter must be an integer >= 1, got {max_iter!r}")
        if int(batch) != batch or int(batch) < 2:
            raise ConfigError(f"lsuv batch must be an integer >= 2, got {batch!r}")
        self.tol, self.max_iter, self.batch = float(tol), int(max_iter), int(batch)
        self.base = Orthogonal(gain=gain)
        self.report: list[LayerRecord] = []
        self.forward_passes = 0

    def weight(self, shape: torch.Size, ctx: InitContext) -> torch.Tensor:
        return self.base.weight(shape, ctx)

    @torch.no_grad()
    def after(self, model: nn.Module, contexts: list[InitContext]) -> None:
        """Algorithm 1's loop over the selected layers, in order (module docstring)."""
        self.report, self.forward_passes = [], 0
        data = contexts[0].data
        was_training = model.training
        model.eval()
        try:
            for ctx in contexts:
                self.report.append(self._fit_layer(model, ctx, data))
        finally:
            model.train(was_training)

    def _fit_layer(self, model: nn.Module, ctx: InitContext, data: Any) -> LayerRecord:
        attr = ctx.name.rpartition(".")[2]
        seen: list[float] = []

        def hook(_module, _inputs, out):
            y = _first_tensor(out).detach()
            seen.append(float(y.double().var()))
            raise _Stop

        handle = ctx.module.register_forward_hook(hook)
        variances: list[float] = []
        scale, converged = 1.0, False
        try:
            for _ in range(self.max_iter):
                seen.clear()
                try:
                    _call(model, data, self.batch)
                except _Stop:
                    pass
                self.forward_passes += 1
                if not seen:
                    raise ConfigError(
                        f"LSUV: layer {ctx.name} was not reached by the forward pass; select "
                        "only layers the model uses"
                    )
                v = seen[0]
                variances.append(v)
                if not (math.isfinite(v) and v > 0):
                    break  # a dead layer (all outputs equal): nothing to rescale
                if abs(v - 1.0) < self.tol:
                    converged = True
                    break
                f = 1.0 / math.sqrt(v)
                _stored_weight(ctx.module, attr).mul_(f)
                scale *= f
        finally:
            handle.remove()
        return LayerRecord(ctx.name, tuple(variances), scale, converged)


__all__ = ["LSUV", "LayerRecord"]
