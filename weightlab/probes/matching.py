"""Unit matching between two networks: Li, Yosinski, Clune, Lipson & Hopcroft (2016),
"Convergent Learning: Do different neural networks learn the same representations?" [#76].

Activations of two networks on the same held-out examples, ``a`` ``(n, p)`` and ``b``
``(n, q)`` for one layer (units as columns; post-activation for an MLP's hidden layers):

- :func:`unit_correlation`: the Pearson correlation of every unit pair (Li et al. §2),
  ``C_ij = Σ_k (a_ki − ā_i)(b_kj − b̄_j) / (n σ_i σ_j)``. A unit constant on the data
  (a dead ReLU) has no correlation: its row/column is 0 and it is counted as dead.
- :func:`bipartite_match`: one-to-one assignment maximizing ``Σ_i C_{i,π(i)}`` (§3.2, the
  Hungarian method, :func:`scipy.optimize.linear_sum_assignment`);
  :func:`semi_match`: each unit of A to its most correlated unit of B (§3.1, many-to-one).
- :func:`sparse_prediction`: one-to-many mapping (§4): each standardized unit of A
  regressed on all standardized units of B with an L1 penalty (the lasso,
  ``min_W (1/2n)‖Y − XW‖² + λ‖W‖₁``, solved for all units at once by FISTA, Beck &
  Teboulle 2009), its explained variance R² on an evaluation split;
  :func:`one_to_one_r2` is the same R² from the single matched unit (simple linear
  regression), the baseline sparse prediction is compared with.
- :func:`permute_to_match`: a function-preserving permutation of B's hidden units (rows of
  layer ``l``'s weight and bias, columns of layer ``l + 1``'s weight) by the bipartite
  matching of each hidden layer, so B's unit ``i`` is the one matched to A's unit ``i``.

Nothing here changes a model: activations are read under ``torch.no_grad()`` in eval mode
(the mode is restored), and the permutation is applied to a copy.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from weightlab.data.task import Split
from weightlab.errors import ConfigError, DataError

__all__ = [
    "LayerMatch",
    "SparsePrediction",
    "apply_unit_permutations",
    "bipartite_match",
    "check_same_architecture",
    "lasso",
    "match_layers",
    "mlp_activations",
    "one_to_one_r2",
    "permute_to_match",
    "semi_match",
    "sparse_prediction",
    "unit_correlation",
    "unit_permutations",
]


def _as_2d(x: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise DataError(f"{what} must be a (examples, units, ...) tensor; got {type(x).__name__}")
    return x.detach().flatten(1).to(torch.float64)


def _standardize(x: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns centred and scaled to unit (population) variance; dead columns (std <=
    ``eps`` relative to the scale of the data) are left at 0. Returns (z, live mask)."""
    xc = x - x.mean(0, keepdim=True)
    sd = xc.pow(2).mean(0).sqrt()
    live = sd > eps * max(float(x.abs().max()), 1.0)
    z = torch.where(live, xc / torch.where(live, sd, torch.ones_like(sd)), torch.zeros_like(xc))
    return z, live


