"""Weight spectra: the empirical spectral density (ESD) of every weight matrix, its power-law
tail α (Clauset–Shalizi–Newman, as weightwatcher fits it), stable rank and spectral norm.

Martin & Mahoney, "Implicit self-regularization in deep neural networks: evidence from
random matrix theory and implications for learning" (JMLR 2021): the ESD of a layer is the
set of eigenvalues ``λ_i = σ_i²`` of its correlation matrix ``X = WᵀW`` (the paper
normalises by ``1/N``; the scale changes neither α nor the stable rank, and weightwatcher
0.7.7 does not normalise, so neither does this module), and heavy-tailed ESDs are fitted
with ``p(λ) ∝ λ^(−α)`` on the tail (:mod:`weightlab.probes.powerlaw`).

Which matrices (:func:`layer_matrices`), each named by its full module path:

- ``nn.Linear`` (subclasses included) and ``nn.Embedding``: the weight as it is.
- ``nn.Conv2d`` (weight ``out × in × kh × kw``): weightwatcher's convention, the
  ``kh·kw`` slices ``W[:, :, i, j]`` (``out × in`` matrices, one per kernel position); the
  layer's ESD is the union of the slices' eigenvalues (``kh·kw·min(out, in)`` of them), its
  stable rank ``Σλ / max λ`` over that union (‖W‖_F² over the largest slice σ_max²), and
  ``σ_max`` the largest slice singular value. weightwatcher additionally multiplies conv2d
  weights by ``√(conv2d_count/2)`` (its ``conv2d_norm``; ``conv2d_count`` is 1 in its
  default pooled path, so by ``√½``): that rescales every eigenvalue alike, so α and the
  stable rank are unchanged, while its ``xmin`` is half and its ``sv_max`` ``√½`` times
  this module's, which reports the unscaled weights.
- ``nn.Conv1d`` (``out × in × k``): the same convention with ``k`` slices ``W[:, :, t]``
  (weightwatcher passes the 3-D tensor to its SVD unchanged).
- ``nn.RNN``/``nn.LSTM``/``nn.GRU`` and their cells (weightwatcher skips them): every
  ``weight_ih_l{k}``/``weight_hh_l{k}`` (and ``_reverse``, ``weight_hr`` projections).
  PyTorch stacks the gates along the rows (LSTM ``i, f, g, o``; GRU ``r, z, n``), so by
  default (``lstm="per_gate"``) each gate is its own ``H × in`` matrix, named
  ``<module>.weight_ih_l0.i``; ``lstm="stacked"`` keeps the ``G·H × in`` matrix, named
  ``<module>.weight_ih_l0``. A plain RNN has one gate.

Eigenvalues (:func:`esd`) are those of the smaller Gram matrix (``WᵀW`` or ``WWᵀ``) in
float64, from ``torch.linalg.eigvalsh`` on stacks of equal-shaped Gram matrices, on the
weights' device (CPU or CUDA). Refusal follows weightwatcher (``pool=True``, its default):
a layer with fewer than ``min_evals`` (8) eigenvalues in all (``n_matrices · min(rows,
cols)``) is not fitted, with the reason; its stable rank and ``σ_max`` are still reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase

import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.probes.powerlaw import (
    EVALS_THRESH,
    FINGER_MIN_ALPHA,
    FINGER_THRESH,
    MAX_FINGERS,
    MIN_EVALS,
    fit_power_law_batch,
)
from weightlab.progress import progress_bar

__all__ = [
    "GATES",
    "LayerSpectrum",
    "LayerWeight",
    "Spectra",
    "esd",
    "layer_matrices",
    "spectra",
]

GATES: dict[str, tuple[str, ...]] = {
    "LSTM": ("i", "f", "g", "o"),
    "GRU": ("r", "z", "n"),
    "RNN_TANH": ("h",),
    "RNN_RELU": ("h",),
}
"""PyTorch's row order of the gates stacked in a recurrent weight, by ``RNNBase.mode``."""
PROGRESS_MIN_MATRICES = 64
"""Show a progress bar (``progress=None``) from this many weight matrices on."""
_GRAM_CHUNK = 1 << 25  # float64 elements of one stacked batch of weight matrices


