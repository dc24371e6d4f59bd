"""Recipe ``dense-hebbian``: Agliari et al. (2022, 8 authors), "Dense Hebbian neural
networks: a replica symmetric picture of supervised learning" (row [#42]).

Zero-temperature retrieval in dense Hebbian networks ``E = -N Σ_μ m_μ^P``
(:mod:`weightlab.dynamics.hebbian`; exact single-flip energy changes, no ``N^P`` tensor).
A trial starts at a stored pattern with 10% of its spins flipped (exactly ``round(0.1 N)``)
and runs synchronous zero-temperature sweeps until no spin flips, at most ``max_sweeps``
(a trial caught in a 2-cycle ends where the cycle is after ``max_sweeps``); it succeeds
when its final overlap with the pattern is ≥ 0.95. 128 trials a cell (random target
patterns), fresh patterns for each of 3 seeds; success rates are means ± std over seeds.

- P = 4: ``N ∈ {50, 100, 150}``, ``K = αN³``, ``α ∈ {0.004, 0.006, …, 0.02}``;
- P = 2 (Hopfield): ``N ∈ {100, 200, 400}``, ``K/N ∈ {0.08, 0.10, …, 0.20, 0.25}``;
- supervised, reported: P = 4, N = 100, K = 1,000 archetypes, each stored as the mean of
  ``M ∈ {1, 4, 16, 64}`` examples of quality ``r ∈ {0.2, 0.4, 0.6, 0.8, 1}``; a trial starts
  at the archetype with 10% flipped and succeeds at overlap ≥ 0.95 with the archetype.

Claims: (a) "ultra-storage regime": at N = 100 the largest K with success ≥ 0.9 (the
seed-mean success curve's last 0.9 crossing, linear between grid points) is ≥ 10× larger
for P = 4 than for P = 2; (b) the P = 4 transition sharpens: its 10–90% width in α over its
midpoint (the 0.5 crossing) shrinks by ≥ 30% from N = 50 to N = 150. A crossing outside
the grid makes the claim "not tested".

The synchronous "final" state of a 2-cycle depends on the parity of ``max_sweeps``; at the
default 20, about 1–2% of the trials in the transition region sit in cycles whose two
states straddle 0.95 (measured while building this recipe), below the claims' resolution.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.dynamics.hebbian import (
    DenseHebbian,
    check_order,
    check_quality,
    corrupt,
    random_patterns,
    supervised_patterns,
)
from weightlab.errors import ConfigError
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import judge
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator

TASK = "hebbian"
QUOTE_STORAGE = (
    "these networks may work in a ultra-storage regime (where they can handle a huge amount "
    "of patterns, if compared with shallow neural networks)"
)
QUOTE_SHARP = (
    "we obtain a phase diagram summarizing their performance as a function of the control "
    "parameters such as quality and quantity of the training dataset, network storage and "
    "noise, that is valid in the limit of large network size"
)
# Fixed thresholds (the issue's), not options.
SUCCESS_OVERLAP = 0.95  # a trial succeeds at final overlap >= 0.95
RETRIEVAL = 0.9  # (a): the largest K with success >= 0.9
STORAGE_RATIO = 10.0  # (a): P = 4's over P = 2's at least
STORAGE_N = 100  # (a): at this N
LOW, MID, HIGH = 0.9, 0.5, 0.1  # (b): success levels of the width and the midpoint
SHARPEN = 0.30  # (b): relative width shrinks by >= 30% from the smallest to the largest N


def _floats(text: str, name: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--{name} must be comma-separated numbers; got {text!r}") from None
    if not vals or any(not math.isfinite(v) or v <= 0 for v in vals):
        raise ConfigError(f"--{name} must list positive numbers; got {text!r}")
    if any(b <= a for a, b in zip(vals, vals[1:], strict=False)):
        raise ConfigError(f"--{name} must increase strictly (a sweep); got {text!r}")
    return vals


def _ints(text: str, name: str) -> list[int]:
    vals = _floats(text, name)
    if any(v != int(v) for v in vals):
        raise ConfigError(f"--{name} must list whole numbers; got {text!r}")
    return [int(v) for v in vals]


@dataclass(frozen=True)
class DenseHebbianConfig(RecipeConfig):
    seeds: int = opt(3, "seeds (fresh patterns and trials per seed)", min=1, max=1000)
    data: str = opt(
        TASK,
        "task name (fixed): the recipe draws its own patterns for every cell and seed",
        choices=(TASK,),
    )
    trials: int = opt(128, "trials per cell and seed", min=1, max=100000)
    flip: float = opt(0.1, "fraction of the target's spins flipped at the start", min=0, lt=1)
    max_sweeps: int = opt(20, "synchronous sweeps at most", min=1, max=100000)
    order: int = opt(4, "interaction order P of the dense network (>= 2)")
    dense_sizes: str = opt("50,100,150", "N of the dense (order P) network, increasing")
    alphas: str = opt(
        "0.004,0.006,0.008,0.01,0.012,0.014,0.016,0.018,0.02",
        "loads alpha = K / N^(P-1) of the dense network, increasing",
    )
    pair_sizes: str = opt("100,200,400", "N of the pairwise (P = 2) network, increasing")
    loads: str = opt(
        "0.08,0.1,0.12,0.14,0.16,0.18,0.2,0.25", "loads K / N of the pairwise network, increasing"
    )
    sup_n: int = opt(100, "N of the supervised map (order P)", min=1, max=100000)
    sup_k: int = opt(1000, "archetypes K of the supervised map", min=1, max=10**7)
    sup_examples: str = opt("1,4,16,64", "examples M per archetype (supervised map), increasing")
    sup_qualities: str = opt("0.2,0.4,0.6,0.8,1", "example qualities r in (0, 1], increasing")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_order(self.order)
        for name in ("dense_sizes", "pair_sizes", "sup_examples"):
            _ints(getattr(self, name), name.replace("_", "-"))
        for name in ("alphas", "loads"):
            _floats(getattr(self, name), name)
        for r in _floats(self.sup_qualities, "sup-qualities"):
            check_quality(r)


def _cell_k(kind: str, n: int, load: float, order: int) -> int:
    return max(1, round(load * n ** (order - 1))) if kind == "dense" else max(1, round(load * n))


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"cells": list, "seconds": (int, float)}, "the metrics")
    expect_list_of(
        metrics["cells"],
        {"seed": int, "n": int, "k": int, "success": float, "overlap": float},
        "cells",
    )


def last_at_least(xs: list[float], ys: list[float], level: float) -> float | None:
    """The largest ``x`` where the piecewise-linear curve ``ys(xs)`` is ≥ ``level``:
    linear between the last grid point at or above it and the next one. ``None`` when no
    point reaches ``level`` or the last one does (the crossing lies outside the grid)."""
    above = [j for j, y in enumerate(ys) if y >= level]
    if not above or above[-1] == len(ys) - 1:
        return None
    j = above[-1]
    frac = (ys[j] - level) / (ys[j] - ys[j + 1])
    return xs[j] + frac * (xs[j + 1] - xs[j])


class DenseHebbianRecipe(Recipe):
    name = "dense-hebbian"
    family = "dynamics"
    row = 42
    paper = (
        "Agliari et al. 2022, Dense Hebbian neural networks: a replica symmetric picture of "
        "supervised learning"
    )
    claim = (
        "a P = 4 dense Hebbian network retrieves >= 10x more patterns than a pairwise one at "
        "N = 100, and its retrieval transition in K/N^3 sharpens with N"
    )
    Config = DenseHebbianConfig
    tasks = (TASK,)
    kinds = ("classification",)
    trains = False
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "trials": 16,
        "dense_sizes": "20,30",
        "alphas": "0.01,0.03,0.06,0.1",
        "pair_sizes": "40,60",
        "loads": "0.05,0.15,0.3",
        "sup_n": 30,
        "sup_k": 40,
        "sup_examples": "1,8",
        "sup_qualities": "0.4,1",
    }
    # measured by the conformance test (in-process, one thread, CPU time; the 2 cores were
    # shared at load ~10, 19.6 s wall): 1.9 s
    smoke_seconds = 1.9

    def validate(self, cfg: DenseHebbianConfig, data_sizes: dict[str, int]) -> None:
        if cfg.data != TASK:
            raise ConfigError(
                f"--data {cfg.data!r}: this recipe draws its own patterns; use {TASK}"
            )

    # -- cells -----------------------------------------------------------------------
    def cell(self, order: int, n: int, k: int, trials: int, flip: float, sweeps: int, seed: int):
        """One (P, N, K) cell: success rate and mean final overlap over ``trials``."""
        xi = random_patterns(k, n, generator(derive_seed(self.name, "patterns", order, n, k, seed)))
        g = generator(derive_seed(self.name, "trials", order, n, k, seed))
        target = torch.randint(0, k, (trials,), generator=g)
        start = corrupt(xi[target], flip, g)
        res = DenseHebbian(xi, order).run_sync(start, sweeps)
        m = (res.sigma * xi[target]).sum(1) / n
        return float((m >= SUCCESS_OVERLAP).double().mean()), float(m.mean())

    def sup_cell(self, cfg: DenseHebbianConfig, m_ex: int, r: float, seed: int):
        n, k = cfg.sup_n, cfg.sup_k
        xi = random_patterns(k, n, generator(derive_seed(self.name, "archetypes", n, k, seed)))
        sp = supervised_patterns(
            xi, m_ex, r, generator(derive_seed(self.name, "examples", n, k, m_ex, r, seed))
        )
        g = generator(derive_seed(self.name, "sup-trials", n, k, m_ex, r, seed))
        target = torch.randint(0, k, (cfg.trials,), generator=g)
        start = corrupt(xi[target], cfg.flip, g)
        res = DenseHebbian(sp.values, cfg.order, sp.scale).run_sync(start, cfg.max_sweeps)
        m = (res.sigma * xi[target]).sum(1) / n
        return float((m >= SUCCESS_OVERLAP).double().mean()), float(m.mean())

    def run(self, cfg: DenseHebbianConfig, rd: RunDir, progress: bool = False) -> dict:
        parts = [
            ("dense", cfg.order, n, _floats(cfg.alphas, "alphas"))
            for n in _ints(cfg.dense_sizes, "dense-sizes")
        ]
        parts += [("pair", 2, n, _floats(cfg.loads, "loads")) for n in _ints(cfg.pair_sizes, "x")]
        ms = _ints(cfg.sup_examples, "sup-examples")
        rs = _floats(cfg.sup_qualities, "sup-qualities")
        bar = progress_bar(cfg.seeds * (len(parts) + 1), self.name, "unit", progress)
        records: dict[str, list[dict]] = {"dense": [], "pair": [], "sup": []}
        secs: dict[str, float] = {}
        for s in range(cfg.seeds):
            for kind, order, n, grid in parts:

                def compute(kind=kind, order=order, n=n, grid=grid, s=s):
                    t0, cells = time.perf_counter(), []
                    for load in grid:
                        k = _cell_k(kind, n, load, order)
                        succ, ov = self.cell(order, n, k, cfg.trials, cfg.flip, cfg.max_sweeps, s)
                        cells.append(
                            {
                                "seed": s,
                                "n": n,
                                "k": k,
                                "load": load,
                                "success": succ,
                                "overlap": ov,
                            }
                        )
                    return {"cells": cells, "seconds": time.perf_counter() - t0}, {}

                key = f"{kind}-p{order}-n{n}-seed-{s:02d}"
                metrics, _ = rd.unit(key, compute, check=_check_unit)
                records[kind] += metrics["cells"]
                secs[f"{kind} N={n}"] = secs.get(f"{kind} N={n}", 0.0) + metrics["seconds"]
                if bar is not None:
                    bar.update(1)

            def compute_sup(s=s):
                t0, cells = time.perf_counter(), []
                for m_ex in ms:
                    for r in rs:
                        succ, ov = self.sup_cell(cfg, m_ex, r, s)
                        cells.append(
                            {
                                "seed": s,
                                "n": cfg.sup_n,
                                "k": cfg.sup_k,
                                "examples": m_ex,
                                "quality": r,
                                "success": succ,
                                "overlap": ov,
                            }
                        )
                return {"cells": cells, "seconds": time.perf_counter() - t0}, {}

            metrics, _ = rd.unit(f"sup-seed-{s:02d}", compute_sup, check=_check_unit)
            records["sup"] += metrics["cells"]
            secs["supervised"] = secs.get("supervised", 0.0) + metrics["seconds"]
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        self._measurements = [
            (
                "Compute time (reported only; summed over seeds)",
                ["part", "seconds"],
                [[k, f"{v:.1f}"] for k, v in secs.items()],
            )
        ]
        return self.summarize(cfg, records)

    # -- summary ---------------------------------------------------------------------
    @staticmethod
    def _rows(cells: list[dict], keys: tuple[str, ...]) -> list[dict]:
        groups: dict[tuple, list[dict]] = {}
        for c in cells:
            groups.setdefault(tuple(c[k] for k in keys), []).append(c)
        rows = []
        for key in sorted(groups):
            cs = sorted(groups[key], key=lambda c: c["seed"])
            sm, ss = mean_std([c["success"] for c in cs])
            om, os_ = mean_std([c["overlap"] for c in cs])
            rows.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "k": cs[0]["k"],
                    "success_mean": sm,
                    "success_std": ss,
                    "success_values": [c["success"] for c in cs],
                    "overlap_mean": om,
                    "overlap_std": os_,
                    "n_seeds": len(cs),
                }
            )
        return rows

    @staticmethod
    def transitions(rows: list[dict]) -> list[dict]:
        """Per N: the last crossings of success 0.9, 0.5 and 0.1 (in load and in K), the
        10–90% width over the midpoint."""
        out = []
        for n in sorted({r["n"] for r in rows}):
            rs = sorted((r for r in rows if r["n"] == n), key=lambda r: r["load"])
            xs, ks = [r["load"] for r in rs], [float(r["k"]) for r in rs]
            ys = [r["success_mean"] for r in rs]
            lo, mid, hi = (last_at_least(xs, ys, v) for v in (LOW, MID, HIGH))
            width = (hi - lo) / mid if None not in (lo, mid, hi) else None
            out.append(
                {
                    "n": n,
                    "load_90": lo,
                    "load_50": mid,
                    "load_10": hi,
                    "k_90": last_at_least(ks, ys, RETRIEVAL),
                    "largest_grid_k_90": max(
                        (int(k) for k, y in zip(ks, ys, strict=True) if y >= RETRIEVAL),
                        default=None,
                    ),
                    "relative_width": width,
                }
            )
        return out

    def summarize(self, cfg: DenseHebbianConfig, records: dict[str, list[dict]]) -> dict:
        dense = self._rows(records["dense"], ("n", "load"))
        pair = self._rows(records["pair"], ("n", "load"))
        sup = self._rows(records["sup"], ("examples", "quality"))
        td, tp = self.transitions(dense), self.transitions(pair)
        claims = [c.to_dict() for c in self.check_claims(cfg.order, td, tp)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "order": cfg.order,
            "dense": dense,
            "pair": pair,
            "supervised": sup,
            "dense_transitions": td,
            "pair_transitions": tp,
            "supervised_reported": self.supervised_report(sup),
            "claims": claims,
            "members": cfg.seeds,
            "diverged_members": [],
            "trials_per_cell": cfg.trials,
            "rule": (
                f"synchronous zero-T sweeps (at most {cfg.max_sweeps}) from a pattern with "
                f"{cfg.flip:.0%} of its spins flipped; success = final overlap >= "
                f"{SUCCESS_OVERLAP:g}; seed-mean success curves, crossings linear between "
                "grid points"
            ),
        }

    @staticmethod
    def supervised_report(sup: list[dict]) -> list[str]:
        """The issue's two reference points of the (M, r) map, where the grid has them."""
        by = {(r["examples"], r["quality"]): r for r in sup}
        out = []
        for (m_ex, q), word in (((64, 0.4), "suffice"), ((1, 0.8), "do not suffice")):
            if (m_ex, q) in by:
                r = by[(m_ex, q)]
                out.append(
                    f"M = {m_ex} examples at r = {q:g}: success "
                    f"{_pm(r['success_mean'], r['success_std'])} (issue: they {word})"
                )
        return out

    @staticmethod
    def check_claims(order: int, td: list[dict], tp: list[dict]) -> list[ClaimResult]:
        dn = {t["n"]: t for t in td}
        pn = {t["n"]: t for t in tp}
        pre_a = []
        if STORAGE_N not in dn or STORAGE_N not in pn:
            pre_a.append(f"the run has no N = {STORAGE_N} in both the dense and pairwise grids")
        else:
            for name, t in (("dense", dn[STORAGE_N]), ("pairwise", pn[STORAGE_N])):
                if t["k_90"] is None:
                    pre_a.append(
                        f"the {name} success curve at N = {STORAGE_N} has no 0.9 crossing "
                        "inside the grid (widen the load grid)"
                    )

        def check_a():
            kd, kp = dn[STORAGE_N]["k_90"], pn[STORAGE_N]["k_90"]
            ratio = kd / kp
            detail = (
                f"largest K with success >= {RETRIEVAL:g} at N = {STORAGE_N}: P = {order} "
                f"{kd:.0f}, P = 2 {kp:.1f}; ratio {ratio:.0f} (needed >= {STORAGE_RATIO:g})"
            )
            return ratio >= STORAGE_RATIO, detail, {"k90_dense": kd, "k90_pair": kp, "ratio": ratio}

        ns = sorted(dn)
        pre_b = [] if len(ns) >= 2 else ["the run has fewer than two dense sizes"]
        for n in ns[:1] + ns[-1:] if len(ns) >= 2 else []:
            if dn[n]["relative_width"] is None:
                pre_b.append(
                    f"the P = {order} success curve at N = {n} does not cross 0.9, 0.5 and 0.1 "
                    "inside the alpha grid"
                )

        def check_b():
            w0, w1 = dn[ns[0]]["relative_width"], dn[ns[-1]]["relative_width"]
            shrink = 1 - w1 / w0
            detail = (
                f"10-90% width over midpoint: {w0:.2f} at N = {ns[0]} -> {w1:.2f} at "
                f"N = {ns[-1]}; shrinks {shrink:.0%} (needed >= {SHARPEN:.0%})"
            )
            ev = {"widths": {str(n): dn[n]["relative_width"] for n in ns}, "shrink": shrink}
            return shrink >= SHARPEN, detail, ev

        return [
            judge(
                "a",
                QUOTE_STORAGE,
                f"at N = {STORAGE_N}, the largest K with success >= {RETRIEVAL:g} is >= "
                f"{STORAGE_RATIO:g}x larger for P = {order} than for P = 2",
                pre_a,
                check_a,
            ),
            judge(
                "b",
                QUOTE_SHARP,
                f"the P = {order} retrieval transition sharpens with N: its 10-90% width in "
                f"alpha over its midpoint shrinks by >= {SHARPEN:.0%} from the smallest to "
                "the largest N",
                pre_b,
                check_b,
            ),
        ]

    # -- report ----------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        p = summary["order"]
        out = []
        for part, label in (("dense", f"P = {p}, K = alpha N^{p - 1}"), ("pair", "P = 2, K/N")):
            rows = [
                [
                    str(r["n"]),
                    f"{r['load']:g}",
                    str(r["k"]),
                    _pm(r["success_mean"], r["success_std"], 3),
                    _pm(r["overlap_mean"], r["overlap_std"], 3),
                ]
                for r in summary[part]
            ]
            out.append(
                (
                    f"Retrieval success ({label}; mean ± std over seeds)",
                    ["N", "load", "K", "success", "final overlap"],
                    rows,
                )
            )
        trans = [
            [
                part,
                str(t["n"]),
                *(
                    "outside grid" if t[k] is None else f"{t[k]:.4g}"
                    for k in ("load_90", "load_50", "load_10", "k_90", "relative_width")
                ),
            ]
            for part in ("dense", "pair")
            for t in summary[f"{part}_transitions"]
        ]
        out.append(
            (
                "Transitions (last crossings of the seed-mean success curve)",
                ["net", "N", "load@0.9", "load@0.5", "load@0.1", "K@0.9", "width/midpoint"],
                trans,
            )
        )
        sup = [
            [
                str(r["examples"]),
                f"{r['quality']:g}",
                _pm(r["success_mean"], r["success_std"], 3),
                _pm(r["overlap_mean"], r["overlap_std"], 3),
            ]
            for r in summary["supervised"]
        ]
        out.append(
            (
                "Supervised (M, r) map, reported: success of retrieving the archetype",
                ["M", "r", "success", "final overlap with archetype"],
                sup,
            )
        )
        return out

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        for ax, part, xlabel in (
            (axes[0], "dense", f"alpha = K / N^{summary['order'] - 1}"),
            (axes[1], "pair", "K / N"),
        ):
            for n in sorted({r["n"] for r in summary[part]}):
                rs = [r for r in summary[part] if r["n"] == n]
                ax.errorbar(
                    [r["load"] for r in rs],
                    [r["success_mean"] for r in rs],
                    yerr=[r["success_std"] for r in rs],
                    fmt="o-",
                    ms=3,
                    capsize=2,
                    label=f"N = {n}",
                )
            ax.axhline(RETRIEVAL, color="gray", lw=0.8, ls="--")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"success (final overlap >= {SUCCESS_OVERLAP:g})")
            ax.set_title("P = " + (str(summary["order"]) if part == "dense" else "2"))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        sup = summary["supervised"]
        ms = sorted({r["examples"] for r in sup})
        qs = sorted({r["quality"] for r in sup})
        grid = [
            [
                next(r["success_mean"] for r in sup if r["examples"] == m and r["quality"] == q)
                for q in qs
            ]
            for m in ms
        ]
        im = axes[2].imshow(grid, origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
        axes[2].set_xticks(range(len(qs)), [f"{q:g}" for q in qs])
        axes[2].set_yticks(range(len(ms)), [str(m) for m in ms])
        axes[2].set_xlabel("example quality r")
        axes[2].set_ylabel("examples M")
        axes[2].set_title(f"supervised, P = {summary['order']}: success")
        fig.colorbar(im, ax=axes[2])
        fig.suptitle("Dense Hebbian retrieval: success vs load per N")
        return [Figure("success_vs_load.png", "Retrieval success vs load", figure_png(fig))]
