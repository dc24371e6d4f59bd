"""Pruning-at-init saliency scores: SNIP, GraSP, SynFlow (higher = keep).

A score is ``{plain_param_name: tensor of the weight's shape}``, detached, for the
parameters a :class:`~weightlab.core.Selector` picks (default: every Linear/Conv weight).
Allocation (:mod:`weightlab.sparsity.allocation`) turns scores into masks;
:func:`synflow_prune` is SynFlow's iterative schedule; :func:`pai_scores` looks a score
up by name.

- :func:`snip_scores`: connection sensitivity ``|w ⊙ ∂L/∂w|`` (Lee et al. 2019, "SNIP:
  Single-shot Network Pruning based on Connection Sensitivity", Eq. 6, un-normalized: the
  normalization by ``Σ_k |w_k g_k|`` does not change the ranking).
- :func:`grasp_scores`: ``w ⊙ (H g)`` (Wang et al. 2020, "Picking Winning Tickets Before
  Training by Preserving Gradient Flow", Eq. 8). The paper's score is
  ``S(-θ) = -θ ⊙ Hg`` and GraSP *removes* the weights with the largest ``S`` (Sec. 4,
  "remove the top p fraction"; the authors' code keeps ``-θ⊙Hg <= threshold``). We return
  ``-S = θ ⊙ Hg`` so that, as for every score here, higher means keep: the allocation's
  top-k of ``θ⊙Hg`` is exactly GraSP's mask. Scores are signed. ``Hg`` is a
  Hessian-gradient product by double backward: ``∇_w (g · stopgrad(g))``.
- :func:`synflow_scores`: Iterative Synaptic Flow (Tanaka et al. 2020, "Pruning neural
  networks without any data by iteratively conserving synaptic flow", Eq. 2 and Alg. 1):
  every parameter and buffer replaced by ``|θ|`` in float64, the model in eval mode
  (BatchNorm uses its running statistics, as the authors advise), input all ones,
  ``R = 1ᵀ f(1)``, score ``|θ ⊙ ∂R/∂θ|``. Data-free.

Every function leaves the model exactly as it was: the weights are swapped in with
:func:`torch.func.functional_call` (so the model's parameters are never written), gradients
are taken with :func:`torch.autograd.grad` (no ``.grad`` is touched), buffers (BatchNorm
running statistics) and the train/eval mode are restored afterwards. Scores read and
differentiate the *stored* weights under any attached transforms; with a mask
(:func:`~weightlab.core.apply_masks` zeroes pruned stored weights) this equals the score
of the effective weight ``w ⊙ m``, and pruned weights score exactly 0. Dropout, if active, draws from a forked RNG seeded with
:data:`DROPOUT_SEED`, so the global RNG is neither read nor advanced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from weightlab.core.selectors import Selector
from weightlab.errors import ConfigError

Scores = dict[str, torch.Tensor]
LossFn = Callable[[nn.Module, Any], torch.Tensor]
ForwardFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]

DROPOUT_SEED = 0


def default_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """``batch = (x, y)``: the mean cross-entropy of ``model(x)`` against class labels ``y``."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ConfigError(
            "the default score loss needs a batch (x, y); pass loss=fn(model, batch) otherwise"
        )
    x, y = batch
    return F.cross_entropy(model(x), y)


class _Call(nn.Module):
    """Wraps ``model`` so that ``functional_call`` can run any function of it
    (a loss or a custom forward) with swapped-in weights. Parameter keys get ``m.``."""

    def __init__(self, model: nn.Module, fn: Callable[[nn.Module, Any], Any]) -> None:
        super().__init__()
        self.m = model
        self._fn = fn

    def forward(self, arg: Any) -> Any:
        return self._fn(self.m, arg)


def _picked(model: nn.Module, selector: Selector | None) -> dict[str, tuple[nn.Module, str]]:
    picked = (selector or Selector())(model)
    if not picked:
        raise ConfigError("the selector picked no parameters to score; check its types and roles")
    return picked


def _devices(model: nn.Module) -> list[torch.device]:
    return sorted(
        {t.device for t in model.state_dict().values() if t.device.type == "cuda"}, key=str
    )


