"""Self-distillation from a random teacher (Sarnthein, Bachmann, Anagnostidis & Hofmann 2023,
"Random Teachers are Good Teachers", row [#33]): the DINO student–teacher setting with the
teacher frozen at its random initialization.

- :class:`DinoNet`: a small 1-D CNN backbone (two ``Conv1d`` with ``channels`` filters,
  kernel 5, stride 2, no padding, ReLU: 40 inputs → 18 → 7 positions, ``7 × 32 = 224``
  features) and a DINO head (Caron et al. 2021, Sec. 3.1 / App.): ``Linear(224, 512)``,
  GELU, ``Linear(512, 64)``, L2 normalization (the bottleneck), then a weight-normalized
  ``Linear(64, 1024)`` without bias whose row norms are fixed at 1 (DINO's
  ``norm_last_layer``: ``W_k / ‖W_k‖``). ``features(x)`` is the backbone output, what the
  linear probe reads.
- :func:`near_teacher`: the student's initialization ``θ_s = √(1 − ε²) θ_t + ε θ_fresh``
  (the paper's "student initialized closely to the teacher"; ``ε = 1``: an independent
  fresh init, ``ε → 0``: the teacher itself); the mix keeps the variance of a layer whose
  two draws are independent and identically distributed.
- :class:`DinoLoss`: the DINO loss without centering, ``H(t, s) = −Σ_k softmax(t/τ_t)_k
  log softmax(s/τ_s)_k`` per example (τ_t = 0.04, τ_s = 0.1), the teacher's outputs ``t``
  passed as the training targets (computed once: the teacher is frozen and the inputs are
  unaugmented, so they equal its per-step forward), so the one training loop
  (:func:`weightlab.train.train`, or a population) trains the student.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError

__all__ = ["DinoLoss", "DinoNet", "distillation_targets", "near_teacher", "teacher_outputs"]

TEACHER_TEMP = 0.04
STUDENT_TEMP = 0.1


class DinoNet(nn.Module):
    """Backbone + DINO head (module docstring). Input ``(B, L)`` or ``(B, 1, L)``; output
    ``(B, out_dim)`` logits."""

    def __init__(
        self,
        length: int = 40,
        channels: int = 32,
        kernel: int = 5,
        hidden: int = 512,
        bottleneck: int = 64,
        out_dim: int = 1024,
    ) -> None:
        super().__init__()
        n = length
        for _ in range(2):
            n = (n - kernel) // 2 + 1
        if min(length, channels, kernel, hidden, bottleneck, out_dim) <= 0 or n <= 0:
            raise ConfigError(
                f"DinoNet: length {length} is too short for two stride-2 convolutions of "
                f"kernel {kernel}, or a size is not positive"
            )
        self.backbone = nn.Sequential(
            nn.Conv1d(1, channels, kernel, stride=2),
            nn.ReLU(),
            nn.Conv1d(channels, channels, kernel, stride=2),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.feature_dim = channels * n
        self.head = nn.Sequential(
            nn.Linear(self.feature_dim, hidden), nn.GELU(), nn.Linear(hidden, bottleneck)
        )
        self.last = nn.Linear(bottleneck, out_dim, bias=False)

    def features(self, x: Tensor) -> Tensor:
        """The backbone's ``(B, feature_dim)`` representation."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        z = F.normalize(self.head(self.features(x)), dim=-1)
        w = self.last.weight
        return F.linear(z, w / w.norm(dim=1, keepdim=True))


def near_teacher(
    teacher: Mapping[str, Tensor], fresh: Mapping[str, Tensor], eps: float
) -> dict[str, Tensor]:
    """``√(1 − ε²)·teacher + ε·fresh`` for every floating tensor (others copied from the
    teacher); ``ε ∈ [0, 1]``."""
    if not 0.0 <= eps <= 1.0:
        raise ConfigError(f"the student's distance eps must lie in [0, 1]; got {eps}")
    if set(teacher) != set(fresh):
        raise ConfigError("teacher and fresh init have different parameter names")
    a = math.sqrt(1.0 - eps * eps)
    return {
        k: (a * v + eps * fresh[k]) if v.is_floating_point() else v.clone()
        for k, v in teacher.items()
    }


class DinoLoss:
    """Per-example ``H(teacher, student)`` (module docstring); ``pred (..., B, K)``, target
    the teacher's logits ``(B, K)`` or ``(..., B, K)``. Returns ``pred.shape[:-1]``."""

    def __init__(self, teacher_temp: float = TEACHER_TEMP, student_temp: float = STUDENT_TEMP):
        if not (teacher_temp > 0 and student_temp > 0):
            raise ConfigError("DINO temperatures must be > 0")
        self.teacher_temp, self.student_temp = teacher_temp, student_temp

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        t = F.softmax(target / self.teacher_temp, dim=-1)
        return -(t * F.log_softmax(pred / self.student_temp, dim=-1)).sum(-1)


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, x: Tensor, chunk: int = 4096) -> Tensor:
    """The frozen teacher's logits on ``x`` (eval mode, restored)."""
    was = teacher.training
    teacher.eval()
    try:
        return torch.cat([teacher(x[i : i + chunk]) for i in range(0, len(x), chunk)])
    finally:
        teacher.train(was)


def distillation_targets(teacher: nn.Module, x: Tensor, x_test: Tensor, name: str) -> TaskData:
    """A regression task whose targets are the teacher's logits: train on ``x``, the
    held-out distillation loss on ``x_test``; no validation split."""
    empty = Split(x[:0], torch.empty(0, *teacher_outputs(teacher, x[:1]).shape[1:]))
    return TaskData(
        name,
        Split(x, teacher_outputs(teacher, x)),
        empty,
        Split(x_test, teacher_outputs(teacher, x_test)),
        0,
        "regression",
    )
