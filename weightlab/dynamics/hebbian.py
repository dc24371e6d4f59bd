"""Dense Hebbian associative memories at zero temperature (rows [#42] and [#86]).

Patterns ``ξ ∈ {±1}^{K×N}``, optionally diluted (each entry 0 with probability ``d``;
Agliari et al. 2023, "Parallel Learning by Multitasking Neural Networks", row [#86]) or
learned with a teacher (Agliari et al. 2022, "Dense Hebbian neural networks: a replica
symmetric picture of supervised learning", row [#42]): the network stores
``ξ̄_μ = (1/M) Σ_a χ_μ^a ⊙ ξ_μ``, the mean of ``M`` noisy examples, ``P(χ = 1) = (1+r)/2``,
``P(χ = -1) = (1-r)/2`` (``r`` the dataset quality).

The energy of a state ``σ ∈ {±1}^N`` is (the form issue 23 specifies)::

    E(σ) = -N Σ_μ m_μ^P,     m_μ = ξ̄_μ · σ / N,     P ≥ 2,

built from the ``K`` overlaps only: no ``N^P`` synaptic tensor is ever formed. Flipping
spin ``i`` maps ``m_μ → m_μ - 2 ξ̄_μi σ_i / N``; the binomial expansion gives every spin's
exact energy change at once::

    Σ_μ [(s_μ - 2 u_μi σ_i)^P - s_μ^P] = Σ_{k=1}^{P} C(P, k) (-2 σ_i)^k Σ_μ s_μ^{P-k} u_μi^k

with ``u = c ξ̄`` integer-valued (``c = 1`` for ±1 or diluted patterns, ``c = M`` divided by
the entries' gcd for supervised ones) and ``s = u σ``: one matmul ``s = σ uᵀ`` and one
``s^{P-k} @ u^k`` per ``k < P`` (the ``k = P`` sum ``Σ_μ u_μi^P`` does not depend on ``σ``),
``P`` matmuls at most. Terms ``k`` of one parity with equal ``u^k`` share one matmul (their
``s^{P-k}`` factors summed first: ``u^k = u`` for every odd ``k`` of ±1 or 0/±1 patterns),
and a constant ``u^k`` (``u ∈ {±1}``, ``k`` even) is a row sum: ±1 patterns at ``P = 4``
take 2 matmuls (``s`` and ``(c_1 s³ + c_3 s) @ u``), supervised ones ``P``. ``ΔE_i = -N (cN)^{-P} D_i``, so a spin flips (zero temperature) iff
``D_i > 0``; ties (``ΔE = 0``) keep the spin.

**Why float64.** All the quantities above are integers. A float holds integers exactly up
to ``2^24`` (float32) or ``2^53`` (float64), and a sum of exact integers below that bound is
exact in any summation order, so the batched matmuls give bit-for-bit the same decisions
as a per-spin loop in Python integers. At the recipes' sizes (P = 4, N = 150,
K = 67,500: sums up to ~4e13; the benchmark's N = 1,000, K = 2,000: ~2e15) float32 would
round, so the module computes in float64. It checks that ``K (max|u| (N+2))^P`` bounds
every partial sum below ``2^53``; where it does not (large supervised ``M``), it checks the
state's own bound ``Σ_μ (|s_μ| + 2 max|u|)^P`` at every update and raises instead of
returning rounded dynamics. Where a bound on every product and partial sum of the gains'
matmuls (``DenseHebbian.work_bound``: ``max|s| = max|u| N``, the grouped coefficients and
``K``) stays below ``2^24``, as for ±1 patterns at P = 2, N = 1,000, K = 100 (~4e5), the gains
are computed in float32 (``DenseHebbian.work_dtype``): the same integers at twice the
matmul rate, returned as float64.

Zero-temperature dynamics, trials batched (``σ`` is ``(B, N)``; patterns are shared
``(K, N)`` or per trial ``(B, K, N)``):

- synchronous (:meth:`DenseHebbian.run_sync`): every spin with ``ΔE_i < 0`` flips at once,
  until no spin flips or ``max_sweeps``; a trial caught in a 2-cycle is finished from the
  cycle's parity (the state it would have after ``max_sweeps``);
- asynchronous (:meth:`DenseHebbian.run_async`): spins ``order[0], order[1], …`` one at a
  time (each sees the flips before it), sweeps until a sweep flips nothing.

At ``P = 2`` the flip rule is the zero-diagonal Hopfield rule ``σ_i Σ_{j≠i} J_ij σ_j < 0``
with ``J = ξ̄ᵀξ̄`` (the self-coupling cancels in ``D_i``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from weightlab.errors import ConfigError

EXACT_LIMIT = 2.0**53  # float64 holds every integer below this exactly
FLOAT32_EXACT = 2.0**24  # float32 holds every integer below this exactly


# -- checks ------------------------------------------------------------------------------
def check_order(order: int) -> int:
    """The interaction order ``P``: an integer ≥ 2."""
    if isinstance(order, bool) or not isinstance(order, int) or order < 2:
        raise ConfigError(
            f"Hebbian interaction order P must be an integer >= 2, got {order!r}; "
            "use P = 2 (Hopfield) or higher (dense)"
        )
    return order


def check_count(name: str, value: int) -> int:
    """A number of patterns ``K``, examples ``M`` or spins ``N``: an integer ≥ 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"Hebbian {name} must be an integer >= 1, got {value!r}; raise it")
    return value


