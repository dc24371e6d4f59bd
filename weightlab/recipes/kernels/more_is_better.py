"""Recipe ``more-is-better``: Simon et al., "More is Better in Modern Machine Learning: when
Infinite Overparameterization is Optimal and Overfitting is Obligatory" (row [#65]).

ReLU random-feature ridge regression (:mod:`weightlab.kernels.random_features`) on
MNIST-1D with one-hot targets: ``N ∈ {32, 64, …, 8192}`` features, ``P ∈ {100, 250, 500,
1000, 2000}`` training samples, the ridge tuned per ``(N, P)`` on the task's validation
split over a log grid, ``λ = r · tr(G)/P`` with ``r ∈ 10^{−8}, 10^{−7.5}, …, 10^{2}`` (``G``
the Gram of the P training features, so the grid follows the features' scale), from *one*
eigendecomposition per ``(N, P)`` (:func:`~weightlab.kernels.random_features.
ridge_path_features` for ``N ≤ P``; for ``N > P`` the dual form,
:func:`~weightlab.kernels.random_features.ridge_path_kernel` on the ``P × P`` Gram
``ΦΦᵀ/N``, accumulated block by block as N grows, so each P costs one pass over the
features).

Per seed, one net of the largest width draws ``W ~ N(0, I/d)``, ``b ~ N(0, 1)`` (features
``relu(Wx + b)/√N``) and a seeded permutation orders the training pool; each ``(N, P)``
uses the first ``N`` features and the first ``P`` samples (nested, common random numbers, as
"adding features" and "adding samples" mean). MSE is the mean over samples and the 10
outputs. Claims (the issue's; fixed thresholds):

- (a) the tuned test MSE is non-increasing in ``N`` at every ``P`` (the steps across
  ``N = P``, where the untuned ridgeless curve peaks, included); (b) and in ``P`` at every
  ``N``: each step may rise by at most one standard error, the larger of its two points'
  (std over seeds / √seeds);
- (c) (proposal) at the optimum for the largest ``N`` and ``P``, the train MSE is ≤ 0.5×
  the test MSE.

Preconditions: ≥ 2 seeds and ≥ 2 values of the swept axis for (a)/(b); the classifier
read off the largest model (argmax of its outputs) learned (test accuracy ≥ chance + 10
pts). The smallest ridge's test MSE (near-ridgeless, the double-descent curve) and how
many optima sit on the grid's edge are reported, not judged. One unit per seed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.errors import ConfigError
from weightlab.kernels.random_features import (
    RandomFeatureNet,
    ridge_path_features,
    ridge_path_kernel,
)
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate
from weightlab.recipes.options import int_list
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.units import seed_units
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator

QUOTE_MONOTONE = (
    "the test risk of RF regression decreases monotonically with both the number of "
    "features and the number of samples, provided the ridge penalty is tuned optimally"
)
QUOTE_OVERFIT = (
    "near-optimal performance can only be achieved when the training error is much smaller "
    "than the test error"
)
# Fixed claim thresholds (the issue's), not options.
RISE_SE = 1.0  # (a), (b): a step may rise by at most one standard error
TRAIN_TEST_RATIO = 0.5  # (c): train MSE <= 0.5 x test MSE at the largest (N, P)


@dataclass(frozen=True)
class MoreIsBetterConfig(RecipeConfig):
    features: str = opt("32,64,128,256,512,1024,2048,4096,8192", "feature counts N")
    samples: str = opt("100,250,500,1000,2000", "training-set sizes P (nested subsets)")
    ridge_min: float = opt(-8.0, "log10 of the smallest relative ridge r", min=-16, max=6)
    ridge_max: float = opt(2.0, "log10 of the largest relative ridge r", min=-16, max=6)
    ridge_per_decade: int = opt(2, "grid points per decade of r (lambda = r tr(G)/P)", min=1)
    bias_std: float = opt(1.0, "std of the hidden biases b ~ N(0, s^2)", min=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        int_list(self.features, "features")
        int_list(self.samples, "samples")
        if self.ridge_max < self.ridge_min:
            raise ConfigError(
                f"--ridge-max {self.ridge_max:g} is below --ridge-min {self.ridge_min:g}"
            )

    @property
    def n_values(self) -> list[int]:
        return int_list(self.features, "features")

    @property
    def p_values(self) -> list[int]:
        return int_list(self.samples, "samples")

    @property
    def ridge_grid(self) -> list[float]:
        k = round((self.ridge_max - self.ridge_min) * self.ridge_per_decade)
        return [10.0 ** (self.ridge_min + i / self.ridge_per_decade) for i in range(k + 1)]


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"seed": int, "members": list}, "metrics")
    num = (int, float)
    expect_list_of(
        metrics["members"],
        {
            "n": int,
            "p": int,
            "seed": int,
            "ridge_rel": num,
            "ridge_index": int,
            "test_mse": num,
            "train_mse": num,
            "val_mse": num,
            "test_acc": num,
            "ridgeless_test_mse": num,
            "seconds": num,
        },
        "members",
    )


class MoreIsBetter(Recipe):
    name = "more-is-better"
    family = "kernels"
    row = 65
    paper = (
        "Simon, Karkada, Ghosh & Belkin 2023, More is Better in Modern Machine Learning: when "
        "Infinite Overparameterization is Optimal and Overfitting is Obligatory "
        "(arXiv:2311.14646)"
    )
    claim = (
        "with the ridge tuned, random-feature regression's test error falls with both the "
        "number of features and of samples; at the optimum train error << test error"
    )
    Config = MoreIsBetterConfig
    tasks = ("mnist1d", "digits")
    kinds = ("classification",)
    smoke: ClassVar[dict] = {"seeds": 2, "features": "16,64,256", "samples": "50,100,200"}
    trains = False
    # measured by the conformance test (in-process, one thread, CPU time; 2 cores shared by
    # ~6 jobs): 1.1 s
    smoke_seconds = 1.1

    def validate(self, cfg: MoreIsBetterConfig, data_sizes: dict[str, int]) -> None:
        """The largest P fits the training split; a validation split exists."""
        if max(cfg.p_values) > data_sizes["train"]:
            raise ConfigError(
                f"--samples {max(cfg.p_values)} exceeds the {data_sizes['train']} training examples"
            )
        if data_sizes["val"] == 0:
            raise ConfigError(f"--data {cfg.data} has no validation split to tune the ridge on")

    def run(self, cfg: MoreIsBetterConfig, rd: RunDir, progress: bool = False) -> dict:
        data = self.load_data(cfg)
        k = data.num_classes

        def flat(t: torch.Tensor) -> torch.Tensor:
            return t.flatten(1).to(torch.float64).cpu()

        def onehot(y: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(y.long().cpu(), k).to(torch.float64)

        x_pool, y_pool = flat(data.train.x), data.train.y.cpu()
        xv, yv = flat(data.val.x), onehot(data.val.y)
        xt, lt = flat(data.test.x), data.test.y.cpu().long()
        yt = onehot(lt)
        rel = torch.tensor(cfg.ridge_grid, dtype=torch.float64)
        n_max, p_max = max(cfg.n_values), max(cfg.p_values)

        @torch.no_grad()
        def compute(s: int):
            perm = torch.randperm(len(x_pool), generator=generator(derive_seed(self.name, s)))
            idx = perm[:p_max]
            x, y = x_pool[idx], onehot(y_pool[idx])
            net = RandomFeatureNet(
                x.shape[1],
                n_max,
                "gaussian",
                activation="relu",
                bias_std=cfg.bias_std if cfg.bias_std > 0 else None,
                bias=cfg.bias_std > 0,
                seed=derive_seed(self.name, "features", s),
                normalize=False,
            )
            phi, phi_v, phi_t = net.features(x), net.features(xv), net.features(xt)
            out = []
            bar = progress_bar(len(cfg.n_values) * len(cfg.p_values), f"seed {s}", "fit", progress)
            for p in cfg.p_values:
                f_p, y_p = phi[:p], y[:p]
                # dual side (N > P): Grams accumulated block by block as N grows
                k_tr = torch.zeros(p, p, dtype=torch.float64)
                k_v = torch.zeros(len(xv), p, dtype=torch.float64)
                k_t = torch.zeros(len(xt), p, dtype=torch.float64)
                done = 0
                for n in cfg.n_values:
                    t0 = time.perf_counter()
                    if n <= p:  # primal: one N x N eigendecomposition
                        c = 1.0 / math.sqrt(n)
                        f = f_p[:, :n] * c
                        lams = rel * float((f * f).sum()) / p
                        path = ridge_path_features(
                            f, y_p, phi_v[:, :n] * c, yv, lams, phi_t[:, :n] * c, yt
                        )
                        pred = (phi_t[:, :n] * c) @ path.coef
                    else:  # dual: one P x P eigendecomposition of G = ΦΦᵀ/N
                        blk = f_p[:, done:n]
                        k_tr += blk @ blk.T
                        k_v += phi_v[:, done:n] @ blk.T
                        k_t += phi_t[:, done:n] @ blk.T
                        done = n
                        lams = rel * float(k_tr.diagonal().sum()) / n / p
                        path = ridge_path_kernel(k_tr / n, y_p, k_v / n, yv, lams, k_t / n, yt)
                        pred = (k_t / n) @ path.coef
                    b = path.best
                    out.append(
                        {
                            "n": n,
                            "p": p,
                            "seed": s,
                            "ridge_rel": float(rel[b]),
                            "ridge_index": b,
                            "test_mse": float(path.test_mse[b]),
                            "train_mse": float(path.train_mse[b]),
                            "val_mse": float(path.val_mse[b]),
                            "test_acc": 100.0 * float((pred.argmax(1) == lt).double().mean()),
                            "ridgeless_test_mse": float(path.test_mse[0]),
                            "seconds": time.perf_counter() - t0,
                        }
                    )
                    if bar is not None:
                        bar.update(1)
            if bar is not None:
                bar.close()
            return {"seed": s, "members": out}, {}

        records = seed_units(rd, self.name, cfg.seeds, compute, _check_unit, progress)
        self._measurements = [
            (
                "Seconds per (N, P) ridge path (eigendecomposition and all ridges; mean over "
                "seeds)",
                ["P", "N", "seconds"],
                [
                    [
                        str(p),
                        str(n),
                        f"{mean_std([m['seconds'] for m in records if (m['n'], m['p']) == (n, p)])[0]:.3f}",
                    ]
                    for p in cfg.p_values
                    for n in cfg.n_values
                ],
            )
        ]
        return self.summarize(cfg, records, 100 * majority_rate(data.test.y))

    # -- summary and claims -------------------------------------------------------------
    def summarize(self, cfg: MoreIsBetterConfig, records: list[dict], chance: float) -> dict:
        rows = []
        seeds = len({m["seed"] for m in records})
        last = len(cfg.ridge_grid) - 1
        for p in sorted({m["p"] for m in records}):
            for n in sorted({m["n"] for m in records}):
                ms = sorted(
                    (m for m in records if m["n"] == n and m["p"] == p), key=lambda m: m["seed"]
                )
                row = {"n": n, "p": p, "seeds": len(ms)}
                for key in ("test_mse", "train_mse", "test_acc", "ridgeless_test_mse"):
                    row[f"{key}_mean"], row[f"{key}_std"] = mean_std([m[key] for m in ms])
                row["test_mse_se"] = row["test_mse_std"] / math.sqrt(len(ms))
                row["test_mse_values"] = [m["test_mse"] for m in ms]
                row["log10_ridge_rel"] = [math.log10(m["ridge_rel"]) for m in ms]
                row["edge_optima"] = sum(m["ridge_index"] in (0, last) for m in ms)
                rows.append(row)
        edge = sum(r["edge_optima"] for r in rows)
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "seeds": seeds,
            "ridge_grid_log10": [cfg.ridge_min, cfg.ridge_max, cfg.ridge_per_decade],
            "edge_optima": f"{edge} of {len(records)} tuned ridges sit on the grid's edge",
            "claims": [c.to_dict() for c in self.check_claims(rows, chance, seeds)],
            "chance_pct": chance,
            "members": len(records),
            "diverged_members": [],
            "mse": "mean over test samples and the one-hot outputs",
        }

    @staticmethod
    def _steps(rows: list[dict], along: str, fixed: str) -> tuple[list[dict], list[dict]]:
        """Every consecutive step along ``along`` at each value of ``fixed``, and those
        that rise by more than :data:`RISE_SE` standard errors."""
        steps = []
        for v in sorted({r[fixed] for r in rows}):
            line = sorted((r for r in rows if r[fixed] == v), key=lambda r: r[along])
            for a, b in zip(line[:-1], line[1:], strict=True):
                se = max(a["test_mse_se"], b["test_mse_se"])
                rise = b["test_mse_mean"] - a["test_mse_mean"]
                steps.append(
                    {
                        fixed: v,
                        "from": a[along],
                        "to": b[along],
                        "rise": rise,
                        "se": se,
                        "rise_in_se": rise / se if se > 0 else (math.inf if rise > 0 else 0.0),
                    }
                )
        bad = [s for s in steps if s["rise"] > RISE_SE * s["se"]]
        return steps, bad

    @staticmethod
    def check_claims(rows: list[dict], chance: float, seeds: int) -> list[ClaimResult]:
        """(a) non-increasing in N at every P, (b) in P at every N, each step rising by at
        most one standard error; (c) train MSE <= 0.5 test MSE at the largest (N, P)."""
        top = max(rows, key=lambda r: (r["n"], r["p"]))
        learned = baseline_learned(
            top["test_acc_mean"], chance=chance, name=f"largest model (N={top['n']}, P={top['p']})"
        )
        few_seeds = None if seeds >= 2 else "one seed gives no standard error; run >= 2 seeds"

        def axis(along: str, fixed: str, label: str):
            def check():
                steps, bad = MoreIsBetter._steps(rows, along, fixed)
                worst = max(steps, key=lambda s: s["rise_in_se"])
                detail = (
                    f"{len(bad)} of {len(steps)} steps in {label} rise by more than "
                    f"{RISE_SE:g} SE; largest rise {worst['rise']:+.2e} ({worst['rise_in_se']:+.2f} "
                    f"SE) from {label} = {worst['from']} to {worst['to']} at "
                    f"{fixed.upper()} = {worst[fixed]}"
                )
                if bad:
                    detail += "; rises: " + ", ".join(
                        f"{fixed.upper()}={s[fixed]} {s['from']}->{s['to']} "
                        f"({s['rise_in_se']:+.1f} SE)"
                        for s in bad[:8]
                    )
                return not bad, detail, {"steps": steps, "violations": bad}

            values = {r[along] for r in rows}
            few = None if len(values) >= 2 else f"the run has fewer than two values of {label}"
            return [few, few_seeds, learned], check

        pre_n, check_n = axis("n", "p", "N")
        pre_p, check_p = axis("p", "n", "P")

        def check_c():
            tr, te = top["train_mse_mean"], top["test_mse_mean"]
            ratio = tr / te if te > 0 else math.inf
            detail = (
                f"at N = {top['n']}, P = {top['p']} (tuned ridge): train MSE {tr:.4g}, test MSE "
                f"{te:.4g}, ratio {ratio:.3f}; needed <= {TRAIN_TEST_RATIO:g}"
            )
            return ratio <= TRAIN_TEST_RATIO, detail, {"train": tr, "test": te, "ratio": ratio}

        return [
            judge(
                "a",
                QUOTE_MONOTONE,
                f"the tuned test MSE is non-increasing in the number of features N at every P "
                f"(steps across N = P included), each step rising by at most {RISE_SE:g} SE",
                pre_n,
                check_n,
            ),
            judge(
                "b",
                QUOTE_MONOTONE,
                f"the tuned test MSE is non-increasing in the number of samples P at every N, "
                f"each step rising by at most {RISE_SE:g} SE",
                pre_p,
                check_p,
            ),
            judge(
                "c",
                QUOTE_OVERFIT,
                f"(proposal) at the tuned optimum of the largest N and P, train MSE <= "
                f"{TRAIN_TEST_RATIO:g} x test MSE",
                [learned],
                check_c,
            ),
        ]

    # -- report ------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        header = [
            "P",
            "N",
            "tuned test MSE",
            "train MSE",
            "test acc %",
            "log10 r (per seed)",
            "smallest-ridge test MSE",
        ]

        def pm(m, s, fmt="{:.4f}"):
            return "n/a" if m is None else f"{fmt.format(m)} ± {fmt.format(_num(s))}"

        rows = [
            [
                str(r["p"]),
                str(r["n"]),
                pm(r["test_mse_mean"], r["test_mse_std"]),
                pm(r["train_mse_mean"], r["train_mse_std"]),
                pm(r["test_acc_mean"], r["test_acc_std"], "{:.1f}"),
                " ".join(f"{v:g}" for v in r["log10_ridge_rel"]),
                pm(r["ridgeless_test_mse_mean"], r["ridgeless_test_mse_std"], "{:.3g}"),
            ]
            for r in summary["rows"]
        ]
        title = (
            f"ReLU random-feature ridge (mean ± std over {summary['seeds']} seeds; ridge tuned "
            f"on validation; {summary['edge_optima']})"
        )
        return [(title, header, rows)]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = summary["rows"]
        fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
        ps, ns = sorted({r["p"] for r in rows}), sorted({r["n"] for r in rows})
        cmap = plt.get_cmap("viridis")
        for i, p in enumerate(ps):
            line = sorted((r for r in rows if r["p"] == p), key=lambda r: r["n"])
            c = cmap(i / max(len(ps) - 1, 1))
            axes[0].errorbar(
                [r["n"] for r in line],
                [_num(r["test_mse_mean"]) for r in line],
                yerr=[_num(r["test_mse_std"]) for r in line],
                fmt="o-",
                ms=3,
                capsize=2,
                color=c,
                label=f"P = {p} (tuned)",
            )
            axes[0].plot(
                [r["n"] for r in line],
                [_num(r["ridgeless_test_mse_mean"]) for r in line],
                ":",
                color=c,
                lw=1,
            )
            axes[0].axvline(p, color=c, lw=0.5, ls="--")
        for i, n in enumerate(ns):
            line = sorted((r for r in rows if r["n"] == n), key=lambda r: r["p"])
            axes[1].errorbar(
                [r["p"] for r in line],
                [_num(r["test_mse_mean"]) for r in line],
                yerr=[_num(r["test_mse_std"]) for r in line],
                fmt="o-",
                ms=3,
                capsize=2,
                color=plt.get_cmap("plasma")(i / max(len(ns) - 1, 1)),
                label=f"N = {n}",
            )
        axes[0].set_xlabel("features N (dotted: smallest ridge; dashed: N = P)")
        axes[1].set_xlabel("training samples P")
        for ax in axes:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_ylabel("test MSE")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
        top = max(r["test_mse_mean"] for r in rows if r["test_mse_mean"] is not None)
        axes[0].set_ylim(top=2 * top)
        fig.suptitle("Random-feature ridge regression with a tuned ridge: more is better")
        return [Figure("test_mse.png", "Tuned test MSE vs N and vs P", figure_png(fig))]
