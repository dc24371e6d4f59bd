"""Analytic NNGP and NTK of infinitely wide networks, natively in PyTorch.

Convention (neural-tangents' ``stax``, Novak et al. 2020; Lee et al. 2018 for the NNGP,
Jacot et al. 2018 for the NTK). A fully connected network of *depth L* is L blocks
``Dense -> φ`` followed by a readout ``Dense(1)``, so it has L + 1 Dense layers. In the NTK
parametrization a Dense layer computes ``z = W_std/√fan_in · W h + b_std · b`` with all
entries of ``W`` and ``b`` i.i.d. N(0, 1) and trained as they are. Writing ``K^l`` for the
kernel of the layer's input (``K^0(x, x') = x·x'/d`` for the d-dimensional input) and
``Θ^l`` for the NTK accumulated so far (``Θ^0 = 0``), each Dense layer maps

    Σ^{l+1} = W_std² · K^l + b_std²                    (NNGP of its output)
    Θ^{l+1} = Σ^{l+1} + W_std² · Θ^l                   (NTK, NTK parametrization)

and each activation maps, with (u, v) ~ N(0, [[Σ(x,x), Σ(x,x')], [Σ(x,x'), Σ(x',x')]]),

    K^{l+1} = E[φ(u) φ(v)],      Θ^{l+1} ← Θ^{l+1} · E[φ'(u) φ'(v)] =: Θ^{l+1} · Σ̇^{l+1}.

Combined: Θ^{l+1} = Σ^{l+1} + W_std² · E[φ'φ'] · Θ^l, the recursion of Jacot et al. (2018,
Thm. 1) with the ``W_std²`` scaling on the expectations. The returned pair is the NNGP and
NTK of the scalar readout.

In the standard parametrization (SP) the weights are drawn as N(0, W_std²/fan_in) and the
bias as N(0, b_std²), and those tensors are trained directly. The forward kernels (NNGP) are
the same, but the gradient with respect to an unscaled weight carries a factor fan_in, so the
NTK has no width-free limit (Sohl-Dickstein et al. 2020; stax ``parameterization="standard"``):

    Θ^{l+1} = fan_in · K^l + [bias] + W_std² · Θ^l,

which needs the hidden ``widths`` (the input layer's fan_in is d).

Dual activations (closed forms):

* ``"relu"``: arc-cosine kernels of degree 1 and 0 (Cho & Saul 2009, Eq. 6):
  E[φφ] = √(Σ11 Σ22)/(2π) · (sin θ + (π − θ) cos θ), E[φ'φ'] = (π − θ)/(2π),
  cos θ = Σ12/√(Σ11 Σ22), clamped into [−1, 1];
* ``"erf"``: E[φφ] = (2/π) arcsin(2Σ12/√((1+2Σ11)(1+2Σ22))) (Williams 1997),
  E[φ'φ'] = (4/π)/√((1+2Σ11)(1+2Σ22) − 4Σ12²);
* ``"linear"``: E[φφ] = Σ12, E[φ'φ'] = 1.

Any other pointwise φ (a callable, or one of the names in :data:`QUADRATURE_ACTIVATIONS`) is
integrated by 2-D Gauss-Hermite quadrature with ``quadrature_nodes`` nodes per dimension,
``u = √Σ11 t₁``, ``v = √Σ22 (ρ t₁ + √(1−ρ²) t₂)``; φ' is ``dphi`` when given, else autograd of
φ. 128 nodes reach 1e-6 relative against the erf closed forms for pre-activation variances
up to 4; 64 do not (about 1e-3 on the φ' term). Kinked φ (ReLU-like) converge slowly there:
prefer the closed forms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from weightlab.errors import ConfigError

Activation = str | Callable[[Tensor], Tensor]

CLOSED_FORMS = ("relu", "erf", "linear")
QUADRATURE_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "gelu": torch.nn.functional.gelu,
    "sin": torch.sin,
    "sigmoid": torch.sigmoid,
}
_TINY = 1e-30
# Elements of the (n1, n2) kernel integrated at once by the quadrature (bounds memory).
_QUAD_BUDGET = 1 << 22


@dataclass(frozen=True)
class KernelPair:
    """The NNGP (``nngp``) and NTK (``ntk``) of a network's scalar output."""

    nngp: Tensor
    ntk: Tensor


# --------------------------------------------------------------------------- dual kernels


def _check_activation(activation: Activation, dphi, quadrature_nodes: int) -> Activation:
    if callable(activation):
        if quadrature_nodes <= 0:
            raise ConfigError(
                "activation is a callable with no closed form and quadrature_nodes <= 0: "
                "set quadrature_nodes (e.g. 128) or use 'relu', 'erf' or 'linear'"
            )
        return activation
    if not isinstance(activation, str):
        raise ConfigError(f"activation must be a name or a callable, got {type(activation)!r}")
    name = activation.lower()
    if name in CLOSED_FORMS:
        return name
    if name in QUADRATURE_ACTIVATIONS:
        if quadrature_nodes <= 0:
            raise ConfigError(
                f"activation {name!r} has no closed form and quadrature_nodes <= 0: set "
                "quadrature_nodes (e.g. 128) or use 'relu', 'erf' or 'linear'"
            )
        return QUADRATURE_ACTIVATIONS[name]
    known = ", ".join(CLOSED_FORMS + tuple(QUADRATURE_ACTIVATIONS))
    raise ConfigError(f"unknown activation {activation!r}: use one of {known} or a callable")