@dataclass(frozen=True)
class LayerWeight:
    """One layer's weight as a stack of 2-D matrices ``(n_matrices, rows, cols)``.

    ``kind``: ``"linear"``, ``"embedding"``, ``"conv1d"``, ``"conv2d"`` or ``"rnn"``;
    ``matrices`` is a detached view of (or slices of) the live weight: never write to it."""

    name: str
    kind: str
    matrices: torch.Tensor = field(repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.matrices.shape[1]), int(self.matrices.shape[2]))

    @property
    def n_matrices(self) -> int:
        return int(self.matrices.shape[0])


def _rnn_gates(module: nn.Module) -> tuple[str, ...]:
    if isinstance(module, nn.RNNBase):
        return GATES[module.mode]
    if isinstance(module, nn.LSTMCell):
        return GATES["LSTM"]
    if isinstance(module, nn.GRUCell):
        return GATES["GRU"]
    return GATES["RNN_TANH"]


def _module_weights(path: str, module: nn.Module, lstm: str) -> list[LayerWeight]:
    if isinstance(module, nn.Linear | nn.Embedding):
        w = getattr(module, "weight", None)
        if not isinstance(w, torch.Tensor) or isinstance(w, nn.parameter.UninitializedParameter):
            return []
        kind = "linear" if isinstance(module, nn.Linear) else "embedding"
        return [LayerWeight(path, kind, w.detach()[None])]
    if isinstance(module, nn.Conv2d):
        w = module.weight.detach()  # out × in × kh × kw -> kh·kw slices out × in
        return [LayerWeight(path, "conv2d", w.permute(2, 3, 0, 1).reshape(-1, *w.shape[:2]))]
    if isinstance(module, nn.Conv1d):
        w = module.weight.detach()  # out × in × k -> k slices out × in
        return [LayerWeight(path, "conv1d", w.permute(2, 0, 1))]
    if isinstance(module, nn.RNNBase | nn.RNNCellBase):
        gates = _rnn_gates(module)
        out = []
        for pname, p in module.named_parameters(recurse=False):
            if not pname.startswith("weight_"):
                continue
            w = p.detach()
            base = f"{path}.{pname}" if path else pname
            if lstm == "stacked" or pname.startswith("weight_hr") or len(gates) == 1:
                out.append(LayerWeight(base, "rnn", w[None]))
            else:
                for gate, chunk in zip(gates, w.chunk(len(gates), dim=0), strict=True):
                    out.append(LayerWeight(f"{base}.{gate}", "rnn", chunk[None]))
        return out
    return []


def _select(layers: list[LayerWeight], select, paths: dict[str, str]) -> list[LayerWeight]:
    if select is None:
        return layers
    patterns = [select] if isinstance(select, str) else list(select)
    keep: set[str] = set()
    for pat in patterns:
        hit = {
            lw.name
            for lw in layers
            if fnmatchcase(lw.name, pat) or fnmatchcase(paths[lw.name], pat)
        }
        if not hit:
            names = [lw.name for lw in layers]
            shown = ", ".join(names[:12]) + (
                f", … ({len(names)} in all)" if len(names) > 12 else ""
            )
            raise ConfigError(f"no weight layer named {pat!r}; the model has: {shown or 'none'}")
        keep |= hit
    return [lw for lw in layers if lw.name in keep]


def layer_matrices(
    model: nn.Module,
    *,
    lstm: str = "per_gate",
    select: str | Sequence[str] | None = None,
) -> dict[str, LayerWeight]:
    """Every Linear, Conv1d/2d, Embedding and RNN/LSTM/GRU weight of ``model`` as named 2-D
    matrices (the conventions are in the module docstring).

    Args:
        lstm: ``"per_gate"`` (default: one matrix per gate) or ``"stacked"``.
        select: layer names or ``fnmatch`` globs (matched against the layer names and their
            module paths); ``None``: all.

    Raises:
        ConfigError: an unknown ``lstm`` mode, or a ``select`` entry matching no layer (the
            message names those that exist).
    """
    if lstm not in ("per_gate", "stacked"):
        raise ConfigError(f"unknown lstm mode {lstm!r}; choose 'per_gate' or 'stacked'")
    layers: list[LayerWeight] = []
    paths: dict[str, str] = {}
    for path, module in model.named_modules():
        for lw in _module_weights(path, module, lstm):
            layers.append(lw)
            paths[lw.name] = path
    return {lw.name: lw for lw in _select(layers, select, paths)}


