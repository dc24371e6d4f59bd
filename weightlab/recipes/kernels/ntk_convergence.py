"""Recipe ``ntk-convergence``: Jacot, Gabriel & Hongler 2018, "Neural Tangent Kernel:
Convergence and Generalization in Neural Networks" (row [#60]).

Fully connected ReLU networks in ``stax``'s NTK parametrization (``h = (w_std/√fan_in) W x``,
``W ~ N(0, 1)``, no bias; :func:`weightlab.kernels.empirical.ntk_mlp`); empirical NTKs by
:func:`weightlab.kernels.empirical.empirical_ntk` (the structured per-layer formula, float64),
analytic ones by :func:`weightlab.kernels.analytic.fc_kernels` (same convention).

- (a) At initialization: 2 hidden layers, 50 points ``x ~ N(0, I_10)``, widths {64, 256,
  1024, 4096}, 5 seeds. The relative Frobenius error ``‖K_emp − K_∞‖_F/‖K_∞‖_F`` against
  the analytic NTK; claim: the fitted log-log slope of its mean over seeds against width
  lies in [−0.65, −0.35] (the O(width^-1/2) fluctuations of a finite-width kernel).
- (b) In training: the first 200 training digits (64 pixels in [0, 1]), scalar target
  +1 for labels 0–4 and −1 for 5–9; 1 hidden layer at widths {64, 128, …, 4096} and 2 hidden
  layers up to width 2048 (the larger 2-layer nets do not fit the budget); full-batch GD for
  500 steps, 3 seeds, rate ``η = 1/λ_max`` of the analytic NTK on the training inputs.
  ``η`` is stated for the loss ``½‖f − y‖²`` (Jacot et al.'s kernel gradient; the
  convention of :func:`weightlab.kernels.regression.ntk_gp_mean`); the training loop's MSE is
  the mean ``(1/n) Σ (f − y)²``, so its rate is ``n/(2 λ_max)``. Claim: the relative kernel
  change ``‖K_T − K_0‖_F/‖K_0‖_F`` has a fitted log-log slope ≤ −0.3 at each depth.

Training runs in the one loop's population engine: the NTK-parametrized net is trained as
its exact standard-parametrization twin, a plain :class:`~weightlab.models.mlp.MLP` holding
``W_eff = (w_std/√fan_in) W`` with per-layer SGD rates ``η w_std²/fan_in``
(:func:`~weightlab.kernels.empirical.ntk_to_mlp`, :func:`~weightlab.kernels.empirical.ntk_lr_groups`;
the biases' rate is 0 and they stay 0), so every (width, seed) of a depth trains as one
width-bucketed population on the MLP fast path. ``K_T`` is the NTK of the trained net mapped
back (:func:`~weightlab.kernels.empirical.mlp_to_ntk`). Units: ``init`` (every seed and
width of (a)), ``train-depth-1``, ``train-depth-2``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.kernels.analytic import fc_kernels
from weightlab.kernels.empirical import (
    empirical_ntk,
    mlp_to_ntk,
    ntk_lr_groups,
    ntk_mlp,
    ntk_to_mlp,
)
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, no_divergence
from weightlab.recipes.options import int_list
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator
from weightlab.train.config import OptimConfig, TrainConfig

QUOTE_INIT = (
    "While the NTK is random at initialization and varies during training, in the "
    "infinite-width limit it converges to an explicit limiting kernel"
)
QUOTE_TRAIN = "in the infinite-width limit it converges to an explicit limiting kernel and it stays constant during training"
# Fixed claim thresholds (the issue's), not options.
INIT_SLOPE_RANGE = (-0.65, -0.35)  # (a) fitted slope of the relative error vs width
TRAIN_SLOPE_MAX = -0.3  # (b) fitted slope of the relative kernel change vs width
INIT_DEPTH = 2


@dataclass(frozen=True)
class NTKConvergenceConfig(RecipeConfig):
    seeds: int = opt(5, "seeds of part (a), at initialization", min=1, max=1000)
    data: str = opt(
        "digits",
        "task of part (b): its first --points training examples, target +1 for labels 0-4, "
        "-1 for 5-9",
        choices=("digits",),
    )
    init_widths: str = opt("64,256,1024,4096", "hidden widths of part (a) (increasing)")
    init_points: int = opt(50, "Gaussian input points of part (a)", min=2, max=5000)
    init_dim: int = opt(10, "input dimension of part (a)", min=1, max=10000)
    train_widths: str = opt(
        "64,128,256,512,1024,2048,4096", "hidden widths of part (b) (increasing)"
    )
    depth2_max_width: int = opt(
        2048, "part (b) also trains 2-hidden-layer nets at widths up to this (0: none)", min=0
    )
    train_seeds: int = opt(3, "seeds of part (b)", min=1, max=100)
    points: int = opt(200, "training points of part (b)", min=2, max=100_000)
    steps: int = opt(500, "full-batch GD steps of part (b)", min=1, max=1_000_000)
    lr_scale: float = opt(
        1.0, "GD rate as a multiple of eta = 1/lambda_max (analytic NTK)", gt=0, max=1e6
    )
    w_std: float = opt(1.0, "weight multiplier w_std of the NTK parametrization", gt=0, max=100)

    def __post_init__(self) -> None:
        super().__post_init__()
        int_list(self.init_widths, "init-widths", increasing=True, sort=False)
        int_list(self.train_widths, "train-widths", increasing=True, sort=False)

    @property
    def init_width_values(self) -> list[int]:
        return int_list(self.init_widths, "init-widths", increasing=True, sort=False)

    def depth_widths(self) -> dict[int, list[int]]:
        ws = int_list(self.train_widths, "train-widths", increasing=True, sort=False)
        out = {1: ws}
        two = [w for w in ws if w <= self.depth2_max_width]
        if two:
            out[2] = two
        return out


def _check_init(metrics: dict) -> None:
    expect_fields(metrics, {"members": list, "seconds": (int, float)}, "metrics")
    expect_list_of(
        metrics["members"], {"width": int, "seed": int, "rel_err": (int, float)}, "members"
    )


def _check_train(metrics: dict) -> None:
    expect_fields(
        metrics, {"members": list, "lr": (int, float), "lambda_max": (int, float)}, "metrics"
    )
    opt_num = (int, float, type(None))
    expect_list_of(
        metrics["members"],
        {
            "depth": int,
            "width": int,
            "seed": int,
            "diverged": bool,
            "kernel_change": opt_num,
            "train_loss": opt_num,
            "test_r2": opt_num,
        },
        "members",
    )


def binary_digits(data: TaskData, points: int) -> TaskData:
    """The first ``points`` training digits (and the val/test splits) with the scalar
    regression target +1 for labels 0–4, −1 for 5–9 (float32, shape (n, 1))."""

    def split(s: Split, n: int | None = None) -> Split:
        x, y = (s.x, s.y) if n is None else (s.x[:n], s.y[:n])
        return Split(x.float(), torch.where(y < 5, 1.0, -1.0).float()[:, None])

    return TaskData(
        "digits-binary",
        split(data.train, points),
        split(data.val),
        split(data.test),
        0,
        "regression",
        info={"points": points, "target": "+1 for labels 0-4, -1 for 5-9"},
    )


def log_slope(widths: list[int], values: list[float]) -> float:
    """Least-squares slope of ``log value`` against ``log width``."""
    x = torch.log(torch.tensor(widths, dtype=torch.float64))
    y = torch.log(torch.tensor(values, dtype=torch.float64))
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / xc.square().sum())


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


class NTKConvergence(Recipe):
    name = "ntk-convergence"
    family = "kernels"
    row = 60
    paper = (
        "Jacot, Gabriel & Hongler 2018, Neural Tangent Kernel: Convergence and Generalization "
        "in Neural Networks (NeurIPS 2018, arXiv:1806.07572)"
    )
    claim = (
        "the empirical NTK approaches the analytic limit as width grows (error ~ width^-1/2) "
        "and moves less in training the wider the net"
    )
    Config = NTKConvergenceConfig
    tasks = ("digits",)
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "init_widths": "16,64",
        "init_points": 10,
        "train_widths": "16,64",
        "depth2_max_width": 16,
        "train_seeds": 2,
        "points": 40,
        "steps": 20,
    }
    # a rate 1000x the stable one diverges; one init width leaves claim (a) untestable
    broken: ClassVar[dict] = {"lr_scale": 1000.0, "init_widths": "64"}
    # measured in-process, one thread, CPU time (2 cores shared by ~6 jobs): 3.2 s for the
    # first run of a process (imports, digits), 0.7 s after
    smoke_seconds = 3.2

    def validate(self, cfg: NTKConvergenceConfig, data_sizes: dict[str, int]) -> None:
        if cfg.points > data_sizes["train"]:
            raise ConfigError(
                f"--points {cfg.points} exceeds the {data_sizes['train']} training examples"
            )

    # -- (a) at initialization --------------------------------------------------------
    def _init_unit(self, cfg: NTKConvergenceConfig, progress: bool) -> tuple[dict, dict]:
        t0 = time.perf_counter()
        g = generator(derive_seed(self.name, "inputs"))
        x = torch.randn(cfg.init_points, cfg.init_dim, generator=g, dtype=torch.float64)
        k_inf = fc_kernels(x, depth=INIT_DEPTH, w_std=cfg.w_std).ntk
        widths = cfg.init_width_values
        bar = progress_bar(len(widths) * cfg.seeds, self.name, "net", progress)
        out = []
        for w in widths:
            for s in range(cfg.seeds):
                seed = derive_seed(self.name, "init", s, w)
                net = ntk_mlp([cfg.init_dim] + [w] * INIT_DEPTH + [1], w_std=cfg.w_std, seed=seed)
                k = empirical_ntk(net, x)
                out.append({"width": w, "seed": s, "rel_err": _rel(k, k_inf)})
                del net
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        return {"members": out, "seconds": time.perf_counter() - t0}, {}

    # -- (b) in training ----------------------------------------------------------------
    def _train_unit(
        self, cfg: NTKConvergenceConfig, task: TaskData, depth: int, widths: list[int], progress
    ) -> tuple[dict, dict]:
        from weightlab.population import MemberSpec, Population

        t0 = time.perf_counter()
        x = task.train.x.double()
        n = x.shape[0]
        lam = float(torch.linalg.eigvalsh(fc_kernels(x, depth=depth, w_std=cfg.w_std).ntk)[-1])
        # eta = lr_scale / lambda_max for 1/2 ||f - y||^2; the loop's MSE is (1/n) sum (f - y)^2
        lr = cfg.lr_scale * n / (2.0 * lam)
        d_in = x.shape[1]

        def ntk_net(w: int, seed: int, dtype=torch.float32):
            return ntk_mlp([d_in] + [w] * depth + [1], w_std=cfg.w_std, seed=seed, dtype=dtype)

        factories = {w: (lambda seed, w=w: ntk_to_mlp(ntk_net(w, seed))) for w in widths}
        members, meta = [], []
        for w in widths:
            groups = ntk_lr_groups(ntk_net(w, 0))
            for s in range(cfg.train_seeds):
                seed = derive_seed(self.name, "train", depth, s, w)
                optim = OptimConfig("sgd", lr=lr, groups=groups)
                members.append((w, MemberSpec(seed=seed, optim=optim)))
                meta.append((w, s, seed))
        train_cfg = TrainConfig(cfg.steps, n, cfg.steps, OptimConfig("sgd", lr=lr), loss="mse")
        pop = Population.sweep(factories, members, device="cpu")
        results = pop.fit(task, train_cfg, progress=progress)
        out = []
        for i, ((w, s, seed), res) in enumerate(zip(meta, results, strict=True)):
            k0 = empirical_ntk(ntk_net(w, seed, torch.float64), x)
            change = None
            if not res.diverged:
                trained = factories[w](seed)
                trained.load_state_dict(pop.state(i))
                kt = empirical_ntk(mlp_to_ntk(trained, ntk_net(w, seed)).double(), x)
                change = _rel(kt, k0)
                change = change if math.isfinite(change) else None
            fin = res.final
            out.append(
                {
                    "depth": depth,
                    "width": w,
                    "seed": s,
                    "diverged": bool(res.diverged or change is None),
                    "kernel_change": change,
                    "train_loss": fin.train_loss if math.isfinite(fin.train_loss) else None,
                    "test_r2": fin.test_r2
                    if fin.test_r2 is not None and math.isfinite(fin.test_r2)
                    else None,
                }
            )
        metrics = {
            "members": out,
            "lr": lr,
            "lambda_max": lam,
            "seconds": time.perf_counter() - t0,
        }
        return metrics, {}

    def run(self, cfg: NTKConvergenceConfig, rd: RunDir, progress: bool = False) -> dict:
        init, _ = rd.unit("init", lambda: self._init_unit(cfg, progress), check=_check_init)
        task = binary_digits(self.load_data(cfg), cfg.points)
        train = {}
        for depth, widths in cfg.depth_widths().items():
            train[depth], _ = rd.unit(
                f"train-depth-{depth}",
                lambda d=depth, ws=widths: self._train_unit(cfg, task, d, ws, progress),
                check=_check_train,
            )
        self._measurements = [
            (
                "Wall time per unit (this machine)",
                ["unit", "seconds"],
                [["init", f"{init['seconds']:.1f}"]]
                + [[f"train-depth-{d}", f"{m['seconds']:.1f}"] for d, m in train.items()],
            )
        ]
        return self.summarize(cfg, init, train)

    # -- summary and claims -------------------------------------------------------------
    def summarize(self, cfg: NTKConvergenceConfig, init: dict, train: dict) -> dict:
        init_rows = []
        for w in cfg.init_width_values:
            vals = [m["rel_err"] for m in init["members"] if m["width"] == w]
            mu, sd = mean_std(vals)
            init_rows.append({"width": w, "rel_err_mean": mu, "rel_err_std": sd, "values": vals})
        train_rows = []
        for depth, m in sorted(train.items()):
            for w in sorted({r["width"] for r in m["members"]}):
                ms = [r for r in m["members"] if r["width"] == w]
                kept = [r for r in ms if not r["diverged"]]
                mu, sd = mean_std([r["kernel_change"] for r in kept])
                lm, ls = mean_std([r["train_loss"] for r in kept])
                rm, rs = mean_std([r["test_r2"] for r in kept])
                train_rows.append(
                    {
                        "depth": depth,
                        "width": w,
                        "kernel_change_mean": mu,
                        "kernel_change_std": sd,
                        "values": [r["kernel_change"] for r in kept],
                        "train_loss_mean": lm,
                        "train_loss_std": ls,
                        "test_r2_mean": rm,
                        "test_r2_std": rs,
                        "n": len(kept),
                        "excluded": [
                            f"depth {depth} w={w} seed {r['seed']}" for r in ms if r["diverged"]
                        ],
                    }
                )
        slopes = {
            "init": self._slope(
                [r["width"] for r in init_rows], [r["rel_err_mean"] for r in init_rows]
            ),
            "train": {
                d: self._slope(
                    [r["width"] for r in train_rows if r["depth"] == d],
                    [r["kernel_change_mean"] for r in train_rows if r["depth"] == d],
                )
                for d in sorted(train)
            },
        }
        claims = [c.to_dict() for c in self.check_claims(init_rows, train_rows, slopes)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "init_rows": init_rows,
            "train_rows": train_rows,
            "slopes": {
                "init": slopes["init"],
                "train": {str(k): v for k, v in slopes["train"].items()},
            },
            "lr": {str(d): m["lr"] for d, m in train.items()},
            "lambda_max": {str(d): m["lambda_max"] for d, m in train.items()},
            "claims": claims,
            "members": sum(len(m["members"]) for m in train.values()),
            "diverged_members": [n for r in train_rows for n in r["excluded"]],
            "setup": (
                f"(a) depth {INIT_DEPTH}, {cfg.init_points} points N(0, I_{cfg.init_dim}), "
                f"{cfg.seeds} seeds; (b) {cfg.points} digits, {cfg.steps} full-batch GD steps, "
                f"eta = {cfg.lr_scale:g}/lambda_max, {cfg.train_seeds} seeds; NTK "
                f"parametrization, w_std = {cfg.w_std:g}, no bias"
            ),
        }

    @staticmethod
    def _slope(widths: list[int], values: list[float | None]) -> float | None:
        if len(widths) < 2 or any(v is None or not (v > 0) for v in values):
            return None
        return log_slope(widths, [float(v) for v in values])

    @staticmethod
    def check_claims(
        init_rows: list[dict], train_rows: list[dict], slopes: dict
    ) -> list[ClaimResult]:
        lo, hi = INIT_SLOPE_RANGE

        def check_a():
            s = slopes["init"]
            errs = ", ".join(f"w={r['width']} {r['rel_err_mean']:.4f}" for r in init_rows)
            return (
                lo <= s <= hi,
                f"relative error (mean over seeds) {errs}; fitted slope {s:+.3f}, needed in "
                f"[{lo:g}, {hi:g}]",
                {"slope": s, "errors": {str(r["width"]): r["rel_err_mean"] for r in init_rows}},
            )

        few_a = None if len(init_rows) >= 2 else "part (a) has fewer than two widths"
        bad_a = None if few_a or slopes["init"] is not None else "a relative error is not finite"

        depths = sorted(slopes["train"])
        excluded = [n for r in train_rows for n in r["excluded"]]
        few_b = [
            f"depth {d} has fewer than two trained widths"
            for d in depths
            if sum(r["depth"] == d for r in train_rows) < 2
        ]
        learned = [
            baseline_learned(
                r["test_r2_mean"], kind="regression", name=f"depth {r['depth']} w={r['width']}"
            )
            for r in train_rows
        ]

        def check_b():
            parts, ok = [], True
            for d in depths:
                s = slopes["train"][d]
                rows = [r for r in train_rows if r["depth"] == d]
                ok = ok and s <= TRAIN_SLOPE_MAX
                parts.append(
                    f"depth {d}: change {rows[0]['kernel_change_mean']:.4f} at w={rows[0]['width']}"
                    f" -> {rows[-1]['kernel_change_mean']:.4f} at w={rows[-1]['width']}, slope "
                    f"{s:+.3f}"
                )
            return (
                ok,
                "; ".join(parts) + f"; needed every slope <= {TRAIN_SLOPE_MAX:g}",
                {"slopes": {str(d): slopes["train"][d] for d in depths}},
            )

        nan_b = (
            None
            if few_b or excluded or all(slopes["train"][d] is not None for d in depths)
            else "a kernel change is not finite"
        )
        return [
            judge(
                "a",
                QUOTE_INIT,
                "at initialization the relative Frobenius error of the empirical NTK against the "
                f"analytic one has a fitted log-log slope in [{lo:g}, {hi:g}] against width",
                [few_a, bad_a],
                check_a,
            ),
            judge(
                "b",
                QUOTE_TRAIN,
                "after full-batch GD (eta = 1/lambda_max) the relative kernel change "
                f"||K_T - K_0||_F/||K_0||_F has a fitted log-log slope <= {TRAIN_SLOPE_MAX:g} "
                "against width, at each depth",
                [*few_b, *[x for x in learned if x], no_divergence(excluded), nan_b],
                check_b,
            ),
        ]

    # -- report ------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        init = [
            [str(r["width"]), _pm(r["rel_err_mean"], r["rel_err_std"], 4)]
            for r in summary["init_rows"]
        ]
        train = [
            [
                str(r["depth"]),
                str(r["width"]),
                _pm(r["kernel_change_mean"], r["kernel_change_std"], 4),
                _pm(r["train_loss_mean"], r["train_loss_std"], 4),
                _pm(r["test_r2_mean"], r["test_r2_std"], 3),
                str(r["n"]),
            ]
            for r in summary["train_rows"]
        ]
        s = summary["slopes"]
        fmt = lambda v: "n/a" if v is None else f"{v:+.3f}"  # noqa: E731
        slope_rows = [["(a) init error", fmt(s["init"])]] + [
            [f"(b) kernel change, depth {d}", fmt(v)] for d, v in s["train"].items()
        ]
        return [
            (
                "(a) Relative Frobenius error of the empirical NTK at init vs the analytic NTK "
                "(mean ± std over seeds)",
                ["width", "‖K_emp − K_∞‖/‖K_∞‖"],
                init,
            ),
            (
                "(b) Relative kernel change after GD (mean ± std over seeds)",
                ["depth", "width", "‖K_T − K_0‖/‖K_0‖", "final train MSE", "test R²", "n"],
                train,
            ),
            ("Fitted log-log slopes against width", ["quantity", "slope"], slope_rows),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        rows = summary["init_rows"]
        ws = [r["width"] for r in rows]
        axes[0].errorbar(
            ws,
            [_num(r["rel_err_mean"]) for r in rows],
            yerr=[_num(r["rel_err_std"]) for r in rows],
            fmt="o-",
            capsize=3,
            label=f"empirical vs analytic (slope {summary['slopes']['init'] or float('nan'):+.2f})",
        )
        if rows and rows[0]["rel_err_mean"]:
            ref = [_num(rows[0]["rel_err_mean"]) * (w / ws[0]) ** -0.5 for w in ws]
            axes[0].plot(ws, ref, "k--", lw=0.8, label="width^-1/2")
        axes[0].set_ylabel("‖K_emp − K_∞‖_F / ‖K_∞‖_F at init")
        for d, s in summary["slopes"]["train"].items():
            tr = [r for r in summary["train_rows"] if str(r["depth"]) == d]
            lab = f"depth {d}" + ("" if s is None else f" (slope {s:+.2f})")
            axes[1].errorbar(
                [r["width"] for r in tr],
                [_num(r["kernel_change_mean"]) for r in tr],
                yerr=[_num(r["kernel_change_std"]) for r in tr],
                fmt="o-",
                capsize=3,
                label=lab,
            )
        axes[1].set_ylabel("‖K_T − K_0‖_F / ‖K_0‖_F after GD")
        for ax in axes:
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("hidden width")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        fig.suptitle("NTK convergence with width: at initialization (a) and in training (b)")
        png = figure_png(fig)
        return [Figure("ntk_convergence.png", "Empirical NTK vs width", png)]
