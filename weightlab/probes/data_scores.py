"""Data scores: EL2N and GraNd (Paul, Ganguli & Dziugaite 2021, "Deep Learning on a Data
Diet: Finding Important Examples Early in Training", Sec. 2), and static data pruning by
score.

For a network with weights ``w_t`` at training step ``t``, softmax output ``p(w_t, x)`` and
one-hot label ``y``:

- **GraNd** (Sec. 2, Def. "GraNd score"): ``χ_t(x, y) = E_w ‖g_t(x, y)‖₂``, the norm of the
  per-example loss gradient ``g_t = ∇_w ℓ(p(w_t, x), y)`` (cross-entropy, all weights),
  averaged over independent initializations ``w``;
- **EL2N** (Sec. 2, Def. "EL2N score"): ``E_w ‖p(w_t, x) − y‖₂``, forward passes only.

Both are computed "early in training" by a few seeds' networks and averaged; high scores
mark hard examples. Per-example gradient norms (:func:`grand`) come three ways
(``"auto"``, the default, takes the closed form where it applies, else vmap):

- ``"vmap"``: ``torch.func.vmap(torch.func.grad(ℓ))`` over examples, any module;
- ``"closed_form"``: for networks whose parameters all sit in ``nn.Linear`` layers applied
  once to ``(B, in)`` inputs (MLPs): the per-example weight gradient of a Linear layer is
  the outer product ``δ aᵀ`` of the gradient ``δ`` at its output and its input ``a``, so
  ``‖δ aᵀ‖_F = ‖δ‖ · ‖a‖`` and the bias gradient's norm is ``‖δ‖``; one forward and one
  backward for the whole batch give every ``δ`` (the loss is a sum of per-example terms);
- ``"loop"``: one backward per example (the plain reference).

:func:`early_scores` trains the scoring seeds as one population
(:func:`weightlab.recipes.members.train_members`), takes their weights at the scoring step
and averages the scores; :func:`prune_by_score` keeps the hardest, the easiest or a random
subset. Probes never change the model: scores run on the modules as given, in eval mode
(restored after), without touching ``.grad``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from weightlab.data.task import TaskData
from weightlab.errors import ConfigError
from weightlab.progress import progress_bar
from weightlab.seeding import generator

__all__ = [
    "GRAND_METHODS",
    "PRUNE_MODES",
    "SCORES",
    "DataScores",
    "early_scores",
    "el2n",
    "el2n_scores",
    "grand",
    "grand_scores",
    "prune_by_score",
]

SCORES = ("el2n", "grand")
GRAND_METHODS = ("auto", "vmap", "closed_form", "loop")
PRUNE_MODES = ("hardest", "easiest", "random")
_VMAP_FLOATS = 1 << 25  # per-example gradients held at once by the vmap path (128 MiB fp32)


@dataclass(frozen=True)
class DataScores:
    """Scores of every training example, averaged over the scoring networks.

    ``scores[i]`` is the mean over networks of ``per_model[:, i]``; ``kind`` is ``"el2n"``
    or ``"grand"``; ``step`` the training step the networks were scored at (``epoch`` in
    passes over the train split) and ``seeds`` their init seeds."""

    kind: str
    scores: torch.Tensor
    per_model: torch.Tensor
    step: int
    epoch: float
    seeds: tuple[int, ...]
    method: str | None = None

    def to_dict(self) -> dict:
        """JSON-able summary (the tensors themselves belong in a unit's safetensors)."""
        s = self.scores
        rank = _spearman_mean(self.per_model) if len(self.seeds) > 1 else None
        return {
            "kind": self.kind,
            "method": self.method,
            "step": self.step,
            "epoch": self.epoch,
            "seeds": list(self.seeds),
            "n": int(s.numel()),
            "mean": float(s.mean()),
            "std": float(s.std()) if s.numel() > 1 else 0.0,
            "min": float(s.min()),
            "max": float(s.max()),
            "seed_rank_correlation": rank,
        }


def _spearman_mean(per_model: torch.Tensor) -> float:
    """Mean pairwise Spearman correlation of the networks' scores (how much seeds agree)."""
    ranks = per_model.double().argsort(1).argsort(1).double()
    ranks = ranks - ranks.mean(1, keepdim=True)
    ranks = ranks / ranks.norm(dim=1, keepdim=True)
    c = ranks @ ranks.T
    k = c.shape[0]
    return float((c.sum() - c.diagonal().sum()) / (k * (k - 1)))


# -- checks ------------------------------------------------------------------------------
def _check_xy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ConfigError("x and y must be tensors (inputs and integer class labels)")
    if y.ndim != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise ConfigError(
            "data scores need 1-D integer class labels y; EL2N and GraNd are defined for "
            "classification"
        )
    if len(x) != len(y) or len(y) == 0:
        raise ConfigError(f"x has {len(x)} examples and y {len(y)}; pass matching, non-empty")
    return y.long()


def _check_logits(logits: torch.Tensor, y: torch.Tensor) -> None:
    if logits.ndim != 2:
        raise ConfigError(
            f"the model outputs shape {tuple(logits.shape)}; data scores need (batch, classes) "
            "logits"
        )
    k = logits.shape[1]
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= k:
        raise ConfigError(f"label {lo if lo < 0 else hi} is outside the model's {k} classes")


def _models(models: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    ms = [models] if isinstance(models, nn.Module) else list(models)
    if not ms or not all(isinstance(m, nn.Module) for m in ms):
        raise ConfigError("pass a module or a non-empty list of modules to score with")
    return ms


class _eval_mode:
    """The model in eval mode inside the block, its own mode restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc) -> None:
        for m, mode in self.modes:
            m.training = mode


# -- EL2N ---------------------------------------------------------------------------------
@torch.no_grad()
def el2n(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """EL2N of one network (Paul et al. 2021, Sec. 2): ``‖softmax(f(x)) − onehot(y)‖₂`` per
    example, ``(n,)`` float32, from forward passes only (eval mode, ``chunk`` rows at a
    time)."""
    y = _check_xy(x, y)
    out = []
    with _eval_mode(model):
        for i in range(0, len(y), chunk):
            logits = model(x[i : i + chunk])
            yy = y[i : i + chunk].to(logits.device)
            _check_logits(logits, yy)
            err = logits.float().softmax(1)
            err[torch.arange(len(yy), device=err.device), yy] -= 1.0
            out.append(err.norm(dim=1).cpu())
    return torch.cat(out)


def el2n_scores(
    models: nn.Module | Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """EL2N averaged over networks (the expectation over initializations, Sec. 2): ``(n,)``."""
    return torch.stack([el2n(m, x, y) for m in _models(models)]).mean(0)


# -- GraNd --------------------------------------------------------------------------------
def _ce_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="sum")


def _grand_vmap(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from torch.func import functional_call, grad, vmap

    params = {k: p.detach() for k, p in model.named_parameters()}
    buffers = {k: b.detach() for k, b in model.named_buffers()}
    numel = max(1, sum(p.numel() for p in params.values()))

    def loss(p, xi, yi):
        logits = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return _ce_sum(logits, yi.unsqueeze(0))

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))
    chunk = max(1, _VMAP_FLOATS // numel)
    out = []
    for i in range(0, len(y), chunk):
        g = per_example(params, x[i : i + chunk], y[i : i + chunk])
        # per-tensor norms in the gradients' dtype (no float64 copy of every gradient)
        sq = sum(
            torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1).double().pow(2)
            for v in g.values()
        )
        out.append(sq.sqrt().float().cpu())
    return torch.cat(out)


def _grand_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    out = torch.empty(len(y))
    for i in range(len(y)):
        g = torch.autograd.grad(_ce_sum(model(x[i : i + 1]), y[i : i + 1]), params)
        out[i] = math.sqrt(sum(float(t.double().pow(2).sum()) for t in g))
    return out


class _NotClosedForm(ConfigError):
    """The model is outside the closed form's reach (``method="auto"`` falls back to vmap)."""


def _linear_owner(model: nn.Module) -> dict[str, nn.Linear]:
    """Every parameter's Linear layer; refuses models with parameters elsewhere."""
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    owned = {id(p) for m in linears.values() for p in m.parameters(recurse=False)}
    other = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in owned]
    if other:
        raise _NotClosedForm(
            f"GraNd's closed form needs every weight in an nn.Linear layer; {other[0]} is not "
            "(use method='vmap')"
        )
    return linears


def _grand_closed_form(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192
) -> torch.Tensor:
    """Per Linear layer ``‖δ‖²(‖a‖² + 1)`` (``+1`` only with a bias), summed, square root."""
    linears = _linear_owner(model)
    out = []
    for i in range(0, len(y), chunk):
        seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in linears}

        def hook(calls: list):
            def fn(_m, inp, output):
                calls.append((inp[0], output))

            return fn

        handles = [m.register_forward_hook(hook(seen[n])) for n, m in linears.items()]
        try:
            logits = model(x[i : i + chunk])
        finally:
            for h in handles:
                h.remove()
        for name, calls in seen.items():
            trainable = any(p.requires_grad for p in linears[name].parameters())
            if trainable and (len(calls) != 1 or calls[0][0].ndim != 2):
                raise _NotClosedForm(
                    f"GraNd's closed form needs each Linear applied once to (batch, features) "
                    f"inputs; {name} was not (use method='vmap')"
                )
        used = [(n, c[0]) for n, c in seen.items() if c and linears[n].weight.requires_grad]
        deltas = torch.autograd.grad(_ce_sum(logits, y[i : i + chunk]), [c[1] for _, c in used])
        sq = torch.zeros(len(logits), dtype=torch.float64, device=logits.device)
        for (name, (a, _z)), d in zip(used, deltas, strict=True):
            d2 = d.double().pow(2).sum(1)
            a2 = a.detach().double().pow(2).sum(1)
            bias = linears[name].bias
            sq += d2 * (a2 + (1.0 if bias is not None and bias.requires_grad else 0.0))
        out.append(sq.sqrt().float().cpu())
    return torch.cat(out)