def check_dilution(d: float) -> float:
    """A dilution ``d ∈ [0, 1)`` (``d = 1`` would erase every pattern)."""
    if not (isinstance(d, int | float) and math.isfinite(d) and 0.0 <= d < 1.0):
        raise ConfigError(
            f"pattern dilution d must lie in [0, 1), got {d!r}; use e.g. 0.2 (1 erases all)"
        )
    return float(d)


def check_quality(r: float) -> float:
    """A dataset quality ``r ∈ (0, 1]`` (``r = 0``: examples carry no information)."""
    if not (isinstance(r, int | float) and math.isfinite(r) and 0.0 < r <= 1.0):
        raise ConfigError(
            f"example quality r must lie in (0, 1], got {r!r}; use e.g. 0.4 (1: clean copies)"
        )
    return float(r)


# -- patterns ----------------------------------------------------------------------------
def random_patterns(
    k: int, n: int, generator: torch.Generator, dilution: float = 0.0
) -> torch.Tensor:
    """``(K, N)`` float64 patterns: signs ±1 uniformly, each entry set to 0 with
    probability ``dilution`` (row [#86]'s diluted patterns; ``0``: dense ±1 patterns).
    Draws the signs, then (only if ``dilution > 0``) the zero mask, from ``generator``."""
    check_count("K (number of patterns)", k)
    check_count("N (number of spins)", n)
    d = check_dilution(dilution)
    xi = torch.randint(0, 2, (k, n), generator=generator).to(torch.float64) * 2 - 1
    if d > 0:
        xi[torch.rand(k, n, generator=generator, dtype=torch.float64) < d] = 0.0
    return xi


@dataclass(frozen=True)
class SupervisedPatterns:
    """A teacher's dataset summarized as stored patterns (row [#42]).

    Attributes:
        values: ``(K, N)`` integer-valued float64 ``u``, ``ξ̄ = u / scale``.
        scale: the positive factor ``c`` (``M`` over the gcd of the entries).
        examples: ``M``, the examples per archetype.
        quality: ``r``.
    """

    values: torch.Tensor
    scale: float
    examples: int
    quality: float

    @property
    def mean(self) -> torch.Tensor:
        """``ξ̄``, the examples' mean (float64)."""
        return self.values / self.scale


def supervised_patterns(
    archetypes: torch.Tensor, m: int, r: float, generator: torch.Generator
) -> SupervisedPatterns:
    """``ξ̄_μ = (1/M) Σ_{a≤M} χ_μ^a ⊙ ξ_μ``, ``χ = +1`` with probability ``(1+r)/2`` else
    ``-1`` (Agliari et al. 2022, the supervised Hebbian rule). ``archetypes``: ``(K, N)``.
    Stored as integers ``u = Σ_a χ^a ⊙ ξ`` divided by their common gcd (an overall positive
    factor does not change any flip decision) with ``scale = M / gcd``."""
    check_count("M (examples per pattern)", m)
    q = check_quality(r)
    xi = archetypes.to(torch.float64)
    k, n = xi.shape
    u = torch.zeros(k, n, dtype=torch.float64)
    for _ in range(m):  # one (K, N) draw per example, in example order
        chi = torch.rand(k, n, generator=generator, dtype=torch.float64) < (1 + q) / 2
        u += torch.where(chi, xi, -xi)
    g = 0
    for v in torch.unique(u.abs().to(torch.int64)).tolist():
        g = math.gcd(g, int(v))
    g = max(g, 1)
    return SupervisedPatterns(u / g, m / g, m, q)


