"""Evaluation metrics from sufficient statistics (sums over examples), so they can be
accumulated over chunks of a split and vectorized over population members.

Regression (``y`` float ``(n, *out)``, ``pred`` ``(..., n, *out)`` with optional leading
member dims):

- :func:`target_stats` ``(y) -> (ss_tot, y_sq)``: per-output ``Σ (y - ȳ)²`` around the
  split's own mean and the scalar ``Σ y²`` (all outputs). Depends on ``y`` only: compute
  it once per split.
- :func:`sse_per_output` ``(pred, y) -> Σ_examples (pred - y)²``, shape ``(..., *out)``;
  sum it over chunks.
- :func:`r2_and_rel_err` ``(sse, ss_tot, y_sq) -> (r2, rel_err)``: R² = mean over output
  coordinates of ``1 - SS_res / SS_tot`` (``sklearn.metrics.r2_score`` with
  ``multioutput="uniform_average"``, including its ``force_finite`` rule: an output with
  ``SS_tot = 0`` scores 1 if predicted exactly, else 0); relative error
  ``‖ŷ - y‖₂ / ‖y‖₂`` over the whole split (all outputs).

Classification: :func:`correct_count` ``(pred, y)`` counts ``argmax(pred) == y``.
"""

from __future__ import annotations

import torch


def target_stats(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ss_tot, y_sq)``: per-output ``Σ_i (y_i - ȳ)²`` (shape ``y.shape[1:]``) and ``Σ y²``
    over all entries (0-dim). Computed in float64."""
    y64 = y.to(torch.float64)
    ss_tot = (y64 - y64.mean(dim=0)).square().sum(dim=0)
    return ss_tot, y64.square().sum()


def sse_per_output(
    pred: torch.Tensor, y: torch.Tensor, output_ndim: int | None = None
) -> torch.Tensor:
    """``Σ_examples (pred - y)²`` per output: ``pred (..., n, *out)``, ``y (n, *out)`` or
    broadcastable to ``pred``; returns ``(..., *out)`` in float64. ``output_ndim`` is
    ``len(out)``; ``None`` takes ``y.ndim - 1`` (``y`` without member dims)."""
    k = y.ndim - 1 if output_ndim is None else output_ndim
    d = pred.to(torch.float64) - y.to(torch.float64)
    return d.square().sum(dim=pred.ndim - 1 - k)


def r2_and_rel_err(
    sse: torch.Tensor, ss_tot: torch.Tensor, y_sq: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """R² (uniform mean over outputs) and relative error from the sums above.

    ``sse`` is ``(..., *out)`` (leading member dims allowed), ``ss_tot`` ``(*out)``; returns
    two tensors of shape ``sse.shape[:sse.ndim - ss_tot.ndim]``.
    """
    k = ss_tot.ndim
    dims = tuple(range(sse.ndim - k, sse.ndim))
    ratio = sse / torch.where(ss_tot > 0, ss_tot, torch.ones_like(ss_tot))
    per_out = torch.where(ss_tot > 0, 1 - ratio, torch.where(sse == 0, 1.0, 0.0).to(sse.dtype))
    r2 = per_out.mean(dim=dims) if k else per_out
    total = sse.sum(dim=dims) if k else sse
    rel = total.sqrt() / y_sq.sqrt()
    return r2, rel


def regression_metrics(pred: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """``(r2, rel_err)`` of one model's predictions ``pred (n, *out)`` on targets ``y``."""
    ss_tot, y_sq = target_stats(y)
    r2, rel = r2_and_rel_err(sse_per_output(pred, y), ss_tot, y_sq)
    return float(r2), float(rel)


def correct_count(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Number of examples with ``argmax(pred, -1) == y``: ``pred (..., n, C)``, ``y`` int
    labels ``(n,)`` or ``(..., n)``; returns int64 of shape ``pred.shape[:-2]``."""
    return (pred.argmax(-1) == y).sum(-1)