def unit_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation ``(p, q)`` between the units (columns) of ``a`` ``(n, p)`` and
    ``b`` ``(n, q)`` over the same ``n`` examples (Li et al. 2016 §2), in float64. Units
    constant over the examples (dead) get correlation 0 with everything."""
    a, b = _as_2d(a, "activations a"), _as_2d(b, "activations b")
    if a.shape[0] != b.shape[0]:
        raise DataError(
            f"activations of {a.shape[0]} and {b.shape[0]} examples; pass both networks' "
            "activations on the same examples"
        )
    if a.shape[0] < 2:
        raise DataError("unit correlation needs at least 2 examples; pass more data")
    za, _ = _standardize(a)
    zb, _ = _standardize(b)
    return za.T @ zb / a.shape[0]


def bipartite_match(corr: torch.Tensor) -> torch.Tensor:
    """One-to-one matching maximizing the summed correlation (Hungarian method, Li et al.
    §3.2): ``perm[i]`` is the unit of B assigned to unit ``i`` of A (needs ``p <= q``)."""
    from scipy.optimize import linear_sum_assignment

    if corr.shape[0] > corr.shape[1]:
        raise ConfigError(
            f"bipartite matching of {corr.shape[0]} units onto {corr.shape[1]}: B needs at "
            "least as many units as A; swap the networks"
        )
    rows, cols = linear_sum_assignment(corr.detach().cpu().numpy(), maximize=True)
    perm = torch.empty(corr.shape[0], dtype=torch.long)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.long)
    return perm


def semi_match(corr: torch.Tensor) -> torch.Tensor:
    """Semi-matching (Li et al. §3.1): each unit of A to its most correlated unit of B
    (several A units may share one B unit): ``argmax_j C_ij`` per row."""
    return corr.argmax(1)


def lasso(
    x: torch.Tensor, y: torch.Tensor, l1: float, *, iters: int = 2000, tol: float = 1e-7
) -> tuple[torch.Tensor, int]:
    """The lasso ``min_W (1/2n)‖Y − XW‖²_F + λ‖W‖₁`` (scikit-learn's ``Lasso(alpha=λ,
    fit_intercept=False)`` objective) for every column of ``y`` at once, by FISTA (Beck &
    Teboulle 2009) with step ``1/L``, ``L = λ_max(XᵀX/n)`` and gradient-based adaptive
    restart (O'Donoghue & Candès 2015). Returns ``(W (q, p), iterations)``; stops when no
    coefficient moves by more than ``tol``. Centre ``x`` and ``y`` first for
    an intercept."""
    n = x.shape[0]
    gram = x.T @ x / n
    xty = x.T @ y / n
    lip = float(torch.linalg.eigvalsh(gram).max().clamp_min(1e-12))
    w = torch.zeros(x.shape[1], y.shape[1], dtype=x.dtype)
    z, t = w.clone(), 1.0
    thresh = l1 / lip
    for it in range(1, iters + 1):
        u = z - (gram @ z - xty) / lip
        w_new = torch.sign(u) * (u.abs() - thresh).clamp_min(0.0)
        step = w_new - w
        if float(step.abs().max()) <= tol:
            return w_new, it
        if float(((z - w_new) * step).sum()) > 0:  # momentum points uphill: restart
            t = 1.0
        t_new = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        z = w_new + ((t - 1.0) / t_new) * step
        w, t = w_new, t_new
    return w, iters


def _r2(y: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Per-column R² = 1 − SSE/SST on the given examples; NaN for a constant column."""
    sst = (y - y.mean(0, keepdim=True)).pow(2).sum(0)
    sse = (y - pred).pow(2).sum(0)
    ok = sst > 1e-12 * max(float(y.abs().max()), 1.0) ** 2
    return torch.where(ok, 1.0 - sse / torch.where(ok, sst, torch.ones_like(sst)), torch.nan)


@dataclass(frozen=True)
class SparsePrediction:
    """Sparse (L1) prediction of A's units from B's units (Li et al. §4): per A unit the
    explained variance ``r2`` on the evaluation examples (NaN for a unit constant there)
    and ``nonzero`` (B units with a non-zero weight); ``weights`` ``(q, p)`` maps B's
    standardized units to A's."""

    r2: torch.Tensor
    nonzero: torch.Tensor
    weights: torch.Tensor
    l1: float
    iterations: int

    @property
    def mean_r2(self) -> float:
        return float(self.r2[torch.isfinite(self.r2)].mean())

    def to_dict(self) -> dict:
        return {
            "mean_r2": self.mean_r2,
            "mean_nonzero": float(self.nonzero.double().mean()),
            "l1": self.l1,
            "iterations": self.iterations,
        }


def _fit_eval(a_fit, b_fit, a_eval, b_eval):
    a_fit, b_fit = _as_2d(a_fit, "activations a"), _as_2d(b_fit, "activations b")
    a_eval = a_fit if a_eval is None else _as_2d(a_eval, "activations a (evaluation)")
    b_eval = b_fit if b_eval is None else _as_2d(b_eval, "activations b (evaluation)")
    if a_fit.shape[0] != b_fit.shape[0] or a_eval.shape[0] != b_eval.shape[0]:
        raise DataError("a and b must hold activations of the same examples; pass aligned splits")
    return a_fit, b_fit, a_eval, b_eval


def sparse_prediction(
    a_fit: torch.Tensor,
    b_fit: torch.Tensor,
    a_eval: torch.Tensor | None = None,
    b_eval: torch.Tensor | None = None,
    *,
    l1: float = 0.01,
    iters: int = 2000,
) -> SparsePrediction:
    """Predict every unit of A from all units of B (one-to-many, Li et al. §4): the lasso on
    activations standardized with the fit split's statistics (so ``l1`` is scale-free),
    fitted on ``(a_fit, b_fit)`` and scored by R² on ``(a_eval, b_eval)`` (default: the fit
    split itself)."""
    if not l1 >= 0:
        raise ConfigError(f"l1 {l1} must be >= 0")
    a_fit, b_fit, a_eval, b_eval = _fit_eval(a_fit, b_fit, a_eval, b_eval)
    mb, sb = b_fit.mean(0), b_fit.std(0, unbiased=False)
    ma, sa = a_fit.mean(0), a_fit.std(0, unbiased=False)
    live_b = sb > 1e-12 * max(float(b_fit.abs().max()), 1.0)
    sb = torch.where(live_b, sb, torch.ones_like(sb))
    sa = torch.where(sa > 0, sa, torch.ones_like(sa))
    xb = ((b_fit - mb) / sb) * live_b
    ya = (a_fit - ma) / sa
    w, it = lasso(xb, ya, l1, iters=iters)
    pred = (((b_eval - mb) / sb) * live_b) @ w * sa + ma
    return SparsePrediction(_r2(a_eval, pred), (w != 0).sum(0), w, float(l1), it)


def one_to_one_r2(
    a_fit: torch.Tensor,
    b_fit: torch.Tensor,
    perm: torch.Tensor,
    a_eval: torch.Tensor | None = None,
    b_eval: torch.Tensor | None = None,
) -> torch.Tensor:
    """R² of each A unit ``i`` predicted from its matched B unit ``perm[i]`` alone (least
    squares ``a ≈ c + d·b`` on the fit split, scored on the evaluation split): the
    one-to-one baseline of sparse prediction. NaN for a unit of A constant there."""
    a_fit, b_fit, a_eval, b_eval = _fit_eval(a_fit, b_fit, a_eval, b_eval)
    bf, be = b_fit[:, perm], b_eval[:, perm]
    bc = bf - bf.mean(0)
    var = bc.pow(2).mean(0)
    slope = torch.where(
        var > 0, (bc * (a_fit - a_fit.mean(0))).mean(0) / var.clamp_min(1e-300), 0.0
    )
    pred = a_fit.mean(0) + slope * (be - bf.mean(0))
    return _r2(a_eval, pred)


# --- networks -------------------------------------------------------------------------


def check_same_architecture(model_a: nn.Module, model_b: nn.Module) -> None:
    """One-line :class:`ConfigError` unless both models have one class and the same
    parameter names and shapes."""
    sa, sb = model_a.state_dict(), model_b.state_dict()
    shapes_a = {k: tuple(v.shape) for k, v in sa.items()}
    shapes_b = {k: tuple(v.shape) for k, v in sb.items()}
    if type(model_a) is not type(model_b) or shapes_a != shapes_b:
        diff = sorted(set(shapes_a.items()) ^ set(shapes_b.items()))[:2]
        what = (
            f"{type(model_a).__name__} vs {type(model_b).__name__}"
            if type(model_a) is not type(model_b)
            else f"e.g. {', '.join(f'{k} {s}' for k, s in diff)}"
        )
        raise ConfigError(
            f"the two models' architectures differ ({what}); match or interpolate two models "
            "of one architecture"
        )


def _check_mlp(model: nn.Module) -> None:
    from weightlab.models.mlp import MLP

    if not isinstance(model, MLP):
        raise ConfigError(
            f"unit permutation supports weightlab's MLP, got {type(model).__name__}; build the "
            "networks with weightlab.models.mlp.MLP"
        )


def _inputs(data) -> torch.Tensor:
    x = data.x if isinstance(data, Split) else data
    if not isinstance(x, torch.Tensor):
        raise DataError(f"data must be a Split or an input tensor, got {type(data).__name__}")
    return x


def mlp_activations(model: nn.Module, data, *, post: bool = True) -> dict[str, torch.Tensor]:
    """Hidden-layer activations of a weightlab MLP on ``data`` (a Split or inputs), keyed by
    the full module path of each hidden Linear (``layers.0`` .. ``layers.{L-2}``): after the
    nonlinearity (``post=True``, the units Li et al. correlate) or before it. Read in eval
    mode under ``torch.no_grad()``; the model's mode is restored."""
    from weightlab.models.mlp import ACTIVATIONS

    _check_mlp(model)
    x = _inputs(data)
    was = model.training
    model.eval()
    out: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            h = x.flatten(1)
            act = ACTIVATIONS[model.activation]
            for i, layer in enumerate(model.layers[:-1]):
                z = layer(h)
                h = act(z)
                out[f"layers.{i}"] = (h if post else z).detach().clone()
    finally:
        model.train(was)
    return out


@dataclass(frozen=True)
class LayerMatch:
    """Matching of one hidden layer (``name``: full module path) of network A to B: the
    correlation of each live A unit with its bipartite match (``matched_r``) and with its
    best B unit (``semi_r``); ``perm`` the bipartite assignment of all units; ``dead_a``,
    ``dead_b`` units constant on the data (left out of the statistics)."""

    name: str
    matched_r: torch.Tensor
    semi_r: torch.Tensor
    perm: torch.Tensor
    dead_a: int
    dead_b: int

    @property
    def mean_matched_r(self) -> float:
        return float(self.matched_r.mean()) if self.matched_r.numel() else float("nan")

    def fraction(self, lo: float | None = None, hi: float | None = None) -> float:
        """Fraction of live A units whose matched r is ``>= lo`` (or ``< hi``)."""
        r = self.matched_r
        if not r.numel():
            return float("nan")
        sel = torch.ones_like(r, dtype=torch.bool)
        if lo is not None:
            sel &= r >= lo
        if hi is not None:
            sel &= r < hi
        return float(sel.double().mean())

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "mean_matched_r": self.mean_matched_r,
            "mean_semi_r": float(self.semi_r.mean()) if self.semi_r.numel() else float("nan"),
            "dead_a": self.dead_a,
            "dead_b": self.dead_b,
            "matched_r": [float(v) for v in self.matched_r],
        }


