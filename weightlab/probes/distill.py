"""Trajectory-matching dataset distillation with smoothed experts.

Matching Training Trajectories (MTT; Cazenavette et al. 2022, "Dataset Distillation by
Matching Training Trajectories", Eq. 1-2) with the expert smoothing of Shen et al. (2023),
"Efficient Dataset Distillation through Alignment with Smooth and High-Quality Expert
Trajectories" (row [#17]), whose abstract says: "we introduce the integration of clipping
loss and gradient penalty to regulate the rate of parameter changes in expert trajectories".

1. Experts (:func:`train_experts`): networks trained on the real data through the one
   training loop (:func:`weightlab.train.train`) with ``snapshot_steps`` at every epoch,
   so each expert is a trajectory ``θ*_0, θ*_1, …, θ*_E``.
2. Smoothing (:class:`ExpertSmoothing`), applied to the experts only. What is implemented:

   - *clipping*: every expert update's gradient is rescaled to norm ≤ ``clip_norm``
     (``OptimConfig.clip_norm``), which caps the per-step parameter change;
   - *gradient penalty*: the expert's training loss is ``L + λ ‖∇_θ L‖²`` (double
     backward through the batch loss, :func:`gradient_penalty_loss`), which favours flat
     regions where parameters change slowly.

   The abstract does not define either term; this is our reading of "regulate the rate of
   parameter changes". Left out: the paper's representative initialization, balanced
   inner-loop loss, intermediate matching loss and weight perturbation.
3. Distillation (:func:`distill`): synthetic images ``X̃`` (labels fixed, ``ipc`` per
   class) and a learnable student learning rate ``α`` are optimised so that ``N`` SGD
   steps on ``X̃`` from an expert checkpoint ``θ*_t`` (``t`` drawn below
   ``max_start_epoch``) land near ``θ*_{t+M}``: MTT's Eq. 2,

   ``L = ‖θ̂_{t+N} − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖²``, ``θ̂_{i+1} = θ̂_i − α ∇ℓ(X̃; θ̂_i)``.

   The student is unrolled with :func:`torch.func.functional_call` and
   ``create_graph=True``, so ``X̃`` and ``α`` receive gradients through all ``N`` steps.

Every random draw comes from a seeded ``torch.Generator``; no global RNG.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError, DataError
from weightlab.progress import progress_bar
from weightlab.train.config import TrainConfig
from weightlab.train.order import steps_per_epoch

__all__ = [
    "DistilledSet",
    "ExpertSmoothing",
    "distill",
    "gradient_penalty_loss",
    "synthetic_task",
    "train_experts",
]


@dataclass(frozen=True)
class ExpertSmoothing:
    """Expert smoothing of Shen et al. (2023): gradient-norm clipping of every update
    (``clip_norm``, 0 disables) and a gradient-norm penalty ``λ ‖∇_θ L‖²`` on the expert's
    batch loss (``penalty``, 0 disables)."""

    clip_norm: float = 1.0
    penalty: float = 0.01

    def __post_init__(self) -> None:
        if not (self.clip_norm >= 0 and self.penalty >= 0):
            raise ConfigError("ExpertSmoothing clip_norm and penalty must be >= 0 (0 disables)")


def gradient_penalty_loss(
    model: nn.Module, penalty: float
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A per-example loss for :class:`TrainConfig` whose batch mean is
    ``CE + penalty · ‖∇_θ CE‖²`` (θ: ``model``'s trainable parameters; the gradient is
    kept in the graph, so the update differentiates the penalty too).

    Outside autograd (evaluation under ``no_grad``) it is plain cross-entropy."""
    params = [p for p in model.parameters() if p.requires_grad]

    def loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(pred, y, reduction="none")
        if penalty == 0 or not (torch.is_grad_enabled() and pred.requires_grad):
            return ce
        grads = torch.autograd.grad(ce.mean(), params, create_graph=True)
        gp = sum((g * g).sum() for g in grads)
        return ce + penalty * gp  # the mean adds penalty · ‖∇CE‖² once

    return loss


def train_experts(
    factory: Callable[[int], nn.Module],
    data: TaskData,
    cfg: TrainConfig,
    seeds: Sequence[int],
    *,
    smoothing: ExpertSmoothing | None = None,
    data_seed: int = 0,
    progress: bool = False,
) -> list[list[dict[str, torch.Tensor]]]:
    """Train one expert per seed on the real data and return each one's trajectory: the
    parameters (plain names, CPU) before training and after every epoch.

    Experts train through :func:`weightlab.train.train` (``snapshot_steps`` every epoch);
    ``smoothing`` sets ``clip_norm`` and the :func:`gradient_penalty_loss`."""
    from weightlab.train import train

    if data.kind != "classification":
        raise DataError(f"distillation needs a classification task; {data.name} is regression")
    spe = steps_per_epoch(len(data.train), cfg.batch_size)
    snaps = [e * spe for e in range(cfg.epochs + 1)]
    out = []
    bar = progress_bar(len(seeds), "experts", "network", progress)
    for s in seeds:
        model = factory(s)
        c = cfg
        if smoothing is not None:
            optim = replace(cfg.optim, clip_norm=smoothing.clip_norm)
            c = replace(cfg, optim=optim, loss=gradient_penalty_loss(model, smoothing.penalty))
        res = train(model, data, c, data_seed + s, seed=s, snapshot_steps=snaps)
        names = [n for n, _ in model.named_parameters()]
        out.append([{n: res.snapshots[t][n] for n in names} for t in snaps])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out


