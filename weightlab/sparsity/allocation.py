"""Allocation: how many weights each layer keeps, and which ones.

Turns scores (higher = keep) into binary masks with *exact* counts, nested inside the
previous masks (``new ⊆ prev``), as iterative pruning requires (Frankle & Carbin 2019,
"The Lottery Ticket Hypothesis", Sec. 2: each round prunes among the weights that
survived the last). Ties between equal scores are broken by position (lower flat index,
and in :func:`global_masks` earlier layer, wins), so masks are deterministic.

Density rules: :func:`uniform_densities` (same density everywhere) and
:func:`erk_densities` (Erdős–Rényi-Kernel, Evci et al. 2020, "Rigging the Lottery",
Sec. 3), turned into exact counts by :func:`keep_counts`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from fractions import Fraction

import torch

from weightlab.errors import ConfigError

Masks = dict[str, torch.Tensor]


def round_half_up(fraction: float | Fraction, n: int) -> int:
    """``⌊fraction · n + 1/2⌋`` computed exactly, on the decimal a float prints as
    (``0.1 · 5`` gives 1, not 0 from binary round-off)."""
    f = fraction if isinstance(fraction, Fraction) else Fraction(repr(float(fraction)))
    return math.floor(f * int(n) + Fraction(1, 2))


def _alive(name: str, score: torch.Tensor, prev_masks: Mapping[str, torch.Tensor] | None):
    if prev_masks is None:
        return torch.ones(score.numel(), dtype=torch.bool, device=score.device)
    if name not in prev_masks:
        raise ConfigError(f"previous masks have no entry for {name!r}; pass masks for every layer")
    prev = prev_masks[name]
    if prev.shape != score.shape:
        raise ConfigError(
            f"previous mask for {name!r} has shape {tuple(prev.shape)}, scores have {tuple(score.shape)}"
        )
    if not torch.all((prev == 0) | (prev == 1)):
        raise ConfigError(f"previous mask for {name!r} must hold only 0 and 1")
    return prev.reshape(-1).to(device=score.device, dtype=torch.bool)


def _check_scores(name: str, score: torch.Tensor) -> torch.Tensor:
    flat = score.detach().reshape(-1)
    if torch.isnan(flat).any():
        raise ConfigError(f"scores for {name!r} contain NaN; the weights have diverged")
    return flat


def top_k(values: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` largest entries of a 1-D tensor; among entries equal to the
    ``k``-th largest, the lower indices win (the result of a stable descending sort, cut
    at ``k``). Linear time: one ``kthvalue`` selection, not a sort of every score (a
    global allocation over MiniLM's 21M weights took 5.4 s with a full argsort)."""
    n = values.numel()
    keep = torch.zeros(n, dtype=torch.bool, device=values.device)
    if k <= 0:
        return keep
    if k >= n:
        return keep.fill_(True)
    kth = torch.kthvalue(values, n - k + 1).values  # the k-th largest
    keep |= values > kth
    need = k - int(keep.sum())
    if need > 0:
        keep[torch.nonzero(values == kth).reshape(-1)[:need]] = True
    return keep


