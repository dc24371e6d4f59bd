"""Weight-space interpolation (WiSE-FT) and its error-correction count [#56].

WiSE-FT (Wortsman et al. 2022) ensembles a zero-shot / pretrained model and its fine-tuned
version in weight space: ``θ_α = (1 − α)·θ_a + α·θ_b`` (their Eq. 1, with θ_a the
pretrained and θ_b the fine-tuned weights). Lin et al., "Spurious Feature Diversification
Improves OOD Generalization" [#56], explain its OOD gain: "WiSE-FT successfully corrects
many cases where each individual model makes incorrect predictions". :func:`correction_count`
counts those cases: examples both endpoints get wrong and the interpolation gets right,
beside the number a uniform random guess over the classes would get right on them.

State-dict level: every entry of ``model_a.state_dict()`` is interpolated, parameters and
buffers alike. Floating-point buffers (e.g. BatchNorm running mean and variance) are
interpolated like weights (Eq. 1 applied to every state-dict entry);
non-floating entries (integer counters such as ``num_batches_tracked``, boolean masks) cannot
be averaged and are copied from the nearer endpoint (``model_a`` for α ≤ 0.5, else
``model_b``). The two models need the same keys, shapes and dtypes: anything else raises a
one-line :class:`~weightlab.errors.ConfigError`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from weightlab.errors import ConfigError


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not torch.isfinite(torch.tensor(alpha)):
        raise ConfigError(f"interpolation alpha must be a finite number, got {alpha}")
    return alpha


def interpolate_state(
    state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1 − α)·state_a + α·state_b`` entry by entry (floating entries; others from the
    nearer endpoint). α outside [0, 1] extrapolates, as WiSE-FT's α > 1 does.

    Raises:
        ConfigError: the state dicts differ in keys, shapes or dtypes (different
            architectures), or α is not finite.
    """
    alpha = _check_alpha(alpha)
    ka, kb = list(state_a), list(state_b)
    if set(ka) != set(kb):
        only_a = sorted(set(ka) - set(kb))[:3]
        only_b = sorted(set(kb) - set(ka))[:3]
        raise ConfigError(
            f"cannot interpolate models of different architectures: entries only in model_a "
            f"{only_a}, only in model_b {only_b}; give two models built from the same class"
        )
    out: dict[str, torch.Tensor] = {}
    for k in ka:
        a, b = state_a[k], state_b[k]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ConfigError(
                f"cannot interpolate models of different architectures: {k!r} is "
                f"{tuple(a.shape)} {a.dtype} in model_a but {tuple(b.shape)} {b.dtype} in "
                f"model_b; give two models built from the same class and sizes"
            )
        if a.is_floating_point() or a.is_complex():
            out[k] = torch.lerp(a.detach(), b.detach().to(a.device), alpha)
        else:
            out[k] = (a if alpha <= 0.5 else b).detach().clone()
    return out


def interpolate(model_a: nn.Module, model_b: nn.Module, alpha: float) -> nn.Module:
    """WiSE-FT [#56]: a new model (a deep copy of ``model_a``) holding
    ``θ_α = (1 − α)·θ_a + α·θ_b`` for every state-dict entry (see the module docstring
    for buffers). ``alpha = 0`` gives ``model_a``'s weights, ``alpha = 1`` ``model_b``'s;
    neither input is changed."""
    state = interpolate_state(model_a.state_dict(), model_b.state_dict(), alpha)
    out = copy.deepcopy(model_a)
    out.load_state_dict(state)
    return out


@dataclass(frozen=True)
class CorrectionCount:
    """Examples both endpoints get wrong (``both_wrong``), those of them the interpolation
    gets right (``corrected``), and ``uniform_expected = both_wrong / num_classes``: how many
    of them a uniform random guess over the classes gets right on average."""

    corrected: int
    both_wrong: int
    uniform_expected: float
    num_classes: int

    def as_dict(self) -> dict:
        return {
            "corrected": self.corrected,
            "both_wrong": self.both_wrong,
            "uniform_expected": self.uniform_expected,
            "num_classes": self.num_classes,
        }


def _labels(pred: torch.Tensor, n: int, name: str) -> torch.Tensor:
    """Predicted labels from logits ``(n, C)`` or labels ``(n,)``."""
    if pred.ndim == 2:
        pred = pred.argmax(-1)
    if pred.ndim != 1 or pred.shape[0] != n:
        raise ConfigError(
            f"{name} must be (n, classes) logits or (n,) labels for the {n} targets, got "
            f"shape {tuple(pred.shape)}"
        )
    return pred


def correction_count(
    pred_a: torch.Tensor,
    pred_b: torch.Tensor,
    pred_mix: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
) -> CorrectionCount:
    """The correction count of [#56]: of the examples where both endpoint models are
    wrong, how many the interpolated model gets right. Predictions are logits ``(n, C)``
    or labels ``(n,)``; ``y`` the ``(n,)`` true labels. The reference beside it,
    ``uniform_expected``, is ``both_wrong / num_classes``."""
    if y.ndim != 1:
        raise ConfigError(f"labels y must be 1-D (n,), got shape {tuple(y.shape)}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    n = y.shape[0]
    la, lb, lm = (
        _labels(p, n, name)
        for p, name in ((pred_a, "pred_a"), (pred_b, "pred_b"), (pred_mix, "pred_mix"))
    )
    both_wrong = (la != y) & (lb != y)
    corrected = both_wrong & (lm == y)
    bw = int(both_wrong.sum())
    return CorrectionCount(int(corrected.sum()), bw, bw / num_classes, int(num_classes))
