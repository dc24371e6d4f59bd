"""Opposing-signals finder (Rosenfeld & Risteski 2023, "Outliers with Opposing Signals Have
an Outsized Effect on Neural Network Optimization", row [#89]).

The paper describes "paired groups of outliers in the training data with strong opposing
signals", whose losses oscillate "between high on one group and then the other, until the
overall loss spikes". From a per-example loss history ``L`` of shape ``(T, n)`` (the loss
of each training example at T consecutive steps):

1. loss changes ``Δ_t = L_{t+1} − L_t`` over the window;
2. oscillation score per example: the total variation ``Σ_t |Δ_t|``; the ``k`` examples
   with the largest scores are the candidates;
3. split them by the sign of their entry in the leading eigenvector of the ``k × k``
   correlation matrix of their ``Δ`` series (a spectral two-way split: examples whose
   losses move together share a sign, examples moving against them get the other sign).
   Group A holds the most oscillating example;
4. report the correlation of the two groups' mean loss-change series (negative: the groups
   trade loss, the paper's signature) and the mean within-group correlation.

:func:`loss_spikes` finds the steps where the overall training loss spikes: a step whose
loss exceeds the minimum of the preceding ``window`` steps by a relative ``rise`` and is a
local maximum. Pure tensor functions; nothing here touches a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weightlab.errors import ConfigError

__all__ = ["OpposingGroups", "find_opposing_groups", "loss_spikes"]


@dataclass(frozen=True)
class OpposingGroups:
    """The finder's result: example indices (into the history's columns) of the two groups,
    every candidate's oscillation score, and the correlations (see module docstring)."""

    group_a: tuple[int, ...]
    group_b: tuple[int, ...]
    candidates: tuple[int, ...]
    scores: tuple[float, ...]
    between_corr: float
    within_corr: float

    def to_dict(self) -> dict:
        return {
            "group_a": list(self.group_a),
            "group_b": list(self.group_b),
            "candidates": list(self.candidates),
            "scores": list(self.scores),
            "between_corr": self.between_corr,
            "within_corr": self.within_corr,
        }


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else float("nan")


def find_opposing_groups(losses: torch.Tensor, k: int = 20) -> OpposingGroups:
    """The opposing groups among the ``k`` most oscillating examples of ``losses``
    ``(T, n)`` (steps × examples); needs ``T >= 3`` and ``2 <= k <= n``."""
    if losses.ndim != 2:
        raise ConfigError(f"losses must be (steps, examples), got shape {tuple(losses.shape)}")
    t, n = losses.shape
    if t < 3:
        raise ConfigError(f"need at least 3 steps of per-example losses, got {t}")
    if not 2 <= k <= n:
        raise ConfigError(f"k must be between 2 and the number of examples ({n}), got {k}")
    d = losses.double().diff(dim=0)
    if not torch.isfinite(d).all():
        raise ConfigError("the loss history holds non-finite values; cut it before divergence")
    score = d.abs().sum(0)
    top = torch.argsort(score, descending=True, stable=True)[:k]
    dk = d[:, top]
    dk = dk - dk.mean(0)
    std = dk.norm(dim=0)
    dk = dk / torch.where(std > 0, std, torch.ones_like(std))
    c = dk.T @ dk
    _, vecs = torch.linalg.eigh(c)
    lead = vecs[:, -1]
    if lead[0] < 0 or (lead[0] == 0 and lead.sum() < 0):
        lead = -lead
    in_a = lead >= 0
    a, b = top[in_a], top[~in_a]
    between = float("nan")
    if len(a) and len(b):
        between = _corr(d[:, a].mean(1), d[:, b].mean(1))
    within = []
    for mask in (in_a, ~in_a):
        idx = mask.nonzero().flatten()
        if len(idx) > 1:
            sub = c[idx][:, idx]
            m = len(idx)
            within.append(float((sub.sum() - sub.diagonal().sum()) / (m * (m - 1))))
    return OpposingGroups(
        tuple(int(i) for i in a),
        tuple(int(i) for i in b),
        tuple(int(i) for i in top),
        tuple(float(score[i]) for i in top),
        between,
        sum(within) / len(within) if within else float("nan"),
    )


def loss_spikes(curve: torch.Tensor, rise: float = 0.1, window: int = 20) -> list[int]:
    """Indices ``t`` of ``curve`` (the overall training loss per step) that are local maxima
    with ``curve[t] >= (1 + rise) · min(curve[t − window : t])``."""
    if curve.ndim != 1 or not rise > 0 or window < 1:
        raise ConfigError("loss_spikes needs a 1-D loss curve, rise > 0 and window >= 1")
    c = curve.double()
    out = []
    for t in range(1, len(c) - 1):
        lo = float(c[max(0, t - window) : t].min())
        if c[t] >= c[t - 1] and c[t] >= c[t + 1] and c[t] >= (1 + rise) * lo:
            out.append(t)
    return out