@contextlib.contextmanager
def _preserved(model: nn.Module, train: bool | None = None) -> Iterator[None]:
    """Restore buffers (e.g. BatchNorm running statistics) and the train/eval mode on
    exit; optionally switch the mode inside; fork the RNG (seeded) for dropout."""
    modes = {m: m.training for m in model.modules()}
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    cuda = [d.index if d.index is not None else 0 for d in _devices(model)]
    try:
        if train is not None:
            model.train(train)
        with torch.random.fork_rng(devices=cuda):
            torch.default_generator.manual_seed(DROPOUT_SEED)
            for i in cuda:
                torch.cuda.default_generators[i].manual_seed(DROPOUT_SEED)
            yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for m, mode in modes.items():
            m.training = mode


def _key(name: str, module: nn.Module, attr: str) -> str:
    """The ``state_dict`` key of the *stored* tensor behind plain parameter ``name``
    (``layers.0.parametrizations.weight.original`` when a transform is attached)."""
    if parametrize.is_parametrized(module, attr):
        prefix = name[: -len(attr)]
        return f"{prefix}parametrizations.{attr}.original"
    return name


def _stored(module: nn.Module, attr: str) -> torch.Tensor:
    if parametrize.is_parametrized(module, attr):
        return module.parametrizations[attr].original
    return getattr(module, attr)


def _leaves(picked: Mapping[str, tuple[nn.Module, str]]) -> dict[str, torch.Tensor]:
    """Fresh leaf copies of the stored weights (a mask zeroes them where pruned)."""
    with torch.no_grad():
        return {
            n: _stored(m, a).detach().clone().requires_grad_(True) for n, (m, a) in picked.items()
        }


def _check_loss(value: Any) -> torch.Tensor:
    if not (isinstance(value, torch.Tensor) and value.numel() == 1):
        raise ConfigError("the score loss must return a scalar tensor; reduce it with .mean()")
    if not torch.isfinite(value):
        raise ConfigError("the score loss is not finite on this batch; check the model and data")
    return value.reshape(())


def _loss_and_leaves(model, batch, loss, selector):
    picked = _picked(model, selector)
    leaves = _leaves(picked)
    keys = {n: _key(n, *picked[n]) for n in picked}
    call = _Call(model, loss or default_loss)
    value = torch.func.functional_call(
        call, {f"m.{keys[n]}": w for n, w in leaves.items()}, (batch,), strict=False
    )
    return _check_loss(value), leaves


def snip_scores(
    model: nn.Module,
    batch: Any,
    *,
    loss: LossFn | None = None,
    selector: Selector | None = None,
) -> Scores:
    """SNIP connection sensitivity ``|w ⊙ ∂L/∂w|`` on one batch (Lee et al. 2019, Eq. 6,
    without the normalization, which does not change the ranking).

    ``loss(model, batch) -> scalar`` defaults to :func:`default_loss` (mean cross-entropy
    of ``model(x)`` for ``batch = (x, y)``). The model runs in its current mode; the
    model, its gradients, buffers and the global RNG are left unchanged."""
    with _preserved(model):
        value, leaves = _loss_and_leaves(model, batch, loss, selector)
        grads = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
    return {
        n: (w.detach() * (torch.zeros_like(w) if g is None else g)).abs()
        for (n, w), g in zip(leaves.items(), grads, strict=True)
    }


def grasp_scores(
    model: nn.Module,
    batch: Any,
    *,
    loss: LossFn | None = None,
    selector: Selector | None = None,
) -> Scores:
    """GraSP keep-scores ``w ⊙ (H g)`` on one batch (Wang et al. 2020, Eq. 8).

    The paper's score ``S(-θ) = -θ ⊙ Hg`` ranks weights for *removal* (largest removed);
    this returns its negation so that higher means keep, like every other score, and
    keeping the top-k of ``w⊙Hg`` is GraSP's mask. ``g = ∂L/∂w`` and ``Hg`` come from one
    batch by double backward (``Hg = ∇_w (g · stopgrad(g))``); the authors' code draws
    ``g`` and the Hessian from separate batches and divides the logits by a temperature,
    both omitted here (pass a ``loss`` that does the latter). Needs a loss that is twice
    differentiable through the model (e.g. eager or math attention, not CPU SDPA: an op
    without a double backward is a one-line ConfigError naming it)."""
    with _preserved(model):
        value, leaves = _loss_and_leaves(model, batch, loss, selector)
        ws = list(leaves.values())
        grads = torch.autograd.grad(value, ws, create_graph=True, allow_unused=True)
        pairs = [(g, w) for g, w in zip(grads, ws, strict=True) if g is not None]
        if not pairs or not any(g.requires_grad for g, _ in pairs):
            hg = [None] * len(ws)
        else:
            z = sum((g * g.detach()).sum() for g, _ in pairs if g.requires_grad)
            try:
                hg = torch.autograd.grad(z, ws, allow_unused=True)
            except RuntimeError as e:
                if "derivative for" not in str(e):
                    raise
                op = str(e).split("derivative for ", 1)[1].split(" ", 1)[0]
                raise ConfigError(
                    f"GraSP needs a double backward, which {op} lacks; use twice-"
                    "differentiable ops (a BERT: model.set_attention('eager') or 'math')"
                ) from None
    return {
        n: (w.detach() * (torch.zeros_like(w) if h is None else h.detach()))
        for (n, w), h in zip(leaves.items(), hg, strict=True)
    }


