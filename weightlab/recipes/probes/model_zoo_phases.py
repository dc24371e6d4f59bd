"""Recipe ``model-zoo-phases``: a small phase-structured model zoo in the manner of "A Model
Zoo on Phase Transitions in Neural Networks" (row [#36]; the zoo format follows Schürholt et
al. 2022, "Model Zoos: A Dataset of Diverse Populations of Neural Network Models").

A zoo (:func:`weightlab.probes.zoo.build_zoo`) of ReLU MLPs (``depth`` hidden layers) on
MNIST-1D: 4 widths (``min_width`` × 1, 2, 4, 8) × 4 SGD temperatures ``T = lr / batch`` ×
``seeds`` seeds. The temperatures come from two learning rates (``lr``, 2·``lr``) and two
batch sizes (4·``batch``, ``batch``): T = lr/(4b), lr/(2b), lr/b, 2·lr/b, a factor 2
apart. Each batch size is one population (the learning rate per member), widths bucketed.

Per cell (width, T), over the seeds:

- the Hessian trace of the training loss (Hutchinson, :func:`weightlab.probes.hessian.hessian_trace`,
  on a fixed ``hessian_examples`` subset of the training split), the seeds' mean;
- the linear-interpolation loss barrier between the seeds' networks on the test split
  (:func:`weightlab.probes.barrier.loss_barrier`, no alignment; aligned by unit matching:
  reported only), the mean over seed pairs;
- weight averaging: the test accuracy of θ_{1/2} = (θ_A + θ_B)/2 against the mean of the
  endpoints' accuracies (the "averaging gap"; positive = averaging lost accuracy).

Claims (thresholds fixed below): (a) the Hessian trace and the barrier each vary
systematically along the grid: |Spearman ρ| over the 16 cells >= 0.6 with temperature or with
width, for each metric; (b) a region of >= 2 cells adjacent on the grid (sharing an edge) has
a barrier <= 0.05 (mean test loss) where averaging the seeds keeps test accuracy within 1
point of the endpoints' mean. Preconditions: every member learned (test accuracy >= chance
+ 10 points) and none diverged.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import ClassVar

from weightlab.errors import ConfigError
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate, no_divergence
from weightlab.recipes.stats import mean_std, num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields

QUOTE_A = "We introduce 12 large-scale zoos that systematically cover known phases"
QUOTE_B = (
    "Evidence suggests the loss landscape phase plays a role in applications such as model "
    "training, analysis, or sparsification. We demonstrate this in an exploratory study of the "
    "downstream methods like transfer learning or model weights averaging."
)
# Fixed claim thresholds (from the issue), not options.
MIN_ABS_SPEARMAN = 0.6  # (a) |Spearman| with temperature or width, per metric
MAX_BARRIER = 0.05  # (b) barrier <= 0.05 (mean test loss) ...
MAX_AVERAGING_GAP = 1.0  # ... and averaged model within 1 point of the endpoints' accuracy
MIN_REGION = 2  # ... in >= 2 edge-adjacent cells
N_AXIS = 4  # 4 widths x 4 temperatures


@dataclass(frozen=True)
class ModelZooPhasesConfig(RecipeConfig):
    seeds: int = opt(2, "seeds per grid cell (networks compared pairwise)", min=2, max=8)
    min_width: int = opt(16, "smallest width; the 4 widths are x1, x2, x4, x8", min=1, max=512)
    depth: int = opt(2, "hidden layers", min=1, max=8)
    lr: float = opt(0.1, "smaller SGD learning rate (the other is 2x)", gt=0, max=10)
    batch_size: int = opt(32, "smaller batch size (the other is 4x)", min=1)
    epochs: int = opt(60, "SGD epochs (equal epochs for every cell)", min=1, max=100000)
    hessian_examples: int = opt(512, "training examples for the Hessian trace", min=8)
    hessian_samples: int = opt(20, "Hutchinson probe vectors per member", min=2, max=10000)

    def widths(self) -> tuple[int, ...]:
        return tuple(self.min_width * 2**k for k in range(N_AXIS))

    def lrs(self) -> tuple[float, ...]:
        return (self.lr, 2 * self.lr)

    def batch_sizes(self) -> tuple[int, ...]:
        return (4 * self.batch_size, self.batch_size)


def _check_cell(metrics: dict) -> None:
    expect_fields(
        metrics,
        {
            "width": int,
            "lr": float,
            "batch_size": int,
            "temperature": float,
            "members": list,
            "pairs": list,
            "seconds": float,
        },
        "the metrics",
    )


class ModelZooPhases(Recipe):
    name = "model-zoo-phases"
    family = "probes"
    row = 36
    paper = (
        "A Model Zoo on Phase Transitions in Neural Networks (zoo format: Schürholt et al. 2022)"
    )
    claim = (
        "Over 4 widths x 4 SGD temperatures of MLPs on MNIST-1D, the Hessian trace and the "
        "seed-to-seed interpolation barrier vary systematically (|Spearman| >= 0.6), and a region "
        "of >= 2 adjacent cells has barrier <= 0.05 where averaging the seeds costs <= 1 point"
    )
    Config = ModelZooPhasesConfig
    tasks = ("mnist1d",)
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "min_width": 4,
        "depth": 1,
        "epochs": 1,
        "batch_size": 100,
        "hessian_examples": 32,
        "hessian_samples": 2,
    }
    broken: ClassVar[dict] = {"lr": 10.0, "epochs": 1}
    # measured in-process (run_recipe with the smoke config, one thread, imports warm):
    # 1.9 s CPU (wall 5.6 s on the shared machine at load ~10)
    smoke_seconds = 1.9

    def validate(self, cfg: ModelZooPhasesConfig, data_sizes: dict[str, int]) -> None:
        """The larger batch (4x ``batch_size``) fits the training split."""
        if 4 * cfg.batch_size > data_sizes["train"]:
            raise ConfigError(
                f"--batch-size {cfg.batch_size}: the larger batch 4x{cfg.batch_size} exceeds the "
                f"{data_sizes['train']} training examples; use a smaller batch"
            )

    def run(self, cfg: ModelZooPhasesConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.probes.barrier import loss_barrier
        from weightlab.probes.hessian import hessian_trace
        from weightlab.probes.zoo import ZooGrid, build_zoo
        from weightlab.progress import progress_bar
        from weightlab.seeding import derive_seed

        data = self.load_data(cfg)
        self.validate(cfg, {"train": len(data.train)})
        seeds = [derive_seed(self.name, "seed", s) for s in range(cfg.seeds)]
        grid = ZooGrid(cfg.widths(), cfg.lrs(), cfg.batch_sizes(), cfg.depth, cfg.epochs)
        t0 = time.perf_counter()
        zoo = build_zoo(
            rd.path / "zoo",
            grid,
            seeds,
            data,
            data_name=cfg.data,
            device=cfg.device,
            progress=progress,
        )
        train_seconds = time.perf_counter() - t0
        n_h = min(cfg.hessian_examples, len(data.train))
        hx, hy = data.train.x[:n_h], data.train.y[:n_h]
        cells = [(w, lr, b) for w in grid.widths for b in grid.batch_sizes for lr in grid.lrs]
        units = []
        bar = progress_bar(len(cells), self.name, "cell", progress, True)
        for w, lr, b in cells:

            def compute(w=w, lr=lr, b=b):
                t1 = time.perf_counter()
                ms = [zoo.select(width=w, lr=lr, batch_size=b, seed=s)[0] for s in seeds]
                members = []
                for k, m in enumerate(ms):
                    net = zoo.model(m)
                    tr = hessian_trace(
                        net,
                        hx,
                        hy,
                        samples=cfg.hessian_samples,
                        seed=derive_seed(self.name, "hutchinson", k),
                    )
                    members.append(
                        {
                            "id": m.id,
                            "test_acc": num(m.metrics["test_acc"]),
                            "test_loss": num(m.metrics["test_loss"]),
                            "diverged": bool(m.metrics["diverged"]),
                            "hessian_trace": tr.value,
                            "hessian_stderr": tr.stderr,
                        }
                    )
                pairs = []
                for i, j in itertools.combinations(range(len(ms)), 2):
                    a, bn = zoo.model(ms[i]), zoo.model(ms[j])
                    raw = loss_barrier(a, bn, data.test)
                    aligned = loss_barrier(a, bn, data.test, align=True)
                    mid = raw.alphas.index(0.5)
                    ends = (raw.accs[0] + raw.accs[-1]) / 2
                    pairs.append(
                        {
                            "pair": [i, j],
                            "barrier": raw.barrier,
                            "barrier_aligned": aligned.barrier,
                            "avg_acc": raw.accs[mid],
                            "end_acc": ends,
                            "averaging_gap": ends - raw.accs[mid],
                            "averaging_gap_aligned": ends - aligned.accs[mid],
                            "curve": list(raw.losses),
                        }
                    )
                metrics = {
                    "width": w,
                    "lr": float(lr),
                    "batch_size": b,
                    "temperature": lr / b,
                    "members": members,
                    "pairs": pairs,
                    "seconds": time.perf_counter() - t1,
                }
                return metrics, {}

            metrics, _ = rd.unit(f"cell-w{w}-lr{lr:g}-b{b}", compute, check=_check_cell)
            units.append(metrics)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        self._measurements = [
            (
                "Wall time (zoo training, this run only; per-cell Hessian + barriers summed)",
                ["part", "seconds"],
                [
                    ["zoo (train or load)", f"{train_seconds:.1f}"],
                    ["cells", f"{sum(u['seconds'] for u in units):.1f}"],
                ],
            )
        ]
        return self.summarize(cfg, units, 100.0 * majority_rate(data.test.y))

    def summarize(self, cfg: ModelZooPhasesConfig, units: list[dict], chance: float) -> dict:
        def ms(vals):
            mu, sd = mean_std([v for v in vals if v is not None and math.isfinite(v)])
            return {"mean": mu, "std": sd}

        temps = sorted({u["temperature"] for u in units})
        widths = sorted({u["width"] for u in units})
        cells = []
        for u in units:
            mem, prs = u["members"], u["pairs"]
            cells.append(
                {
                    "width": u["width"],
                    "lr": u["lr"],
                    "batch_size": u["batch_size"],
                    "temperature": u["temperature"],
                    "t_index": temps.index(u["temperature"]),
                    "w_index": widths.index(u["width"]),
                    "test_acc": ms([m["test_acc"] for m in mem]),
                    "min_test_acc": _weakest([num(m["test_acc"]) for m in mem]),
                    "hessian_trace": ms([m["hessian_trace"] for m in mem]),
                    "barrier": ms([p["barrier"] for p in prs]),
                    "barrier_aligned": ms([p["barrier_aligned"] for p in prs]),
                    "avg_acc": ms([p["avg_acc"] for p in prs]),
                    "averaging_gap": ms([p["averaging_gap"] for p in prs]),
                    "averaging_gap_aligned": ms([p["averaging_gap_aligned"] for p in prs]),
                    "diverged": [m["id"] for m in mem if m["diverged"]],
                }
            )
        cells.sort(key=lambda c: (c["w_index"], c["t_index"]))
        summary = {
            "recipe": self.name,
            "paper": self.paper,
            "chance_pct": chance,
            "cells": cells,
            "members": sum(len(u["members"]) for u in units),
            "min_test_acc": _weakest([num(c["min_test_acc"]) for c in cells]),
            "diverged_members": [d for c in cells for d in c["diverged"]],
            "correlations": _correlations(cells),
            "setup": {
                "widths": widths,
                "temperatures": temps,
                "lrs": list(cfg.lrs()),
                "batch_sizes": list(cfg.batch_sizes()),
                "depth": cfg.depth,
                "seeds": cfg.seeds,
                "epochs": cfg.epochs,
                "hessian_examples": cfg.hessian_examples,
                "hessian_samples": cfg.hessian_samples,
            },
        }
        summary["claims"] = [c.to_dict() for c in self.check_claims(summary)]
        return summary

    @staticmethod
    def check_claims(summary: dict) -> list[ClaimResult]:
        pre = [
            baseline_learned(
                summary["min_test_acc"], chance=summary["chance_pct"], name="weakest member"
            ),
            no_divergence(summary["diverged_members"]),
        ]
        corr = summary["correlations"]

        def check_a():
            ok, parts = True, []
            for metric in ("hessian_trace", "barrier"):
                rt, rw = corr[metric]["temperature"], corr[metric]["width"]
                best = max(abs(rt), abs(rw))
                good = best >= MIN_ABS_SPEARMAN
                ok &= good
                parts.append(
                    f"{metric}: ρ(T) {rt:+.2f}, ρ(width) {rw:+.2f}{'' if good else ' (fails)'}"
                )
            detail = "; ".join(parts) + f"; needed max |ρ| >= {MIN_ABS_SPEARMAN:g} for each"
            return ok, detail, {"spearman": corr}

        def check_b():
            good = [
                (c["w_index"], c["t_index"])
                for c in summary["cells"]
                if c["barrier"]["mean"] <= MAX_BARRIER
                and c["averaging_gap"]["mean"] <= MAX_AVERAGING_GAP
            ]
            region = [tuple(k) for k in _largest_region(good)]
            cells = {(c["w_index"], c["t_index"]): c for c in summary["cells"]}
            best = min(summary["cells"], key=lambda c: c["barrier"]["mean"])
            detail = (
                f"{len(good)} cell(s) pass (barrier <= {MAX_BARRIER:g} and averaging gap <= "
                f"{MAX_AVERAGING_GAP:g} point); largest adjacent region {len(region)} cell(s)"
                + (
                    ": "
                    + ", ".join(
                        f"width {cells[k]['width']} T {cells[k]['temperature']:.3g}" for k in region
                    )
                    if region
                    else ""
                )
                + f"; lowest barrier {best['barrier']['mean']:.3f} (width {best['width']}, T "
                f"{best['temperature']:.3g}, averaging gap {best['averaging_gap']['mean']:.1f}); "
                f"needed >= {MIN_REGION} adjacent cells"
            )
            evidence = {
                "passing_cells": [list(k) for k in good],
                "region": [list(k) for k in region],
            }
            return len(region) >= MIN_REGION, detail, evidence

        return [
            judge(
                "a",
                QUOTE_A,
                f"the Hessian trace and the seed-to-seed interpolation barrier each vary "
                f"systematically along the grid: |Spearman ρ| over the cells' seed means >= "
                f"{MIN_ABS_SPEARMAN:g} with temperature (lr/batch) or with width",
                pre,
                check_a,
            ),
            judge(
                "b",
                QUOTE_B,
                f"a region of >= {MIN_REGION} edge-adjacent cells has a test-loss barrier <= "
                f"{MAX_BARRIER:g} where the average of the seeds' weights keeps test accuracy "
                f"within {MAX_AVERAGING_GAP:g} point of the endpoints' mean",
                pre,
                check_b,
            ),
        ]

    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        st = summary["setup"]

        def f(x, d=2):
            return _pm(x["mean"], x["std"], d)

        rows = [
            [
                str(c["width"]),
                f"{c['temperature']:.3g}",
                f"{c['lr']:g}",
                str(c["batch_size"]),
                f(c["test_acc"], 1),
                f(c["hessian_trace"], 1),
                f(c["barrier"], 3),
                f(c["barrier_aligned"], 3),
                f(c["avg_acc"], 1),
                f(c["averaging_gap"], 1),
                f(c["averaging_gap_aligned"], 1),
            ]
            for c in summary["cells"]
        ]
        corr = summary["correlations"]
        crow = [
            [m, f"{corr[m]['temperature']:+.2f}", f"{corr[m]['width']:+.2f}"]
            for m in ("hessian_trace", "barrier", "barrier_aligned", "test_acc", "averaging_gap")
        ]
        return [
            (
                f"Per cell (mean ± std over {st['seeds']} seeds, or over their pairs: one pair, "
                f"std 0, at 2 seeds; {st['depth']} "
                f"hidden ReLU layers, {st['epochs']} SGD epochs; barrier and accuracies on the "
                f"test split; averaging gap = endpoints' mean accuracy − the averaged weights' (points); "
                f"aligned = B permuted onto A by unit matching first, reported only; Hessian trace "
                f"on {st['hessian_examples']} training examples)",
                [
                    "width",
                    "T = lr/b",
                    "lr",
                    "batch",
                    "test acc %",
                    "Hessian trace",
                    "barrier",
                    "barrier aligned",
                    "averaged acc %",
                    "averaging gap",
                    "aligned averaging gap",
                ],
                rows,
            ),
            (
                "Spearman ρ of each cell metric with temperature and with width (16 cells)",
                ["metric", "ρ with T", "ρ with width"],
                crow,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        from weightlab.probes.zoo import phase_diagram

        table = {
            "temperature": [c["temperature"] for c in summary["cells"]],
            "width": [c["width"] for c in summary["cells"]],
        }
        for k in ("hessian_trace", "barrier", "averaging_gap", "barrier_aligned"):
            table[k] = [c[k]["mean"] for c in summary["cells"]]
        out = []
        for k, title, log in (
            ("hessian_trace", "Hessian trace (seed mean)", True),
            ("barrier", "Seed-to-seed test-loss barrier", False),
            ("averaging_gap", "Endpoints' accuracy − averaged model's (points)", False),
            ("barrier_aligned", "Barrier after unit-matching alignment (reported only)", False),
        ):
            fig = phase_diagram(table, k, "temperature", "width", title=title, log=log)
            out.append(Figure(f"phase_{k}.png", title, figure_png(fig)))
        return out


def _weakest(accs: list[float]) -> float:
    """The lowest accuracy; NaN if any is not finite (a diverged member)."""
    return min(accs) if all(math.isfinite(a) for a in accs) else math.nan


def _spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    keep = [(a, b) for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b)]
    if len(keep) < 3 or len({a for a, _ in keep}) < 2 or len({b for _, b in keep}) < 2:
        return 0.0
    r = float(spearmanr([a for a, _ in keep], [b for _, b in keep])[0])
    return r if math.isfinite(r) else 0.0


def _correlations(cells: list[dict]) -> dict:
    """Spearman ρ of each cell metric's seed mean against temperature and width."""
    out = {}
    for m in ("hessian_trace", "barrier", "barrier_aligned", "test_acc", "averaging_gap"):
        vals = [c[m]["mean"] for c in cells]
        out[m] = {
            "temperature": _spearman([c["temperature"] for c in cells], vals),
            "width": _spearman([float(c["width"]) for c in cells], vals),
        }
    return out


def _largest_region(cells: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The largest set of grid cells connected through shared edges (4-neighbourhood)."""
    left, best = set(map(tuple, cells)), []
    while left:
        stack, comp = [left.pop()], []
        while stack:
            c = stack.pop()
            comp.append(c)
            for dw, dt in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                n = (c[0] + dw, c[1] + dt)
                if n in left:
                    left.remove(n)
                    stack.append(n)
        if len(comp) > len(best):
            best = sorted(comp)
    return [list(c) for c in best]
