"""Matching a learned two-layer network to a planted teacher, then scoring recovery.

A two-layer network ``y = σ(x W1ᵀ) W2ᵀ`` is only identifiable up to the symmetries of its
hidden units, so recovery ("A Recovery Guarantee for Sparse Neural Networks", methods row
[#95]: the planted sparse MLP is recovered "exactly") is scored after undoing them:

- **permutation**: hidden units can be listed in any order. Units are paired with the
  Hungarian algorithm (:func:`scipy.optimize.linear_sum_assignment`) on the first-layer
  weight vectors, cost ``1 − cos(student_j, teacher_i)``.
- **scale**: ReLU is positively homogeneous, ``relu(c·z) = c·relu(z)`` for ``c > 0``, so a
  unit's input weights may be scaled by ``c`` and its output weights by ``1/c``. After
  pairing, each student unit is rescaled to its teacher unit's input-weight norm.
- **sign**: ReLU is *not* odd (``relu(−z) ≠ −relu(z)``), so no sign flip is allowed and the
  cosine is used as is. For an odd activation (``tanh``) the pair may also differ by a sign
  (``σ(−z)W2 = σ(z)(−W2)``): the cost uses ``1 − |cos|`` and the student unit's sign is
  flipped to match.

Then: support F1 of the matched first layer (recovered non-zeros vs the teacher's support)
and the relative weight error
``sqrt(‖W1' − W1*‖² + ‖W2' − W2*‖²) / sqrt(‖W1*‖² + ‖W2*‖²)``.
Weights use ``nn.Linear``'s layout: ``W1`` is ``(width, d)``, ``W2`` is ``(out, width)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weightlab.errors import ConfigError

ACTIVATIONS = ("relu", "tanh")


@dataclass(frozen=True)
class Recovery:
    """Result of :func:`recovery_metrics`: ``perm[i]`` is the student unit paired with teacher
    unit ``i``; ``signs[i]`` its sign (always +1 for ReLU); precision, recall and F1 of the
    first layer's support; relative weight error after matching and rescaling."""

    perm: list[int]
    signs: list[int]
    precision: float
    recall: float
    f1: float
    rel_error: float

    def to_dict(self) -> dict:
        return {
            "perm": list(self.perm),
            "signs": list(self.signs),
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "rel_error": self.rel_error,
        }


def _check_layers(w1: torch.Tensor, w2: torch.Tensor, who: str) -> None:
    if w1.ndim != 2 or w2.ndim != 2 or w2.shape[1] != w1.shape[0]:
        raise ConfigError(
            f"{who} weights must be W1 (width, d) and W2 (out, width); got "
            f"{tuple(w1.shape)} and {tuple(w2.shape)}"
        )


def match_units(
    student_w1: torch.Tensor, teacher_w1: torch.Tensor, activation: str = "relu"
) -> tuple[list[int], list[int]]:
    """Pair hidden units by the Hungarian algorithm on first-layer weights.

    Returns ``(perm, signs)``: teacher unit ``i`` is paired with student unit ``perm[i]``,
    whose weights are multiplied by ``signs[i]`` (+1 for ReLU; ±1 for ``tanh``). The
    student may be wider than the teacher (unpaired student units are ignored)."""
    from scipy.optimize import linear_sum_assignment

    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; choose one of {ACTIVATIONS}")
    s = student_w1.detach().double().cpu()
    t = teacher_w1.detach().double().cpu()
    if s.ndim != 2 or t.ndim != 2 or s.shape[1] != t.shape[1]:
        raise ConfigError(
            f"first layers must be (width, d) with the same d; got {tuple(s.shape)} and "
            f"{tuple(t.shape)}"
        )
    if s.shape[0] < t.shape[0]:
        raise ConfigError(
            f"the student has {s.shape[0]} hidden units, fewer than the teacher's {t.shape[0]}; "
            "train a student at least as wide"
        )
    sn = s / s.norm(dim=1, keepdim=True).clamp_min(1e-30)
    tn = t / t.norm(dim=1, keepdim=True).clamp_min(1e-30)
    cos = tn @ sn.T  # (teacher, student)
    sim = cos.abs() if activation == "tanh" else cos
    rows, cols = linear_sum_assignment((1.0 - sim).numpy())
    order = sorted(zip(rows.tolist(), cols.tolist(), strict=True))
    perm = [c for _, c in order]
    signs = [(-1 if activation == "tanh" and float(cos[r, c]) < 0 else 1) for r, c in order]
    return perm, signs


def align(
    student_w1: torch.Tensor,
    student_w2: torch.Tensor,
    perm: list[int],
    signs: list[int],
    teacher_w1: torch.Tensor,
    activation: str = "relu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's paired units in teacher order, sign-fixed and (for ReLU) rescaled to
    the teacher units' input-weight norms with the inverse scale on the output weights, so
    the network's function is unchanged. Returns ``(W1', W2')`` in float64."""
    s1 = (
        student_w1.detach().double().cpu()[perm] * torch.tensor(signs, dtype=torch.float64)[:, None]
    )
    s2 = student_w2.detach().double().cpu()[:, perm] * torch.tensor(signs, dtype=torch.float64)
    if activation == "relu":
        tn = teacher_w1.detach().double().cpu().norm(dim=1)
        sn = s1.norm(dim=1)
        c = torch.where(sn > 0, tn / sn.clamp_min(1e-300), torch.ones_like(sn))
        s1 = s1 * c[:, None]
        s2 = s2 / c
    return s1, s2


def support_f1(recovered: torch.Tensor, truth: torch.Tensor) -> tuple[float, float, float]:
    """``(precision, recall, F1)`` of a recovered support (bool) against the true one."""
    if recovered.shape != truth.shape:
        raise ConfigError(
            f"support shapes differ: {tuple(recovered.shape)} vs {tuple(truth.shape)}"
        )
    r, t = recovered.bool(), truth.bool()
    tp = int((r & t).sum())
    n_r, n_t = int(r.sum()), int(t.sum())
    precision = tp / n_r if n_r else (1.0 if n_t == 0 else 0.0)
    recall = tp / n_t if n_t else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def recovery_metrics(
    student: tuple[torch.Tensor, torch.Tensor],
    teacher: tuple[torch.Tensor, torch.Tensor],
    teacher_support: torch.Tensor | None = None,
    activation: str = "relu",
) -> Recovery:
    """Match ``student = (W1, W2)`` to ``teacher = (W1*, W2*)`` and score the recovery.

    ``teacher_support``: bool ``(width, d)`` (default: ``W1* != 0``). The student's
    support is its non-zero first-layer entries after pairing."""
    _check_layers(*student, "student")
    _check_layers(*teacher, "teacher")
    t1, t2 = (w.detach().double().cpu() for w in teacher)
    truth = (t1 != 0) if teacher_support is None else teacher_support.bool().cpu()
    perm, signs = match_units(student[0], t1, activation)
    s1, s2 = align(student[0], student[1], perm, signs, t1, activation)
    precision, recall, f1 = support_f1(s1 != 0, truth)
    num = (s1 - t1).pow(2).sum() + (s2 - t2).pow(2).sum()
    den = t1.pow(2).sum() + t2.pow(2).sum()
    rel = float((num / den).sqrt()) if den > 0 else float(num.sqrt())
    return Recovery(perm, signs, precision, recall, f1, rel)


__all__ = ["Recovery", "align", "match_units", "recovery_metrics", "support_f1"]
