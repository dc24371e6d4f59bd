"""Stage-wise weight sharing (SWS) learngenes: Xia et al. (2024), "Exploring Learngene via
Stage-wise Weight Sharing for Initializing Variable-sized Models" (row [#12]).

The paper learns "one compact part termed as learngene" through "an auxiliary model
comprising multiple stages where the layer weights in each stage are shared, after which
we train it through distillation", then expands "these learngene layers containing stage
information at their corresponding stage to initialize models of variable depths".

Here, with residual MLP blocks ``x + W₂ relu(W₁ x)`` in place of the paper's ViT blocks:

- :class:`StageSharedNet`: stem ``in -> d``; ``S`` stages, stage ``s`` one block applied
  ``r_s`` times (its weights shared across the applications); head ``d -> classes``.
- :class:`ResidualMLP`: the plain net of ``depth`` untied blocks with the same ``stem`` /
  ``head`` names (a :class:`~weightlab.models.resmlp.ResMLP`, blocks ``blocks.{i}``).
- :meth:`StageSharedNet.expand_to`: a :class:`ResidualMLP` of ``depth`` blocks whose stage
  ``s`` holds ``depth / S`` untied copies of the learngene block ``s``; stem and head copied.
  :func:`expand_blocks` does the same from any blocks (the teacher-block control).
- :class:`DistillationLoss`: ``½ CE(y) + ½ τ² KL(p_teacher^τ ‖ p_student^τ)`` per example
  (Hinton et al. 2015, Eq. 2 with the usual τ² gradient scale; τ = 2), a per-example loss
  for the training loop. The loop passes only ``(pred, target)`` to a loss, so the
  teacher's logits travel in the target: :func:`distillation_task` packs
  ``[label, teacher logits]`` into the train split's ``y`` (float), and the loss falls back
  to plain cross-entropy on integer labels (the validation and test splits).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.models.resmlp import ResBlock, ResMLP


class ResidualMLP(ResMLP):
    """``depth`` untied residual blocks ``h + fc2(relu(fc1(h)))`` of width ``width`` between a
    linear stem ``in_features -> width`` and a linear head ``width -> num_classes``.

    Parameter names: ``stem.*``, ``blocks.{i}.fc1.*``, ``blocks.{i}.fc2.*``, ``head.*``
    (those of :class:`~weightlab.models.resmlp.ResMLP`, which it is)."""

    def __init__(
        self, depth: int, in_features: int = 40, width: int = 128, num_classes: int = 10
    ) -> None:
        super().__init__(in_features, width, depth, num_classes)


def _check_repeats(repeats: Sequence[int]) -> tuple[int, ...]:
    reps = tuple(int(r) for r in repeats)
    if not reps or any(r <= 0 for r in reps):
        raise ConfigError(
            f"StageSharedNet needs at least one stage and >= 1 application per stage; "
            f"got repeats={list(reps)}"
        )
    return reps


class StageSharedNet(nn.Module):
    """The SWS auxiliary model: stem, ``len(repeats)`` stages, head.

    Stage ``s`` is one :class:`~weightlab.models.resmlp.ResBlock` (``stages.{s}.fc1`` /
    ``fc2``) applied ``repeats[s]`` times, so the net has the depth of a
    ``sum(repeats)``-block :class:`ResidualMLP` and the parameters of ``len(repeats)`` blocks.
    """

    def __init__(
        self,
        repeats: Sequence[int] = (4, 4, 4),
        in_features: int = 40,
        width: int = 128,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.repeats = _check_repeats(repeats)
        if min(in_features, width, num_classes) <= 0:
            raise ConfigError(
                f"StageSharedNet needs positive sizes; got in={in_features}, width={width}, "
                f"classes={num_classes}"
            )
        self.in_features, self.width, self.num_classes = in_features, width, num_classes
        self.stem = nn.Linear(in_features, width)
        self.stages = nn.ModuleList(ResBlock(width, width) for _ in self.repeats)
        self.head = nn.Linear(width, num_classes)

    @property
    def num_stages(self) -> int:
        return len(self.repeats)

    @property
    def depth(self) -> int:
        """Block applications in a forward pass (the depth it mimics)."""
        return sum(self.repeats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x.flatten(1))
        for block, r in zip(self.stages, self.repeats, strict=True):
            for _ in range(r):
                h = block(h)
        return self.head(h)

    def expand_to(self, depth: int) -> ResidualMLP:
        """A :class:`ResidualMLP` of ``depth`` blocks initialized from the learngene: stage
        ``s`` gets ``depth / S`` untied copies of block ``s``; stem and head are copied.

        Raises:
            ConfigError: ``depth`` is not a positive multiple of the stage count.
        """
        return expand_blocks(list(self.stages), self.stem, self.head, depth)


def expand_blocks(
    blocks: Sequence[ResBlock], stem: nn.Linear, head: nn.Linear, depth: int
) -> ResidualMLP:
    """A :class:`ResidualMLP` of ``depth`` blocks, ``depth / len(blocks)`` consecutive untied
    copies of each of ``blocks`` in order, with copies of ``stem`` and ``head``.

    Raises:
        ConfigError: ``depth`` is not a positive multiple of ``len(blocks)``.
    """
    s = len(blocks)
    if s == 0:
        raise ConfigError("expand_blocks needs at least one block to expand")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth <= 0 or depth % s:
        raise ConfigError(
            f"cannot expand {s} stages to depth {depth!r}: the depth must be a positive "
            f"multiple of the stage count (e.g. {s}, {2 * s} or {3 * s})"
        )
    width = stem.out_features
    net = ResidualMLP(depth, stem.in_features, width, head.out_features)
    net.to(device=stem.weight.device, dtype=stem.weight.dtype)
    per = depth // s
    with torch.no_grad():
        net.stem.load_state_dict(stem.state_dict())
        net.head.load_state_dict(head.state_dict())
        for i, block in enumerate(net.blocks):
            block.load_state_dict(blocks[i // per].state_dict())
    return net


def teacher_block_init(teacher: ResMLP, indices: Sequence[int], depth: int) -> ResidualMLP:
    """The control without the learngene's learning process: blocks ``indices`` of a trained
    ``teacher`` (one per stage, in order) expanded like :meth:`StageSharedNet.expand_to`,
    with the teacher's stem and head."""
    n = len(teacher.blocks)
    bad = [i for i in indices if not 0 <= int(i) < n]
    if bad:
        raise ConfigError(f"teacher blocks {bad} do not exist; the teacher has blocks 0..{n - 1}")
    return expand_blocks(
        [teacher.blocks[int(i)] for i in indices], teacher.stem, teacher.head, depth
    )


