"""Norm-matched dense control for a pruned network (Minegishi et al., "Grokking Tickets:
Lottery Tickets Accelerate Grokking", row [#49], the "controlled dense model").

A ticket ``m ⊙ θ₀`` has a smaller weight norm than the dense ``θ₀`` it was cut from. To
check that a ticket's speed-up is not explained by its norm alone, the paper compares it
with the dense network rescaled to the ticket's L1 or L2 norm. :func:`norm_match` does this
per layer: every masked weight tensor ``W`` becomes ``c · W`` with

    c = ‖m ⊙ W‖_p / ‖W‖_p,   p ∈ {1, 2},

so ``‖c · W‖_p = ‖m ⊙ W‖_p`` (no weight is zeroed). ``scope="global"`` uses one factor
for all masked tensors together, ``c = ‖m ⊙ θ‖_p / ‖θ‖_p`` over their concatenation (the
authors' code applies one ratio to every layer). Tensors without a mask (biases, buffers)
are copied unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from weightlab.errors import ConfigError

NORMS = (1, 2)
SCOPES = ("layer", "global")


def _norm(t: torch.Tensor, p: int) -> float:
    return float(torch.linalg.vector_norm(t.detach().to(torch.float64), ord=p))


def norm_scales(
    state: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    p: int = 2,
    scope: str = "layer",
) -> dict[str, float]:
    """The factor ``c`` for each masked tensor (see the module docstring). A tensor whose
    norm is zero keeps factor 1."""
    if p not in NORMS:
        raise ConfigError(f"norm order must be one of {NORMS}, got {p!r}")
    if scope not in SCOPES:
        raise ConfigError(f"norm-match scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    for name, m in masks.items():
        if name not in state:
            raise ConfigError(f"mask {name!r} names no tensor of the state; use the model's names")
        if tuple(m.shape) != tuple(state[name].shape):
            raise ConfigError(
                f"mask {name!r} has shape {tuple(m.shape)}, its tensor {tuple(state[name].shape)}"
            )
    kept = {n: _norm(state[n] * masks[n].to(state[n].dtype), p) for n in masks}
    full = {n: _norm(state[n], p) for n in masks}
    if scope == "layer":
        return {n: (kept[n] / full[n] if full[n] > 0 else 1.0) for n in masks}
    # global: combine the per-tensor norms into the norm of the concatenation
    tot_kept = sum(v**p for v in kept.values()) ** (1 / p)
    tot_full = sum(v**p for v in full.values()) ** (1 / p)
    c = tot_kept / tot_full if tot_full > 0 else 1.0
    return {n: c for n in masks}


def norm_match(
    state: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    p: int = 2,
    scope: str = "layer",
) -> dict[str, torch.Tensor]:
    """A copy of ``state`` (a :func:`weightlab.core.take_snapshot` dict, e.g. the dense
    θ₀) whose masked tensors are scaled to the L``p`` norm of their pruned version
    ``mask ⊙ W`` (per layer, or over all masked tensors with ``scope="global"``). The
    result is dense: use it as ``MemberSpec(init_state=...)`` without masks."""
    scales = norm_scales(state, masks, p, scope)
    out = {}
    for name, t in state.items():
        t = t.detach().clone()
        if name in scales:
            t.mul_(scales[name])
        out[name] = t
    return out


__all__ = ["NORMS", "SCOPES", "norm_match", "norm_scales"]
