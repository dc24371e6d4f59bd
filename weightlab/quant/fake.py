"""Fake quantization with a straight-through estimator (STE).

``fake_quant(w, levels, scale, zero_point)`` quantizes ``w`` viewed as ``(A, G, g)`` (see
:mod:`weightlab.quant.granularity`) with one scale per ``(A, G)`` group and returns the
dequantized values ``x̂ = s·decode(clamp(round(encode(x·(1/s))) + z, qmin, qmax) − z)`` in
``w``'s dtype. The arithmetic is PyTorch's own for the uniform grid (``x·(1/s)``, rounding
before the zero point is added, half to even), so ``fake_quant`` equals
``torch.fake_quantize_per_tensor_affine`` / ``…_per_channel_affine`` bit for bit, forward
and gradient (tested).

Gradients:

- to ``w``: ``clipped`` STE (Bengio et al. 2013; PyTorch's fake-quantize) passes the
  gradient where the rounded value lies inside ``[qmin, qmax]`` and zero outside;
  ``identity`` passes it everywhere (StatsQ's code). An optional ``keep`` mask (confidence-
  guided annealing) multiplies it.
- to a learned scale (LSQ, Esser et al. 2020, Eq. 3): ``∂x̂/∂s = decode(q) − x/s`` inside
  the range and ``decode(q)`` at a clamped end, summed over the group and multiplied by the
  gradient scale ``grad_factor`` (LSQ's ``1/√(N·Q_max)``); to a learned zero point
  (asymmetric grids): ``−s`` outside the range, 0 inside, times ``grad_factor``. These are
  the gradients of ``torch._fake_quantize_learnable_per_*_affine`` (tested to 1e-6).

Rounding is ``nearest`` (``torch.round``: half to even) or ``stochastic``
(``floor(t + ξ)``, ``ξ ~ U[0, 1)`` drawn from the caller's generator, so runs repeat).
"""

from __future__ import annotations

import torch

from weightlab.errors import ConfigError
from weightlab.quant.levels import LevelSet, Uniform

ROUNDINGS = ("nearest", "stochastic")
STES = ("clipped", "identity")


def grid_round(t: torch.Tensor, rounding: str, generator: torch.Generator | None) -> torch.Tensor:
    if rounding == "nearest":
        return torch.round(t)
    if rounding == "stochastic":
        noise = torch.rand(t.shape, generator=generator, dtype=t.dtype, device="cpu")
        return torch.floor(t + noise.to(t.device))
    raise ConfigError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")


def grid_position(x: torch.Tensor, levels: LevelSet, scale: torch.Tensor) -> torch.Tensor:
    """The continuous grid position ``t = encode(x·(1/s))`` (before rounding, without the
    zero point)."""
    return levels.encode(x * (1.0 / scale))