def match_layers(model_a: nn.Module, model_b: nn.Module, data) -> list[LayerMatch]:
    """Bipartite and semi-matching of every hidden layer of two MLPs of one architecture on
    ``data`` (held-out examples), from post-activation unit correlations."""
    check_same_architecture(model_a, model_b)
    acts_a, acts_b = mlp_activations(model_a, data), mlp_activations(model_b, data)
    out = []
    for name in acts_a:
        a, b = acts_a[name].double(), acts_b[name].double()
        _, live_a = _standardize(a)
        _, live_b = _standardize(b)
        corr = unit_correlation(a, b)
        perm = bipartite_match(corr)
        idx = torch.arange(len(perm))
        matched = corr[idx, perm][live_a]
        semi = corr.max(1).values[live_a]
        out.append(
            LayerMatch(name, matched, semi, perm, int((~live_a).sum()), int((~live_b).sum()))
        )
    return out


def unit_permutations(model_b: nn.Module, model_a: nn.Module, data) -> dict[str, torch.Tensor]:
    """Per hidden layer of B (full module path), the permutation ``perm`` with ``perm[i]`` =
    the unit of B matched one-to-one to unit ``i`` of A (Hungarian on the post-activation
    correlations on ``data``)."""
    _check_mlp(model_a)
    return {m.name: m.perm for m in match_layers(model_a, model_b, data)}


