"""Fused forward passes with hand-written backward passes for generated populations.

Two halves of "one generator call for many targets" (von Oswald et al. 2020, "Continual
learning with hypernetworks", Eq. 1: ``Θ_t = h(e_t)``, the target's weights are the
hypernetwork's output; chunked as in hypnettorch's ``ChunkedHMLP``):

- :func:`chunked_mlp`: ``M`` chunked MLP hypernetworks (stacked parameters, ``M = 1`` for
  one) on ``N`` conditions each. Chunk ``k`` of condition ``n`` is
  ``scale · MLP([c_k, z_n])``. The first layer is split,
  ``W₁[c_k, z_n] + b₁ = W₁ᶜ c_k + (W₁ᶻ z_n + b₁)``: ``K`` chunk rows and ``N`` condition rows
  are computed once each and added by broadcasting (no ``(N, K, c + d)`` concatenation);
  the output scale rides in the last ``baddbmm`` (``α = β = scale``); the cut to ``P``
  values is a view, whose backward pads only the last chunk.
- :func:`mlp_targets`: ``N`` plain MLP targets (``Z_l = A_{l-1} W_lᵀ + b_l``) run on their
  flat parameter rows ``(N, P)`` with ``baddbmm``; the backward writes the weight and bias
  gradients in the flat layout (one concatenation), so nothing is reshaped or zero-filled.

Backward (Rumelhart et al. 1986), per layer: ``∂W_l = ∂Z_lᵀ A_{l-1}``, ``∂b_l = Σ ∂Z_l``,
``∂A_{l-1} = ∂Z_l W_l``, ``∂Z_{l-1} = ∂A_{l-1} ⊙ φ'``; with ``φ' = [A > 0]`` (ReLU),
``1 − A²`` (tanh) or ``1`` (linear), read from the stored activations. Both functions are
once differentiable (a second derivative raises) and equal the autograd path to float32
rounding (tested, max relative difference ≤ 1e-6).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

__all__ = ["TARGET_ACTIVATIONS", "chunked_mlp", "mlp_targets"]

TARGET_ACTIVATIONS = ("relu", "tanh", "linear")


def _activate_(z: torch.Tensor, act: str) -> torch.Tensor:
    if act == "relu":
        return z.relu_()
    if act == "tanh":
        return z.tanh_()
    return z


def _times_derivative_(g: torch.Tensor, a: torch.Tensor, act: str) -> torch.Tensor:
    """``g ⊙ φ'`` in place, ``φ'`` from the activation's output ``a``."""
    if act == "relu":  # one fused pass (g.mul_(a > 0) takes ten times longer)
        return torch.ops.aten.threshold_backward.grad_input(g, a, 0.0, grad_input=g)
    if act == "tanh":
        return g.mul_(1 - a * a)
    return g


# Gradient buffers that mlp_targets allocated in its input's padded row layout (uninitialized
# padding, referenced by nothing else); the chunked MLP's backward may write their padding.
_PADDED: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()


def _grad_like(flat: torch.Tensor) -> torch.Tensor:
    """An uninitialized gradient for ``flat (N, P)``: when ``flat`` holds the first ``P``
    values of each row of a whole ``(N, W > P)`` storage (the chunked MLP's output), a buffer
    of that padded layout (registered in ``_PADDED``) viewed like ``flat``; else a new
    ``(N, P)``."""
    if flat.dim() == 2 and flat.stride(1) == 1 and flat.storage_offset() == 0:
        n, width = flat.shape[0], flat.stride(0)
        if width > flat.shape[1] and flat.untyped_storage().nbytes() == (
            n * width * flat.element_size()
        ):
            buf = torch.empty(n * width, dtype=flat.dtype, device=flat.device)
            _PADDED[id(buf)] = buf
            return buf.as_strided(flat.shape, flat.stride())
    return flat.new_empty(flat.shape)