def _default_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def _abs_state(
    model: nn.Module, out: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """``|t|`` in float64 of every floating ``state_dict`` entry (SynFlow's linearization),
    written into ``out`` (a previous result for this model) when given."""
    with torch.no_grad():
        entries = {
            k: t.detach()
            for k, t in model.state_dict(keep_vars=True).items()
            if t.is_floating_point()
        }
        if out is not None and all(
            k in out and out[k].shape == t.shape and out[k].device == t.device
            for k, t in entries.items()
        ):
            for k, t in entries.items():
                out[k].copy_(t).abs_()
            return out
        # copy=True: a float64 model's own tensors must never be written
        return {k: t.to(torch.float64, copy=True).abs_() for k, t in entries.items()}


class SynFlowScorer:
    """Repeated SynFlow scoring of one model (Tanaka et al. 2020, Eq. 2): each call reads
    the model's current weights into a float64 ``|θ|`` workspace kept between calls
    (allocated on the first), then scores as :func:`synflow_scores` does, with the picked
    weights multiplied by ``masks`` when given (the iterative rounds score the pruned
    network). The workspace costs one float64 copy of the model's floating state for the
    scorer's lifetime; rewriting it is ~3x cheaper than allocating it afresh (MiniLM on
    this CPU: 18 vs 60 ms), which is what :func:`synflow_scores` does once per call.
    :func:`synflow_prune` scores every round through one scorer."""

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        *,
        forward: ForwardFn | None = None,
        selector: Selector | None = None,
    ) -> None:
        if not isinstance(example_input, torch.Tensor):
            raise ConfigError(
                "synflow needs an example input tensor (its shape; the values are not used)"
            )
        self.model = model
        self.picked = _picked(model, selector)
        self.keys = {n: _key(n, *self.picked[n]) for n in self.picked}
        self.ones = torch.ones(
            (1, *example_input.shape[1:]), dtype=torch.float64, device=example_input.device
        )
        self.call = _Call(model, forward or _default_forward)
        self.workspace: dict[str, torch.Tensor] | None = None
        self.masked: dict[str, torch.Tensor] = {}  # w ⊙ m per picked weight, reused

    def __call__(self, masks: Mapping[str, torch.Tensor] | None = None) -> Scores:
        self.workspace = _abs_state(self.model, self.workspace)
        return _synflow(self, masks)


def _synflow(scorer: SynFlowScorer, masks: Mapping[str, torch.Tensor] | None) -> Scores:
    """One SynFlow pass over ``scorer.workspace`` (not modified: the picked weights enter
    as detached leaves sharing its storage, or masked products of it)."""
    values = dict(scorer.workspace or {})
    leaves = {}
    for name in scorer.picked:
        w = values[scorer.keys[name]]
        if masks is not None and name in masks:
            buf = scorer.masked.get(name)
            if buf is None or buf.shape != w.shape or buf.device != w.device:
                buf = scorer.masked[name] = torch.empty_like(w)
            m = masks[name].to(w.device)
            torch.mul(w, m if m.dtype == torch.bool else m.to(w.dtype), out=buf)
            w = buf
        leaves[name] = values[scorer.keys[name]] = w.detach().requires_grad_(True)
    with _preserved(scorer.model, train=False):
        out = torch.func.functional_call(
            scorer.call, {f"m.{n}": v for n, v in values.items()}, (scorer.ones,), strict=False
        )
        if not isinstance(out, torch.Tensor):
            raise ConfigError(
                "synflow's forward must return a tensor; pass forward=fn(model, x) returning one"
            )
        r = out.sum()
        grads = torch.autograd.grad(r, list(leaves.values()), allow_unused=True)
    out: Scores = {}
    seen: set[int] = set()
    for (n, w), g in zip(leaves.items(), grads, strict=True):
        if g is None:
            out[n] = torch.zeros_like(w)
        elif _sole_owner(g, seen):  # a fresh gradient of its own: the score is formed in it
            out[n] = g.mul_(w.detach()).abs_()
        else:  # an expanded view, or a gradient autograd handed to two weights
            out[n] = torch.mul(g, w.detach()).abs_()
    return out