def grand(model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """GraNd of one network (Paul et al. 2021, Sec. 2): ``‖∇_w ℓ(f(x), y)‖₂`` per example over
    all trainable parameters, cross-entropy loss, eval mode; ``(n,)`` float32.

    ``method``: ``"vmap"`` (any module), ``"closed_form"`` (every parameter in an
    ``nn.Linear`` applied once to ``(B, in)`` rows: ``‖δ‖·‖a‖`` per weight, ``‖δ‖`` per bias),
    ``"loop"`` (one backward per example), or ``"auto"``: the closed form where it applies,
    else ``vmap``. The model's weights, buffers, ``.grad`` and
    train/eval mode are left as they were."""
    if method not in GRAND_METHODS:
        raise ConfigError(f"unknown GraNd method {method!r}; choose one of {GRAND_METHODS}")
    y = _check_xy(x, y)
    with _eval_mode(model):
        with torch.no_grad():
            _check_logits(model(x[:1]), y.to(x.device))
        y = y.to(x.device)
        if method == "vmap":
            return _grand_vmap(model, x, y)
        if method == "loop":
            return _grand_loop(model, x, y)
        if method == "auto":
            try:
                return _grand_closed_form(model, x, y)
            except _NotClosedForm:
                return _grand_vmap(model, x, y)
        return _grand_closed_form(model, x, y)


def grand_scores(
    models: nn.Module | Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    method: str = "auto",
) -> torch.Tensor:
    """GraNd averaged over networks (the expectation over initializations, Sec. 2): ``(n,)``."""
    return torch.stack([grand(m, x, y, method) for m in _models(models)]).mean(0)


# -- early in training, averaged over a population of seeds ------------------------------
def early_scores(
    factory: Callable[[int], nn.Module],
    data: TaskData,
    cfg,
    seeds: Sequence[int],
    *,
    epoch: float = 3.0,
    score: str = "el2n",
    method: str = "auto",
    data_seed: int = 0,
    engine: str = "population",
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> DataScores:
    """Scores of ``data.train`` by ``len(seeds)`` networks ``factory(seed)``, each trained by
    ``cfg`` for ``epoch`` passes over the train split (``round(epoch · n / batch)`` steps;
    0 scores at initialization), all seeds trained as ONE population
    (:func:`~weightlab.recipes.members.train_members`, their weights kept at that step), then
    averaged: the paper's "scores averaged over several weight initializations" computed
    "very early in training" (Paul et al. 2021, Sec. 2; EL2N at epoch ~3 in its figures)."""
    from weightlab.core.snapshots import restore_snapshot
    from weightlab.population import MemberSpec
    from weightlab.recipes.members import train_members
    from weightlab.train.config import TrainConfig
    from weightlab.train.order import steps_per_epoch

    if score not in SCORES:
        raise ConfigError(f"unknown score {score!r}; choose one of {SCORES}")
    if method not in GRAND_METHODS:
        raise ConfigError(f"unknown GraNd method {method!r}; choose one of {GRAND_METHODS}")
    if not isinstance(cfg, TrainConfig):
        raise ConfigError("cfg must be a weightlab.train.TrainConfig")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct and non-empty, got {seeds}")
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Real) or not epoch >= 0:
        raise ConfigError(f"epoch must be a number >= 0, got {epoch!r}")
    if data.kind != "classification":
        raise ConfigError("EL2N and GraNd need a classification task (class labels)")
    spe = steps_per_epoch(len(data.train), cfg.batch_size)
    step = round(epoch * spe)
    specs = [MemberSpec(seed=s) for s in seeds]
    if step == 0:
        states = None
    else:
        train_cfg = replace(cfg, epochs=math.ceil(step / spe))
        results, _ = train_members(
            factory,
            specs,
            data,
            train_cfg,
            engine=engine,
            device=device,
            data_seed=data_seed,
            snapshot_steps=[step],
            progress=progress,
        )
        states = [r.snapshots[step] for r in results]
    x, y = data.train.x, data.train.y
    bar = progress_bar(len(seeds), f"{score} scores", "network", progress)
    rows = []
    for i, s in enumerate(seeds):
        model = factory(s)
        if states is not None:
            restore_snapshot(model, states[i])
        model = model.to(x.device)
        rows.append(el2n(model, x, y) if score == "el2n" else grand(model, x, y, method))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    per = torch.stack(rows)
    return DataScores(
        score,
        per.mean(0),
        per,
        step,
        step / spe,
        tuple(seeds),
        method if score == "grand" else None,
    )


# -- static pruning -----------------------------------------------------------------------
def prune_by_score(
    scores: torch.Tensor,
    keep: float | int,
    mode: str = "hardest",
    seed: int | None = None,
) -> torch.Tensor:
    """Static data pruning (Paul et al. 2021, Sec. 3): the indices (ascending, ``long``) of
    the examples kept.

    ``keep``: a fraction in ``(0, 1]`` (``round(keep · n)`` examples) or a count in
    ``[1, n]``. ``mode``: ``"hardest"`` keeps the highest scores (the paper's pruning: drop
    the easy, low-score examples), ``"easiest"`` the lowest, ``"random"`` a uniformly random
    subset drawn from ``generator(seed)`` (the scores only give ``n``). Ties go to the lower
    index."""
    if not isinstance(scores, torch.Tensor) or scores.ndim != 1 or scores.numel() == 0:
        raise ConfigError("scores must be a non-empty 1-D tensor, one score per example")
    if mode not in PRUNE_MODES:
        raise ConfigError(f"unknown pruning mode {mode!r}; choose one of {PRUNE_MODES}")
    n = scores.numel()
    if isinstance(keep, bool) or not isinstance(keep, numbers.Real):
        raise ConfigError(f"keep must be a fraction in (0, 1] or a count, got {keep!r}")
    if isinstance(keep, numbers.Integral) and keep > 1:
        count = int(keep)
    elif 0 < keep <= 1:
        count = round(float(keep) * n)
    else:
        raise ConfigError(f"keep must be a fraction in (0, 1] or a count >= 1, got {keep}")
    if not 1 <= count <= n:
        raise ConfigError(f"keep {keep} gives {count} of {n} examples; keep between 1 and {n}")
    if mode == "random":
        if seed is None:
            raise ConfigError("random pruning needs a seed; pass seed=...")
        chosen = torch.randperm(n, generator=generator(seed))[:count]
    else:
        s = scores.detach().double().cpu()
        if not torch.isfinite(s).all():
            raise ConfigError("scores contain NaN or inf; score with a finite model")
        key = -s if mode == "hardest" else s
        chosen = torch.sort(key, stable=True).indices[:count]
    return chosen.sort().values.long()
