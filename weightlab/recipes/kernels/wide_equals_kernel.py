"""Recipe ``wide-equals-kernel``: Jacot, Gabriel & Hongler (2018), "Neural Tangent Kernel:
Convergence and Generalization in Neural Networks" (NeurIPS), row [#60]; the finite-width
comparison follows Lee et al. (2019), "Wide Neural Networks of Any Depth Evolve as Linear
Models Under Gradient Descent".

Task: y = sin(Σx), x ~ N(0, I₃); 20 training and 50 test points (one fixed draw). Nets:
1-hidden-layer ReLU MLPs in stax's NTK parametrization
(:func:`weightlab.kernels.empirical.ntk_mlp`, w_std = 1, b_std = 0.1), widths
{64, 256, 1024, 4096}, 8 seeds per width, trained as one population per width and mode
(:func:`weightlab.recipes.members.train_members`): full-batch GD, 400 steps, on weightlab's
mean MSE (1/n)Σ(f − y)², lr = n/(2λ_max), i.e. η = 1/λ_max for ½‖f − y‖² with λ_max the
largest eigenvalue of the analytic NTK on the training inputs
(:func:`weightlab.kernels.analytic.fc_kernels`). Kernel-side predictions use the gradient-flow
closed form (:func:`weightlab.kernels.regression.ntk_gp_mean`, t = 400 steps, η as above).

* Claim ``linearization``: each net against its own linearization (same f₀, its empirical NTK
  at init, :func:`weightlab.kernels.empirical.empirical_ntk`): relative deviation
  ‖f_T − f_T^lin‖/‖f_T^lin‖ on the test points; the fitted log-log slope of its seed mean
  over widths is ≤ −0.2.
* Claim ``centred``: nets trained on the centred output f − f₀
  (:func:`weightlab.init.output_scale.output_scale`, α = 1), against the NTK-GP mean μ (the
  analytic NTK, f₀ = 0): ‖f_T − μ‖/‖μ‖, fitted slope ≤ −0.2.
* Reported: the raw nets against μ (a floor: their f₀ term does not shrink with width) and
  the mean of M raw nets against μ as M grows (M = 1, 2, 4, 8).

Preconditions: no member diverged; the widest raw nets fit the training data (train R² ≥
``MIN_R2`` on average). The recipe builds its own data (the task registry has no sin(Σx)
task); ``--data`` accepts only its default, ``teacher_mlp``, which is not read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.data.task import Split, TaskData
from weightlab.kernels.regression import ntk_gp_mean
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import MIN_R2, judge, no_divergence
from weightlab.recipes.options import int_list
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields
from weightlab.seeding import derive_seed, generator
from weightlab.threads import intra_op_threads

QUOTE = (
    "in the infinite-width limit it converges to an explicit limiting kernel and it stays "
    "constant during training"
)
QUOTE_LINEAR = (
    "in the infinite-width limit, the network function f_theta follows a linear differential "
    "equation during training"
)
MAX_SLOPE = -0.2  # both claims: fitted log-log slope at most this
W_STD, B_STD = 1.0, 0.1
ENSEMBLE_SIZES = (1, 2, 4, 8)


@dataclass(frozen=True)
class WideEqualsKernelConfig(RecipeConfig):
    seeds: int = opt(8, "nets per width (error bars are over seeds)", min=1, max=1000)
    data: str = opt("teacher_mlp", "unused: the recipe builds y = sin(Σx) itself (see --help)")
    widths: str = opt("64,256,1024,4096", "hidden widths, increasing, comma-separated")
    steps: int = opt(400, "full-batch GD steps", min=1, max=100000)
    d: int = opt(3, "input dimension", min=1, max=1000)
    n_train: int = opt(20, "training points", min=2, max=2000)
    n_test: int = opt(50, "test points", min=1, max=10000)

    def __post_init__(self) -> None:
        super().__post_init__()
        int_list(self.widths, "widths", increasing=True, sort=False, min_count=2)

    @property
    def width_list(self) -> list[int]:
        return int_list(self.widths, "widths", increasing=True, sort=False, min_count=2)


def make_task(d: int, n_train: int, n_test: int) -> TaskData:
    """y = sin(Σx), x ~ N(0, I_d) (float64; one fixed draw), no validation split."""
    g = generator(derive_seed("wide-equals-kernel", "data"))
    x = torch.randn(n_train + n_test, d, generator=g, dtype=torch.float64)
    y = torch.sin(x.sum(1, keepdim=True))
    train = Split(x[:n_train].contiguous(), y[:n_train].contiguous())
    test = Split(x[n_train:].contiguous(), y[n_train:].contiguous())
    val = Split(x[:0].clone(), y[:0].clone())
    return TaskData("sin_sum", train, val, test, 0, kind="regression")


def loglog_slope(widths: list[float], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(width)."""
    lx = [math.log(w) for w in widths]
    ly = [math.log(v) for v in values]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    num = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True))
    den = sum((a - mx) ** 2 for a in lx)
    return num / den


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def _check(m: dict) -> None:
    expect_fields(m, {"width": int, "raw": list, "centred": list}, "width unit")