def _sole_owner(g: torch.Tensor, seen: set[int]) -> bool:
    """Is ``g`` a contiguous tensor spanning its whole storage, not met before in this
    batch of gradients (so writing it in place can change nothing else)?"""
    ptr = g.untyped_storage().data_ptr()
    if ptr in seen:
        return False
    seen.add(ptr)
    return (
        g.is_contiguous()
        and g.storage_offset() == 0
        and g.untyped_storage().nbytes() == g.numel() * g.element_size()
    )


def synflow_scores(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    forward: ForwardFn | None = None,
    selector: Selector | None = None,
) -> Scores:
    """SynFlow scores ``|θ ⊙ ∂R/∂θ|``, ``R = 1ᵀ f_{|θ|}(1)`` (Tanaka et al. 2020, Eq. 2;
    Alg. 1 for one round), in float64.

    Every floating parameter and buffer is replaced by its absolute value in float64
    (the model itself is not modified: signs and dtype stay as they were), the model
    runs in eval mode (BatchNorm on its running statistics), and the input is all ones
    of ``example_input``'s shape with batch size 1 (only its shape, device are read).
    ``forward(model, x) -> tensor`` replaces ``model(x)`` for models whose input is not a
    tensor of that shape (e.g. a BERT fed ``inputs_embeds``). One round; the iterative
    schedule is :func:`synflow_prune`.

    A network whose output passes through a LayerNorm with equal gains (a post-LN BERT at
    init) scores 0 everywhere before it: the sum of a normalized vector's features does
    not depend on its input, so ``∂R/∂θ = 0`` there; such a model needs a ``forward``
    that reads an output before the last normalization. Scoring one model repeatedly:
    :class:`SynFlowScorer` keeps the float64 workspace between calls."""
    return SynFlowScorer(model, example_input, forward=forward, selector=selector)()


# -- allocation, SynFlow's schedule and the name lookup -----------------------------

ALLOCATIONS = ("global", "layerwise", "erk")
SCORES = ("snip", "grasp", "synflow", "magnitude", "random")


def check_allocation(allocation: str) -> str:
    """``allocation`` if it is one of :data:`ALLOCATIONS`, else a one-line ConfigError."""
    if allocation not in ALLOCATIONS:
        raise ConfigError(f"unknown allocation {allocation!r}; use one of {', '.join(ALLOCATIONS)}")
    return allocation


def check_score_name(name: str) -> str:
    """``name`` if it is one of :data:`SCORES`, else a one-line ConfigError."""
    if name not in SCORES:
        raise ConfigError(f"unknown score {name!r}; use one of {', '.join(SCORES)}")
    return name


