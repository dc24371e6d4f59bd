"""Structured pruning into a smaller plain model: whole Linear neurons (weight rows) and
Conv output channels are removed, with the BatchNorm that follows the layer and the
consumer's matching input columns / channels sliced to match.

Scores are the L1 norm of each unit's incoming weights, ``s_j = Σ_i |W_ji|`` (Li et al.
2017, "Pruning Filters for Efficient ConvNets", Sec. 3.1; the L1-norm filter pruning
that Liu et al. 2019, "Rethinking the Value of Network Pruning", Sec. 4.1, retrain from
scratch). A layer of ``n`` units pruned at ratio ``r`` keeps ``⌊n·(1 - r)⌋`` units, the
highest-scoring ones, as Torch-Pruning does (``MagnitudeImportance(p=1,
normalizer=None, group_reduction="first")``: the same kept indices, tested).

Dependencies are found by an explicit per-architecture walk, not by tracing
(:func:`unit_groups`): :class:`~weightlab.models.MLP`, :class:`~weightlab.models.CNN1D`,
:class:`~weightlab.models.convnets.SmallCNN`, :class:`~weightlab.models.convnets.ResidualCNN`
and any ``nn.Sequential`` of Linear / Conv / BatchNorm / zero-preserving activations /
pools / Flatten. A chain (Sequential-like) walk pairs every Linear or Conv with the next
one (its consumer); in the residual CNN only each block's first conv is pruned, because
the channels of the stem and of every block's second conv are tied by the identity adds.
A module of any other type on the path raises a one-line ``ConfigError`` naming it
(torch.fx would trace more architectures but fails on shape-dependent control flow such
as CNN1D's ``if x.dim() == 2``, and a walk costs nothing at prune time).

The result (:func:`prune_structured`) is a fresh module of the same class with fewer
units and no masks; in eval mode its output equals the original's with the removed
units' post-BatchNorm, post-activation outputs set to zero (:func:`zeroed_units`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from weightlab.errors import ConfigError
from weightlab.models.cnn1d import CNN1D
from weightlab.models.convnets import ResidualCNN, SmallCNN
from weightlab.models.mlp import MLP

PRODUCERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
# f(0) = 0 elementwise, so zeroing a unit before or after them is the same
ZERO_PRESERVING = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.GELU, nn.Dropout, nn.Identity)
# act per channel and map an all-zero channel to zeros
CHANNELWISE = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
)
SUPPORTED_MODELS = "MLP, CNN1D, SmallCNN, ResidualCNN or an nn.Sequential"


@dataclass(frozen=True)
class UnitGroup:
    """Units that are pruned together: the output rows / channels of ``producer``, the
    BatchNorm ``norm`` that follows it (or ``None``), the module ``zero_at`` whose output
    is the units' post-BatchNorm, post-activation value, and the ``consumers`` with how
    many input columns each unit feeds (``(name, span)``; ``span > 1`` for a Linear after
    a flattened conv, where unit ``c`` owns columns ``c·span .. c·span + span - 1``)."""

    producer: str
    norm: str | None
    zero_at: str
    consumers: tuple[tuple[str, int], ...]


@dataclass
class StructuredPrune:
    """What :func:`prune_structured` returns: the smaller ``model``, the ``groups`` it
    pruned, and per producer the ``kept`` unit indices (sorted, into the original)."""

    model: nn.Module
    groups: list[UnitGroup]
    kept: dict[str, torch.Tensor] = field(default_factory=dict)


# -- dependency walk ------------------------------------------------------------------
def _flat_children(prefix: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
    out = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if type(child) is nn.Sequential:
            out += _flat_children(full + ".", child)
        else:
            out.append((full, child))
    return out


def _chain_groups(chain: list[tuple[str, nn.Module]]) -> list[UnitGroup]:
    """Walk a straight path of modules in forward order; every Linear / Conv producer is
    paired with the next one (its consumer). The last producer (the output layer) is
    not pruned."""
    groups: list[UnitGroup] = []
    open_: dict | None = None
    for name, mod in chain:
        if isinstance(mod, PRODUCERS):
            if isinstance(mod, nn.Conv1d | nn.Conv2d) and mod.groups != 1:
                raise ConfigError(
                    f"structured pruning does not support grouped convolution {name!r} "
                    f"(groups={mod.groups}); use groups=1"
                )
            if open_ is not None:
                prod = open_["module"]
                n_units = prod.out_features if isinstance(prod, nn.Linear) else prod.out_channels
                n_in = mod.in_features if isinstance(mod, nn.Linear) else mod.in_channels
                if n_in % n_units:
                    raise ConfigError(
                        f"{name!r} takes {n_in} inputs, not a multiple of the {n_units} units "
                        f"of {open_['name']!r}; structured pruning cannot pair them"
                    )
                if isinstance(mod, nn.Conv1d | nn.Conv2d) and n_in != n_units:
                    raise ConfigError(
                        f"{name!r} takes {n_in} channels but {open_['name']!r} gives {n_units}"
                    )
                groups.append(
                    UnitGroup(
                        open_["name"], open_["norm"], open_["zero_at"], ((name, n_in // n_units),)
                    )
                )
            open_ = {"name": name, "module": mod, "norm": None, "zero_at": name, "act": False}
        elif isinstance(mod, NORMS):
            if open_ is None or open_["act"] or open_["norm"] is not None:
                raise ConfigError(
                    f"structured pruning supports BatchNorm only right after a Linear or Conv; "
                    f"{name!r} ({type(mod).__name__}) is elsewhere"
                )
            open_["norm"] = open_["zero_at"] = name
        elif isinstance(mod, ZERO_PRESERVING):
            if open_ is not None:
                open_["zero_at"], open_["act"] = name, True
        elif isinstance(mod, CHANNELWISE):
            if open_ is not None:
                open_["act"] = True
        else:
            raise ConfigError(
                f"structured pruning does not support module {name!r} of type "
                f"{type(mod).__name__}; supported on the path: Linear, Conv1d/2d, BatchNorm1d/2d, "
                "ReLU/LeakyReLU/Tanh/GELU/Dropout/Identity, pools, Flatten"
            )
    return groups


def unit_groups(model: nn.Module) -> list[UnitGroup]:
    """The prunable unit groups of ``model`` by an explicit walk of its architecture
    (see the module docstring); ``ConfigError`` for an unsupported model or module."""
    if isinstance(model, MLP):
        n = len(model.layers)
        return [
            UnitGroup(f"layers.{i}", None, f"layers.{i}", ((f"layers.{i + 1}", 1),))
            for i in range(n - 1)
        ]
    if isinstance(model, ResidualCNN):
        return [
            UnitGroup(
                f"blocks.{i}.conv1",
                f"blocks.{i}.bn1",
                f"blocks.{i}.relu1",
                ((f"blocks.{i}.conv2", 1),),
            )
            for i in range(len(model.blocks))
        ]
    if isinstance(model, CNN1D):
        return _chain_groups(
            [*_flat_children("features.", model.features), ("classifier", model.classifier)]
        )
    if isinstance(model, SmallCNN):
        chain = _flat_children("features.", model.features)
        return _chain_groups([*chain, ("pool", model.pool), ("classifier", model.classifier)])
    if type(model) is nn.Sequential:
        return _chain_groups(_flat_children("", model))
    raise ConfigError(
        f"structured pruning does not support model type {type(model).__name__}; "
        f"use {SUPPORTED_MODELS}"
    )


# -- scores and counts -----------------------------------------------------------------
def l1_unit_scores(
    model: nn.Module, groups: list[UnitGroup] | None = None
) -> dict[str, torch.Tensor]:
    """``{producer: s}`` with ``s_j = Σ |W_j·|``, the L1 norm of unit ``j``'s incoming
    weights (row ``j`` of a Linear, output filter ``j`` of a Conv; Li et al. 2017, Sec. 3.1)."""
    mods = dict(model.named_modules())
    groups = unit_groups(model) if groups is None else groups
    return {g.producer: mods[g.producer].weight.detach().abs().flatten(1).sum(1) for g in groups}


def kept_units(scores: torch.Tensor, ratio: float, name: str = "layer") -> torch.Tensor:
    """Sorted indices of the ``⌊n·(1 - ratio)⌋`` highest-scoring of ``n`` units (the
    removed ones are the first ``n - keep`` of ``argsort(scores)``, as Torch-Pruning
    ranks); ``ConfigError`` when that keeps none."""
    n = int(scores.numel())
    keep = int(n * (1.0 - float(ratio)))
    if keep < 1:
        raise ConfigError(
            f"structured pruning at ratio {ratio:g} would remove all {n} units of {name!r}; "
            f"use a ratio below {1 - 1 / n:.4g}"
        )
    removed = torch.argsort(scores)[: n - keep]
    alive = torch.ones(n, dtype=torch.bool)
    alive[removed] = False
    return alive.nonzero().flatten()


def count_parameters(model: nn.Module) -> int:
    """Number of parameter entries (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """Forward FLOPs of ``model(example)`` by :class:`torch.utils.flop_counter.FlopCounterMode`
    (matmuls and convolutions, 2 per multiply-add), in eval mode, without gradients."""
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(example)
    model.train(was)
    return int(counter.get_total_flops())


def structured_report(
    original: nn.Module, pruned: nn.Module, example: torch.Tensor
) -> dict[str, float]:
    """Parameters and forward FLOPs (at ``example``) before and after, and their ratios."""
    pb, pa = count_parameters(original), count_parameters(pruned)
    fb, fa = count_flops(original, example), count_flops(pruned, example)
    return {
        "params_before": pb,
        "params_after": pa,
        "params_ratio": pa / pb,
        "flops_before": fb,
        "flops_after": fa,
        "flops_ratio": fa / fb,
    }


# -- slicing ---------------------------------------------------------------------------
def _sliced(mod: nn.Module, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None) -> nn.Module:
    """A new Linear / Conv with rows ``out_idx`` and input columns ``in_idx`` of ``mod``."""
    w = mod.weight.detach()
    b = mod.bias.detach() if mod.bias is not None else None
    if out_idx is not None:
        w = w.index_select(0, out_idx)
        b = b.index_select(0, out_idx) if b is not None else None
    if in_idx is not None:
        w = w.index_select(1, in_idx)
    if isinstance(mod, nn.Linear):
        new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device="meta")
    else:
        new = type(mod)(
            w.shape[1],
            w.shape[0],
            mod.kernel_size,
            stride=mod.stride,
            padding=mod.padding,
            dilation=mod.dilation,
            groups=1,
            bias=b is not None,
            padding_mode=mod.padding_mode,
            device="meta",
        )
    new.weight = nn.Parameter(w.clone(), requires_grad=mod.weight.requires_grad)
    if b is not None:
        new.bias = nn.Parameter(b.clone(), requires_grad=mod.bias.requires_grad)
    new.train(mod.training)
    return new


