"""Confidence-guided annealing (CGA), a QAT option (OFQ: Liu et al. 2023, "Oscillation-free
Quantization for Low-bit Vision Transformers", Sec. 4.2).

In a final phase of training (default the last 20% of the steps) only the weights whose
pre-rounding grid position ``t`` lies within ``±r`` level units of a rounding boundary
(``|t − (k + ½)| ≤ r`` for a boundary ``k + ½`` between two levels ``qmin ≤ k < qmax``;
``r = 0.005``, OFQ's ``boundaryRange``) keep their gradient: they are the "unconfident"
ones that may still choose a level. Every other weight is frozen. A weight clipped beyond
the outermost level is frozen (no boundary lies there).

How (a step callback of :func:`weightlab.train.train`, called after update ``s``):

1. restore every weight the mask of update ``s`` froze to its value before that update,
   bit for bit: a zero gradient alone does not stop Adam (its first moment keeps moving a
   weight for many steps after its gradient stops), so OFQ's code restores the frozen
   weights after each optimizer step too;
2. compute the mask for update ``s + 1`` from the current weights: ``t`` is
   :func:`~weightlab.quant.instrument.grid_positions`, the position the next training
   forward records as the quantizer's ``last_t`` (a statistics scale re-estimated from the
   current weights, as that forward does; OFQ also recomputes its mask every step);
3. set it as the quantizer's ``keep`` gate (the weight gradient is multiplied by it) and
   keep a copy of the frozen weights.

Annealed updates: ``S − n + 1 … S`` with ``n = round(fraction · S)`` of the run's ``S``
steps (the mask of update ``S − n + 1`` is set by the callback of step ``S − n``; the
first update is never annealed). After the last update the gates are removed
(``keep = None``), so the trained model is an ordinary quantized model.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.quant.instrument import grid_positions
from weightlab.quant.quantizer import Quantizer, quantizers

DEFAULT_FRACTION = 0.2
DEFAULT_BOUNDARY = 0.005


def boundary_mask(t: torch.Tensor, qmin: int, qmax: int, boundary: float) -> torch.Tensor:
    """True where the grid position ``t`` lies within ``±boundary`` of a rounding boundary
    ``k + ½`` between two levels of ``[qmin, qmax]``."""
    k = torch.floor(t)
    near = (t - k - 0.5).abs() <= boundary
    return near & (k >= qmin) & (k <= qmax - 1)


def _stored(model: nn.Module, name: str) -> torch.Tensor:
    """The stored (pre-transform) weight ``name`` (the quantizer is first in its chain)."""
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    return module.parametrizations[attr].original


class ConfidenceGuidedAnnealing:
    """CGA as a step callback (see the module doc).

    Args:
        quantizers: ``{plain weight name: Quantizer}`` (e.g. :func:`quantize`'s return), or
            None: every quantizer of the model, found at the first call.
        fraction: share of the run's steps annealed at the end, in (0, 1).
        boundary: half-width ``r`` of the band around each rounding boundary, in level
            units (OFQ: 0.005).
        restore: restore frozen weights after each update (default). ``False`` only gates
            the gradient, which Adam's momentum defeats (kept to show that in tests).

    After the run: ``frozen_share[s]`` the share of tracked weights frozen for the update
    after callback step ``steps[s]``; ``start`` the last un-annealed step.
    """

    def __init__(
        self,
        quantizers: Mapping[str, Quantizer] | None = None,
        *,
        fraction: float = DEFAULT_FRACTION,
        boundary: float = DEFAULT_BOUNDARY,
        restore: bool = True,
    ) -> None:
        if quantizers is not None and not quantizers:
            raise ConfigError("CGA needs quantizers; attach them with quantize() first")
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"the CGA fraction must lie in (0, 1), got {fraction}")
        if not 0.0 <= boundary < 0.5:
            raise ConfigError(f"the CGA boundary band must lie in [0, 0.5), got {boundary}")
        self.quantizers = None if quantizers is None else dict(quantizers)
        self.fraction = float(fraction)
        self.boundary = float(boundary)
        self.restore = restore
        self.start: int | None = None
        self.steps: list[int] = []
        self.frozen_share: list[float] = []
        self._saved: dict[str, torch.Tensor] = {}
        self._frozen: dict[str, torch.Tensor] = {}

    def start_step(self, total: int) -> int:
        """The callback step after which annealing begins: ``total − round(fraction·total)``
        (at least 1)."""
        return max(1, total - round(self.fraction * total))

    def _bind(self, model: nn.Module) -> None:
        if self.quantizers is None:
            found = quantizers(model)
            if not found:
                raise ConfigError("CGA found no quantizer in the model; attach them first")
            self.quantizers = found

    def masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``{name: keep}`` (bool, the weight's shape) for the current weights."""
        self._bind(model)
        out = {}
        for name, q in self.quantizers.items():
            t = grid_positions(q, _stored(model, name))
            out[name] = boundary_mask(t, q.levels.qmin, q.levels.qmax, self.boundary)
        return out

    @torch.no_grad()
    def __call__(self, model: nn.Module, ctx) -> None:
        self._bind(model)
        self.start = self.start_step(ctx.total)
        if ctx.step < self.start:
            return
        if self.restore:
            for name, frozen in self._frozen.items():
                w = _stored(model, name)
                w.copy_(torch.where(frozen, self._saved[name], w))
        if ctx.step >= ctx.total:  # the run is over: remove the gates
            for q in self.quantizers.values():
                q.keep = None
            self._saved, self._frozen = {}, {}
            return
        n_frozen, n = 0, 0
        for name, keep in self.masks(model).items():
            q = self.quantizers[name]
            w = _stored(model, name)
            q.keep = keep.to(w.dtype)
            frozen = ~keep
            valid = q._valid_ref
            if valid is not None:  # pruned weights are not counted
                n_frozen += int((frozen & valid.bool()).sum())
                n += int(valid.sum())
            else:
                n_frozen += int(frozen.sum())
                n += frozen.numel()
            self._frozen[name] = frozen
            self._saved[name] = w.detach().clone()
        self.steps.append(int(ctx.step))
        self.frozen_share.append(n_frozen / n if n else float("nan"))


__all__ = ["ConfidenceGuidedAnnealing", "boundary_mask"]