def quantize_levels(
    x: torch.Tensor,
    levels: LevelSet,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None = None,
    rounding: str = "nearest",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unclamped rounded grid values ``r`` (zero point included) and clamped ``q``."""
    # + 0.0 turns the −0.0 of rounding a small negative value into +0.0, as PyTorch's
    # integer round trip gives (bitwise equal outputs, signed zeros included)
    r = grid_round(grid_position(x, levels, scale), rounding, generator) + 0.0
    if zero_point is not None:
        r = r + zero_point
    return r, r.clamp(levels.qmin, levels.qmax)


def dequantize_levels(
    q: torch.Tensor, levels: LevelSet, scale: torch.Tensor, zero_point: torch.Tensor | None
) -> torch.Tensor:
    if zero_point is not None:
        q = q - zero_point
    return levels.decode(q) * scale


def quantize_values(
    x: torch.Tensor,
    levels: LevelSet,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None = None,
    rounding: str = "nearest",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``x̂`` without autograd (calibration, export)."""
    _, q = quantize_levels(x, levels, scale, zero_point, rounding, generator)
    return dequantize_levels(q, levels, scale, zero_point)


class _FakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point, levels, rounding, generator, ste, grad_factor, keep):
        r, q = quantize_levels(x, levels, scale, zero_point, rounding, generator)
        out = dequantize_levels(q, levels, scale, zero_point)
        inside = (r >= levels.qmin) & (r <= levels.qmax)
        ctx.levels, ctx.ste, ctx.grad_factor = levels, ste, grad_factor
        ctx.has_zp = zero_point is not None
        ctx.save_for_backward(x, scale, zero_point if ctx.has_zp else None, q, inside, keep)
        ctx.mark_non_differentiable(q)
        return out, q

    @staticmethod
    def backward(ctx, dy, _dq):
        x, scale, zero_point, q, inside, keep = ctx.saved_tensors
        levels = ctx.levels
        dx = dscale = dzp = None
        if ctx.needs_input_grad[0]:
            dx = dy * inside if ctx.ste == "clipped" else dy.clone()
            if keep is not None:
                dx = dx * keep
        if ctx.needs_input_grad[1]:
            deq = levels.decode(q - zero_point if ctx.has_zp else q)
            d = torch.where(inside, deq - x * (1.0 / scale), deq)
            dscale = (dy * d).sum(dim=-1, keepdim=True) * ctx.grad_factor
            dscale = _sum_to(dscale, scale.shape)
        if ctx.has_zp and ctx.needs_input_grad[2]:
            d = torch.where(inside, torch.zeros_like(x), -scale.expand_as(x))
            dzp = _sum_to((dy * d).sum(dim=-1, keepdim=True) * ctx.grad_factor, zero_point.shape)
        return dx, dscale, dzp, None, None, None, None, None, None


def _sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    while t.dim() > len(shape):
        t = t.sum(0)
    for i, n in enumerate(shape):
        if n == 1 and t.shape[i] != 1:
            t = t.sum(i, keepdim=True)
    return t


def fake_quant(
    x: torch.Tensor,
    levels: LevelSet,
    scale: torch.Tensor,
    zero_point: torch.Tensor | None = None,
    *,
    rounding: str = "nearest",
    ste: str = "clipped",
    generator: torch.Generator | None = None,
    grad_factor: float = 1.0,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fake-quantize ``x`` (any shape broadcasting with ``scale``); returns ``(x̂, q)``:
    the dequantized values (differentiable, see the module doc) and the clamped integer
    level indices (as floats, zero point included; no gradient)."""
    if ste not in STES:
        raise ConfigError(f"ste must be one of {', '.join(STES)}, got {ste!r}")
    if rounding not in ROUNDINGS:
        raise ConfigError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    if zero_point is not None and not levels.affine:
        zero_point = None
    fast = (
        isinstance(levels, Uniform)
        and rounding == "nearest"
        and ste == "clipped"
        and keep is None
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
    )
    if fast:  # inference: no graph needed
        with torch.no_grad():
            _, q = quantize_levels(x, levels, scale, zero_point)
            return dequantize_levels(q, levels, scale, zero_point), q
    scale = scale.to(x.dtype)
    if zero_point is not None:
        zero_point = zero_point.to(x.dtype)
    return _FakeQuant.apply(
        x, scale, zero_point, levels, rounding, generator, ste, grad_factor, keep
    )


def torch_fake_quant_channels(
    x: torch.Tensor, levels: Uniform, scale: torch.Tensor, zero_point: torch.Tensor | None
) -> torch.Tensor:
    """The same forward and clipped STE through PyTorch's fused per-channel kernel
    (``torch.fake_quantize_per_channel_affine``) on the ``(A·G, g)`` view: float32, nearest
    rounding, no level indices. The fallback of
    :func:`weightlab.quant.quantizer.uniform_fake_quant` under ``torch.func`` transforms."""
    a, g, n = x.shape
    flat = x.reshape(a * g, n)
    s = scale.reshape(a * g).to(torch.float32)
    if zero_point is None:
        z = torch.zeros(a * g, dtype=torch.int32, device=x.device)
    else:
        z = zero_point.reshape(a * g).to(torch.int32)
    out = torch.fake_quantize_per_channel_affine(flat, s, z, 0, levels.qmin, levels.qmax)
    return out.reshape(a, g, n)