def _gram_eigs(layers: list[LayerWeight], progress: bool | None) -> list[torch.Tensor]:
    """Ascending float64 eigenvalues of every matrix's smaller Gram matrix, per layer (all
    of a layer's matrices together), batched by shape."""
    jobs: dict[tuple, list[tuple[int, int]]] = {}  # (rows, cols, device) -> (layer, slice)
    for li, lw in enumerate(layers):
        r, c = lw.shape
        for s in range(lw.n_matrices):
            jobs.setdefault((r, c, lw.matrices.device), []).append((li, s))
    n_mats = sum(len(v) for v in jobs.values())
    show = progress if progress is not None else n_mats >= PROGRESS_MIN_MATRICES
    bar = progress_bar(n_mats, "weight spectra", "matrices", enabled=bool(show))
    grams: dict[tuple, list[tuple[tuple[int, int], torch.Tensor]]] = {}
    for (r, c, dev), members in jobs.items():
        step = max(1, _GRAM_CHUNK // max(1, r * c))
        for p in range(0, len(members), step):
            part = members[p : p + step]
            w = torch.stack([layers[li].matrices[s] for li, s in part]).to(torch.float64)
            g = w.mT @ w if r >= c else w @ w.mT
            bucket = grams.setdefault((g.shape[-1], dev), [])
            bucket.extend(zip(part, g.unbind(0), strict=True))
    per_slice: dict[tuple[int, int], torch.Tensor] = {}
    for members in grams.values():
        keys = [k for k, _ in members]
        d = members[0][1].shape[-1]
        step = max(1, _GRAM_CHUNK // max(1, d * d))
        for p in range(0, len(members), step):
            ev = torch.linalg.eigvalsh(torch.stack([g for _, g in members[p : p + step]]))
            for key, e in zip(keys[p : p + step], ev.clamp_(min=0.0).unbind(0), strict=True):
                per_slice[key] = e
            if bar is not None:
                bar.update(min(step, len(members) - p))
    if bar is not None:
        bar.close()
    return [
        torch.sort(torch.cat([per_slice[(li, s)] for s in range(lw.n_matrices)])).values
        for li, lw in enumerate(layers)
    ]


def esd(
    model: nn.Module,
    *,
    lstm: str = "per_gate",
    select: str | Sequence[str] | None = None,
    progress: bool | None = None,
) -> dict[str, torch.Tensor]:
    """The empirical spectral density of every weight layer: ascending float64 eigenvalues of
    ``WᵀW`` or ``WWᵀ`` (the smaller), on the weights' device, keyed by layer name (a conv
    layer's slices are pooled). ``progress=None`` shows a bar from 64 matrices on."""
    layers = list(layer_matrices(model, lstm=lstm, select=select).values())
    with torch.no_grad():
        eigs = _gram_eigs(layers, progress)
    return {lw.name: e for lw, e in zip(layers, eigs, strict=True)}


@dataclass(frozen=True)
class LayerSpectrum:
    """One layer's spectral metrics.

    Attributes:
        name: full module path (``.weight_ih_l0.i`` etc. appended for recurrent weights).
        kind: ``linear``, ``embedding``, ``conv1d``, ``conv2d`` or ``rnn``.
        shape: ``(rows, cols)`` of each matrix; ``n_matrices``: slices (conv) or 1.
        n_evals: eigenvalues in the ESD (``n_matrices · min(rows, cols)``).
        alpha: the power-law exponent of the ESD tail (None when refused).
        xmin, ks_distance, n_tail: the fit's tail start, KS distance and tail size.
        alpha_clipped, xmin_clipped, n_fingers: the finger guard's refit (weightwatcher's
            ``clip_xmax`` rule, :func:`weightlab.probes.powerlaw.clip_fingers`): equal to
            the plain fit with ``n_fingers = 0`` when no finger was found; None when the
            guard is off or the layer refused.
        stable_rank: ``‖W‖_F² / σ_max²`` (always reported).
        sigma_max: the spectral norm ``σ_max`` (a singular value, never squared).
        refused: why the layer was not fitted, or None.
    """

    name: str
    kind: str
    shape: tuple[int, int]
    n_matrices: int
    n_evals: int
    alpha: float | None
    xmin: float | None
    ks_distance: float | None
    n_tail: int | None
    alpha_clipped: float | None
    xmin_clipped: float | None
    n_fingers: int | None
    stable_rank: float
    sigma_max: float
    refused: str | None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass(frozen=True)
class Spectra:
    """Per-layer spectra of a model, in module order, with the settings that produced
    them. ``result[name]`` looks a layer up."""

    layers: tuple[LayerSpectrum, ...]
    min_evals: int
    fingers: str | None
    finger_thresh: float
    max_fingers: int
    lstm: str

    def __getitem__(self, name: str) -> LayerSpectrum:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ConfigError(
            f"no layer {name!r} in these spectra; they have: "
            + ", ".join(x.name for x in self.layers[:12])
        )

    @property
    def names(self) -> list[str]:
        return [x.name for x in self.layers]

    @property
    def fitted(self) -> list[LayerSpectrum]:
        return [x for x in self.layers if x.refused is None]

    def to_dict(self) -> dict:
        return {
            "settings": {
                "min_evals": self.min_evals,
                "fingers": self.fingers,
                "finger_thresh": self.finger_thresh,
                "max_fingers": self.max_fingers,
                "lstm": self.lstm,
                "evals_thresh": EVALS_THRESH,
            },
            "layers": [x.to_dict() for x in self.layers],
        }


def spectra(
    model: nn.Module,
    *,
    lstm: str = "per_gate",
    select: str | Sequence[str] | None = None,
    min_evals: int = MIN_EVALS,
    fingers: str | None = "clip_xmax",
    finger_thresh: float = FINGER_THRESH,
    max_fingers: int = MAX_FINGERS,
    progress: bool | None = None,
) -> Spectra:
    """ESD power-law α (plain and finger-guarded), stable rank and σ_max of every weight layer.

    Args:
        lstm, select: as :func:`layer_matrices`.
        min_evals: refuse layers with fewer eigenvalues (weightwatcher's 8).
        fingers: ``"clip_xmax"`` (the finger guard, see
            :func:`weightlab.probes.powerlaw.clip_fingers`) or ``None`` (plain fit only).
        finger_thresh, max_fingers: the guard's threshold (1.0) and clip limit (10).

    Never changes the model: the weights are only read, under ``torch.no_grad()``.
    """
    if fingers not in ("clip_xmax", None):
        raise ConfigError(f"unknown finger guard {fingers!r}; use 'clip_xmax' or None")
    if not isinstance(min_evals, int) or min_evals < 2:
        raise ConfigError(f"min_evals must be an integer >= 2, got {min_evals!r}")
    layers = list(layer_matrices(model, lstm=lstm, select=select).values())
    with torch.no_grad():
        eigs = _gram_eigs(layers, progress)
        small = [lw.n_matrices * min(lw.shape) < min_evals for lw in layers]
        fits = fit_power_law_batch(
            [e for e, s in zip(eigs, small, strict=True) if not s],
            min_evals=min_evals,
            fingers=fingers is not None,
            finger_thresh=finger_thresh,
            max_fingers=max_fingers,
            min_alpha=FINGER_MIN_ALPHA,
        )
    fit_iter = iter(fits)
    out = []
    for lw, e, s in zip(layers, eigs, small, strict=True):
        lam_max = float(e[-1]) if e.numel() else 0.0
        total = float(e.sum())
        stable = total / lam_max if lam_max > 0 else math.nan
        sigma = math.sqrt(lam_max)
        res = (
            f"spectrum too small to fit: {lw.n_matrices * min(lw.shape)} eigenvalues "
            f"< min_evals={min_evals}"
            if s
            else next(fit_iter)
        )
        common = dict(
            name=lw.name,
            kind=lw.kind,
            shape=lw.shape,
            n_matrices=lw.n_matrices,
            n_evals=int(e.numel()),
            stable_rank=stable,
            sigma_max=sigma,
        )
        if isinstance(res, str):
            out.append(
                LayerSpectrum(
                    **common,
                    alpha=None,
                    xmin=None,
                    ks_distance=None,
                    n_tail=None,
                    alpha_clipped=None,
                    xmin_clipped=None,
                    n_fingers=None,
                    refused=res,
                )
            )
            continue
        fit, clipped = res
        out.append(
            LayerSpectrum(
                **common,
                alpha=fit.alpha,
                xmin=fit.xmin,
                ks_distance=fit.ks_distance,
                n_tail=fit.n_tail,
                alpha_clipped=None if clipped is None else clipped.alpha,
                xmin_clipped=None if clipped is None else clipped.xmin,
                n_fingers=None if clipped is None else clipped.n_fingers,
                refused=None,
            )
        )
    return Spectra(tuple(out), min_evals, fingers, finger_thresh, max_fingers, lstm)