def _sliced_norm(bn: nn.Module, idx: torch.Tensor) -> nn.Module:
    new = type(bn)(
        int(idx.numel()),
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        track_running_stats=bn.track_running_stats,
        device="meta",
    )
    if bn.affine:
        new.weight = nn.Parameter(bn.weight.detach().index_select(0, idx).clone())
        new.bias = nn.Parameter(bn.bias.detach().index_select(0, idx).clone())
    if bn.track_running_stats:
        new.running_mean = bn.running_mean.index_select(0, idx).clone()
        new.running_var = bn.running_var.index_select(0, idx).clone()
        new.num_batches_tracked = bn.num_batches_tracked.clone()
    new.train(bn.training)
    return new


def _check_ratio(ratio: float) -> float:
    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise ConfigError(
            f"structured pruning ratio must be a number in [0, 1), got {ratio!r}"
        ) from None
    if not 0.0 <= r < 1.0:
        raise ConfigError(f"structured pruning ratio must lie in [0, 1), got {ratio!r}")
    return r


def prune_structured(
    model: nn.Module,
    ratio: float,
    scores: Mapping[str, torch.Tensor] | None = None,
) -> StructuredPrune:
    """Remove the fraction ``ratio`` of the units of every prunable group of ``model``
    (:func:`unit_groups`), lowest L1 score first (:func:`l1_unit_scores`, or ``scores``
    keyed by producer name), and return a fresh, smaller module of the same class with
    no masks. ``model`` is left untouched. A model with masks attached must be merged
    first (:func:`weightlab.core.merge`)."""
    r = _check_ratio(ratio)
    for name, mod in model.named_modules():
        if parametrize.is_parametrized(mod):
            raise ConfigError(
                f"module {name or type(model).__name__!r} has masks or parametrizations attached; "
                "merge() them into plain weights before structured pruning"
            )
    groups = unit_groups(model)
    if not groups:
        raise ConfigError(f"{type(model).__name__} has no prunable hidden units")
    mods = dict(model.named_modules())
    scores = l1_unit_scores(model, groups) if scores is None else scores
    kept: dict[str, torch.Tensor] = {}
    out_idx: dict[str, torch.Tensor] = {}
    in_idx: dict[str, torch.Tensor] = {}
    for g in groups:
        if g.producer not in scores:
            raise ConfigError(f"no scores for {g.producer!r}; pass one score tensor per producer")
        idx = kept_units(scores[g.producer].detach().cpu(), r, g.producer).to(
            mods[g.producer].weight.device
        )
        kept[g.producer] = idx
        out_idx[g.producer] = idx
        for cname, span in g.consumers:
            cols = (
                idx
                if span == 1
                else (idx[:, None] * span + torch.arange(span, device=idx.device)).flatten()
            )
            in_idx[cname] = cols
    memo: dict[int, nn.Module] = {}
    for name in dict.fromkeys([*out_idx, *in_idx]):
        memo[id(mods[name])] = _sliced(mods[name], out_idx.get(name), in_idx.get(name))
    for g in groups:
        if g.norm is not None:
            memo[id(mods[g.norm])] = _sliced_norm(mods[g.norm], kept[g.producer])
    small = copy.deepcopy(model, memo)
    _update_widths(small, kept)
    return StructuredPrune(small, groups, {k: v.cpu() for k, v in kept.items()})