def _relu_dual(s11: Tensor, s22: Tensor, s12: Tensor, need_dot: bool, self_offset: int | None):
    norms = s11.sqrt() * s22.sqrt()  # (n1, n2), new buffer
    c = s12 / norms.clamp_min(_TINY)
    c.clamp_(-1.0, 1.0)
    if self_offset is not None:  # acos is ill-conditioned at 1: a point with itself has cos 1
        c.diagonal(self_offset).fill_(1.0)
    sin = c * c
    sin.neg_().add_(1.0).clamp_min_(0.0).sqrt_()
    pm = torch.acos(c)
    pm.neg_().add_(math.pi)  # π − θ
    nngp = c.mul_(pm).add_(sin).mul_(norms).mul_(1.0 / (2 * math.pi))
    dot = pm.mul_(1.0 / (2 * math.pi)) if need_dot else None
    return nngp, dot


def _relu_dual_diag(s: Tensor, need_dot: bool):
    return s * 0.5, torch.full_like(s, 0.5) if need_dot else None


def _erf_dual(s11: Tensor, s22: Tensor, s12: Tensor, need_dot: bool):
    prod = (2 * s11 + 1) * (2 * s22 + 1)  # (n1, n2), new buffer
    arg = s12 * 2
    arg.div_(prod.sqrt()).clamp_(-1.0, 1.0)
    nngp = torch.asin(arg).mul_(2 / math.pi)
    dot = None
    if need_dot:
        prod.sub_(s12.square().mul_(4)).clamp_min_(_TINY)
        dot = prod.rsqrt_().mul_(4 / math.pi)
    return nngp, dot


def _erf_dual_diag(s: Tensor, need_dot: bool):
    nngp = torch.asin((2 * s / (1 + 2 * s)).clamp(-1.0, 1.0)) * (2 / math.pi)
    return nngp, (4 / math.pi) * (1 + 4 * s).rsqrt() if need_dot else None


def _linear_dual(s11: Tensor, s22: Tensor, s12: Tensor, need_dot: bool):
    return s12.clone(), torch.ones_like(s12) if need_dot else None


def _gauss_hermite(q: int, dtype: torch.dtype, device) -> tuple[Tensor, Tensor]:
    """Nodes and weights of E_{t~N(0,1)}[f(t)] ≈ Σ w_a f(t_a) (probabilists' Hermite)."""
    t, w = np.polynomial.hermite_e.hermegauss(q)
    w = w / math.sqrt(2 * math.pi)
    return (
        torch.as_tensor(t, dtype=dtype, device=device),
        torch.as_tensor(w, dtype=dtype, device=device),
    )


def _phi_and_dphi(phi, dphi, v: Tensor, need_dot: bool):
    if not need_dot:
        return phi(v), None
    if dphi is not None:
        return phi(v), dphi(v)
    with torch.enable_grad():
        vv = v.detach().requires_grad_(True)
        out = phi(vv)
        if not isinstance(out, Tensor) or out.grad_fn is None:
            raise ConfigError(
                "no φ' for the NTK: the activation is not differentiable by autograd; "
                "pass dphi= (its derivative) or use a closed-form activation"
            )
        (grad,) = torch.autograd.grad(out.sum(), vv)
    return out.detach(), grad


def _quadrature_dual(phi, dphi, q: int, s11: Tensor, s22: Tensor, s12: Tensor, need_dot: bool):
    """2-D Gauss-Hermite: the average of the rule with u on the outer nodes and the rule with v
    on the outer nodes, so that swapping x1 and x2 transposes the result exactly."""
    n1, n2 = s12.shape
    t, w = _gauss_hermite(q, s12.dtype, s12.device)
    sd1 = s11.reshape(n1).clamp_min(0).sqrt()
    sd2 = s22.reshape(n2).clamp_min(0).sqrt()
    rho = (s12 / (sd1[:, None] * sd2[None, :]).clamp_min(_TINY)).clamp(-1.0, 1.0)
    a, da = _quadrature_one_way(phi, dphi, t, w, sd1, sd2, rho, need_dot)
    b, db = _quadrature_one_way(phi, dphi, t, w, sd2, sd1, rho.T, need_dot)
    nngp = a.add_(b.T).mul_(0.5)
    return nngp, da.add_(db.T).mul_(0.5) if need_dot else None


