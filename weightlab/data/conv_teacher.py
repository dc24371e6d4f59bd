"""The conv residual teacher of Liu et al. 2019, "Towards Understanding the Importance of
Shortcut Connections in Residual Networks" (NeurIPS; row [#100]): ``k`` non-overlapping
Gaussian patches ``Z_j ~ N(0, I_p)`` and

    y = f*(Z) = Σ_j a*_j ReLU(Z_jᵀ v* / ‖v*‖),   v* = s + w*,

with the shortcut filter ``s = 𝟙/√p``, ``w* ~ N(0, I/p)`` and ``a* ~ N(0, I_k)``, all drawn
from ``generator(derive_seed("conv_teacher", seed))`` (``w*``, ``a*``, then the training
inputs; validation and test inputs from ``derive_seed("conv_teacher", "val" | "test",
seed)``; no validation split by default). Inputs are stored
flattened, ``(n, k·p)`` (patch ``j`` is ``x[j·p:(j+1)·p]``); targets ``(n, 1)``; noiseless.
The students and their two-phase training live in :mod:`weightlab.dynamics.conv_residual`.
"""

from __future__ import annotations

import math

import torch

from weightlab.data.params import Param
from weightlab.data.task import Split, TaskData
from weightlab.seeding import derive_seed, generator

__all__ = ["PARAMS", "conv_teacher", "load_conv_teacher", "shortcut_filter", "teacher_weights"]

PARAMS = (
    Param("k", "int", 8, "patches", min=1),
    Param("p", "int", 16, "patch dimension", min=1),
    Param("n_train", "int", 2048, "training inputs", min=1),
    Param("n_val", "int", 0, "validation inputs (0: none)", min=0),
    Param("n_test", "int", 1000, "test inputs", min=1),
    Param("seed", "int", 0, "seed of the teacher and the inputs", min=0),
)


def shortcut_filter(p: int) -> torch.Tensor:
    """The fixed shortcut filter ``s = 𝟙/√p``."""
    return torch.full((p,), 1.0 / math.sqrt(p))


def conv_teacher(z: torch.Tensor, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``f(Z) = Σ_j a_j ReLU(Z_jᵀ v / ‖v‖)`` for ``z (B, k, p)``, ``a (k,)``, ``v (p,)``:
    ``(B,)``."""
    return (torch.relu(z @ (v / v.norm())) * a).sum(-1)


def teacher_weights(k: int, p: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(a*, w*, g)``: the teacher's weights and the generator, positioned to draw the
    training inputs next."""
    g = generator(derive_seed("conv_teacher", seed))
    w_star = torch.randn(p, generator=g) / math.sqrt(p)
    a_star = torch.randn(k, generator=g)
    return a_star, w_star, g


def load_conv_teacher(
    k: int = 8, p: int = 16, n_train: int = 2048, n_val: int = 0, n_test: int = 1000, seed: int = 0
) -> TaskData:
    """The registered task ``conv_teacher`` (regression)."""
    a_star, w_star, g = teacher_weights(k, p, seed)
    v_star = shortcut_filter(p) + w_star
    z = torch.randn(n_train, k, p, generator=g)
    zt = torch.randn(n_test, k, p, generator=generator(derive_seed("conv_teacher", "test", seed)))
    zv = torch.randn(n_val, k, p, generator=generator(derive_seed("conv_teacher", "val", seed)))

    def split(x: torch.Tensor) -> Split:
        return Split(x.reshape(len(x), k * p), conv_teacher(x, a_star, v_star)[:, None])

    return TaskData(
        "conv_teacher",
        split(z),
        split(zv),
        split(zt),
        0,
        "regression",
        info={"k": k, "p": p, "seed": seed, "a_star": a_star, "w_star": w_star, "v_star": v_star},
    )