def _owned_padding(grad: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor | None:
    """``grad``'s padded buffer viewed as ``shape`` when :func:`_grad_like` made it in
    exactly that layout, else ``None``."""
    base = grad._base
    if base is None or _PADDED.get(id(base)) is not base:
        return None
    m, n, width = shape
    if (
        base.numel() != m * n * width
        or grad.storage_offset() != 0
        or grad.stride() != (n * width, width, 1)
    ):
        return None
    return base.view(shape)


class _ChunkedMLP(torch.autograd.Function):
    """``(z (M, N, d), chunk_embs (M, K, c), scale, P, W₁, b₁, …, W_L, b_L)`` with
    ``W_l (M, out, in)``, ``b_l (M, out)`` -> ``(M, N, P)``."""

    @staticmethod
    def forward(ctx, z, chunk_embs, scale, num_outputs, *params):
        ctx.unbatched = z.dim() == 2  # one hypernetwork: M = 1 inside, no autograd views
        if ctx.unbatched:
            z, chunk_embs = z.unsqueeze(0), chunk_embs.unsqueeze(0)
            params = tuple(p.unsqueeze(0) for p in params)
        m, n, _ = z.shape
        k, c = chunk_embs.shape[1:]
        ws, bs = params[0::2], params[1::2]
        a = torch.bmm(chunk_embs, ws[0][:, :, :c].mT)  # (M, K, H): once per chunk
        b = torch.baddbmm(bs[0].unsqueeze(1), z, ws[0][:, :, c:].mT)  # (M, N, H): once per z
        pre = a.unsqueeze(1) + b.unsqueeze(2)  # (M, N, K, H)
        hidden = []
        if len(ws) == 1:
            out = pre.mul_(scale)
        else:
            h = _activate_(pre, "relu").view(m, n * k, -1)
            hidden.append(h)
            for w, bias in zip(ws[1:-1], bs[1:-1], strict=True):
                h = _activate_(torch.baddbmm(bias.unsqueeze(1), h, w.mT), "relu")
                hidden.append(h)
            out = torch.baddbmm(bs[-1].unsqueeze(1), h, ws[-1].mT, beta=scale, alpha=scale)
        ctx.save_for_backward(z, chunk_embs, *params, *hidden)
        ctx.meta = (float(scale), int(num_outputs), len(ws), k)
        # the cut to P values shares the padded result's memory but is not an autograd
        # view of it (a view made inside a Function may not be modified in place)
        width = out.numel() // (m * n)
        shape, stride = (n, num_outputs), (width, 1)
        if not ctx.unbatched:
            shape, stride = (m, *shape), (n * width, *stride)
        return out.new_empty(0).set_(out.untyped_storage(), 0, shape, stride)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        scale, num_outputs, layers, k = ctx.meta
        z, chunk_embs, *rest = ctx.saved_tensors
        if ctx.unbatched:
            grad = grad.unsqueeze(0)
        params, hidden = rest[: 2 * layers], rest[2 * layers :]
        ws = params[0::2]
        m, n, _ = z.shape
        c = chunk_embs.shape[2]
        chunk = ws[-1].shape[1]
        # the cut's backward: the grad in the padded (M, N, K·chunk) layout, only the last
        # chunk's tail zero-filled; a grad that mlp_targets already wrote in that layout
        # is used in place, any other is copied
        width = k * chunk
        g = _owned_padding(grad, (m, n, width))
        if g is None and num_outputs == width and grad.is_contiguous():
            g = grad.view(m, n, width)  # nothing cut: the grad as it is (read only)
        elif g is None:
            g = grad.new_empty(m, n, width)
            g[:, :, :num_outputs].copy_(grad)
        g[:, :, num_outputs:].zero_()
        grads: list[torch.Tensor | None] = [None] * (2 * layers)
        if layers == 1:
            g = g.view(m, n, k, chunk) * scale
        else:
            g = g.view(m, n * k, chunk)
            for i in range(layers - 1, 0, -1):
                h = hidden[i - 1]
                s = scale if i == layers - 1 else 1.0
                if ctx.needs_input_grad[4 + 2 * i]:
                    grads[2 * i] = torch.bmm(g.mT, h).mul_(s)
                if ctx.needs_input_grad[5 + 2 * i]:
                    grads[2 * i + 1] = g.sum(1).mul_(s)
                g = _times_derivative_(torch.bmm(g, ws[i] * s if s != 1.0 else ws[i]), h, "relu")
            g = g.view(m, n, k, -1)
        g_chunk = g.sum(1)  # (M, K, H): ∂ of the K chunk rows
        g_cond = g.sum(2)  # (M, N, H): ∂ of the N condition rows (and of b₁)
        if ctx.needs_input_grad[4]:
            grads[0] = torch.cat(
                [torch.bmm(g_chunk.mT, chunk_embs), torch.bmm(g_cond.mT, z)], dim=2
            )
        if ctx.needs_input_grad[5]:
            grads[1] = g_cond.sum(1)
        gz = torch.bmm(g_cond, ws[0][:, :, c:]) if ctx.needs_input_grad[0] else None
        gc = torch.bmm(g_chunk, ws[0][:, :, :c]) if ctx.needs_input_grad[1] else None
        if ctx.unbatched:
            grads = [None if t is None else t.squeeze(0) for t in grads]
            gz = None if gz is None else gz.squeeze(0)
            gc = None if gc is None else gc.squeeze(0)
        return (gz, gc, None, None, *grads)


def chunked_mlp(
    z: torch.Tensor,
    chunk_embs: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor],
    scale: float,
    num_outputs: int,
) -> torch.Tensor:
    """``scale · MLP([c_k, z_n])`` for every chunk ``k`` and condition ``n``, joined and cut
    to ``num_outputs``: ReLU between the layers, none after the last.

    Shapes: ``z (M, N, d)``, ``chunk_embs (M, K, c)``, ``weights[l] (M, out, in)`` (the
    first ``in = c + d``, the last ``out`` = the chunk size), ``biases[l] (M, out)``, with
    ``K · chunk ≥ num_outputs``; returns ``(M, N, num_outputs)``, a view into the padded
    ``(M, N, K · chunk)`` result (not contiguous unless ``num_outputs = K · chunk``). One
    hypernetwork: the same without the ``M`` dimension everywhere."""
    params = [t for pair in zip(weights, biases, strict=True) for t in pair]
    return _ChunkedMLP.apply(z, chunk_embs, float(scale), int(num_outputs), *params)