def _quadrature_one_way(phi, dphi, t, w, sd1, sd2, rho, need_dot: bool):
    """E[f(u)g(v)] ≈ Σ_ab w_a w_b f(σ1 t_a) g(σ2 (ρ t_a + √(1−ρ²) t_b)), chunked over pairs."""
    n1, n2 = rho.shape
    q = t.shape[0]
    u = sd1[:, None] * t[None, :]  # φ(u) depends on the row only: (n1, q)
    fu, dfu = _phi_and_dphi(phi, dphi, u, need_dot)
    rho = rho.reshape(-1)
    comp = (1 - rho * rho).clamp_min(0).sqrt()
    rows = torch.arange(n1, device=rho.device).repeat_interleave(n2)
    cols = torch.arange(n2, device=rho.device).repeat(n1)
    nngp = torch.empty(n1 * n2, dtype=rho.dtype, device=rho.device)
    dot = torch.empty_like(nngp) if need_dot else None
    chunk = max(1, _QUAD_BUDGET // (q * q))
    ww = w[:, None] * w[None, :]  # (q, q)
    for start in range(0, n1 * n2, chunk):
        sl = slice(start, min(start + chunk, n1 * n2))
        r, c = rows[sl], cols[sl]
        v = rho[sl, None, None] * t[None, :, None] + comp[sl, None, None] * t[None, None, :]
        v.mul_(sd2[c][:, None, None])
        gv, dgv = _phi_and_dphi(phi, dphi, v, need_dot)
        nngp[sl] = torch.einsum("ea,eab,ab->e", fu[r], gv, ww)
        if need_dot:
            dot[sl] = torch.einsum("ea,eab,ab->e", dfu[r], dgv, ww)
    return nngp.reshape(n1, n2), dot.reshape(n1, n2) if need_dot else None


def _quadrature_dual_diag(phi, dphi, q: int, s: Tensor, need_dot: bool):
    t, w = _gauss_hermite(q, s.dtype, s.device)
    u = s.clamp_min(0).sqrt()[:, None] * t[None, :]
    f, df = _phi_and_dphi(phi, dphi, u, need_dot)
    return (f * f) @ w, (df * df) @ w if need_dot else None


def dual_kernels(
    activation: Activation,
    s11: Tensor,
    s22: Tensor,
    s12: Tensor,
    *,
    dphi: Callable[[Tensor], Tensor] | None = None,
    quadrature_nodes: int = 128,
    need_dot: bool = True,
    symmetric: bool = False,
    row_offset: int = 0,
) -> tuple[Tensor, Tensor | None]:
    """``(E[φ(u)φ(v)], E[φ'(u)φ'(v)])`` for (u, v) with variances ``s11`` (n1,), ``s22`` (n2,)
    and covariances ``s12`` (n1, n2); closed forms for relu/erf/linear, else quadrature.
    ``symmetric=True`` says ``s12`` is rows ``row_offset:`` of the kernel of one set with
    itself (entries (i, row_offset + i) then have correlation exactly 1)."""
    act = _check_activation(activation, dphi, quadrature_nodes)
    a, b = s11.reshape(-1, 1), s22.reshape(1, -1)
    if act == "relu":
        return _relu_dual(a, b, s12, need_dot, row_offset if symmetric else None)
    if act == "erf":
        return _erf_dual(a, b, s12, need_dot)
    if act == "linear":
        return _linear_dual(a, b, s12, need_dot)
    return _quadrature_dual(act, dphi, quadrature_nodes, a, b, s12, need_dot)


def dual_kernels_diag(
    activation: Activation,
    s: Tensor,
    *,
    dphi: Callable[[Tensor], Tensor] | None = None,
    quadrature_nodes: int = 128,
    need_dot: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """``(E[φ(u)²], E[φ'(u)²])`` for u ~ N(0, s), elementwise over ``s``."""
    act = _check_activation(activation, dphi, quadrature_nodes)
    if act == "relu":
        return _relu_dual_diag(s, need_dot)
    if act == "erf":
        return _erf_dual_diag(s, need_dot)
    if act == "linear":
        return s.clone(), torch.ones_like(s) if need_dot else None
    return _quadrature_dual_diag(act, dphi, quadrature_nodes, s, need_dot)


# --------------------------------------------------------------------------- FC kernels


def _as_inputs(x1: Tensor, x2: Tensor | None, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    if not isinstance(x1, Tensor) or x1.dim() < 1:
        raise ConfigError("x1 must be a tensor of shape (n, d): pass one input per row")
    x1 = x1.reshape(x1.shape[0], -1).to(dtype)
    if x2 is not None:
        x2 = x2.reshape(x2.shape[0], -1).to(dtype=dtype, device=x1.device)
        if x2.shape[1] != x1.shape[1]:
            raise ConfigError(
                f"input dimension mismatch: x1 has {x1.shape[1]} features per row, x2 has "
                f"{x2.shape[1]}; pass inputs of the same dimension"
            )
    if x1.shape[1] == 0:
        raise ConfigError("inputs have dimension 0: pass at least one feature per row")
    return x1, x2


def _check_depth(depth: int) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ConfigError(
            f"depth must be an integer >= 1 (number of Dense+activation blocks), got {depth!r}"
        )


def _check_widths(parametrization: str, widths, depth: int) -> list[int] | None:
    if parametrization not in ("ntk", "sp"):
        raise ConfigError(f"parametrization must be 'ntk' or 'sp', got {parametrization!r}")
    if parametrization == "ntk":
        return None
    if widths is None:
        raise ConfigError(
            "the SP analytic NTK needs the layer widths (it has no width-free limit): pass "
            f"widths= with {depth} hidden widths, or use parametrization='ntk'"
        )
    widths = [widths] * depth if isinstance(widths, int) else list(widths)
    if len(widths) != depth or any(int(w) < 1 for w in widths):
        raise ConfigError(
            f"widths must list {depth} positive hidden widths (one per block), got {widths!r}"
        )
    return [int(w) for w in widths]


def fc_kernels(
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    depth: int,
    activation: Activation = "relu",
    w_std: float = 1.0,
    b_std: float = 0.0,
    parametrization: str = "ntk",
    widths: Sequence[int] | int | None = None,
    bias: bool | None = None,
    dphi: Callable[[Tensor], Tensor] | None = None,
    quadrature_nodes: int = 128,
    diagonal: bool = False,
    compute_ntk: bool = True,
    dtype: torch.dtype = torch.float64,
) -> KernelPair:
    """NNGP and NTK of a depth-``depth`` fully connected network, ``stax`` convention.

    See the module docstring for the convention and recursions. ``x1`` (n1, d) and ``x2``
    (n2, d) (default ``x1``) give (n1, n2) kernels; ``diagonal=True`` (with ``x2=None``)
    returns the (n1,) diagonals only. ``parametrization="sp"`` needs ``widths`` (the
    ``depth`` hidden widths); ``bias`` (default ``b_std > 0``) says whether the Dense layers
    have a trainable bias, which adds 1 per layer to the SP NTK. ``compute_ntk=False`` skips
    the NTK (``ntk`` is then the NNGP's shape filled with NaN). Computes in ``dtype``.
    """
    _check_depth(depth)
    act = _check_activation(activation, dphi, quadrature_nodes)
    widths = _check_widths(parametrization, widths, depth)
    if diagonal and x2 is not None:
        raise ConfigError("diagonal=True needs x2=None (the diagonal of the kernel of x1)")
    x1, x2 = _as_inputs(x1, x2, dtype)
    has_bias = (b_std != 0.0) if bias is None else bool(bias)
    w2, b2 = float(w_std) ** 2, float(b_std) ** 2
    d = x1.shape[1]
    fan_ins = [d] + (widths or [])
    kw = {"dphi": dphi, "quadrature_nodes": quadrature_nodes, "need_dot": compute_ntk}

    if act == "relu" and widths is None and compute_ntk and not diagonal:
        with torch.no_grad():
            return _fc_relu_ntk(x1, x2, depth, w2, b2)
    with torch.no_grad():
        # Input-layer kernels K^0 = x·x'/d: the diagonals d1 (of x1), d2 (of x2; None when
        # x2 is x1) and the cross matrix k (None when only the diagonal is asked for).
        d1 = x1.square().sum(1).div_(d)
        d2 = None if x2 is None else x2.square().sum(1).div_(d)
        k = None if diagonal else (x1 @ (x1 if x2 is None else x2).T).div_(d)
        t, t1, t2 = None, None, None  # NTKs of the current layer's input (cross, diagonals)
        for layer in range(depth + 1):
            fan_in = fan_ins[layer] if widths is not None else None
            if compute_ntk:  # Dense: Θ = W²K + b² + W²Θ (NTK) or fan_in·K + [1] + W²Θ (SP)
                t = _dense_ntk(t, k, w2, b2, fan_in, has_bias)
                t1 = _dense_ntk(t1, d1, w2, b2, fan_in, has_bias)
                t2 = _dense_ntk(t2, d2, w2, b2, fan_in, has_bias)
            for kk in (k, d1, d2):  # Dense: Σ = W²K + b², in place
                if kk is not None:
                    kk.mul_(w2).add_(b2)
            if layer == depth:
                break
            # Activation: K ← E[φφ], Θ ← Θ·E[φ'φ'] at the pre-activation covariances.
            if k is not None:
                k, dot = dual_kernels(
                    act, d1, d1 if d2 is None else d2, k, symmetric=x2 is None, **kw
                )
                if compute_ntk:
                    t.mul_(dot)
                    del dot
            d1, dd1 = dual_kernels_diag(act, d1, **kw)
            if compute_ntk:
                t1.mul_(dd1)
            if d2 is not None:
                d2, dd2 = dual_kernels_diag(act, d2, **kw)
                if compute_ntk:
                    t2.mul_(dd2)
        nngp, ntk = (d1, t1) if diagonal else (k, t)
        if not compute_ntk:
            ntk = torch.full_like(nngp, float("nan"))
    return KernelPair(nngp=nngp, ntk=ntk)


def _fc_relu_ntk(x1: Tensor, x2: Tensor | None, depth: int, w2: float, b2: float) -> KernelPair:
    """The ReLU / NTK-parametrization case of :func:`fc_kernels` with the arc-cosine step fused
    into about a dozen in-place passes per layer over preallocated (n1, n2) buffers.

    Per block, from Σ (pre-activation) and Θ: c = Σ/√(v1 v2') clamped, π − θ = asin c + π/2,
    J = √(1−c²) + c(π − θ), Σ ← W²/(2π)·√(v1 v2')·J + b², Θ ← Σ + W²/(2π)·(π − θ)·Θ.
    """
    d = x1.shape[1]
    other = x1 if x2 is None else x2
    b2t = torch.tensor(b2, dtype=x1.dtype, device=x1.device)
    s = torch.addmm(b2t, x1, other.T, alpha=w2 / d)  # Σ¹
    v1 = x1.square().sum(1).mul_(w2 / d).add_(b2)
    v2 = v1 if x2 is None else x2.square().sum(1).mul_(w2 / d).add_(b2)
    t = s.clone()  # Θ¹ = Σ¹
    c, sin, pm, s_next, t_next = (torch.empty_like(s) for _ in range(5))
    one = torch.ones((), dtype=s.dtype, device=s.device)
    scale = w2 / (2 * math.pi)
    for _ in range(depth):
        r1 = v1.clamp_min(_TINY).rsqrt()
        r2 = r1 if x2 is None else v2.clamp_min(_TINY).rsqrt()
        torch.mul(s, r1[:, None], out=c)
        c.mul_(r2[None, :]).clamp_(-1.0, 1.0)
        if x2 is None:
            c.fill_diagonal_(1.0)
        torch.addcmul(one, c, c, value=-1.0, out=sin)
        sin.sqrt_()
        torch.asin(c, out=pm)
        pm.add_(math.pi / 2)  # π − θ
        sin.addcmul_(c, pm)  # J(θ) = sin θ + (π − θ) cos θ
        q1 = v1.sqrt().mul_(scale)
        q2 = v2.sqrt()
        torch.mul(sin, q1[:, None], out=c)
        torch.addcmul(b2t, c, q2[None, :], out=s_next)  # Σ^{l+1}
        torch.addcmul(s_next, pm, t, value=scale, out=t_next)  # Θ^{l+1}
        s, s_next = s_next, s
        t, t_next = t_next, t
        v1 = v1 * (w2 / 2) + b2  # ReLU: E[φ(u)²] = Σ(x, x)/2
        v2 = v1 if x2 is None else v2 * (w2 / 2) + b2
    return KernelPair(nngp=s, ntk=t)


def _dense_ntk(theta, k, w2, b2, fan_in, has_bias):
    """NTK after a Dense layer from the input kernel ``k`` (before the affine map) and the
    NTK ``theta`` of the layer's input (None for the input layer)."""
    if k is None:
        return None
    if fan_in is None:  # NTK parametrization: Θ = W²K + b² + W²Θ
        new = k * w2 + b2
    else:  # SP: Θ = fan_in·K + [bias] + W²Θ
        new = k * float(fan_in)
        if has_bias:
            new.add_(1.0)
    if theta is not None:
        new.add_(theta, alpha=w2)
    return new


# --------------------------------------------------------------------------- CNN kernels [#64]


def _patch_inputs(x: Tensor, dtype, device=None) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() not in (2, 3):
        raise ConfigError("CNN inputs must be (n, d) or (n, channels, d) tensors")
    x = x.to(dtype=dtype, device=device)
    return x[:, None, :] if x.dim() == 2 else x


def cnn_kernels(
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    patch_sizes: Sequence[int],
    activation: Activation = "relu",
    w_std: float = 1.0,
    b_std: float = 0.0,
    dphi: Callable[[Tensor], Tensor] | None = None,
    quadrature_nodes: int = 128,
    diagonal: bool = False,
    compute_ntk: bool = True,
    row_chunk: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> KernelPair:
    """NNGP and NTK of an infinitely wide hierarchical CNN with non-overlapping patches [#64].

    Architecture (Cagnetta, Favero & Wyart, "What can be learnt with wide convolutional
    neural networks?", ICML 2023, Sec. 2): an input of ``C`` channels and length
    ``d = s_1 · s_2 ⋯ s_L`` (``patch_sizes = (s_1, …, s_L)``) passes L blocks
    ``Conv1d(kernel = stride = s_l) -> φ``; each block's filter sees ``s_l`` adjacent
    locations of the previous layer without overlap, so after block l there are
    ``d/(s_1⋯s_l)`` locations and after the last one a single location, which the readout
    ``Dense(1)`` maps to the scalar output. Channels → ∞, stax NTK parametrization (weights
    ``W_std/√fan_in · N(0, 1)`` with ``fan_in = channels · s_l``, bias ``b_std · N(0, 1)``).

    Because patches do not overlap and the filters at different offsets are independent,
    only equal locations of x and x' correlate, and the kernels form a tree (the paper's
    Eq. for K^{(l+1)} as a mean over the s children). For a location j of block l + 1 with
    children c (its ``s_{l+1}`` input locations), with K_c = E[φ(u)φ(v)] and
    Σ̇_c = E[φ'(u)φ'(v)] at the child's pre-activation covariance:

        Σ¹_p = W_std²/(C s_1) · ⟨x_p, x'_p⟩ + b_std²            (x_p: the p-th input patch)
        Σ^{l+1}_j = W_std²/s_{l+1} · Σ_c K_c + b_std²
        Θ^{l+1}_j = Σ^{l+1}_j + W_std²/s_{l+1} · Σ_c Σ̇_c Θ^l_c,   Θ¹ = Σ¹,

    and the readout applies the fully connected step (``fc_kernels``' recursion) to the last
    location. ``patch_sizes = (d,)`` is therefore ``fc_kernels(depth=1)``, and ``(d, 1, …, 1)``
    is ``fc_kernels`` of that depth. ``x1`` (n1, d) or (n1, C, d); rows of x1 are processed
    ``row_chunk`` at a time (default: about 2²⁴ kernel entries per location chunk).
    """
    sizes = [int(s) for s in patch_sizes] if patch_sizes is not None else []
    if not sizes or any(s < 1 for s in sizes):
        raise ConfigError(
            f"patch_sizes must list one positive filter size per layer, got {patch_sizes!r}"
        )
    act = _check_activation(activation, dphi, quadrature_nodes)
    if diagonal and x2 is not None:
        raise ConfigError("diagonal=True needs x2=None (the diagonal of the kernel of x1)")
    a = _patch_inputs(x1, dtype)
    b = None if x2 is None else _patch_inputs(x2, dtype, a.device)
    channels, d = a.shape[1], a.shape[2]
    if math.prod(sizes) != d:
        raise ConfigError(
            f"patch_sizes {sizes} multiply to {math.prod(sizes)} but the inputs have length {d}:"
            " choose filter sizes whose product is the input length"
        )
    if b is not None and b.shape[1:] != a.shape[1:]:
        raise ConfigError(
            f"input dimension mismatch: x1 rows are {tuple(a.shape[1:])}, x2 rows "
            f"{tuple(b.shape[1:])}; pass inputs of the same shape"
        )
    w2, b2 = float(w_std) ** 2, float(b_std) ** 2
    kw = {"dphi": dphi, "quadrature_nodes": quadrature_nodes, "need_dot": compute_ntk}

    def patches(x: Tensor) -> Tensor:  # (n, P1, C·s1)
        n = x.shape[0]
        p1 = d // sizes[0]
        return x.reshape(n, channels, p1, sizes[0]).permute(0, 2, 1, 3).reshape(n, p1, -1)

    def layer_diag(x: Tensor) -> list[tuple[Tensor, Tensor | None]]:
        """Per-location pre-activation variances and NTK diagonals of every block, (n, P_l)."""
        s = patches(x).square().sum(-1).mul_(w2 / (channels * sizes[0])).add_(b2)
        t = s.clone() if compute_ntk else None
        out = [(s, t)]
        for size in sizes[1:] + [None]:
            k, dot = dual_kernels_diag(act, s, **kw)
            if size is None:  # readout Dense(1)
                s_new = k.reshape(k.shape[0]).mul(w2).add_(b2)
                t_new = s_new + w2 * (dot * t).reshape(-1) if compute_ntk else None
            else:
                n, p = k.shape
                s_new = k.reshape(n, p // size, size).sum(-1).mul_(w2 / size).add_(b2)
                t_new = None
                if compute_ntk:
                    t_new = s_new + (dot * t).reshape(n, p // size, size).sum(-1).mul_(w2 / size)
            out.append((s_new, t_new))
            s, t = s_new, t_new
        return out

    with torch.no_grad():
        diag1 = layer_diag(a)
        if diagonal:
            s, t = diag1[-1]
            return KernelPair(nngp=s, ntk=t if compute_ntk else torch.full_like(s, float("nan")))
        diag2 = diag1 if b is None else layer_diag(b)
        pa, pb = patches(a), patches(a if b is None else b)
        n1, n2, p1 = pa.shape[0], pb.shape[0], pa.shape[1]
        chunk = row_chunk or max(1, (1 << 24) // max(1, n2 * p1))
        nngp = torch.empty(n1, n2, dtype=dtype, device=a.device)
        ntk = torch.full_like(nngp, float("nan"))
        for r0 in range(0, n1, chunk):
            r1 = min(n1, r0 + chunk)
            # (P1, rows, n2) cross covariances of the first block, location-major.
            s = torch.einsum("apk,bpk->pab", pa[r0:r1], pb).mul_(w2 / (channels * sizes[0]))
            s.add_(b2)
            t = s.clone() if compute_ntk else None
            for level, size in enumerate(sizes[1:] + [None]):
                v1, v2 = diag1[level][0][r0:r1], diag2[level][0]
                k = torch.empty_like(s)
                dot = torch.empty_like(s) if compute_ntk else None
                for p in range(s.shape[0]):
                    kp, dp = dual_kernels(
                        act, v1[:, p], v2[:, p], s[p], symmetric=b is None, row_offset=r0, **kw
                    )
                    k[p] = kp
                    if compute_ntk:
                        dot[p] = dp
                if size is None:
                    s = k[0].mul_(w2).add_(b2)
                    if compute_ntk:
                        t = s + w2 * dot[0] * t[0]
                else:
                    p = k.shape[0]
                    rows = k.shape[1:]
                    s = k.reshape(p // size, size, *rows).sum(1).mul_(w2 / size).add_(b2)
                    if compute_ntk:
                        prod = dot.mul_(t).reshape(p // size, size, *rows).sum(1)
                        t = s + prod.mul_(w2 / size)
            nngp[r0:r1] = s
            if compute_ntk:
                ntk[r0:r1] = t
    return KernelPair(nngp=nngp, ntk=ntk)


# --------------------------------------------------------------------------- infinite depth [#59]


@dataclass(frozen=True)
class NormalizedActivation:
    """An activation scaled so that E[φ(z)²] = 1 for z ~ N(0, 1), with its normalized dual
    ξ(ρ) = E[φ(u)φ(v)] and ξ'(ρ) = E[φ'(u)φ'(v)] for unit-variance (u, v) of correlation ρ.

    ``hermite``: the coefficients a_k of φ = Σ_k a_k He_k/√(k!) (orthonormal probabilists'
    Hermite polynomials), Σ a_k² = 1, so ξ(ρ) = Σ a_k² ρ^k. ``phi``: φ itself, for
    fc_kernels (with ``w_std = 1`` it is the same network)."""

    name: str
    xi: Callable[[Tensor], Tensor]
    dxi: Callable[[Tensor], Tensor]
    phi: Callable[[Tensor], Tensor]
    w_std: float  # fc_kernels' w_std for the unnormalized activation it names
    hermite: tuple[float, ...] | None = None
    both: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None

    def duals(self, rho: Tensor) -> tuple[Tensor, Tensor]:
        """(ξ(ρ), ξ'(ρ)) as new tensors, in one pass where a fused form exists."""
        if self.both is not None:
            return self.both(rho)
        return self.xi(rho), self.dxi(rho)


def _relu_xi(r: Tensor) -> Tensor:
    r = r.clamp(-1.0, 1.0)
    return ((1 - r * r).clamp_min(0).sqrt() + (math.pi - torch.acos(r)) * r) / math.pi


def _relu_dxi(r: Tensor) -> Tensor:
    return (math.pi - torch.acos(r.clamp(-1.0, 1.0))) / math.pi


def _relu_duals(r: Tensor) -> tuple[Tensor, Tensor]:
    r = r.clamp(-1.0, 1.0)
    pm = torch.acos(r).neg_().add_(math.pi).mul_(1 / math.pi)  # ξ' = (π − acos ρ)/π
    sin = (r * r).neg_().add_(1.0).clamp_min_(0.0).sqrt_().mul_(1 / math.pi)
    return sin.addcmul_(pm, r), pm


def hermite_activation(name: str, coefficients: Sequence[float]) -> NormalizedActivation:
    """φ = Σ_k a_k He_k(x)/√(k!) with ``coefficients`` a_k rescaled to Σ a_k² = 1."""
    a = [float(c) for c in coefficients]
    norm = math.sqrt(sum(c * c for c in a))
    if norm == 0 or len(a) < 2:
        raise ConfigError("hermite coefficients must have at least 2 entries, not all zero")
    a = [c / norm for c in a]
    sq = [c * c for c in a]

    def xi(r: Tensor) -> Tensor:
        out = torch.zeros_like(r)
        for c in reversed(sq):  # Horner
            out = out * r + c
        return out

    def dxi(r: Tensor) -> Tensor:
        out = torch.zeros_like(r)
        for k in range(len(sq) - 1, 0, -1):
            out = out * r + k * sq[k]
        return out

    def phi(x: Tensor) -> Tensor:
        he_prev, he = torch.ones_like(x), x  # He_0, He_1; He_{k+1} = x He_k − k He_{k−1}
        out = a[0] * he_prev + a[1] * he
        for k in range(1, len(a) - 1):
            he_prev, he = he, x * he - k * he_prev
            out = out + a[k + 1] * he / math.sqrt(math.factorial(k + 1))
        return out

    return NormalizedActivation(name, xi, dxi, phi, w_std=1.0, hermite=tuple(a))


# The activations of the recipe wide-deep-optimal, one per limit classifier (see
# infinite_depth_ntk): ReLU (majority vote), He_2/√2 (1-nearest neighbour) and
# (He_1 + He_2/√2)/√2 (a singular kernel classifier).
INFINITE_DEPTH_ACTIVATIONS: dict[str, NormalizedActivation] = {
    "relu": NormalizedActivation(
        "relu",
        _relu_xi,
        _relu_dxi,
        lambda x: math.sqrt(2) * torch.relu(x),
        w_std=math.sqrt(2),
        both=_relu_duals,
    ),
    "hermite2": hermite_activation("hermite2", (0.0, 0.0, 1.0)),
    "hermite12": hermite_activation("hermite12", (0.0, 1.0, 1.0)),
}


def _normalized_activation(activation) -> NormalizedActivation:
    if isinstance(activation, NormalizedActivation):
        return activation
    if isinstance(activation, str) and activation in INFINITE_DEPTH_ACTIVATIONS:
        return INFINITE_DEPTH_ACTIVATIONS[activation]
    known = ", ".join(INFINITE_DEPTH_ACTIVATIONS)
    raise ConfigError(
        f"no normalized dual for activation {activation!r}: use one of {known} or "
        "hermite_activation(name, coefficients)"
    )


def _cosines(x1: Tensor, x2: Tensor | None, dtype) -> Tensor:
    x1, x2 = _as_inputs(x1, x2, dtype)
    u1 = x1 / x1.norm(dim=1, keepdim=True).clamp_min(_TINY)
    if x2 is None:
        c = u1 @ u1.T
        c.fill_diagonal_(1.0)
        return c.clamp_(-1.0, 1.0)
    u2 = x2 / x2.norm(dim=1, keepdim=True).clamp_min(_TINY)
    return (u1 @ u2.T).clamp_(-1.0, 1.0)


def normalized_ntk(
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    depths: Sequence[int],
    activation: str | NormalizedActivation = "relu",
    dtype: torch.dtype = torch.float64,
) -> dict[int, Tensor]:
    """Θ_L(x, x')/Θ_L(x, x) for each L in ``depths``, in one pass up to max(depths) [#59].

    The setting of Radhakrishnan, Belkin & Uhler ("Wide and deep neural networks achieve
    optimality for classification"): inputs on the unit sphere (x is divided by its norm),
    no bias, activation normalized to E[φ(z)²] = 1, so every pre-activation has variance 1
    and the stax recursion (module docstring) runs on correlations ρ_l alone:

        ρ_{l+1} = ξ(ρ_l),   Θ^{l+1} = ξ(ρ_l) + ξ'(ρ_l) Θ^l,   Θ¹ = ρ_0 = cos(x, x'),

    with diagonal D^{l+1} = 1 + ξ'(1) D^l. It equals ``fc_kernels(x·√d/(w‖x‖), depth=L,
    activation=φ, w_std=w).ntk`` (w = ``act.w_std``) divided by its diagonal (tested), at a few
    elementwise operations per layer, so L in the thousands is cheap. The ratio is kept
    directly (1/D^l updated as 1/D^{l+1} = (1/D^l)/(1/D^l + ξ'(1))) so that D^l ~ ξ'(1)^l
    cannot overflow; entries may underflow to 0 at large L for activations with ξ'(1) > 1.
    """
    act = _normalized_activation(activation)
    wanted = sorted({int(d) for d in depths})
    if not wanted or wanted[0] < 1:
        raise ConfigError(f"depths must be integers >= 1, got {list(depths)!r}")
    with torch.no_grad():
        rho = _cosines(x1, x2, dtype)
        # x = x' pairs stay at ρ = 1 and ratio 1 exactly: for ξ'(1) > 1 the fixed point 1 is
        # repelling and rounding in ξ(1) would otherwise grow like ξ'(1)^l.
        same = (rho >= _SAME).nonzero(as_tuple=True)
        rho[same] = 1.0
        one = torch.ones((), dtype=dtype)
        mu = float(act.dxi(one))
        t = rho.clone()  # Θ¹/D¹ with D¹ = 1 (the input Dense layer)
        inv_d = 1.0
        out: dict[int, Tensor] = {}
        for layer in range(1, wanted[-1] + 1):
            inv_next = inv_d / (inv_d + mu)  # 1/D^{l+1}
            xi, dxi = act.duals(rho)
            t = dxi.mul_(t).mul_(inv_next / inv_d).add_(xi, alpha=inv_next)
            t[same] = 1.0
            xi[same] = 1.0
            rho = xi
            inv_d = inv_next
            if layer in wanted:
                out[layer] = t.clone()
    return out


CLASSIFIERS = ("majority_vote", "nearest_neighbor", "singular_kernel")
# lim_L Θ_L(x, x')/Θ_L(x, x) of the normalized ReLU NTK for x ≠ x' (any ρ_0 < 1). The
# recursion of normalized_ntk approaches it slowly, like 1/L: 0.2777 at L = 100, 0.2538 at
# 1000, 0.2505 at 10 000 (ρ_0 = 0.5; tested).
RELU_LIMIT_RATIO = 0.25
_SAME = 1.0 - 1e-12  # cosines at least this are the same direction (x = x' up to rounding)


@dataclass(frozen=True)
class InfiniteDepthNTK:
    """The L → ∞ limit of the NTK classifier of :func:`infinite_depth_ntk`.

    ``classifier``: which of the three classifiers the limit implements. ``kernel`` (n1, n2):
    a limit kernel whose *kernel vote* ``argmax_c Σ_i kernel[:, i]·[y_i = c]`` (x1 = test,
    x2 = train) is that classifier —

    * ``"majority_vote"``: lim Θ_L(x, x')/Θ_L(x, x), constant (``limit_ratio``) for x ≠ x'
      and 1 where x = x' (cosine ≥ 1 − 1e-12), so the vote counts the classes;
    * ``"nearest_neighbor"``: the cosine ρ(x, x'); the classifier is the label of its
      largest entry (the limit has no finite kernel: Θ_L(x, x')/Θ_L(x, x) → 0 faster for
      smaller ρ than any power);
    * ``"singular_kernel"``: h(ρ) = lim_l ξ^{∘l}(ρ)/ξ'(0)^l (the Koenigs function of ξ at
      0), which diverges as (1 − ρ)^{−exponent} at ρ → 1; +inf where x = x'.
    """

    classifier: str
    kernel: Tensor
    activation: str
    exponent: float | None = None
    limit_ratio: float | None = None

    def predict(self, y_train: Tensor, num_classes: int | None = None) -> Tensor:
        """Labels of the x1 rows, given the integer labels of the x2 rows (x2 = train)."""
        y = y_train.reshape(-1).long().to(self.kernel.device)
        if y.numel() != self.kernel.shape[1]:
            raise ConfigError(
                f"y_train has {y.numel()} labels but the kernel has {self.kernel.shape[1]} "
                "training columns: pass one label per x2 row"
            )
        c = int(num_classes or int(y.max()) + 1)
        if self.classifier == "nearest_neighbor":
            return y[self.kernel.argmax(1)]
        k = self.kernel
        exact = torch.isinf(k)
        if exact.any():  # a training copy of the test point decides alone
            k = torch.where(exact.any(1, keepdim=True), exact.to(k.dtype), k)
        onehot = torch.nn.functional.one_hot(y, c).to(k.dtype)
        return (k @ onehot).argmax(1)


def infinite_depth_ntk(
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    activation: str | NormalizedActivation = "relu",
    koenigs_steps: int = 400,
    dtype: torch.dtype = torch.float64,
) -> InfiniteDepthNTK:
    """The infinite-depth limit of the NTK classifier [#59] (setting of :func:`normalized_ntk`).

    Radhakrishnan, Belkin & Uhler, "Wide and deep neural networks achieve optimality for
    classification" (abstract): infinitely wide and deep networks "implement one of three
    well-known classifiers depending on the activation function used: (1) 1-nearest
    neighbor ...; (2) majority vote ...; or (3) singular kernel classifiers". The paper body
    (its theorem stating which activation gives which) was not available here: the rule
    below is derived from the recursion of :func:`normalized_ntk` and is this module's, with
    ξ the normalized dual, μ = ξ'(1), λ = ξ'(0):

    * ReLU (μ = 1, ξ(0) = 1/π > 0): ρ_l → 1 but Θ_L grows like L on and off the diagonal
      with lim Θ_L(x, x')/Θ_L(x, x) = 1/4 for every x ≠ x' (:data:`RELU_LIMIT_RATIO`, checked
      numerically): the train Gram tends to (1/4)·11ᵀ + (3/4)·I and every test row to
      the constant 1/4, so kernel regression predicts the class counts: **majority vote**.
    * ξ(0) = 0, μ > 1, λ = 0 (e.g. He_2/√2, ξ = ρ²): ρ_l → 0 like ρ_0^(2^l), so the nearest
      training point (largest ρ_0) dominates every other by an unbounded factor and the
      Gram tends to the identity: **1-nearest neighbour**.
    * ξ(0) = 0, μ > 1, 0 < λ < 1 (e.g. (He_1 + He_2/√2)/√2, ξ = (ρ + ρ²)/2): ρ_l ≈ h(ρ_0)λ^l
      and Θ_L(x, x') ≈ L·h(ρ_0)·λ^L + O(λ^L) while Θ_L(x, x) ~ μ^L: the Gram tends to the
      identity and predictions to the kernel vote with h, which diverges as
      (1 − ρ)^{−α}, α = ln(1/λ)/ln μ (from h∘ξ = λh near the repelling fixed point 1), i.e.
      ‖x − x'‖^{−2α} on the sphere: a **singular kernel classifier** (α = 1.71 here).

    Other activations raise ConfigError. Returns :class:`InfiniteDepthNTK`.
    """
    act = _normalized_activation(activation)
    one = torch.ones((), dtype=dtype)
    zero = torch.zeros((), dtype=dtype)
    mu, lam, xi0 = float(act.dxi(one)), float(act.dxi(zero)), float(act.xi(zero))
    with torch.no_grad():
        rho = _cosines(x1, x2, dtype)
        if act.name == "relu":
            ratio = RELU_LIMIT_RATIO
            same = rho >= _SAME
            k = torch.where(same, torch.ones_like(rho), torch.full_like(rho, ratio))
            return InfiniteDepthNTK("majority_vote", k, act.name, limit_ratio=ratio)
        if abs(xi0) > 1e-15 or mu <= 1.0:
            raise ConfigError(
                f"no infinite-depth limit classifier derived for activation {act.name!r} "
                f"(xi(0) = {xi0:.3g}, xi'(1) = {mu:.3g}): use relu or a Hermite activation "
                "with a_0 = 0 and xi'(1) > 1"
            )
        if lam <= 1e-15:
            return InfiniteDepthNTK("nearest_neighbor", rho, act.name)
        if lam >= 1.0:
            raise ConfigError(f"xi'(0) = {lam:.3g} >= 1: no singular limit; use xi'(0) < 1")
        r = rho.clone()
        for _ in range(koenigs_steps):
            r = act.xi(r)
        h = r * math.exp(-koenigs_steps * math.log(lam))
        h = torch.where(rho >= _SAME, torch.full_like(h, float("inf")), h)
        alpha = math.log(1 / lam) / math.log(mu)
        return InfiniteDepthNTK("singular_kernel", h, act.name, exponent=alpha)