def _top(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (ascending) of the ``k`` largest values; ties go to the lower index."""
    if not values.is_floating_point():
        values = values.to(torch.float64)
    return torch.nonzero(top_k(values, k)).reshape(-1)


def layerwise_masks(
    scores: Mapping[str, torch.Tensor],
    keep: Mapping[str, int],
    prev_masks: Mapping[str, torch.Tensor] | None = None,
) -> Masks:
    """Per layer, keep exactly ``keep[name]`` weights with the highest scores among those
    still alive in ``prev_masks`` (all, if ``None``); returns bool masks nested in
    ``prev_masks``. Layer-wise pruning of Frankle & Carbin (2019), Sec. 2 / Alg. step 3."""
    out: Masks = {}
    for name, score in scores.items():
        if name not in keep:
            raise ConfigError(f"no keep count for {name!r}; give one for every scored layer")
        flat = _check_scores(name, score)
        alive = _alive(name, score, prev_masks)
        alive_idx = torch.nonzero(alive).reshape(-1)
        k = int(keep[name])
        if not 0 <= k <= alive_idx.numel():
            raise ConfigError(
                f"cannot keep {k} weights of {name!r}: {alive_idx.numel()} are alive; "
                f"ask for 0..{alive_idx.numel()}"
            )
        chosen = alive_idx[_top(flat[alive_idx], k)]
        mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        mask[chosen] = True
        out[name] = mask.view(score.shape)
    return out


def global_masks(
    scores: Mapping[str, torch.Tensor],
    keep_total: int,
    prev_masks: Mapping[str, torch.Tensor] | None = None,
) -> Masks:
    """Keep exactly ``keep_total`` weights over all layers: those with the highest scores
    among the weights alive in ``prev_masks`` (one global threshold, as in the global
    pruning of Frankle & Carbin 2019, Sec. 4). Returns bool masks nested in ``prev_masks``."""
    names = list(scores)
    if prev_masks is None:  # every weight alive: one pool of all scores, no gathers
        flats = [_check_scores(name, scores[name]) for name in names]
        n_all = sum(f.numel() for f in flats)
        k = int(keep_total)
        if not 0 <= k <= n_all:
            raise ConfigError(f"cannot keep {k} weights: {n_all} are alive; ask for 0..{n_all}")
        if not flats:
            return {}
        device = flats[0].device
        # float scores are ranked in their own (promoted) dtype: converting them to float64
        # is exact and changes no order, only costs a copy
        picked = top_k(torch.cat([f.to(device) for f in flats]), k)
        parts = torch.split(picked, [f.numel() for f in flats])
        return {
            name: part.to(flat.device).view(scores[name].shape).clone()
            for name, flat, part in zip(names, flats, parts, strict=True)
        }
    flats, alive_idx = [], []
    for name in names:
        flat = _check_scores(name, scores[name])
        flats.append(flat)
        alive_idx.append(torch.nonzero(_alive(name, scores[name], prev_masks)).reshape(-1))
    n_alive = sum(int(a.numel()) for a in alive_idx)
    k = int(keep_total)
    if not 0 <= k <= n_alive:
        raise ConfigError(f"cannot keep {k} weights: {n_alive} are alive; ask for 0..{n_alive}")
    device = flats[0].device if flats else torch.device("cpu")
    pool = torch.cat([f[a].to(device) for f, a in zip(flats, alive_idx, strict=True)])
    chosen = _top(pool, k)
    picked = torch.zeros(pool.numel(), dtype=torch.bool, device=device)
    picked[chosen] = True
    out: Masks = {}
    start = 0
    for name, flat, a in zip(names, flats, alive_idx, strict=True):
        mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        mask[a] = picked[start : start + a.numel()].to(flat.device)
        start += a.numel()
        out[name] = mask.view(scores[name].shape)
    return out


def _check_density(density: float) -> float:
    d = float(density)
    if not 0.0 < d <= 1.0:
        raise ConfigError(f"density must be in (0, 1], got {density}")
    return d


def uniform_densities(shapes: Mapping[str, torch.Size], density: float) -> dict[str, float]:
    """The same density for every layer."""
    d = _check_density(density)
    return {name: d for name in shapes}


def erk_densities(shapes: Mapping[str, torch.Size], density: float) -> dict[str, float]:
    """Erdős–Rényi-Kernel densities (Evci et al. 2020, "Rigging the Lottery", Sec. 3,
    "Sparsity distribution").

    Layer ``l`` with shape ``(n_out, n_in, k_1, ...)`` gets density
    ``ε · (n_in + n_out + Σ k_i) / (n_in · n_out · Π k_i)``; ``ε`` is chosen so that
    ``Σ_l d_l N_l = density · Σ_l N_l`` (``N_l`` = weights of layer ``l``). Layers whose
    density would exceed 1 are made dense and ``ε`` is solved again for the rest, until
    none exceeds 1. For a Linear layer this is Erdős–Rényi (Mocanu et al. 2018).
    """
    d = _check_density(density)
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    total = sum(sizes.values())
    if total == 0:
        raise ConfigError("erk_densities needs at least one non-empty layer")
    dense: set[str] = set()
    while True:
        budget = d * total - sum(sizes[n] for n in dense)
        divisor = sum(raw[n] * sizes[n] for n in shapes if n not in dense)
        if divisor == 0:  # every layer dense
            return {n: 1.0 for n in shapes}
        eps = budget / divisor
        over = {n for n in shapes if n not in dense and eps * raw[n] > 1.0}
        if not over:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense |= over


def keep_counts(shapes: Mapping[str, torch.Size], densities: Mapping[str, float]) -> dict[str, int]:
    """Exact number of weights to keep per layer: ``round-half-up(d_l · N_l)``."""
    out = {}
    for name, shape in shapes.items():
        if name not in densities:
            raise ConfigError(f"no density for {name!r}; give one for every layer")
        d = float(densities[name])
        if not 0.0 <= d <= 1.0:
            raise ConfigError(f"density for {name!r} must be in [0, 1], got {d}")
        out[name] = round_half_up(d, math.prod(shape))
    return out


def mask_counts(masks: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Kept weights per layer (to draw a random mask with the same layer-wise counts)."""
    return {name: int(m.bool().sum()) for name, m in masks.items()}


def _check_rate(rate: float, what: str, allow_zero: bool = False) -> float:
    r = float(rate)
    ok = (0.0 <= r < 1.0) if allow_zero else (0.0 < r < 1.0)
    if not ok:
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ConfigError(f"{what} must be in {interval}, got {rate}")
    return r


def global_removals(alive: Mapping[str, int], rates: Mapping[str, float]) -> int:
    """How many weights one *global* pruning round removes from the layers with rate > 0:
    ``Σ_l round-half-up(r_l · alive_l)``, exactly the total that layer-wise pruning with
    the same rates removes.

    This is the pool's alive-weighted mean rate ``r̄ = Σ r_l·alive_l / Σ alive_l``
    applied to the pool (``r̄ · Σ alive_l``), rounded per layer as layer-wise pruning
    rounds; an unweighted mean of the rates would remove more or less than that whenever
    layers with different rates have different sizes. One global threshold then decides
    *where* the removals fall (Frankle & Carbin 2019, Sec. 4, global pruning).
    """
    total = 0
    for name, a in alive.items():
        if name not in rates:
            raise ConfigError(f"no pruning rate for {name!r}; give one for every layer")
        r = _check_rate(rates[name], f"pruning rate for {name!r}", allow_zero=True)
        if int(a) < 0:
            raise ConfigError(f"alive count for {name!r} must be >= 0, got {a}")
        total += round_half_up(r, int(a)) if r > 0 else 0
    return total


def layer_rates(
    names: Sequence[str], rate: float, overrides: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Per-layer pruning rates: ``rate`` everywhere, then ``overrides`` applied in order.

    An override key is the role word ``"first"`` or ``"last"`` (first / last name of
    ``names``) or an ``fnmatch`` glob matched against the parameter name
    (``layers.2.weight``) or its module name (``layers.2``). Override rates lie in
    ``[0, 1)``; 0 leaves a layer unpruned. Frankle & Carbin (2019), Sec. 2, prune
    the output layer of LeNet at half the rate of the hidden layers (``{"last": 0.1}``).
    """
    names = list(names)
    base = _check_rate(rate, "pruning rate")
    rates = {n: base for n in names}
    for key, value in (overrides or {}).items():
        r = _check_rate(value, f"pruning rate override {key!r}", allow_zero=True)
        if key == "first":
            hits = names[:1]
        elif key == "last":
            hits = names[-1:]
        else:
            hits = [
                n for n in names if fnmatchcase(n, key) or fnmatchcase(n.rpartition(".")[0], key)
            ]
        if not hits:
            raise ConfigError(f"pruning rate override {key!r} matches no layer; layers are {names}")
        for n in hits:
            rates[n] = r
    return rates


__all__ = [
    "erk_densities",
    "global_masks",
    "global_removals",
    "keep_counts",
    "layer_rates",
    "layerwise_masks",
    "mask_counts",
    "round_half_up",
    "uniform_densities",
]