class _MLPTargets(torch.autograd.Function):
    """``(flat (N, P), x, dims, act)`` -> ``(N, B, out)``; ``x`` is ``(B, in)`` (shared,
    broadcast with stride 0) or ``(N, B, in)``."""

    @staticmethod
    def forward(ctx, flat, x, dims, act):
        n = flat.shape[0]
        shared = x.dim() == 2
        h = x.expand(n, -1, -1) if shared else x
        acts, offsets, o = [h], [], 0
        for i, (fan_out, fan_in) in enumerate(dims):
            w = flat[:, o : o + fan_out * fan_in].view(n, fan_out, fan_in)
            b = flat[:, o + fan_out * fan_in : o + fan_out * (fan_in + 1)]
            offsets.append(o)
            o += fan_out * (fan_in + 1)
            h = torch.baddbmm(b.unsqueeze(1), h, w.mT)
            if i < len(dims) - 1:
                h = _activate_(h, act)
                acts.append(h)
        ctx.save_for_backward(flat, *acts)
        ctx.meta = (tuple(dims), tuple(offsets), act, shared)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        dims, offsets, act, shared = ctx.meta
        flat, *acts = ctx.saved_tensors
        n = flat.shape[0]
        # written part by part into the flat layout (the generator's padded one if it is)
        grad_flat = _grad_like(flat) if ctx.needs_input_grad[0] else None
        g = grad
        gx = None
        for i in range(len(dims) - 1, -1, -1):
            fan_out, fan_in = dims[i]
            if grad_flat is not None:
                o = offsets[i] + fan_out * fan_in
                torch.sum(g, 1, out=grad_flat[:, o : o + fan_out])
                gw = grad_flat[:, offsets[i] : o].view(n, fan_out, fan_in)
                gw.copy_(torch.bmm(g.mT, acts[i]))
            if i > 0 or ctx.needs_input_grad[1]:
                w = flat[:, offsets[i] : offsets[i] + fan_out * fan_in].view(n, fan_out, fan_in)
                g = torch.bmm(g, w)
                if i > 0:
                    g = _times_derivative_(g, acts[i], act)
                else:
                    gx = g.sum(0) if shared else g
        return grad_flat, gx, None, None


def mlp_targets(
    flat: torch.Tensor, x: torch.Tensor, dims: Sequence[tuple[int, int]], activation: str
) -> torch.Tensor:
    """``N`` MLP targets on their flat parameter rows: ``flat (N, P)`` holds, per layer,
    the weight ``(out, in)`` row-major then the bias (``named_parameters`` order of
    :class:`~weightlab.models.mlp.MLP`, ``P = Σ out·(in + 1)``); ``dims`` lists each
    layer's ``(out, in)``; ``activation`` (relu, tanh or linear) between layers, none after
    the last. ``x``: ``(B, in)`` shared by all targets or ``(N, B, in)``; returns
    ``(N, B, out)``."""
    dims = tuple((int(a), int(b)) for a, b in dims)
    if activation not in TARGET_ACTIVATIONS:
        raise ValueError(f"mlp_targets supports {TARGET_ACTIVATIONS}, got {activation!r}")
    total = sum(a * (b + 1) for a, b in dims)
    if flat.dim() != 2 or flat.shape[1] != total:
        raise ValueError(f"flat has shape {tuple(flat.shape)}, the targets need (N, {total})")
    if math.prod(x.shape[-1:]) != dims[0][1]:
        raise ValueError(f"x has {x.shape[-1]} features, the first layer takes {dims[0][1]}")
    return _MLPTargets.apply(flat, x, dims, activation)