def allocate(
    scores: Mapping[str, torch.Tensor],
    density: float,
    allocation: str = "global",
    prev_masks: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Masks keeping ``density`` of all scored weights (exact counts, round-half-up):
    ``global`` (one threshold over all layers), ``layerwise`` (``density`` in every
    layer) or ``erk`` (Erdős–Rényi-Kernel layer densities, Evci et al. 2020, Sec. 3).
    Nested in ``prev_masks`` when given (a layer's count is capped at its survivors)."""
    from weightlab.sparsity.allocation import (
        _check_density,
        erk_densities,
        global_masks,
        keep_counts,
        layerwise_masks,
        round_half_up,
        uniform_densities,
    )

    d = _check_density(density)
    check_allocation(allocation)
    shapes = {n: s.shape for n, s in scores.items()}
    if allocation == "global":
        total = sum(s.numel() for s in scores.values())
        keep = round_half_up(d, total)
        if prev_masks is not None:
            keep = min(keep, sum(int(torch.count_nonzero(prev_masks[n])) for n in scores))
        return global_masks(scores, keep, prev_masks)
    rule = uniform_densities if allocation == "layerwise" else erk_densities
    counts = keep_counts(shapes, rule(shapes, d))
    if prev_masks is not None:
        counts = {n: min(k, int(torch.count_nonzero(prev_masks[n]))) for n, k in counts.items()}
    return layerwise_masks(scores, counts, prev_masks)


def synflow_prune(
    model: nn.Module,
    example_input: torch.Tensor,
    density: float,
    rounds: int = 100,
    allocation: str = "global",
    *,
    forward: ForwardFn | None = None,
    selector: Selector | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Iterative SynFlow (Tanaka et al. 2020, Alg. 1): for ``k = 1..rounds`` score the
    network pruned so far (:func:`synflow_scores` with the current masks), then keep
    ``density^(k/rounds)`` of the weights (the paper's exponential schedule) by
    ``allocation``, nested in the previous masks. Returns the final bool masks (density
    ``density``), keyed by plain parameter names; the model is not changed (attach the
    masks with :func:`~weightlab.core.apply_masks`). Masks already attached to the model
    are respected (their pruned weights score 0)."""
    from weightlab.sparsity.allocation import _check_density

    d = _check_density(density)
    check_allocation(allocation)
    if isinstance(rounds, bool) or int(rounds) != rounds or rounds < 1:
        raise ConfigError(f"synflow rounds must be an integer >= 1, got {rounds!r}")
    from weightlab.progress import progress_bar

    masks: dict[str, torch.Tensor] | None = None
    scorer = SynFlowScorer(model, example_input, forward=forward, selector=selector)
    scorer.workspace = _abs_state(model)  # the model does not change between rounds
    bar = progress_bar(int(rounds), "synflow", "round", progress)
    for k in range(1, int(rounds) + 1):
        scores = _synflow(scorer, masks)
        masks = allocate(scores, d ** (k / rounds), allocation, masks)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    assert masks is not None
    return {n: m.cpu() for n, m in masks.items()}


def pai_scores(
    name: str,
    model: nn.Module,
    batch: Any,
    *,
    loss: LossFn | None = None,
    selector: Selector | None = None,
    generator: torch.Generator | None = None,
    forward: ForwardFn | None = None,
) -> Scores:
    """One round of the pruning-at-init score ``name`` (``snip``, ``grasp``, ``synflow``,
    ``magnitude`` or ``random``) on ``batch``: SynFlow reads only ``batch``'s input shape
    (``batch[0]`` of a pair, or ``batch`` itself); ``random`` needs ``generator``
    (:func:`weightlab.seeding.generator`). An unknown name is a one-line ConfigError."""
    from weightlab.sparsity.scores import magnitude_scores, random_scores

    check_score_name(name)
    if name == "snip":
        return snip_scores(model, batch, loss=loss, selector=selector)
    if name == "grasp":
        return grasp_scores(model, batch, loss=loss, selector=selector)
    if name == "synflow":
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return synflow_scores(model, x, forward=forward, selector=selector)
    picked = _picked(model, selector)
    if name == "magnitude":
        with torch.no_grad():
            return magnitude_scores({n: getattr(m, a) for n, (m, a) in picked.items()})
    if generator is None:
        raise ConfigError("the random score needs generator=weightlab.seeding.generator(seed)")
    return random_scores({n: getattr(m, a).shape for n, (m, a) in picked.items()}, generator)


def prune_at_init(
    name: str,
    model: nn.Module,
    batch: Any,
    density: float,
    *,
    allocation: str = "global",
    rounds: int = 100,
    loss: LossFn | None = None,
    selector: Selector | None = None,
    generator: torch.Generator | None = None,
    forward: ForwardFn | None = None,
) -> dict[str, torch.Tensor]:
    """Masks at ``density`` from the score ``name`` and ``allocation``: one-shot for
    snip, grasp, magnitude and random; SynFlow runs its ``rounds``-round schedule
    (:func:`synflow_prune`). Bool CPU masks keyed by plain parameter names; the model is
    not changed."""
    from weightlab.sparsity.allocation import _check_density

    check_score_name(name)
    check_allocation(allocation)
    _check_density(density)
    if name == "synflow":
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return synflow_prune(
            model, x, density, rounds, allocation, forward=forward, selector=selector
        )
    scores = pai_scores(
        name, model, batch, loss=loss, selector=selector, generator=generator, forward=forward
    )
    return {n: m.cpu() for n, m in allocate(scores, density, allocation).items()}


__all__ = [
    "ALLOCATIONS",
    "DROPOUT_SEED",
    "SCORES",
    "allocate",
    "check_allocation",
    "check_score_name",
    "default_loss",
    "grasp_scores",
    "pai_scores",
    "prune_at_init",
    "snip_scores",
    "SynFlowScorer",
    "synflow_prune",
    "synflow_scores",
]
