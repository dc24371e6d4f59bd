"""Power-law fits of the tail of an empirical spectral density (ESD), as weightwatcher does.

Clauset, Shalizi & Newman, "Power-law distributions in empirical data" (SIAM Review 2009):
for a continuous power law ``p(λ) ∝ λ^(−α)`` on ``λ ≥ xmin`` the maximum-likelihood
exponent is (their Eq. 3.1)

    α̂ = 1 + n / Σ_{λ_i ≥ xmin} ln(λ_i / xmin),

and ``xmin`` is the candidate minimising the Kolmogorov–Smirnov distance between the
empirical CDF of the tail and the fitted CDF ``F(λ) = 1 − (λ/xmin)^(1−α)`` (their §3.3,
Eq. 3.9). Martin & Mahoney (JMLR 2021, "Implicit self-regularization in deep neural
networks") fit this law to the eigenvalues of ``WᵀW``; weightwatcher 0.7.7 is the reference
implementation. :func:`fit_power_law` follows its conventions exactly (its ``WWFit`` class,
``pl_package="ww"``, the default):

- only eigenvalues ``> 1e-5`` (:data:`EVALS_THRESH`) enter the fit;
- the candidates for ``xmin`` are every sorted eigenvalue but the largest; ``n`` counts the
  eigenvalues ``≥ xmin`` (the candidate itself included); no ``xmax``;
- the KS distance compares the fitted CDF at the ``n`` sorted tail values with the
  empirical CDF ``0, 1/n, …, (n−1)/n`` (its left limit); a candidate with ``α ≤ 1`` gets
  ``D = 1``; the first minimum wins;
- with fewer than :data:`SMALL_N` (20) eigenvalues weightwatcher switches to its small-N
  fit: the bias-corrected ``α = 1 + (n − 1)/Σ ln(λ/xmin)`` over candidates with tails of at
  least 8; it ranks them by ``D − 0.868/√n`` but then keeps the minimal-D candidate
  (see :func:`_small_n_row`), and so does this module;
- spectra with fewer than ``min_evals`` eigenvalues (default 8, weightwatcher's
  ``DEFAULT_MIN_EVALS``) are refused: :class:`~weightlab.errors.DataError`.

The finger guard (:func:`clip_fingers`) is weightwatcher's ``fix_fingers="clip_xmax"``
(weightwatcher issues 102, 160 and 229): a few outlying top eigenvalues ("fingers", a
finite-size effect) can make α spuriously large, so the top ``k = 2, …, max_fingers − 1``
eigenvalues are removed in turn and the first refit whose α falls more than
``finger_thresh`` (1.0; 0.5 was found too small upstream, issue 229) below the unclipped α
is kept; the search stops early once a refit's α is ≤ 2. If none qualifies, the clipped α
equals the unclipped one.

Everything is batched: rows of equal length are fitted together with one ``(rows,
candidates, n)`` tensor expression in float64, on the rows' device (CPU or CUDA).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch

from weightlab.errors import ConfigError, DataError

__all__ = [
    "EVALS_THRESH",
    "FINGER_MIN_ALPHA",
    "FINGER_THRESH",
    "MAX_FINGERS",
    "MIN_EVALS",
    "SMALL_N",
    "TailFit",
    "clip_fingers",
    "fit_power_law",
    "fit_power_law_batch",
]

MIN_EVALS = 8
"""weightwatcher 0.7.7's ``DEFAULT_MIN_EVALS``: smaller spectra are refused."""
EVALS_THRESH = 1e-5
"""weightwatcher's ``EVALS_THRESH``: eigenvalues at or below it are dropped before a fit."""
SMALL_N = 20
"""weightwatcher's ``SMALL_N_CUTOFF``: below it the small-N fit is used."""
SMALL_N_K_MIN = 8
"""Smallest tail the small-N fit considers (weightwatcher's ``k_min``)."""
FINGER_THRESH = 1.0
"""α must drop by more than this for a clipped fit to be kept (``DEFAULT_FINGER_THRESH``)."""
MAX_FINGERS = 10
"""Clip the top ``k = 2 … MAX_FINGERS − 1`` eigenvalues (``DEFAULT_MAX_FINGERS``)."""
FINGER_MIN_ALPHA = 2.0
"""The finger search stops once a clipped fit's α is at or below this (``min_alpha``)."""