def apply_unit_permutations(model: nn.Module, perms: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of the MLP ``model`` with hidden layer ``name``'s units reordered by
    ``perms[name]``: rows of its weight and bias, columns of the next layer's weight. The
    copy computes the same function (an elementwise activation commutes with a
    permutation)."""
    _check_mlp(model)
    names = [f"layers.{i}" for i in range(len(model.layers) - 1)]
    unknown = sorted(set(perms) - set(names))
    if unknown:
        raise ConfigError(
            f"no hidden layer {unknown[0]!r} to permute; hidden layers: {', '.join(names)}"
        )
    out = copy.deepcopy(model)
    with torch.no_grad():
        for i in range(len(out.layers) - 1):
            p = perms.get(f"layers.{i}")
            if p is None:
                continue
            p = torch.as_tensor(p, dtype=torch.long)
            width = out.layers[i].out_features
            if p.shape != (width,) or not torch.equal(p.sort().values, torch.arange(width)):
                raise ConfigError(
                    f"the permutation for layers.{i} is not a permutation of its {width} units"
                )
            cur, nxt = out.layers[i], out.layers[i + 1]
            cur.weight.copy_(cur.weight[p])
            if cur.bias is not None:
                cur.bias.copy_(cur.bias[p])
            nxt.weight.copy_(nxt.weight[:, p])
    return out


def permute_to_match(model_b: nn.Module, model_a: nn.Module, data) -> nn.Module:
    """A copy of MLP ``model_b`` with its hidden units permuted to align with ``model_a``
    (Li et al. 2016's bipartite matching of each hidden layer on ``data``): the same
    function as ``model_b``, closer to ``model_a`` in weight space. Neither model changes."""
    return apply_unit_permutations(model_b, unit_permutations(model_b, model_a, data))