class DistillationLoss:
    """Per-example knowledge-distillation loss (Hinton et al. 2015, "Distilling the Knowledge
    in a Neural Network", Sec. 2), as SWS trains its auxiliary model:

        ``½ · CE(z_s, y) + ½ · τ² · Σ_c p_t,c (log p_t,c − log p_s,c)``,
        ``p_t = softmax(z_t / τ)``, ``p_s = softmax(z_s / τ)``.

    ``target``: float ``(..., B, 1 + C)`` packed by :func:`pack_soft_targets` (label, then
    the teacher's logits ``z_t``), or int64 labels ``(..., B)`` (plain CE, for evaluation
    splits). ``pred``: student logits ``(..., B, C)``. Returns ``pred.shape[:-1]``.
    """

    def __init__(self, tau: float = 2.0, alpha: float = 0.5) -> None:
        if not (tau > 0 and 0 <= alpha <= 1):
            raise ConfigError(f"distillation needs tau > 0 and alpha in [0, 1]; got {tau}, {alpha}")
        self.tau, self.alpha = float(tau), float(alpha)

    def __repr__(self) -> str:  # stable text in run manifests
        return f"DistillationLoss(tau={self.tau:g}, alpha={self.alpha:g})"

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(pred, dim=-1)
        lead = pred.shape[:-1]
        if not target.is_floating_point():
            return -logp.gather(-1, target.expand(lead).unsqueeze(-1)).squeeze(-1)
        c = pred.shape[-1]
        if target.shape[-1] != c + 1:
            raise ConfigError(
                f"distillation targets have {target.shape[-1]} columns; expected 1 + {c} "
                "(label, teacher logits): build them with pack_soft_targets"
            )
        label = target[..., 0].round().long().expand(lead)
        ce = -logp.gather(-1, label.unsqueeze(-1)).squeeze(-1)
        t = self.tau
        log_pt = F.log_softmax(target[..., 1:].to(pred.dtype) / t, dim=-1)
        log_ps = F.log_softmax(pred / t, dim=-1)
        kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1)
        return (1 - self.alpha) * ce + self.alpha * t * t * kl


def pack_soft_targets(labels: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """``[label, teacher logits]`` per example: float ``(n, 1 + C)`` (labels < 2²⁴ are exact
    in float32), the target :class:`DistillationLoss` reads."""
    if labels.shape[0] != teacher_logits.shape[0] or teacher_logits.ndim != 2:
        raise ConfigError(
            f"teacher logits of shape {tuple(teacher_logits.shape)} do not match "
            f"{labels.shape[0]} labels; pass (n, classes) logits"
        )
    lab = labels.to(teacher_logits.dtype).unsqueeze(-1)
    return torch.cat([lab, teacher_logits.detach()], dim=-1)


@torch.no_grad()
def teacher_logits(teacher: nn.Module, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """The teacher's logits on ``x`` in eval mode (mode restored), computed once: the train
    split is fixed and unaugmented, so they equal the per-step teacher forward."""
    was = teacher.training
    teacher.eval()
    try:
        return torch.cat([teacher(x[i : i + chunk]) for i in range(0, len(x), chunk)])
    finally:
        teacher.train(was)


def distillation_task(data: TaskData, teacher: nn.Module) -> TaskData:
    """``data`` with the train split's targets replaced by ``[label, teacher logits]``
    (:func:`pack_soft_targets`); validation and test keep their integer labels."""
    if data.kind != "classification":
        raise ConfigError("distillation needs a classification task")
    z = teacher_logits(teacher, data.train.x).float()
    packed = pack_soft_targets(data.train.y, z)
    return TaskData(
        data.name,
        Split(data.train.x, packed),
        data.val,
        data.test,
        data.num_classes,
        data.kind,
        data.output_shape,
        data.info,
    )


def block_params(width: int) -> int:
    """Parameters of one residual block ``width -> width -> width`` (weights and biases)."""
    return 2 * (width * width + width)


def forward_flops(in_features: int, width: int, num_classes: int, blocks: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one example's forward through a stem, ``blocks``
    block applications and a head; biases and ReLUs left out."""
    return 2 * (in_features * width + blocks * 2 * width * width + width * num_classes)


__all__ = [
    "DistillationLoss",
    "ResidualMLP",
    "StageSharedNet",
    "block_params",
    "distillation_task",
    "expand_blocks",
    "forward_flops",
    "pack_soft_targets",
    "teacher_block_init",
    "teacher_logits",
]
