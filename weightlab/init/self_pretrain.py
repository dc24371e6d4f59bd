"""Self-pretraining: a data-driven init from the downstream task's own inputs (Amos, Berant &
Gupta 2023, "Never Train from Scratch: Fair Comparison of Long-Sequence Models Requires
Data-Driven Priors", row [#30]).

The paper pretrains each model with a standard denoising objective "using only the downstream
task data" before the supervised run. Here the objective is masked denoising (BERT-style, as
the paper uses for bidirectional models): a random share of each input sequence's tokens is
masked and the model predicts the original values there, with the squared error counted only
at the masked positions:

    L(x, M) = Σ_{t ∈ M} (f(x̃)_t − x_t)² / |M|,   x̃_t = (x_t·(1 − m_t), m_t),

``|M| = round(mask_fraction · L)`` positions per sequence, drawn uniformly without
replacement. The denoising task is an ordinary regression :class:`~weightlab.data.TaskData`
trained by the one loop (or a population of seeds) with a callable loss
(:func:`masked_mse`):

- inputs ``(K·n, 2, L)``: ``copies = K`` masked copies of the ``n`` training inputs, each with
  its own masks drawn from ``mask_seed`` (so the model sees K different masks of every
  sequence; one epoch of this task is K passes over the inputs);
- targets ``(K·n, L)``: the original value at masked positions and NaN elsewhere, NaN marking
  "not scored" (the loop's evaluation therefore reports a NaN R² for this task: read its loss);
- val and test: the same split (the loop needs both), one further masked copy of the first
  ``min(n, eval_examples)`` training inputs with fresh masks. Nothing but the training inputs
  is ever read.

The model is a :class:`~weightlab.models.sequence.SequenceModel` with ``head="denoise"``; the
result is its backbone state (:func:`~weightlab.models.sequence.backbone_state`), which loads
into the same architecture with ``head="classify"``
(:func:`~weightlab.models.sequence.load_backbone`, :func:`pretrained_init`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from weightlab.core.snapshots import take_snapshot
from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator
from weightlab.train.config import OptimConfig, TrainConfig
from weightlab.train.loop import TrainResult

OBJECTIVES = ("masked_denoise",)


def _check(objective: str, mask_fraction: float, x: torch.Tensor, copies: int) -> int:
    """Validate the arguments; return the masked tokens per sequence."""
    if objective not in OBJECTIVES:
        raise ConfigError(
            f"unknown self-pretraining objective {objective!r}; choose one of: "
            f"{', '.join(OBJECTIVES)}"
        )
    if not isinstance(mask_fraction, int | float) or not 0 < mask_fraction < 1:
        raise ConfigError(f"mask_fraction must lie in (0, 1), got {mask_fraction!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(
            f"train_inputs must be a float tensor (n, L) of n sequences of L values, got {shape}; "
            "pass the task's data.train.x"
        )
    if x.shape[0] < 1 or x.shape[1] < 2:
        raise ConfigError(
            f"train_inputs {tuple(x.shape)} needs at least one sequence of length >= 2"
        )
    if copies < 1:
        raise ConfigError(f"copies must be >= 1, got {copies}")
    k = round(mask_fraction * x.shape[1])
    if not 1 <= k < x.shape[1]:
        raise ConfigError(
            f"mask_fraction {mask_fraction} masks {k} of {x.shape[1]} tokens; choose a fraction "
            "that masks at least one token and leaves one"
        )
    return k


def random_masks(n: int, length: int, k: int, g: torch.Generator) -> torch.Tensor:
    """``(n, length)`` 0/1 masks with exactly ``k`` ones per row, positions uniform without
    replacement (the ``k`` smallest of ``length`` uniform draws per row)."""
    u = torch.rand(n, length, generator=g, dtype=torch.float64)
    idx = u.argsort(dim=1)[:, :k]
    return torch.zeros(n, length).scatter_(1, idx, 1.0)


def mask_inputs(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs (n, 2, L), targets (n, L))`` for one masked copy: inputs hold the values with
    masked ones zeroed and the mask; targets the original values where masked, NaN elsewhere."""
    m = mask.to(x.dtype)
    inputs = torch.stack((x * (1 - m), m), dim=1)
    targets = torch.where(m.bool(), x, torch.full_like(x, float("nan")))
    return inputs, targets


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example mean squared error over the scored (non-NaN) positions of ``target``:
    ``pred (..., B, L)``, ``target (B, L)`` or ``(..., B, L)``; returns ``pred.shape[:-1]``.
    NaN targets get neither loss nor gradient (the difference is taken against 0 there and
    then dropped, so no NaN reaches the backward pass)."""
    keep = ~torch.isnan(target)
    diff = torch.where(keep, pred - torch.nan_to_num(target), torch.zeros((), dtype=pred.dtype))
    count = keep.sum(-1).clamp(min=1).to(pred.dtype)
    return diff.square().sum(-1) / count


def denoising_task(
    train_inputs: torch.Tensor,
    *,
    mask_fraction: float = 0.25,
    copies: int = 4,
    mask_seed: int = 0,
    eval_examples: int = 256,
    objective: str = "masked_denoise",
) -> TaskData:
    """The masked-denoising regression task built from ``train_inputs (n, L)`` only (see the
    module docstring). Masks come from ``generator(derive_seed("self-pretrain", mask_seed,
    copy))``, one generator per copy, so a copy's masks do not depend on ``copies``."""
    x = train_inputs
    k = _check(objective, mask_fraction, x, copies)
    n, length = x.shape
    xs, ys = [], []
    for c in range(copies):
        g = generator(derive_seed("self-pretrain", mask_seed, c))
        inp, tgt = mask_inputs(x, random_masks(n, length, k, g).to(x.device))
        xs.append(inp)
        ys.append(tgt)
    m = min(n, eval_examples)
    g = generator(derive_seed("self-pretrain", mask_seed, "eval"))
    vx, vy = mask_inputs(x[:m], random_masks(m, length, k, g).to(x.device))
    held = Split(vx, vy)
    return TaskData(
        "masked_denoise",
        Split(torch.cat(xs), torch.cat(ys)),
        held,
        held,
        0,
        "regression",
        (length,),
        {"mask_fraction": float(mask_fraction), "masked_tokens": k, "copies": copies},
    )