def _update_widths(model: nn.Module, kept: dict[str, torch.Tensor]) -> None:
    """Keep the width attributes of weightlab's models true after pruning."""
    if isinstance(model, MLP):
        model.widths = [
            model.widths[0],
            *(int(kept[f"layers.{i}"].numel()) for i in range(len(model.layers) - 1)),
            model.widths[-1],
        ]
    elif isinstance(model, ResidualCNN):
        model.inner = [int(kept[f"blocks.{i}.conv1"].numel()) for i in range(len(model.blocks))]
    elif isinstance(model, SmallCNN):
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        model.channels = [
            int(kept[n].numel()) if n in kept else int(model.get_submodule(n).out_channels)
            for n in convs
        ]


@contextmanager
def zeroed_units(model: nn.Module, result: StructuredPrune) -> Iterator[nn.Module]:
    """Within the block, ``model`` (the original) outputs zeros for every unit the prune
    removed, at each group's post-BatchNorm, post-activation module (forward hooks):
    in eval mode it then computes what the pruned model computes."""
    mods = dict(model.named_modules())
    handles = []
    for g in result.groups:
        n = mods[g.producer].weight.shape[0]
        drop = torch.ones(n, dtype=torch.bool)
        drop[result.kept[g.producer]] = False

        def hook(_m, _inp, out, drop=drop):
            shape = [1, -1] + [1] * (out.dim() - 2)
            return out.masked_fill(drop.to(out.device).view(shape), 0.0)

        handles.append(mods[g.zero_at].register_forward_hook(hook))
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


__all__ = [
    "StructuredPrune",
    "UnitGroup",
    "count_flops",
    "count_parameters",
    "kept_units",
    "l1_unit_scores",
    "prune_structured",
    "structured_report",
    "unit_groups",
    "zeroed_units",
]