_CHUNK_ELEMENTS = 1 << 22  # elements of one (rows, candidates, n) block


@dataclass(frozen=True)
class TailFit:
    """A power-law fit of a spectrum's tail.

    Attributes:
        alpha: the exponent α of ``p(λ) ∝ λ^(−α)`` on ``λ ≥ xmin``.
        xmin: the start of the tail (an eigenvalue).
        ks_distance: the KS distance ``D`` of the tail fit.
        n_tail: eigenvalues ``≥ xmin``.
        n_evals: eigenvalues above :data:`EVALS_THRESH` that entered the fit.
        sigma: weightwatcher's ``sigma``, ``(α − 1)/√n_tail``.
        method: ``"csn"`` (the standard fit), ``"small_n"`` (weightwatcher's fit below 20
            eigenvalues) or ``"fixed_xmin"``.
        n_fingers: top eigenvalues removed by the finger guard (0 for a plain fit).
    """

    alpha: float
    xmin: float
    ks_distance: float
    n_tail: int
    n_evals: int
    sigma: float
    method: str
    n_fingers: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _as_sorted(evals, thresh: float) -> torch.Tensor:
    x = torch.as_tensor(evals).detach()
    if x.dim() != 1:
        raise DataError(f"eigenvalues must be a 1-D array, got shape {tuple(x.shape)}; flatten it")
    x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise DataError("the spectrum has non-finite eigenvalues; check the weights for NaN/inf")
    x = torch.sort(x).values
    return x[x > thresh]


def _check_size(n_total: int, n_kept: int, min_evals: int, thresh: float) -> None:
    if n_total < min_evals:
        raise DataError(
            f"spectrum too small to fit: {n_total} eigenvalues < min_evals={min_evals}; "
            "fit a larger layer or lower min_evals"
        )
    if n_kept < max(min_evals, 2):
        raise DataError(
            f"spectrum too small to fit: {n_kept} of {n_total} eigenvalues are above "
            f"{thresh:g} (need {max(min_evals, 2)}); the layer is (nearly) low-rank"
        )


def _tail_dev(
    logx: torch.Tensor,
    alpha: torch.Tensor,
    r: torch.Tensor,
    i: torch.Tensor,
    k: torch.Tensor,
    n: int,
) -> torch.Tensor:
    """max_k |F_fit(x_{i+k}) − k/n_i| for pairs (row r, candidate i) at tail offsets ``k``
    (P, K), entries with ``k ≥ n_i`` ignored. Every element is computed by the same
    operations whatever ``k`` holds, so a subset of offsets gives a lower bound of the
    exact maximum (up to an ulp of ``exp``, see :data:`_PRUNE_TOL`)."""
    flat = logx.reshape(-1)
    base = r * n + i  # flat index of the candidate xmin
    tail = (n - i).to(logx.dtype)[:, None]
    j = torch.minimum(base[:, None] + k, (r * n + n - 1)[:, None])
    gap = flat[j] - flat[base][:, None]  # ln(x_j / xmin)
    a = alpha.reshape(-1)[r * (n - 1) + i][:, None]
    fit = torch.exp_(gap.mul_(1.0 - a))  # 1 − F_fit(x_j) = (x_j/xmin)^(1−α)
    dev = torch.rsub(fit, 1.0).sub_(k.to(logx.dtype) / tail).abs_()
    return dev.masked_fill_(k >= tail, 0.0).amax(dim=1)