@dataclass
class SelfPretrainResult:
    """``states[i]``: the backbone state (``backbone.*``, CPU) of seed ``seeds[i]`` after
    pretraining; ``results[i]``: its :class:`~weightlab.train.loop.TrainResult` (masked MSE
    per evaluation: ``train_loss``, ``val_loss``)."""

    seeds: list[int]
    states: list[dict[str, torch.Tensor]]
    results: list[TrainResult] = field(default_factory=list)


def self_pretrain(
    model: nn.Module | Callable[[int], nn.Module],
    train_inputs: torch.Tensor,
    objective: str = "masked_denoise",
    *,
    mask_fraction: float = 0.25,
    copies: int = 4,
    epochs: int = 5,
    batch_size: int = 128,
    optim: OptimConfig | None = None,
    seeds: Sequence[int] = (0,),
    mask_seed: int = 0,
    data_seed: int = 0,
    eval_examples: int = 256,
    engine: str = "population",
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> SelfPretrainResult:
    """Pretrain by masked denoising on ``train_inputs`` and return the backbone states to use
    as init (Amos et al. 2023).

    Args:
        model: a :class:`~weightlab.models.sequence.SequenceModel` with ``head="denoise"``
            (trained in place by :func:`weightlab.train.train`; ``seeds`` gives its dropout
            seed only), or a ``seed -> model`` factory of such models (e.g.
            ``model_factory(SeqTransformer, head="denoise")``), whose ``seeds`` train as one
            population (:func:`weightlab.recipes.members.train_members`, ``engine``).
        train_inputs: the task's training inputs ``(n, L)`` (e.g. ``data.train.x``).
        objective: ``"masked_denoise"``.
        mask_fraction: share of tokens masked per sequence, in ``(0, 1)``.
        copies: masked copies of the inputs per epoch (fresh masks for each pass).
        epochs: epochs of the denoising task (``epochs · copies`` passes over the inputs).
        batch_size, optim: the optimizer settings (default Adam, lr 1e-3).
        mask_seed: seeds the masks; data_seed: the batch order (member ``i`` uses
            ``derive_seed(data_seed, seeds[i])``).

    Raises:
        ConfigError: an unknown objective, ``mask_fraction`` outside ``(0, 1)``, inputs that
            are not ``(n, L)`` floats, or a model without a denoising head.
    """
    from weightlab.models.sequence import SequenceModel, backbone_state
    from weightlab.population import MemberSpec
    from weightlab.recipes.members import train_members

    task = denoising_task(
        train_inputs,
        mask_fraction=mask_fraction,
        copies=copies,
        mask_seed=mask_seed,
        eval_examples=eval_examples,
        objective=objective,
    )
    if batch_size > len(task.train):
        raise ConfigError(
            f"batch_size {batch_size} exceeds the {len(task.train)} denoising examples"
        )
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("self_pretrain needs at least one seed")
    cfg = TrainConfig(epochs, batch_size, 0, optim or OptimConfig("adam", lr=1e-3), loss=masked_mse)
    is_module = isinstance(model, nn.Module)
    probe = model if is_module else model(seeds[0])
    if not isinstance(probe, SequenceModel) or probe.head_kind != "denoise":
        raise ConfigError(
            "self_pretrain needs a weightlab.models.sequence model with head='denoise' "
            "(or a factory of them); build it with head='denoise'"
        )
    if probe.length != task.output_shape[0]:
        raise ConfigError(
            f"the model reads {probe.length} tokens but train_inputs have "
            f"{task.output_shape[0]}; build it with length={task.output_shape[0]}"
        )
    if is_module:
        from weightlab.train.loop import train

        if len(seeds) != 1:
            raise ConfigError("a single model pretrains with one seed; pass a factory for more")
        result = train(
            model,
            task.to(device),
            cfg,
            derive_seed(data_seed, seeds[0]),
            seed=seeds[0],
            progress=progress,
        )
        state = backbone_state({k: v.cpu() for k, v in take_snapshot(model).items()})
        return SelfPretrainResult(seeds, [state], [result])
    specs = [MemberSpec(seed=s, data_seed=derive_seed(data_seed, s)) for s in seeds]
    results, finals = train_members(
        model, specs, task.to(device), cfg, engine=engine, device=device, progress=progress
    )
    return SelfPretrainResult(seeds, [backbone_state(f) for f in finals], results)


def pretrained_init(
    classifier_factory: Callable[[int], nn.Module], seed: int, state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The full init snapshot of ``classifier_factory(seed)`` with its backbone replaced by
    ``state`` (its head keeps the factory's init): a ``MemberSpec.init_state``."""
    from weightlab.models.sequence import load_backbone

    return take_snapshot(load_backbone(classifier_factory(seed), state))


__all__ = [
    "OBJECTIVES",
    "SelfPretrainResult",
    "denoising_task",
    "mask_inputs",
    "masked_mse",
    "pretrained_init",
    "random_masks",
    "self_pretrain",
]
