"""Bonsai / Rich Feature Construction (RFC): Zhang, Bottou & Vincent (2022), "Rich Feature
Construction for the Optimization-Generalization Dilemma" (row [#14]).

"During discovery episodes, we craft a multi-objective optimization criterion and its
associated datasets in a manner that prevents the network from using the features
constructed in the previous iterations. During synthesis episodes, we use knowledge
distillation to force the network to simultaneously represent all the previously
discovered features."

- Discovery round 1 is ERM. Each trained network ``f_i`` splits the training set into the
  examples it classifies correctly (``A_i``) and wrongly (``B_i``). Discovery round ``k``
  minimizes the robust criterion ``max_{i<k} ½(L(A_i) + L(B_i))``: on each reweighted set
  ``A_i ∪ B_i`` the features of ``f_i`` are useless (right on one half, wrong on the other),
  so the new network has to find others (:func:`discovery_loss`, estimated per batch).
- Synthesis: one network with a shared backbone and one head per discovered network is
  distilled from all of them at once (per-head KL divergence of softmax outputs,
  :func:`distill_loss`); its backbone is the Bonsai initialization.

All training goes through :func:`weightlab.train.train` with a callable loss. The loop's
loss sees only ``(pred, target)``, so per-example group or environment ids travel in the
integer target: ``y_enc = y + C·g`` (:func:`encode_groups`); validation and test splits keep
plain labels (``g = 0``), so the loop's accuracies stay correct.

Also here: the V-REx penalty (Krueger et al. 2021, "Out-of-Distribution Generalization via
Risk Extrapolation", Eq. 8): ``R_VREx = β·Var(R_1..R_m) + Σ_e R_e``, with ``R_e`` the risk of
training environment ``e`` (:func:`vrex_loss`; the sum is taken as a mean over
environments, a constant factor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from weightlab.core.snapshots import take_snapshot
from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.train.config import TrainConfig
from weightlab.train.loop import train

__all__ = [
    "BonsaiResult",
    "discovery_loss",
    "distill_loss",
    "encode_groups",
    "group_risks",
    "rich_feature_construction",
    "vrex_loss",
]


def encode_groups(y: torch.Tensor, groups: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Integer targets carrying a group id: ``y + num_classes·g``."""
    if groups.shape != y.shape or bool((groups < 0).any()):
        raise ConfigError("group ids must be non-negative and match the labels' shape")
    return y + num_classes * groups.to(y.dtype)


