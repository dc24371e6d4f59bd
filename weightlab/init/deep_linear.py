"""Deep linear networks (row [#13]): Saxe, McClelland & Ganguli (2014), "Exact solutions to
the nonlinear dynamics of learning in deep linear neural networks" (ICLR 2014).

A deep linear net computes ``W_tot x`` with ``W_tot = W_D ⋯ W_1`` (torch layout: ``W_l`` is
``(out, in)``). With whitened inputs (``Σ11 = I``) and the input-output correlation
``Σ31 = V S Uᵀ`` (``U``: input singular vectors, ``V``: output ones, ``S = diag(s)``), gradient
descent on ``½ E‖y − W_tot x‖²`` at rate ``λ = 1/τ`` decouples mode by mode from a
*decoupled* start ``W_tot = V diag(a₀) Uᵀ``. For two layers started *balanced* (each layer
carries ``√a₀`` of every mode), the mode strength ``a = vᵀ W_tot u`` obeys
``τ da/dt = 2a(s − a)``, solved by the sigmoid (Saxe et al. 2014, the closed form of ``u_f(t)``; its
equation number is not checked here)

    a(t) = s e^{2st/τ} / (e^{2st/τ} − 1 + s/a₀),

with the time to go from ``a₀`` to ``s/2``, ``t½ = τ/(2s) ln(s/a₀ − 1)``: stronger modes are
learned first ("long plateaus followed by rapid transitions to lower error solutions").

This module builds such starts for any depth (:func:`decoupled_balanced_init`), reads the
mode strengths of a trained net (:func:`mode_strengths`) and evaluates the sigmoid
(:func:`mode_strength_sigmoid`, :func:`half_time`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from weightlab.errors import ConfigError
from weightlab.init.registry import orthogonal


def decoupled_balanced_init(
    u: torch.Tensor,
    v: torch.Tensor,
    strengths: torch.Tensor | Sequence[float] | float,
    depth: int,
    hidden: int | None = None,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """Weights ``[W_1, ..., W_D]`` (float64, ``(out, in)``) of a depth-``D`` linear net with
    ``W_D ⋯ W_1 = v diag(strengths) uᵀ``, every layer carrying ``strengths^(1/D)`` of each
    mode (balanced: ``W_{l+1}ᵀ W_{l+1} = W_l W_lᵀ``; Saxe et al. 2014, Sec. 2 and 3).

    ``u``: ``(d_in, r)`` and ``v``: ``(d_out, r)`` with orthonormal columns (the teacher's
    singular vectors); the hidden layers' mode directions ``R_l`` are ``(hidden, r)`` with
    orthonormal columns, Haar-random from ``generator`` (the first ``r`` axes without one).
    Negative strengths are not allowed (a balanced real factorization needs ``a >= 0``).
    """
    u, v = torch.as_tensor(u, dtype=torch.float64), torch.as_tensor(v, dtype=torch.float64)
    if u.dim() != 2 or v.dim() != 2 or u.shape[1] != v.shape[1]:
        raise ConfigError(
            f"u and v must be (d_in, r) and (d_out, r) with the same r; got {tuple(u.shape)} "
            f"and {tuple(v.shape)}"
        )
    r = u.shape[1]
    a = torch.as_tensor(strengths, dtype=torch.float64).expand(r).clone()
    if depth < 1:
        raise ConfigError(f"depth must be >= 1, got {depth}")
    if bool((a < 0).any()):
        raise ConfigError("mode strengths must be >= 0 for a balanced start")
    hidden = r if hidden is None else int(hidden)
    if depth > 1 and hidden < r:
        raise ConfigError(f"hidden width {hidden} is below the number of modes {r}; widen it")
    per = a.pow(1.0 / depth)

    def axes() -> torch.Tensor:
        if generator is None:
            return torch.eye(hidden, r, dtype=torch.float64)
        return orthogonal(hidden, r, generator)

    if depth == 1:
        return [(v * a) @ u.T]
    rs = [axes() for _ in range(depth - 1)]
    ws = [(rs[0] * per) @ u.T]
    for i in range(1, depth - 1):
        ws.append((rs[i] * per) @ rs[i - 1].T)
    ws.append((v * per) @ rs[-1].T)
    return ws


def product(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """``W_tot = W_D ⋯ W_1`` of ``(out, in)`` weights, in float64."""
    out = weights[0].to(torch.float64)
    for w in weights[1:]:
        out = w.to(torch.float64) @ out
    return out


def mode_strengths(
    weights: Sequence[torch.Tensor] | torch.Tensor, u: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """``a_α = v_αᵀ W_tot u_α`` for every mode ``α`` (float64, ``(r,)``); ``weights`` is the
    list of layer weights or ``W_tot`` itself."""
    w = weights if isinstance(weights, torch.Tensor) else product(weights)
    w = w.to(torch.float64)
    return torch.einsum("or,oi,ir->r", v.to(torch.float64), w, u.to(torch.float64))


def mode_strength_sigmoid(
    t: torch.Tensor | Sequence[float] | float, s: float, a0: float, tau: float = 1.0
) -> torch.Tensor:
    """Saxe et al. (2014), closed-form mode strength: ``a(t) = s e^{2st/τ} / (e^{2st/τ} − 1 + s/a₀)``, the mode
    strength of a balanced two-layer linear net under gradient flow (``τ = 1/λ``, ``λ`` the
    learning rate of ``½‖y − ŷ‖²``); ``s = 0`` gives ``a₀ / (1 + 2a₀t/τ)``."""
    t = torch.as_tensor(t, dtype=torch.float64)
    if a0 <= 0:
        raise ConfigError(f"the initial strength a0 must be > 0, got {a0}")
    if s == 0:
        return a0 / (1 + 2 * a0 * t / tau)
    # divide through by e^{2st/τ} so large t does not overflow
    decay = torch.exp(-2 * s * t / tau)
    return s / (1 - decay + (s / a0) * decay)


def half_time(s: float, a0: float, tau: float = 1.0) -> float:
    """Time for the sigmoid to go from ``a₀`` to ``s/2``: ``τ/(2s) ln(s/a₀ − 1)``."""
    if not s > 2 * a0 > 0:
        raise ConfigError(f"half strength needs s > 2 a0 > 0; got s={s}, a0={a0}")
    return tau / (2 * s) * math.log(s / a0 - 1)


__all__ = [
    "decoupled_balanced_init",
    "half_time",
    "mode_strength_sigmoid",
    "mode_strengths",
    "product",
]