def corrupt(patterns: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """``(B, N)`` ±1 starts: each row of ``patterns`` (its zeros set to +1) with exactly
    ``round(fraction · N)`` spins, chosen uniformly, flipped."""
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"flip fraction must lie in [0, 1], got {fraction!r}")
    b, n = patterns.shape
    sigma = torch.where(patterns < 0, -1.0, 1.0).to(torch.float64)
    flips = round(fraction * n)
    if flips:
        idx = torch.rand(b, n, generator=generator).argsort(dim=1)[:, :flips]
        sigma.scatter_(1, idx, -sigma.gather(1, idx))
    return sigma


def overlaps(patterns: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``m_μ = ξ_μ · σ / N``: ``(B, K)`` for ``(K, N)`` or ``(B, K, N)`` patterns."""
    p = patterns.to(torch.float64)
    s = sigma.to(torch.float64)
    n = p.shape[-1]
    if p.dim() == 2:
        return s @ p.T / n
    return torch.bmm(p, s.unsqueeze(-1)).squeeze(-1) / n


# -- the network -------------------------------------------------------------------------
@dataclass
class Retrieval:
    """The end of a zero-temperature run.

    Attributes:
        sigma: ``(B, N)`` final states.
        sweeps: ``(B,)`` sweeps until the first one that flipped nothing (``max_sweeps``
            when the trial never stopped).
        converged: ``(B,)`` the trial reached a fixed point.
    """

    sigma: torch.Tensor
    sweeps: torch.Tensor
    converged: torch.Tensor


class DenseHebbian:
    """``E(σ) = -N Σ_μ (ξ̄_μ·σ/N)^P`` with ``ξ̄ = values / scale`` (module docstring).

    Args:
        patterns: ``(K, N)`` shared by every trial, or ``(B, K, N)`` one set per trial;
            integer-valued (±1, diluted 0/±1, or :class:`SupervisedPatterns` ``values``).
        order: ``P ≥ 2``.
        scale: ``c`` in ``ξ̄ = patterns / c`` (only the energy's units depend on it).
    """

    def __init__(self, patterns: torch.Tensor, order: int, scale: float = 1.0) -> None:
        self.P = check_order(order)
        u = patterns.to(torch.float64)
        if u.dim() not in (2, 3):
            raise ConfigError(f"patterns must be (K, N) or (B, K, N), got shape {tuple(u.shape)}")
        check_count("K (number of patterns)", int(u.shape[-2]))
        check_count("N (number of spins)", int(u.shape[-1]))
        if not torch.equal(u, u.round()) or not torch.isfinite(u).all():
            raise ConfigError(
                "patterns must be integer-valued (±1, 0 for diluted entries, or "
                "SupervisedPatterns.values); pass the scale separately"
            )
        if not scale > 0:
            raise ConfigError(f"pattern scale must be > 0, got {scale!r}")
        self.u, self.scale = u.contiguous(), float(scale)
        self.K, self.N = int(u.shape[-2]), int(u.shape[-1])
        self.umax = float(u.abs().max())
        self.shared = u.dim() == 2
        self.powers = [None] + [u**k for k in range(1, self.P + 1)]
        # terms k < P grouped by (parity of k, u^k): equal powers share one matmul
        # (±1 patterns: every odd k is u, every even k the constant 1; 0/±1: u or |u|)
        self.groups: list[tuple[int, torch.Tensor, float | None, list[int]]] = []
        for k in range(1, self.P):
            pk = self.powers[k]
            for _, mat, _, ks in self.groups:
                if (ks[0] - k) % 2 == 0 and torch.equal(mat, pk):
                    ks.append(k)
                    break
            else:
                first = pk.flatten()[0]
                const = float(first) if bool((pk == first).all()) else None
                self.groups.append((k % 2, pk, const, [k]))
        self.last = self.powers[self.P].sum(-2)  # (N,) or (B, N): the k = P term
        self.coef = [float(math.comb(self.P, k) * (-2) ** k) for k in range(self.P + 1)]
        # every |s| <= umax N, so this bounds every partial sum for any state
        self.static_bound = self.K * (self.umax * (self.N + 2)) ** self.P
        # float32 holds every integer below 2^24 exactly: where every product and partial
        # sum of the gains' matmuls stays below it (P = 2 at N = 1,000, K = 100: ~4e5),
        # the gains are computed in float32, the same integers at twice the matmul rate
        smax = self.umax * self.N
        mm = sum(
            self.K * sum(abs(self.coef[k]) * smax ** (self.P - k) for k in ks) * self.umax ** ks[0]
            for _, _, _, ks in self.groups
        )
        self.work_bound = smax + mm + abs(self.coef[self.P]) * self.K * self.umax**self.P
        self.work_dtype = torch.float32 if self.work_bound < FLOAT32_EXACT else torch.float64
        wd = self.work_dtype
        self._u_work = self.u.to(wd)
        self._groups_work = [(o, m.to(wd), c, ks) for o, m, c, ks in self.groups]
        self._last_work = self.last.to(wd)

    # -- pieces ----------------------------------------------------------------------
    def _take(self, t: torch.Tensor | None, rows: torch.Tensor | None):
        if t is None or rows is None or self.shared:
            return t
        return t[rows]

    def fields(self, sigma: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``s = u σ`` (``(B, K)``, integers): ``N c`` times the overlaps."""
        u = self._take(self.u, rows)
        if self.shared:
            return sigma @ u.T
        return torch.bmm(u, sigma.unsqueeze(-1)).squeeze(-1)

    def overlaps(self, sigma: torch.Tensor) -> torch.Tensor:
        """``m_μ = ξ̄_μ · σ / N`` (``(B, K)``)."""
        return self.fields(sigma.to(torch.float64)) / (self.scale * self.N)

    def energy(self, sigma: torch.Tensor) -> torch.Tensor:
        """``E = -N Σ_μ m_μ^P`` per trial (``(B,)``)."""
        return -self.N * (self.overlaps(sigma) ** self.P).sum(-1)

    def _check_exact(self, s: torch.Tensor) -> None:
        if self.static_bound < EXACT_LIMIT:
            return
        bound = float(((s.abs() + 2 * self.umax) ** self.P).sum(-1).max()) if s.numel() else 0.0
        if bound >= EXACT_LIMIT:
            raise ConfigError(
                f"Hebbian energy changes reach ~{bound:.3g} > 2^53: float64 would round them "
                "(P, N, K or the examples per pattern are too large together); lower one"
            )

    def gains(self, sigma: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``D_i = Σ_μ [(s_μ - 2 u_μi σ_i)^P - s_μ^P]`` for every spin (``(B, N)``, exact
        integers): spin ``i`` lowers the energy by flipping iff ``D_i > 0``. At most ``P``
        matmuls via the binomial expansion (module docstring); terms whose ``u^k`` and
        parity agree are summed before one shared matmul. ``rows``: which trials ``sigma``
        holds (with per-trial patterns)."""
        if self.work_dtype == torch.float64:
            sigma = sigma.to(torch.float64)
            s = self.fields(sigma, rows)
            self._check_exact(s)
        else:  # work_bound < 2^24: exact in float32 for any state
            sigma = sigma.to(self.work_dtype)
            u = self._take(self._u_work, rows)
            s = sigma @ u.T if self.shared else torch.bmm(u, sigma.unsqueeze(-1)).squeeze(-1)
        pw = {1: s}  # s^e for e = 1..P-1 (the k = P term needs none)
        for e in range(2, self.P):
            pw[e] = pw[e - 1] * s
        last = self.coef[self.P] * self._take(self._last_work, rows)
        out = last * sigma if self.P % 2 else last.expand_as(sigma).clone()
        for odd, mat, const, ks in self._groups_work:
            if const is not None:  # a row sum: no (B, K) temporary
                h = sum(self.coef[k] * pw[self.P - k].sum(-1, keepdim=True) for k in ks) * const
            else:
                a = torch.mul(pw[self.P - ks[0]], self.coef[ks[0]])
                for k in ks[1:]:
                    a.add_(pw[self.P - k], alpha=self.coef[k])
                if self.shared:
                    h = a @ mat
                else:
                    h = torch.bmm(a.unsqueeze(1), self._take(mat, rows)).squeeze(1)
            if odd:
                out.addcmul_(h, sigma)
            else:
                out += h
        return out.to(torch.float64)

    def delta_energy(self, sigma: torch.Tensor) -> torch.Tensor:
        """``ΔE_i = E(σ with spin i flipped) - E(σ)`` (``(B, N)``, float64)."""
        return -self.N * (self.scale * self.N) ** (-self.P) * self.gains(sigma)

    # -- dynamics --------------------------------------------------------------------
    def sync_step(self, sigma: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """One synchronous zero-temperature update: every spin with ``ΔE_i < 0`` flips."""
        sigma = sigma.to(torch.float64)
        return torch.where(self.gains(sigma, rows) > 0, -sigma, sigma)

    def run_sync(self, sigma: torch.Tensor, max_sweeps: int = 100) -> Retrieval:
        """Synchronous updates until no spin flips, at most ``max_sweeps``. A trial whose
        state returns to the one two sweeps before is in a 2-cycle: it stops there and
        takes the state the cycle has after ``max_sweeps`` (so the result equals running
        every trial the full ``max_sweeps``)."""
        check_count("max_sweeps", max_sweeps)
        cur = sigma.to(torch.float64).clone()
        b = cur.shape[0]
        sweeps = torch.full((b,), max_sweeps, dtype=torch.int64)
        converged = torch.zeros(b, dtype=torch.bool)
        active = torch.arange(b)
        prev = None
        for t in range(1, max_sweeps + 1):
            x = cur[active]
            rows = None if self.shared else active
            new = self.sync_step(x, rows)
            fixed = (new == x).all(-1)
            cycle = ~fixed & (new == prev).all(-1) if prev is not None else torch.zeros_like(fixed)
            cur[active] = new
            done_f = active[fixed]
            sweeps[done_f] = t - 1
            converged[done_f] = True
            if cycle.any():
                # state after max_sweeps: `new` (sweep t) if max_sweeps - t is even, else x
                if (max_sweeps - t) % 2:
                    cur[active[cycle]] = x[cycle]
            keep = ~(fixed | cycle)
            active, prev = active[keep], new[keep]
            if active.numel() == 0:
                break
        return Retrieval(cur, sweeps, converged)

    def run_async(
        self,
        sigma: torch.Tensor,
        max_sweeps: int = 100,
        order: torch.Tensor | None = None,
    ) -> Retrieval:
        """Asynchronous zero-temperature dynamics: spins ``order`` (default ``0..N-1``) one at
        a time, each flipping iff its exact ``ΔE < 0`` given every flip before it; sweeps
        until one flips nothing (per trial), at most ``max_sweeps``. Trials run batched:
        trial ``b``'s states equal running it alone."""
        check_count("max_sweeps", max_sweeps)
        cur = sigma.to(torch.float64).clone()
        b = cur.shape[0]
        idx = torch.arange(self.N) if order is None else order.to(torch.int64)
        sweeps = torch.full((b,), max_sweeps, dtype=torch.int64)
        converged = torch.zeros(b, dtype=torch.bool)
        active = torch.arange(b)
        P = self.P
        for t in range(1, max_sweeps + 1):
            x = cur[active]
            rows = None if self.shared else active
            u = self._take(self.u, rows)
            s = self.fields(x, rows)
            moved = torch.zeros(x.shape[0], dtype=torch.bool)
            for i in idx.tolist():
                col = u[:, i] if self.shared else u[:, :, i]  # (K,) or (B, K)
                a = 2.0 * col * x[:, i : i + 1]  # (B, K): s changes by -a on a flip
                d = ((s - a) ** P - s**P).sum(-1)
                self._check_exact(s)
                flip = d > 0
                x[:, i] = torch.where(flip, -x[:, i], x[:, i])
                s = s - a * flip.unsqueeze(-1)
                moved |= flip
            cur[active] = x
            still = ~moved
            sweeps[active[still]] = t - 1
            converged[active[still]] = True
            active = active[moved]
            if active.numel() == 0:
                break
        return Retrieval(cur, sweeps, converged)
