"""Initial kernel–target alignment of a scalar-output model.

Kumar et al. 2024 ("Grokking as the Transition from Lazy to Rich Training Dynamics",
ICLR, [#39]) name "the alignment of the initial features with the target function y(x)"
as the second determinant of grokking (beside the output scale α): a network whose
initial neural tangent kernel's top eigenvectors are misaligned with the labels first
fits a kernel solution that does not generalize. This module measures that alignment as
the uncentred kernel–target alignment of Cristianini et al. 2002,

    A(K, y) = yᵀ K y / (‖K‖_F ‖y‖²),

with ``K = J Jᵀ`` the empirical NTK Gram matrix on the inputs ``x`` (``J`` the
per-example Jacobian of the scalar output with respect to every trainable parameter,
computed with ``torch.func.jacrev`` under ``vmap``). ``A`` lies in ``[0, 1]`` for a
PSD ``K``; it is 1 exactly when ``K ∝ y yᵀ`` and is invariant to scaling ``K`` (so an
output scale α, which multiplies ``K`` by α², leaves it unchanged).
"""

from __future__ import annotations

import torch
from torch import nn

from weightlab.errors import ConfigError


def ntk_gram(model: nn.Module, x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """The empirical NTK Gram matrix ``K = J Jᵀ`` (``(n, n)``, float64) of a model with
    one output per example, over its trainable parameters, at its current weights.

    ``J`` is built ``chunk`` examples at a time (``vmap`` over ``jacrev``) by
    :func:`weightlab.kernels.empirical.empirical_ntk` (``method="jacobian"``), which
    accumulates ``J Jᵀ`` in float64 per parameter group."""
    if x.ndim < 2 or x.shape[0] == 0:
        raise ConfigError(f"ntk_gram needs a batch of inputs (n, ...), got shape {tuple(x.shape)}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("ntk_gram: the model has no trainable parameters")
    from weightlab.kernels.empirical import empirical_ntk

    with torch.no_grad():
        out = model(x[:1])
    if out.numel() != 1:
        raise ConfigError(
            f"ntk_gram needs a scalar-output model (one output per example), got output "
            f"shape {tuple(out.shape[1:])} for one input; select one output first"
        )
    return empirical_ntk(model, x, method="jacobian", chunk=chunk)


def kernel_target_alignment(k: torch.Tensor, y: torch.Tensor) -> float:
    """``yᵀ K y / (‖K‖_F ‖y‖²)`` for a Gram matrix ``k`` ``(n, n)`` and targets ``y``
    (``(n,)`` or ``(n, 1)``). Raises :class:`ConfigError` for mismatched sizes, a zero
    kernel or zero targets (the ratio is undefined)."""
    y = y.reshape(-1).double()
    k = k.double()
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] != y.numel():
        raise ConfigError(
            f"kernel_target_alignment needs an (n, n) kernel and n targets, got kernel "
            f"{tuple(k.shape)} and {y.numel()} targets"
        )
    kf, yy = torch.linalg.matrix_norm(k), float(y @ y)
    if float(kf) == 0.0 or yy == 0.0:
        raise ConfigError("kernel_target_alignment is undefined for a zero kernel or zero targets")
    return float(y @ k @ y) / (float(kf) * yy)


def initial_alignment(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Kernel–target alignment of ``model``'s empirical NTK on ``(x, y)`` at its current
    (initial) weights [#39]: :func:`kernel_target_alignment` of :func:`ntk_gram`."""
    return kernel_target_alignment(ntk_gram(model, x), y)