def _exact_dev(logx, alpha, r, i, n) -> torch.Tensor:
    """The exact KS distance of pairs (r, i), in chunks of similar tail length."""
    out = torch.empty(r.numel(), dtype=logx.dtype, device=logx.device)
    if r.numel() == 0:
        return out
    order = torch.argsort(i)  # ascending i: descending tail length
    i_sorted = i[order].tolist()
    p = 0
    while p < order.numel():
        width = n - i_sorted[p]
        step = max(1, _CHUNK_ELEMENTS // width)
        idx = order[p : p + step]
        k = torch.arange(width, device=logx.device).expand(idx.numel(), width)
        out[idx] = _tail_dev(logx, alpha, r[idx], i[idx], k, n)
        p += step
    return out


_LEVELS = (8, 64)  # sampled tail offsets per candidate in the pruning rounds
_PRUNE_TOL = 1e-12  # keeps candidates within rounding of the best (exp may differ by an ulp)


def _csn_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standard CSN fit of each row of ``x`` (rows, N), sorted ascending, all positive.

    Returns (alpha, D, index of xmin) per row, the weightwatcher ``WWFit`` conventions.
    The KS distance of every candidate is needed only to find the smallest: candidates are
    first bounded from below on a few sampled tail points (a subset of the terms of the
    maximum, so never above the true D) and dropped once the bound exceeds the exact D of
    the best candidate so far; the survivors get the exact D. The result equals the
    exhaustive search (tested)."""
    rows, n = x.shape
    dev = x.device
    logx = torch.log(x)
    suffix = torch.flip(torch.cumsum(torch.flip(logx, (1,)), 1), (1,))  # Σ_{j≥i} ln x_j
    ic = torch.arange(n - 1, device=dev)
    tail = (n - ic).to(x.dtype)
    alpha = 1.0 + tail / (suffix[:, :-1] - tail * logx[:, :-1])
    valid = (alpha > 1.0) & torch.isfinite(alpha)
    d = torch.ones(rows, n - 1, dtype=x.dtype, device=dev)  # ww: D = 1 where α ≤ 1
    bound = torch.where(valid, torch.zeros_like(d), torch.ones_like(d))
    best_d = torch.full((rows,), math.inf, dtype=x.dtype, device=dev)
    alive = valid.clone()
    for m in _LEVELS:
        r, i = alive.nonzero(as_tuple=True)
        if r.numel() == 0:
            break
        t = torch.arange(m + 1, device=dev)
        k = (t[None, :] * (n - 1 - i)[:, None]) // m
        lb = torch.empty(r.numel(), dtype=x.dtype, device=dev)
        step = max(1, _CHUNK_ELEMENTS // (m + 1))
        for p in range(0, r.numel(), step):
            q = slice(p, p + step)
            lb[q] = _tail_dev(logx, alpha, r[q], i[q], k[q], n)
        bound[r, i] = torch.maximum(bound[r, i], lb)
        # the exact D of each row's most promising candidate tightens the cut
        masked = torch.where(alive, bound, torch.full_like(bound, math.inf))
        cand = torch.argmin(masked, dim=1)
        has = alive.any(dim=1)
        rr = torch.arange(rows, device=dev)[has]
        ex = _exact_dev(logx, alpha, rr, cand[has], n)
        d[rr, cand[has]] = ex
        best_d[rr] = torch.minimum(best_d[rr], ex)
        alive &= bound <= best_d[:, None] + _PRUNE_TOL
    r, i = alive.nonzero(as_tuple=True)
    d[r, i] = _exact_dev(logx, alpha, r, i, n)
    # pruned candidates have D ≥ bound > best_d: they cannot be (first) minima
    d = torch.where(valid & ~alive, torch.full_like(d, math.inf), d)
    pos = torch.arange(rows, device=dev)
    best = torch.argmin(d, dim=1)
    return alpha[pos, best], d[pos, best], best


def _small_n_row(x: torch.Tensor) -> tuple[float, float, int]:
    """weightwatcher 0.7.7's small-N fit on one sorted row (fewer than 20 eigenvalues).

    Its ``fit_powerlaw_smallN`` computes the bias-corrected ``α = 1 + (n − 1)/Σ ln(λ/xmin)``
    and the KS distance for every candidate with a tail of at least 8 (``k_min``), and ranks
    them by ``D − 0.868/√n``; but the ``WWFit`` constructor then re-selects ``argmin D`` over
    the same arrays (skipped candidates hold ``D = 1``), so the effective rule is the
    candidate with the smallest D, which is what this function computes."""
    n_all = x.numel()
    logx = torch.log(x)
    alphas = [0.0] * (n_all - 1)
    ds = [1.0] * (n_all - 1)
    any_valid = False
    for i in range(n_all - 1):
        n = n_all - i
        if n < SMALL_N_K_MIN:
            continue
        s = float(logx[i:].sum() - n * logx[i])
        if s <= 1e-12:
            continue
        a = 1.0 + (n - 1.0) / s
        alphas[i] = a
        if a <= 1.0:
            continue
        fit = 1.0 - torch.exp((1.0 - a) * (logx[i:] - logx[i]))
        emp = torch.arange(n, dtype=x.dtype, device=x.device) / n
        ds[i] = float((emp - fit).abs().max())
        any_valid = True
    if not any_valid:  # no candidate survived: ww fits the whole spectrum as the tail
        s = float(logx.sum() - n_all * logx[0])
        if s <= 1e-12:
            return 1.0, 1.0, 0
        a = 1.0 + (n_all - 1.0) / s
        fit = 1.0 - torch.exp((1.0 - a) * (logx - logx[0]))
        emp = torch.arange(n_all, dtype=x.dtype, device=x.device) / n_all
        alphas[0], ds[0] = a, float((emp - fit).abs().max())
    best = min(range(n_all - 1), key=lambda c: (ds[c], c))
    return alphas[best], ds[best], best


def _fit_rows(x: torch.Tensor, n_total: list[int] | None = None) -> list[TailFit]:
    """Fit every row of a (rows, N) batch of sorted, thresholded spectra of equal length."""
    rows, n = x.shape
    if n >= SMALL_N:
        alpha, d, best = _csn_rows(x)
        out = []
        for r, a, dd, b in zip(range(rows), alpha.tolist(), d.tolist(), best.tolist(), strict=True):
            m = n - b
            xmin = float(x[r, b])
            out.append(TailFit(a, xmin, dd, m, n, (a - 1.0) / math.sqrt(m), "csn"))
        return out
    out = []
    for r in range(rows):
        a, dd, b = _small_n_row(x[r])
        m = n - b
        out.append(TailFit(a, float(x[r, b]), dd, m, n, (a - 1.0) / math.sqrt(m), "small_n"))
    return out


def fit_power_law(
    evals,
    xmin: float | None = None,
    *,
    min_evals: int = MIN_EVALS,
    thresh: float = EVALS_THRESH,
) -> TailFit:
    """Fit ``p(λ) ∝ λ^(−α)`` to the tail of a spectrum (Clauset et al. 2009, Eqs. 3.1, 3.9).

    Args:
        evals: eigenvalues (any order), e.g. of ``WᵀW``.
        xmin: a fixed start of the tail (fit α on ``λ ≥ xmin`` only); ``None`` chooses it by
            minimising the KS distance over the sorted eigenvalues, as weightwatcher does.
        min_evals: refuse spectra with fewer eigenvalues (weightwatcher's default, 8).
        thresh: eigenvalues ``≤ thresh`` are dropped first (weightwatcher's 1e-5).

    Raises:
        DataError: fewer than ``min_evals`` eigenvalues (or fewer than that above
            ``thresh``), or non-finite values.
    """
    if min_evals < 2:
        raise ConfigError(f"min_evals must be >= 2, got {min_evals}; a fit needs 2 eigenvalues")
    n_total = torch.as_tensor(evals).numel()
    x = _as_sorted(evals, thresh)
    _check_size(n_total, x.numel(), min_evals, thresh)
    if xmin is None:
        return _fit_rows(x[None, :])[0]
    if not xmin > 0:
        raise ConfigError(f"xmin must be > 0, got {xmin}; give a positive eigenvalue or None")
    tail = x[x >= xmin]
    m = tail.numel()
    if m < 2:
        raise DataError(f"spectrum too small to fit: {m} eigenvalues >= xmin={xmin:g}; lower xmin")
    logx = torch.log(tail)
    s = float(logx.sum() - m * math.log(xmin))
    a = 1.0 + m / s if s > 0 else math.inf
    fit = 1.0 - torch.exp((1.0 - a) * (logx - math.log(xmin)))
    emp = torch.arange(m, dtype=torch.float64, device=tail.device) / m
    d = float((fit - emp).abs().max()) if a > 1 and math.isfinite(a) else 1.0
    return TailFit(a, float(xmin), d, m, x.numel(), (a - 1.0) / math.sqrt(m), "fixed_xmin")


def fit_power_law_batch(
    spectra: list[torch.Tensor],
    *,
    min_evals: int = MIN_EVALS,
    thresh: float = EVALS_THRESH,
    fingers: bool = True,
    finger_thresh: float = FINGER_THRESH,
    max_fingers: int = MAX_FINGERS,
    min_alpha: float = FINGER_MIN_ALPHA,
) -> list[tuple[TailFit, TailFit | None] | str]:
    """Fit many spectra at once: one batched CSN fit per distinct length.

    Returns, per spectrum, ``(fit, clipped)`` (``clipped`` from :func:`clip_fingers`'s rule,
    ``None`` when ``fingers`` is false) or, for a spectrum too small to fit, the one-line
    reason it was refused.
    """
    _check_finger_args(finger_thresh, max_fingers)
    prepared: list[torch.Tensor | str] = []
    for ev in spectra:
        x = _as_sorted(ev, thresh)
        try:
            _check_size(torch.as_tensor(ev).numel(), x.numel(), min_evals, thresh)
        except DataError as e:
            prepared.append(str(e))
            continue
        prepared.append(x)
    live = [s for s, x in enumerate(prepared) if not isinstance(x, str)]
    fits = _fit_jobs(prepared, [(s, 0) for s in live])
    clipped: dict[int, TailFit] = {}
    searching = live if fingers else []
    for k in range(2, max_fingers):
        # weightwatcher's clip_xmax loop, one round per clip size k over all spectra still
        # searching (each round is one batched fit per length)
        searching = [s for s in searching if prepared[s].numel() - k >= max(min_evals, 2)]
        if not searching:
            break
        round_fits = _fit_jobs(prepared, [(s, k) for s in searching])
        still = []
        for s in searching:
            f, first = round_fits[(s, k)], fits[(s, 0)]
            if f.alpha + finger_thresh < first.alpha:
                clipped[s] = replace(f, n_fingers=k)
            elif not (min_alpha is not None and f.alpha <= min_alpha):
                still.append(s)
        searching = still
    out: list[tuple[TailFit, TailFit | None] | str] = []
    for s, x in enumerate(prepared):
        if isinstance(x, str):
            out.append(x)
        else:
            out.append((fits[(s, 0)], clipped.get(s, fits[(s, 0)]) if fingers else None))
    return out


def _fit_jobs(prepared: list, jobs: list[tuple[int, int]]) -> dict[tuple[int, int], TailFit]:
    """Fit ``prepared[s][: n − k]`` for every job (s, k); equal lengths share one batch."""
    groups: dict[tuple[int, torch.device], list[tuple[int, int]]] = {}
    for s, k in jobs:
        x = prepared[s]
        groups.setdefault((x.numel() - k, x.device), []).append((s, k))
    fits: dict[tuple[int, int], TailFit] = {}
    for (length, _), group in groups.items():
        batch = torch.stack([prepared[s][:length] for s, _ in group])
        for job, f in zip(group, _fit_rows(batch), strict=True):
            fits[job] = f
    return fits


def _check_finger_args(finger_thresh: float, max_fingers: int) -> None:
    if not finger_thresh > 0:
        raise ConfigError(f"finger_thresh must be > 0, got {finger_thresh}; the default is 1.0")
    if max_fingers < 3:
        raise ConfigError(f"max_fingers must be >= 3, got {max_fingers}; the default is 10")


def clip_fingers(
    evals,
    *,
    min_evals: int = MIN_EVALS,
    thresh: float = EVALS_THRESH,
    finger_thresh: float = FINGER_THRESH,
    max_fingers: int = MAX_FINGERS,
    min_alpha: float = FINGER_MIN_ALPHA,
) -> TailFit:
    """The finger guard: weightwatcher's ``fix_fingers="clip_xmax"`` rule.

    Removes the top ``k = 2, 3, …, max_fingers − 1`` eigenvalues in turn (only while at least
    ``min_evals`` remain) and refits; the first refit with ``α_k + finger_thresh < α`` (the
    unclipped α) is returned with ``n_fingers = k``; the search stops at the first refit with
    ``α_k ≤ min_alpha``; otherwise the unclipped fit is returned (``n_fingers = 0``).
    weightwatcher reports ``k − 1`` as its ``num_fingers`` for the same clip.
    """
    res = fit_power_law_batch(
        [torch.as_tensor(evals)],
        min_evals=min_evals,
        thresh=thresh,
        finger_thresh=finger_thresh,
        max_fingers=max_fingers,
        min_alpha=min_alpha,
    )[0]
    if isinstance(res, str):
        raise DataError(res)
    return res[1]  # type: ignore[return-value]