class WideEqualsKernel(Recipe):
    name = "wide-equals-kernel"
    family = "kernels"
    row = 60
    paper = (
        "Jacot, Gabriel & Hongler 2018, Neural Tangent Kernel: Convergence and Generalization "
        "in Neural Networks (NeurIPS, arXiv:1806.07572)"
    )
    claim = (
        "a trained wide net approaches its linearization, and a centred one the NTK-GP mean, "
        "as width grows; one raw net keeps an f0 floor"
    )
    Config = WideEqualsKernelConfig
    tasks = ("teacher_mlp",)
    kinds = ("regression",)
    smoke: ClassVar[dict] = {"seeds": 2, "widths": "32,128", "steps": 40}
    broken: ClassVar[dict] = {"steps": 1}
    smoke_seconds = 1.5

    def task_params(self, cfg: WideEqualsKernelConfig) -> dict:
        return {"n_train": 16, "n_val": 8, "n_test": 8}

    def _kernels(self, task: TaskData):
        from weightlab.kernels.analytic import fc_kernels

        x, xt = task.train.x, task.test.x
        kw = {"depth": 1, "w_std": W_STD, "b_std": B_STD}
        return fc_kernels(x, **kw).ntk, fc_kernels(xt, x, **kw).ntk

    def _width(self, cfg, task: TaskData, width: int, eta: float, mu: torch.Tensor):
        from weightlab.core.snapshots import restore_snapshot
        from weightlab.init.output_scale import output_scale
        from weightlab.kernels.empirical import empirical_ntk, ntk_mlp
        from weightlab.population import MemberSpec
        from weightlab.recipes.members import train_members
        from weightlab.train.config import OptimConfig, TrainConfig

        d, n = cfg.d, cfg.n_train
        x, y, xt = task.train.x, task.train.y, task.test.x

        def raw(seed: int):
            return ntk_mlp([d, width, 1], w_std=W_STD, b_std=B_STD, seed=seed)

        def centred(seed: int):
            return output_scale(raw(seed), 1.0, centered=True)

        seeds = [derive_seed(self.name, "net", width, s) for s in range(cfg.seeds)]
        specs = [MemberSpec(seed=s) for s in seeds]
        lr = eta * n / 2  # mean MSE: df = -(2 lr / n) Θ (f - y)
        tcfg = TrainConfig(cfg.steps, n, cfg.steps, OptimConfig("sgd", lr=lr))
        out = {"width": width, "lr": lr, "raw": [], "centred": []}
        for mode, factory in (("raw", raw), ("centred", centred)):
            results, finals = train_members(factory, specs, task, tcfg)
            for s, (seed, res, final) in enumerate(zip(seeds, results, finals, strict=True)):
                model = factory(seed)
                rec = {"seed": s, "diverged": bool(res.diverged)}
                with torch.no_grad():
                    f0, f0t = model(x)[:, 0], model(xt)[:, 0]
                if mode == "raw":
                    k = empirical_ntk(model, x)
                    kt = empirical_ntk(model, xt, x)
                    lin = ntk_gp_mean(k, kt, y[:, 0], cfg.steps, eta, f0, f0t)
                restore_snapshot(model, final)
                model = model.to(torch.float64)
                with torch.no_grad():
                    ft, ftr = model(xt)[:, 0], model(x)[:, 0]
                finite = bool(torch.isfinite(ft).all()) and not res.diverged
                rec["diverged"] = not finite
                rec["train_r2"] = (
                    float(1 - ((ftr - y[:, 0]) ** 2).sum() / ((y - y.mean()) ** 2).sum())
                    if finite
                    else None
                )
                rec["vs_mu"] = _rel(ft, mu) if finite else None
                if mode == "raw":
                    rec["vs_linearization"] = _rel(ft, lin) if finite else None
                    rec["f0_norm_ratio"] = float(torch.linalg.norm(f0t) / torch.linalg.norm(mu))
                    rec["test_outputs"] = ft.tolist() if finite else None
                out[mode].append(rec)
        return out, {}

    def run(self, cfg: WideEqualsKernelConfig, rd: RunDir, progress: bool = False) -> dict:
        task = make_task(cfg.d, cfg.n_train, cfg.n_test)
        k, kt = self._kernels(task)
        lam_max = float(torch.linalg.eigvalsh(k).max())
        eta = 1.0 / lam_max
        mu = ntk_gp_mean(k, kt, task.train.y[:, 0], cfg.steps, eta)
        widths = cfg.width_list
        bar = progress_bar(len(widths), self.name, "width", progress, line_each_update=True)
        units = []
        for w in widths:
            with intra_op_threads(1):  # 20 points: splitting each op over threads only costs
                m, _ = rd.unit(
                    f"width-{w:05d}", lambda w=w: self._width(cfg, task, w, eta, mu), check=_check
                )
            units.append(m)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return self.summarize(cfg, units, mu, lam_max)

    def summarize(self, cfg, units: list[dict], mu: torch.Tensor, lam_max: float) -> dict:
        rows = []
        for u in units:
            row = {"width": u["width"], "lr": u["lr"]}
            for key, mode, field in (
                ("lin", "raw", "vs_linearization"),
                ("centred", "centred", "vs_mu"),
                ("raw", "raw", "vs_mu"),
                ("train_r2", "raw", "train_r2"),
                ("f0", "raw", "f0_norm_ratio"),
            ):
                vals = [r[field] for r in u[mode] if r.get(field) is not None]
                row[f"{key}_mean"], row[f"{key}_std"] = mean_std(vals) if vals else (None, None)
            outs = [r["test_outputs"] for r in u["raw"] if r["test_outputs"] is not None]
            ens = []
            for m in ENSEMBLE_SIZES:
                if m <= len(outs):
                    mean_out = torch.tensor(outs[:m], dtype=torch.float64).mean(0)
                    ens.append({"M": m, "vs_mu": _rel(mean_out, mu)})
            row["ensemble"] = ens
            rows.append(row)
        diverged = [
            f"width {u['width']} {mode} seed {r['seed']}"
            for u in units
            for mode in ("raw", "centred")
            for r in u[mode]
            if r["diverged"]
        ]
        claims = [c.to_dict() for c in self.check_claims(rows, diverged)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "members": sum(len(u["raw"]) + len(u["centred"]) for u in units),
            "diverged_members": diverged,
            "setup": {
                "d": cfg.d,
                "n_train": cfg.n_train,
                "n_test": cfg.n_test,
                "steps": cfg.steps,
                "w_std": W_STD,
                "b_std": B_STD,
                "lambda_max": lam_max,
                "eta": 1.0 / lam_max,
                "mu_norm": float(torch.linalg.norm(mu)),
            },
            "rows": rows,
            "claims": claims,
        }

    @staticmethod
    def check_claims(rows: list[dict], diverged: list[str]) -> list[ClaimResult]:
        """Fitted log-log slopes of the seed-mean deviations over widths, each <= MAX_SLOPE."""
        widest = rows[-1]
        fit = (
            None
            if widest["train_r2_mean"] is not None and widest["train_r2_mean"] >= MIN_R2
            else f"the widest nets did not fit the training data (train R² < {MIN_R2:g})"
        )
        pre = [no_divergence(diverged), fit]

        def slope_check(key: str, what: str):
            def check():
                ws = [r["width"] for r in rows]
                vals = [r[f"{key}_mean"] for r in rows]
                if any(v is None or not v > 0 for v in vals):
                    return None, f"a width has no finite positive {what}", {}
                slope = loglog_slope(ws, vals)
                detail = (
                    f"{what} by width: "
                    + ", ".join(
                        f"{r['width']}: {_pm(r[f'{key}_mean'], r[f'{key}_std'], 4)}" for r in rows
                    )
                    + f"; fitted slope {slope:.3f} (needed <= {MAX_SLOPE:g})"
                )
                return slope <= MAX_SLOPE, detail, {"slope": slope, "values": vals, "widths": ws}

            return check

        return [
            judge(
                "linearization",
                QUOTE_LINEAR,
                "each trained net against its own linearization (same f₀, its empirical NTK at "
                f"init, gradient flow at the same t): fitted log-log slope <= {MAX_SLOPE:g}",
                pre,
                slope_check("lin", "‖f − f_lin‖/‖f_lin‖"),
            ),
            judge(
                "centred",
                QUOTE,
                "nets trained on the centred output f − f₀ against the analytic NTK-GP mean μ: "
                f"fitted log-log slope <= {MAX_SLOPE:g}",
                pre,
                slope_check("centred", "‖f_c − μ‖/‖μ‖"),
            ),
        ]

    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        rows = summary["rows"]
        main = [
            [
                str(r["width"]),
                _pm(r["lin_mean"], r["lin_std"], 4),
                _pm(r["centred_mean"], r["centred_std"], 4),
                _pm(r["raw_mean"], r["raw_std"], 4),
                _pm(r["f0_mean"], r["f0_std"], 3),
                _pm(r["train_r2_mean"], r["train_r2_std"], 4),
            ]
            for r in rows
        ]
        ens = [[str(r["width"])] + [f"{e['vs_mu']:.4f}" for e in r["ensemble"]] for r in rows]
        sizes = [f"M = {e['M']}" for e in rows[0]["ensemble"]] if rows else []
        return [
            (
                "Relative deviations on the test points (mean ± std over seeds)",
                [
                    "width",
                    "raw vs own linearization",
                    "centred vs μ",
                    "raw vs μ (reported)",
                    "‖f₀‖/‖μ‖",
                    "train R² (raw)",
                ],
                main,
            ),
            ("Reported: mean of M raw nets against μ", ["width", *sizes], ens),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = summary["rows"]
        ws = [r["width"] for r in rows]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for key, label, c in (
            ("lin", "raw vs own linearization", "tab:blue"),
            ("centred", "centred vs μ", "tab:green"),
            ("raw", "raw vs μ (reported)", "tab:red"),
        ):
            axes[0].errorbar(
                ws,
                [r[f"{key}_mean"] or float("nan") for r in rows],
                yerr=[r[f"{key}_std"] or 0.0 for r in rows],
                fmt="o-",
                capsize=2,
                color=c,
                label=label,
            )
        axes[0].set_xscale("log", base=2)
        axes[0].set_yscale("log")
        axes[0].set_xlabel("width")
        axes[0].set_ylabel("relative deviation on test points")
        axes[0].legend(fontsize=8)
        for r in rows:
            axes[1].plot(
                [e["M"] for e in r["ensemble"]],
                [e["vs_mu"] for e in r["ensemble"]],
                "o-",
                label=f"width {r['width']}",
            )
        axes[1].set_xscale("log", base=2)
        axes[1].set_yscale("log")
        axes[1].set_xlabel("ensemble size M (raw nets)")
        axes[1].set_ylabel("‖mean of M nets − μ‖/‖μ‖")
        axes[1].legend(fontsize=8)
        for ax in axes:
            ax.grid(alpha=0.3)
        return [Figure("wide_equals_kernel.png", "Wide nets vs their kernels", figure_png(fig))]


__all__ = ["WideEqualsKernel", "WideEqualsKernelConfig", "loglog_slope", "make_task"]