def group_risks(
    pred: torch.Tensor, y_enc: torch.Tensor, num_classes: int, num_groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of each group in the batch: ``(..., G)`` risks and ``(..., G)``
    presence flags (a group absent from the batch has risk 0 and flag False).
    ``pred (..., B, C)``, ``y_enc (..., B)`` from :func:`encode_groups`."""
    y, g = y_enc % num_classes, y_enc // num_classes
    lead = pred.shape[:-1]
    y, g = y.expand(lead), g.expand(lead)
    ce = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), y.reshape(-1), reduction="none")
    ce = ce.view(lead)
    onehot = F.one_hot(g, num_groups).to(pred.dtype)  # (..., B, G)
    count = onehot.sum(-2)
    risks = (ce.unsqueeze(-1) * onehot).sum(-2) / count.clamp_min(1)
    return risks, count > 0


def vrex_loss(num_classes: int, num_envs: int, beta: float) -> Callable:
    """V-REx (Krueger et al. 2021, Eq. 8) as a loop loss: ``mean_e R_e + β·Var_e(R_e)``
    over the environments present in the batch (population variance), returned once per
    example (its batch mean is the objective). ``beta = 0`` is ERM. Targets are encoded
    with the environment as group (:func:`encode_groups`)."""
    if beta < 0:
        raise ConfigError(f"the V-REx penalty weight must be >= 0, got {beta}")

    def loss(pred: torch.Tensor, y_enc: torch.Tensor) -> torch.Tensor:
        risks, present = group_risks(pred, y_enc, num_classes, num_envs)
        w = present.to(pred.dtype)
        k = w.sum(-1, keepdim=True).clamp_min(1)
        mean = (risks * w).sum(-1, keepdim=True) / k
        var = ((risks - mean).square() * w).sum(-1, keepdim=True) / k
        total = mean + beta * var  # (..., 1)
        return total.expand(pred.shape[:-1])

    return loss


def discovery_loss(num_classes: int, rounds_before: int) -> Callable:
    """RFC's discovery criterion ``max_{i<k} ½(L(A_i) + L(B_i))`` per batch. The group id
    ``g`` has bit ``i`` set when network ``i`` got the example wrong (``B_i``)."""

    def loss(pred: torch.Tensor, y_enc: torch.Tensor) -> torch.Tensor:
        y, g = y_enc % num_classes, y_enc // num_classes
        lead = pred.shape[:-1]
        ce = F.cross_entropy(
            pred.reshape(-1, pred.shape[-1]), y.expand(lead).reshape(-1), reduction="none"
        ).view(lead)
        g = g.expand(lead)
        per_round = []
        for i in range(rounds_before):
            wrong = ((g >> i) & 1).to(pred.dtype)
            parts = []
            for m in (1 - wrong, wrong):
                n = m.sum(-1)
                parts.append(torch.where(n > 0, (ce * m).sum(-1) / n.clamp_min(1), 0.0))
            n_parts = torch.stack([(1 - wrong).sum(-1) > 0, wrong.sum(-1) > 0]).to(pred.dtype)
            per_round.append((parts[0] + parts[1]) / n_parts.sum(0).clamp_min(1))
        total = torch.stack(per_round, -1).amax(-1, keepdim=True)
        return total.expand(lead)

    return loss


def distill_loss(num_heads: int, num_classes: int, temperature: float = 1.0) -> Callable:
    """Synthesis: ``Σ_k KL(softmax(t_k/T) ‖ softmax(s_k/T))`` per example, student outputs
    and teacher logits ``(..., B, K·C)`` split into ``K`` heads of ``C`` classes."""

    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        s = pred.unflatten(-1, (num_heads, num_classes)) / temperature
        t = target.unflatten(-1, (num_heads, num_classes)) / temperature
        p_t = t.softmax(-1)
        kl = (p_t * (t.log_softmax(-1) - s.log_softmax(-1))).sum(-1)
        return kl.sum(-1)

    return loss


@dataclass
class BonsaiResult:
    """What :func:`rich_feature_construction` returns.

    Attributes:
        backbone: the synthesized network's weights (plain names, CPU), heads included.
        discovered: each discovery round's trained weights.
        round_train_acc: each discovered network's training accuracy.
        synthesis_fidelity: per head, the share of training examples where the synthesized
            head agrees with its teacher's prediction.
    """

    backbone: dict[str, torch.Tensor]
    discovered: list[dict[str, torch.Tensor]]
    round_train_acc: list[float]
    synthesis_fidelity: list[float]


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was = model.training
    model.eval()
    try:
        return model(x)
    finally:
        model.train(was)


def rich_feature_construction(
    factory: Callable[[int], nn.Module],
    synth_factory: Callable[[int], nn.Module],
    data: TaskData,
    cfg: TrainConfig,
    rounds: int,
    seed: int,
    data_seed: int = 0,
    synth_cfg: TrainConfig | None = None,
) -> BonsaiResult:
    """Bonsai (RFC): ``rounds`` discovery episodes, then one synthesis episode.

    Args:
        factory: ``seed -> model`` with ``C = data.num_classes`` outputs (discovery nets).
        synth_factory: ``seed -> model`` with ``rounds·C`` outputs (one head per round) and
            the same backbone parameter names as ``factory``'s models.
        data: classification task (plain labels).
        cfg: training config of each discovery episode (its ``loss`` is replaced).
        rounds: number of discovery episodes (>= 1; the first is ERM).
        seed: init seed; round ``i`` uses ``seed + i``, synthesis ``seed + rounds``.
        synth_cfg: config of the synthesis episode (default ``cfg``).
    """
    if rounds < 1:
        raise ConfigError(f"Bonsai needs >= 1 discovery round, got {rounds}")
    if data.kind != "classification":
        raise ConfigError("Bonsai's discovery episodes need a classification task")
    c = data.num_classes
    x, y = data.train.x, data.train.y
    wrong_bits = torch.zeros_like(y)
    discovered, accs, teachers, val_teachers = [], [], [], []
    for r in range(rounds):
        model = factory(seed + r).to(data.device)
        if r == 0:
            loss = vrex_loss(c, 1, 0.0)  # ERM through the same per-group machinery
            y_train = y
        else:
            loss = discovery_loss(c, r)
            y_train = encode_groups(y, wrong_bits, c)
        episode = replace(data, train=Split(x, y_train))
        train(model, episode, replace(cfg, loss=loss), data_seed, seed=seed + r)
        logits = _predict(model, x)
        wrong = (logits.argmax(-1) != y).long()
        wrong_bits = wrong_bits | (wrong << r)
        accs.append(float(1 - wrong.double().mean()))
        discovered.append(take_snapshot(model))
        teachers.append(logits)
        val_teachers.append(_predict(model, data.val.x))
    target = torch.cat(teachers, -1)
    synth = synth_factory(seed + rounds).to(data.device)
    syn_task = TaskData(
        "bonsai-synthesis",
        Split(x, target),
        Split(data.val.x, torch.cat(val_teachers, -1)),
        Split(x[:1], target[:1]),
        0,
        kind="regression",
    )
    scfg = synth_cfg or cfg
    train(synth, syn_task, replace(scfg, loss=distill_loss(rounds, c)), data_seed, seed=seed)
    out = _predict(synth, x).unflatten(-1, (rounds, c)).argmax(-1)
    fidelity = [float((out[:, k] == teachers[k].argmax(-1)).double().mean()) for k in range(rounds)]
    return BonsaiResult(take_snapshot(synth), discovered, accs, fidelity)
