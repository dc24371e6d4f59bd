"""Recipe ``student-t-nngp``: Lee et al. (2022), "Scale Mixtures of Neural Network Gaussian
Processes" (ICLR), row [#57].

One pre-registered claim. 1-D regression of y = sin(3x) + N(0, 0.1²): 100 training points
uniform on [−1, 1], 200 test points uniform on the shifted interval [1, 3] (out of
distribution), 5 seeds (each seed draws its own data). Kernel: the ReLU NNGP of a depth-2 MLP
in the stax convention (:func:`weightlab.kernels.analytic.fc_kernels`, w_std = 1). Both models
are fitted by the log marginal likelihood of the training data
(:mod:`weightlab.kernels.student_t`):

* GP: y ~ N(0, s²(K + s_n²I)), fitted (s², s_n²);
* Student-t process: σ² ~ InvGamma(a, b), y | σ² ~ N(0, σ²(K + s_n²I)), fitted (a, b, s_n²);

each over the kernel hyperparameter b_std on a fixed grid (the best marginal likelihood wins;
the overall kernel scale is absorbed by s² and b). Claim: the t-process's mean test NLL (per
point, of the noisy observations, averaged over the 200 test points, then over seeds) is below
the GP's. Precondition: the GP fits the training data (train R² >= ``MIN_R2``).

Heavy tails hold by construction and are reported, not judged: 2000 random one-hidden-layer
ReLU MLPs of width 1024 (stax NTK parametrization) whose readout variance is σ² ~ InvGamma(a,
b) per net (:func:`~weightlab.kernels.student_t.sample_scale_mixture_outputs`); at one input,
the KS statistic of their outputs against the limiting Student-t (2a dof) and against the
Gaussian with the same variance.

The recipe builds its own data (the task registry has no 1-D shifted-interval task): ``--data``
accepts only its default, ``signal1d``, which is not read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.kernels.student_t import (
    fit_best,
    fit_gp,
    fit_student_t,
    gaussian_log_density,
    gp_predictive,
    sample_scale_mixture_outputs,
    student_t_process,
)
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import MIN_R2, judge
from weightlab.recipes.options import float_list
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields
from weightlab.seeding import derive_seed, generator
from weightlab.threads import intra_op_threads

QUOTE = (
    "the heavy-tailed stochastic processes obtained from our framework are robust to "
    "out-of-distribution data"
)
QUOTE_TAILS = "in the case of inverse gamma priors, we recover Student's t processes"
TRAIN_RANGE = (-1.0, 1.0)
TEST_RANGE = (1.0, 3.0)
FREQ = 3.0  # y = sin(3x)
SAMPLER_INPUT = 0.5  # the input at which the sampler's outputs are compared


@dataclass(frozen=True)
class StudentTConfig(RecipeConfig):
    seeds: int = opt(5, "number of seeds (each draws its own data)", min=1, max=1000)
    data: str = opt("signal1d", "unused: the recipe builds its own 1-D task (see --help)")
    n_train: int = opt(100, "training points, uniform on [-1, 1]", min=3, max=5000)
    n_test: int = opt(200, "test points, uniform on the shifted interval [1, 3]", min=1)
    noise_std: float = opt(0.1, "standard deviation of the target noise", gt=0, max=10)
    depth: int = opt(2, "hidden layers of the ReLU MLP whose NNGP is the kernel", min=1, max=50)
    b_stds: str = opt("0.1,0.3,1,3", "grid of the NNGP's b_std (kernel hyperparameter)")
    fit_steps: int = opt(100, "L-BFGS iterations per marginal-likelihood fit", min=1, max=10000)
    nets: int = opt(2000, "(sampler) random finite nets", min=10, max=100000)
    width: int = opt(1024, "(sampler) hidden width of the random nets", min=1, max=100000)
    prior_a: float = opt(2.0, "(sampler) inverse-gamma shape a (Student-t dof 2a)", gt=0)
    prior_b: float = opt(2.0, "(sampler) inverse-gamma scale b", gt=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        float_list(self.b_stds, "b-stds", gt=0, distinct=False, sort=False)

    @property
    def b_grid(self) -> list[float]:
        return float_list(self.b_stds, "b-stds", gt=0, distinct=False, sort=False)


def make_data(seed: int, n_train: int, n_test: int, noise_std: float):
    """(x_train (n,1), y_train, x_test (m,1), y_test) of seed ``seed`` (float64)."""
    g = generator(derive_seed("student-t-nngp", "data", seed))
    lo, hi = TRAIN_RANGE
    x = lo + (hi - lo) * torch.rand(n_train, 1, generator=g, dtype=torch.float64)
    tlo, thi = TEST_RANGE
    xt = tlo + (thi - tlo) * torch.rand(n_test, 1, generator=g, dtype=torch.float64)
    y = torch.sin(FREQ * x[:, 0]) + noise_std * torch.randn(n_train, generator=g, dtype=x.dtype)
    yt = torch.sin(FREQ * xt[:, 0]) + noise_std * torch.randn(n_test, generator=g, dtype=x.dtype)
    return x, y, xt, yt


def _kernels(x, xt, depth: int, b_std: float):
    from weightlab.kernels.analytic import fc_kernels

    kw = {"depth": depth, "w_std": 1.0, "b_std": b_std, "compute_ntk": False}
    k = fc_kernels(x, **kw).nngp
    ks = fc_kernels(xt, x, **kw).nngp
    kss = fc_kernels(xt, diagonal=True, **kw).nngp
    return k, ks, kss


def _r2(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def _check_seed(m: dict) -> None:
    expect_fields(m, {"members": list}, "seed unit")


def _check_sampler(m: dict) -> None:
    expect_fields(m, {"ks_student_t": float, "ks_gaussian": float}, "sampler unit")


class StudentTNNGP(Recipe):
    name = "student-t-nngp"
    family = "kernels"
    row = 57
    paper = (
        "Lee, Yun, Nam, Lee, Lee & Lee 2022, Scale Mixtures of Neural Network Gaussian "
        "Processes (ICLR, arXiv:2107.01408)"
    )
    claim = "an inverse-gamma scale mixture of the NNGP (a Student-t process) has a lower "
    claim += "out-of-distribution test NLL than the NNGP's Gaussian process"
    Config = StudentTConfig
    tasks = ("signal1d",)
    kinds = ("regression",)
    trains = False
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "n_train": 30,
        "n_test": 40,
        "b_stds": "0.3,1",
        "fit_steps": 30,
        "nets": 200,
        "width": 64,
    }
    smoke_seconds = 1.3

    def task_params(self, cfg: StudentTConfig) -> dict:
        return {"n": 64, "f_lo": 1, "f_hi": 4}

    def _seed(self, cfg: StudentTConfig, s: int) -> tuple[dict, dict]:
        x, y, xt, yt = make_data(s, cfg.n_train, cfg.n_test, cfg.noise_std)
        kernels = [_kernels(x, xt, cfg.depth, b) for b in cfg.b_grid]
        trains = [k[0] for k in kernels]
        steps = cfg.fit_steps
        gi, gp = fit_best(trains, y, lambda k, yy: fit_gp(k, yy, steps=steps))
        ti, tp = fit_best(trains, y, lambda k, yy: fit_student_t(k, yy, steps=steps))
        k, ks, kss = kernels[gi]
        mean, var = gp_predictive(k, y, ks, kss, gp.signal, gp.noise)
        gp_nll = -gaussian_log_density(yt, mean, var)
        train_mean, _ = gp_predictive(k, y, k, torch.diagonal(k), gp.signal, gp.noise)
        k, ks, kss = kernels[ti]
        pred = student_t_process(k, y, ks, kss, tp.a, tp.b, tp.noise)
        t_nll = -pred.log_density(yt)
        t_train = student_t_process(k, y, k, torch.diagonal(k), tp.a, tp.b, tp.noise)
        record = {
            "seed": s,
            "gp": {
                "b_std": cfg.b_grid[gi],
                "signal": gp.signal,
                "noise": gp.noise,
                "log_marginal": gp.log_marginal,
                "test_nll": float(gp_nll.mean()),
                "test_mse": float(((mean - yt) ** 2).mean()),
                "train_r2": _r2(train_mean, y),
            },
            "t": {
                "b_std": cfg.b_grid[ti],
                "a": tp.a,
                "b": tp.b,
                "noise": tp.noise,
                "dof": pred.dof,
                "log_marginal": tp.log_marginal,
                "test_nll": float(t_nll.mean()),
                "test_mse": float(((pred.loc - yt) ** 2).mean()),
                "train_r2": _r2(t_train.loc, y),
            },
        }
        if s == 0:  # the figure's curves (one seed)
            order = torch.argsort(xt[:, 0])
            record["curves"] = {
                "x_train": x[:, 0].tolist(),
                "y_train": y.tolist(),
                "x_test": xt[order, 0].tolist(),
                "y_test": yt[order].tolist(),
                "gp_mean": mean[order].tolist(),
                "gp_sd": var[order].sqrt().tolist(),
                "t_loc": pred.loc[order].tolist(),
                "t_scale": pred.scale[order].tolist(),
                "t_dof": pred.dof,
            }
        return {"members": [record]}, {}

    def _sampler(self, cfg: StudentTConfig) -> tuple[dict, dict]:
        from scipy import stats

        from weightlab.kernels.analytic import fc_kernels

        x0 = torch.tensor([[SAMPLER_INPUT]], dtype=torch.float64)
        out = sample_scale_mixture_outputs(
            x0,
            cfg.nets,
            cfg.width,
            cfg.prior_a,
            cfg.prior_b,
            depth=1,
            w_std=1.0,
            b_std=1.0,
            seed=derive_seed(self.name, "sampler"),
        )[:, 0]
        kxx = float(fc_kernels(x0, depth=1, w_std=1.0, b_std=1.0, compute_ntk=False).nngp)
        a, b = cfg.prior_a, cfg.prior_b
        scale = math.sqrt(b / a * kxx)
        t_dist = stats.t(df=2 * a, scale=scale)
        # the Gaussian with the same variance (the t's variance needs 2a > 2; else the sample's)
        var = scale**2 * (2 * a) / (2 * a - 2) if a > 1 else float(out.var())
        g_dist = stats.norm(scale=math.sqrt(var))
        vals = out.numpy()
        kt, kg = stats.kstest(vals, t_dist.cdf), stats.kstest(vals, g_dist.cdf)
        qs = [0.005, 0.025, 0.5, 0.975, 0.995]
        return {
            "nets": cfg.nets,
            "width": cfg.width,
            "a": a,
            "b": b,
            "input": SAMPLER_INPUT,
            "k_xx": kxx,
            "t_scale": scale,
            "ks_student_t": float(kt.statistic),
            "ks_student_t_p": float(kt.pvalue),
            "ks_gaussian": float(kg.statistic),
            "ks_gaussian_p": float(kg.pvalue),
            "gaussian_sd": math.sqrt(var),
            "sample_quantiles": {str(q): float(torch.quantile(out, q)) for q in qs},
            "t_quantiles": {str(q): float(t_dist.ppf(q)) for q in qs},
            "histogram": torch.histogram(
                out.clamp(-8 * scale, 8 * scale), bins=60, range=(-8 * scale, 8 * scale)
            ).hist.tolist(),
        }, {}

    def run(self, cfg: StudentTConfig, rd: RunDir, progress: bool = False) -> dict:
        bar = progress_bar(cfg.seeds + 1, self.name, "unit", progress, line_each_update=True)
        records = []
        for s in range(cfg.seeds):
            with intra_op_threads(1):  # 100x100 kernels: splitting each op only costs
                m, _ = rd.unit(f"seed-{s:02d}", lambda s=s: self._seed(cfg, s), check=_check_seed)
            records.extend(m["members"])
            if bar is not None:
                bar.update(1)
        sampler, _ = rd.unit("sampler", lambda: self._sampler(cfg), check=_check_sampler)
        if bar is not None:
            bar.update(1)
            bar.close()
        return self.summarize(cfg, records, sampler)

    def summarize(self, cfg: StudentTConfig, records: list[dict], sampler: dict) -> dict:
        rows = {}
        for model in ("gp", "t"):
            nll = mean_std([r[model]["test_nll"] for r in records])
            mse = mean_std([r[model]["test_mse"] for r in records])
            r2 = mean_std([r[model]["train_r2"] for r in records])
            rows[model] = {
                "test_nll_mean": nll[0],
                "test_nll_std": nll[1],
                "test_mse_mean": mse[0],
                "test_mse_std": mse[1],
                "train_r2_mean": r2[0],
                "train_r2_std": r2[1],
            }
        claims = [c.to_dict() for c in self.check_claims(records, rows)]
        curves = next((r.get("curves") for r in records if "curves" in r), None)
        seeds = [{k: v for k, v in r.items() if k != "curves"} for r in records]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "members": 2 * len(records),
            "diverged_members": [],
            "setup": {
                "train_range": list(TRAIN_RANGE),
                "test_range": list(TEST_RANGE),
                "n_train": cfg.n_train,
                "n_test": cfg.n_test,
                "noise_std": cfg.noise_std,
                "depth": cfg.depth,
                "b_std_grid": cfg.b_grid,
            },
            "rows": rows,
            "seeds": seeds,
            "curves": curves,
            "sampler": sampler,
            "claims": claims,
        }

    @staticmethod
    def check_claims(records: list[dict], rows: dict) -> list[ClaimResult]:
        """The t-process's mean test NLL (over seeds) below the GP's; not tested when a fit
        is not finite or the GP does not fit the training data (train R² < MIN_R2)."""
        finite = all(
            math.isfinite(r[m][k])
            for r in records
            for m in ("gp", "t")
            for k in ("test_nll", "log_marginal")
        )
        pre = [
            None if finite else "a fit or test NLL is not finite",
            None
            if finite and rows["gp"]["train_r2_mean"] >= MIN_R2
            else f"the GP did not fit the training data (train R² < {MIN_R2:g})",
        ]

        def check():
            t, g = rows["t"], rows["gp"]
            diff = [r["t"]["test_nll"] - r["gp"]["test_nll"] for r in records]
            below = sum(d < 0 for d in diff)
            ok = t["test_nll_mean"] < g["test_nll_mean"]
            detail = (
                f"mean test NLL on [1, 3]: t-process {_pm(t['test_nll_mean'], t['test_nll_std'])}"
                f" vs GP {_pm(g['test_nll_mean'], g['test_nll_std'])} (needed t < GP); "
                f"t lower in {below}/{len(diff)} seeds"
            )
            return ok, detail, {"per_seed_difference": diff, "seeds_t_lower": below}

        return [
            judge(
                "t-nll-below-gp",
                QUOTE,
                "1-D sin(3x) regression, trained on [-1, 1], tested on [1, 3]: the Student-t "
                "process's mean test NLL is below the GP's (both fitted by marginal likelihood)",
                pre,
                check,
            )
        ]

    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        rows = summary["rows"]
        main = [
            [
                name,
                _pm(rows[m]["test_nll_mean"], rows[m]["test_nll_std"], 3),
                _pm(rows[m]["test_mse_mean"], rows[m]["test_mse_std"], 3),
                _pm(rows[m]["train_r2_mean"], rows[m]["train_r2_std"], 3),
            ]
            for m, name in (("gp", "GP (NNGP)"), ("t", "Student-t process"))
        ]
        per_seed = [
            [
                str(r["seed"]),
                f"{r['gp']['test_nll']:.3f}",
                f"{r['t']['test_nll']:.3f}",
                f"{r['gp']['b_std']:g} / {r['t']['b_std']:g}",
                f"{r['t']['a']:.3g}",
                f"{r['t']['b']:.3g}",
                f"{r['gp']['log_marginal']:.2f} / {r['t']['log_marginal']:.2f}",
            ]
            for r in summary["seeds"]
        ]
        s = summary["sampler"]
        sampler = [
            [
                f"{s['nets']} nets, width {s['width']}",
                f"InvGamma({s['a']:g}, {s['b']:g})",
                f"{s['ks_student_t']:.4f} (p = {s['ks_student_t_p']:.3g})",
                f"{s['ks_gaussian']:.4f} (p = {s['ks_gaussian_p']:.3g})",
            ]
        ]
        return [
            (
                "Test NLL on the shifted interval [1, 3] (mean ± std over seeds)",
                ["model", "test NLL", "test MSE", "train R²"],
                main,
            ),
            (
                "Per seed: fitted hyperparameters",
                ["seed", "GP NLL", "t NLL", "b_std GP / t", "a", "b", "log ML GP / t"],
                per_seed,
            ),
            (
                "Heavy tails by construction (reported, not judged): KS of the outputs at "
                f"x = {s['input']:g}",
                ["nets", "last-layer variance prior", "KS vs Student-t", "KS vs Gaussian"],
                sampler,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from scipy import stats

        c, s = summary["curves"], summary["sampler"]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        ax = axes[0]
        ax.plot(c["x_train"], c["y_train"], "k.", ms=3, label="train")
        ax.plot(c["x_test"], c["y_test"], ".", color="0.6", ms=3, label="test (shifted)")
        xt = c["x_test"]
        q = float(stats.t(df=c["t_dof"]).ppf(0.975))
        lo = [m - 1.96 * sd for m, sd in zip(c["gp_mean"], c["gp_sd"], strict=True)]
        hi = [m + 1.96 * sd for m, sd in zip(c["gp_mean"], c["gp_sd"], strict=True)]
        ax.plot(xt, c["gp_mean"], color="tab:blue", label="GP mean, 95%")
        ax.fill_between(xt, lo, hi, color="tab:blue", alpha=0.2)
        lo = [m - q * sc for m, sc in zip(c["t_loc"], c["t_scale"], strict=True)]
        hi = [m + q * sc for m, sc in zip(c["t_loc"], c["t_scale"], strict=True)]
        ax.plot(xt, c["t_loc"], "--", color="tab:red", label="t-process loc, 95%")
        ax.fill_between(xt, lo, hi, color="tab:red", alpha=0.15)
        ax.set_ylim(-4, 4)
        ax.set_xlabel("x")
        ax.set_title("seed 0: predictive on the shifted interval")
        ax.legend(fontsize=7)
        ax = axes[1]
        scale = s["t_scale"]
        edges = [-8 * scale + 16 * scale * i / 60 for i in range(61)]
        width = edges[1] - edges[0]
        total = sum(s["histogram"]) * width
        ax.bar(
            edges[:-1],
            [h / total for h in s["histogram"]],
            width=width,
            align="edge",
            color="0.7",
            label=f"{s['nets']} nets, width {s['width']}",
        )
        grid = [-8 * scale + 16 * scale * i / 400 for i in range(401)]
        ax.plot(grid, stats.t(df=2 * s["a"], scale=scale).pdf(grid), "r-", label="Student-t")
        ax.plot(grid, stats.norm(scale=s["gaussian_sd"]).pdf(grid), "b--", label="Gaussian")
        ax.set_yscale("log")
        ax.set_ylim(1e-4 / scale, None)
        ax.set_xlabel(f"output at x = {s['input']:g}")
        ax.set_title(f"KS: t {s['ks_student_t']:.3f}, Gaussian {s['ks_gaussian']:.3f}")
        ax.legend(fontsize=7)
        return [
            Figure(
                "student_t_nngp.png", "Student-t process vs GP; heavy-tailed nets", figure_png(fig)
            )
        ]


__all__ = ["StudentTConfig", "StudentTNNGP", "make_data"]