@dataclass(frozen=True)
class DistilledSet:
    """A distilled set: ``x`` ``(ipc · K, *input_shape)``, ``y`` labels, the learned
    student ``lr`` and the matching loss per iteration (``losses``)."""

    x: torch.Tensor
    y: torch.Tensor
    lr: float
    ipc: int
    losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"ipc": self.ipc, "lr": self.lr, "n": len(self.y), "losses": self.losses}


def _flat(state: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([state[n].reshape(-1) for n in names])


def distill(
    factory: Callable[[int], nn.Module],
    real: Split,
    num_classes: int,
    trajectories: Sequence[Sequence[dict[str, torch.Tensor]]],
    ipc: int,
    *,
    seed: int,
    iterations: int = 200,
    syn_steps: int = 10,
    expert_epochs: int = 2,
    max_start_epoch: int = 5,
    lr_img: float = 0.1,
    lr_lr: float = 1e-3,
    init_lr: float = 0.01,
    momentum: float = 0.5,
    progress: bool = False,
) -> DistilledSet:
    """MTT (Cazenavette et al. 2022, Algorithm 1): optimise ``ipc`` synthetic images per
    class and the student lr ``α`` so that ``syn_steps`` full-batch SGD steps on them from
    ``θ*_t`` match ``θ*_{t+expert_epochs}`` (normalised squared distance, Eq. 2).

    Synthetic images start as real images of their class drawn with ``seed``; images and
    ``α`` are updated by SGD (``lr_img``, ``lr_lr``, ``momentum``) as in MTT. The model's
    architecture comes from ``factory(seed)``; its weights are replaced by the experts'.

    Raises:
        ConfigError: ``ipc`` < 1, no trajectories, or a trajectory shorter than
            ``max_start_epoch + expert_epochs`` epochs.
        DataError: a class with fewer than ``ipc`` real examples.
    """
    if ipc < 1 or syn_steps < 1 or expert_epochs < 1 or max_start_epoch < 1 or iterations < 0:
        raise ConfigError("ipc, syn_steps, expert_epochs and max_start_epoch must be >= 1")
    if not trajectories:
        raise ConfigError("distill needs at least one expert trajectory; train_experts first")
    need = max_start_epoch + expert_epochs
    short = min(len(t) - 1 for t in trajectories)
    if short < need:
        raise ConfigError(
            f"expert trajectories have {short} epochs, but max_start_epoch + expert_epochs = "
            f"{need}; train experts longer or lower them"
        )
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c in range(num_classes):
        idx = (real.y == c).nonzero().reshape(-1)
        if len(idx) < ipc:
            raise DataError(f"class {c} has {len(idx)} real examples, fewer than ipc={ipc}")
        pick = idx[torch.randperm(len(idx), generator=g)[:ipc]]
        xs.append(real.x[pick])
        ys.append(real.y[pick])
    x_syn = torch.cat(xs).detach().clone().requires_grad_(True)
    y_syn = torch.cat(ys)
    lr_syn = torch.tensor(float(init_lr), dtype=x_syn.dtype, requires_grad=True)
    model = factory(seed)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    opt_x = torch.optim.SGD([x_syn], lr=lr_img, momentum=momentum)
    opt_lr = torch.optim.SGD([lr_syn], lr=lr_lr, momentum=momentum)
    losses: list[float] = []
    bar = progress_bar(iterations, f"distill ipc={ipc}", "iteration", progress)
    for _ in range(iterations):
        e = int(torch.randint(len(trajectories), (1,), generator=g))
        t = int(torch.randint(max_start_epoch, (1,), generator=g))
        traj = trajectories[e]
        start = _flat(traj[t], names).to(x_syn.dtype)
        target = _flat(traj[t + expert_epochs], names).to(x_syn.dtype)
        theta = start.clone().requires_grad_(True)
        for _ in range(syn_steps):
            params = {
                n: p.view(s) for n, p, s in zip(names, theta.split(sizes), shapes, strict=True)
            }
            out = torch.func.functional_call(model, params, (x_syn,))
            ce = F.cross_entropy(out, y_syn)
            (grad,) = torch.autograd.grad(ce, theta, create_graph=True)
            theta = theta - lr_syn * grad
        loss = (theta - target).pow(2).sum() / (start - target).pow(2).sum().clamp_min(1e-12)
        opt_x.zero_grad(set_to_none=True)
        opt_lr.zero_grad(set_to_none=True)
        loss.backward()
        opt_x.step()
        opt_lr.step()
        with torch.no_grad():
            lr_syn.clamp_(min=1e-4)
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return DistilledSet(x_syn.detach().clone(), y_syn.clone(), float(lr_syn.detach()), ipc, losses)


def synthetic_task(data: TaskData, x: torch.Tensor, y: torch.Tensor, name: str) -> TaskData:
    """``data`` with its train split replaced by ``(x, y)`` (val and test stay real)."""
    return TaskData(name, Split(x, y), data.val, data.test, data.num_classes, data.kind)
