"""Recipe ``intrinsic-dim``: Li, Farkhoor, Liu & Yosinski (2018), "Measuring the Intrinsic
Dimension of Objective Landscapes" (row [#72]).

MLPs with one or two hidden layers of widths 50–400 on scikit-learn digits. Each model is
trained densely (the baseline) and in random subspaces θ = θ₀ + P z of dimension
d ∈ {10, 25, 50, 100, 200, 400, 800} (:mod:`weightlab.adapters.subspace`, sparse P by
default; only z trained). d₉₀ is the d at which test accuracy first reaches 90% of the dense
baseline's (same model, same seed; Li et al. Section 2, "d_int90"), interpolated linearly
on log d between the two grid points around the crossing.

All d of one (model, seed) train as **one population** (:class:`weightlab.population.
Population`): every member wraps the same θ₀ and the same P with d_max = 800 columns and a
0/1 mask on z keeping its first d coordinates (the first d columns of P: a random
d-dimensional subspace, as a fresh draw would be, and nested across d, so the accuracy-vs-d
curve of one seed is not blurred by independent draws). The dense baselines of all models
of a seed train as one width-bucketed population (:meth:`Population.sweep`). Each seed is
one resumable unit.

Claims (thresholds fixed below): (a) d₉₀ "varies little across a family of models with
vastly different sizes": max/min over models of the seed-mean d₉₀ is <= 2; (b) d₉₀ is
below 10% of each model's parameter count (seed means). Preconditions: every dense baseline
learned and converged (its early-stopping step not in the last 10% of training), no member
diverged, and every d₉₀ lies inside the d grid (else it is censored and the claim is not
tested; a censored d₉₀ above the grid that already exceeds 10% of the parameters fails (b)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.errors import ConfigError
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import (
    LATE_FRACTION,
    baseline_learned,
    judge,
    majority_rate,
    no_divergence,
)
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.recipes.units import seed_units
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed
from weightlab.train.config import OptimConfig, TrainConfig

QUOTE_A = (
    "the intrinsic dimension for a given dataset varies little across a family of models "
    "with vastly different sizes"
)
QUOTE_B = "Many problems have smaller intrinsic dimensions than one might suspect"
# Fixed claim thresholds (from the issue), not options.
THRESHOLD = 0.9  # d90: 90% of the dense baseline's test accuracy
MAX_RATIO = 2.0  # (a) max/min of the models' seed-mean d90
MAX_PARAM_FRACTION = 0.10  # (b) d90 < 10% of the parameter count


def parse_models(text: str) -> list[tuple[int, ...]]:
    """``"50,400,100x2"`` -> ``[(50,), (400,), (100, 100)]``: each model is ``W`` (one hidden
    layer of width W) or ``WxL`` (L hidden layers of width W)."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        w, _, L = part.partition("x")
        try:
            width, layers = int(w), int(L) if L else 1
        except ValueError:
            raise ConfigError(
                f"--models must list W or WxL (e.g. 50,400,100x2); got {text!r}"
            ) from None
        if width < 1 or layers < 1:
            raise ConfigError(f"--models needs positive widths and layer counts; got {part!r}")
        out.append((width,) * layers)
    if len(set(out)) != len(out):
        raise ConfigError(f"--models lists a model twice: {text!r}")
    return out


def model_name(hidden: tuple[int, ...]) -> str:
    return f"{hidden[0]}x{len(hidden)}" if len(hidden) > 1 else str(hidden[0])


@dataclass(frozen=True)
class IntrinsicDimConfig(RecipeConfig):
    data: str = opt("digits", "task (classification with flat features)")
    models: str = opt(
        "50,100,200,400,50x2,100x2,200x2",
        "MLPs: W (one hidden layer of width W) or WxL (L hidden layers), comma-separated",
    )
    dims: str = opt("10,25,50,100,200,400,800", "subspace dimensions d, comma-separated")
    projection: str = opt("sparse", "random projection P", choices=("dense", "sparse", "fastfood"))
    lr: float = opt(0.1, "Adam learning rate of z (P's columns have unit norm)", gt=0, max=10)
    epochs: int = opt(
        30, "subspace training epochs (270 steps at batch 128 on digits)", min=1, max=100000
    )
    batch_size: int = opt(128, "batch size (subspace and dense)", min=1)
    dense_lr: float = opt(3e-3, "Adam learning rate of the dense baselines", gt=0, max=10)
    dense_epochs: int = opt(100, "dense baseline epochs (to convergence)", min=1, max=100000)

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_models(self.models)
        try:
            ds = [int(d) for d in self.dims.split(",")]
        except ValueError:
            raise ConfigError(
                f"--dims must be comma-separated integers like 10,100; got {self.dims!r}"
            ) from None
        if len(ds) < 2 or any(d < 1 for d in ds) or sorted(set(ds)) != ds:
            raise ConfigError(
                f"--dims needs >= 2 positive, increasing, distinct values; got {self.dims!r}"
            )

    @property
    def hidden(self) -> list[tuple[int, ...]]:
        return parse_models(self.models)

    @property
    def dim_values(self) -> list[int]:
        return [int(d) for d in self.dims.split(",")]


def n_params(sizes: list[int]) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def d90(dims: list[int], accs: list[float], target: float) -> tuple[float, str]:
    """``(d90, status)``: the first grid crossing of ``target``, interpolated linearly on
    log d; status ``"ok"``, ``"below"`` (reached at the smallest d: d90 <= dims[0], value
    dims[0]) or ``"above"`` (never reached: d90 > dims[-1], value dims[-1])."""
    for i, (d, a) in enumerate(zip(dims, accs, strict=True)):
        if a >= target:
            if i == 0:
                return float(d), "below"
            d0, a0 = dims[i - 1], accs[i - 1]
            t = (target - a0) / (a - a0)
            return math.exp(math.log(d0) + t * (math.log(d) - math.log(d0))), "ok"
    return float(dims[-1]), "above"


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"seed": int, "members": list}, "the metrics")
    opt_num = (int, float, type(None))
    expect_list_of(
        metrics["members"],
        {
            "model": str,
            "d": int,
            "seed": int,
            "params": int,
            "diverged": bool,
            "early_stop_step": int,
            "last_step": int,
            "test_acc": opt_num,
            "history": list,
        },
        "members",
    )


class IntrinsicDim(Recipe):
    name = "intrinsic-dim"
    family = "adapters"
    row = 72
    paper = (
        "Li, Farkhoor, Liu & Yosinski 2018, Measuring the Intrinsic Dimension of Objective "
        "Landscapes (arXiv:1804.08838)"
    )
    claim = (
        "d90 (90% of dense accuracy in a random subspace) varies <= 2x across MLPs of very "
        "different sizes and is < 10% of each model's parameters"
    )
    Config = IntrinsicDimConfig
    tasks = ("digits", "mnist1d", "wine", "breast_cancer")
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "models": "16,32x2",
        "dims": "4,16,64",
        "epochs": 2,
        "dense_epochs": 3,
    }
    broken: ClassVar[dict] = {"lr": 10.0, "dense_lr": 10.0, "epochs": 1, "dense_epochs": 1}
    # measured in-process (the conformance test), one thread, CPU time with the 2 cores
    # shared by ~10 jobs: 3.9 s
    smoke_seconds = 4.0

    def validate(self, cfg: IntrinsicDimConfig, data_sizes: dict[str, int]) -> None:
        """The batch fits the training split; the inputs are flat; every d is at most each
        model's parameter count."""
        if cfg.batch_size > data_sizes["train"]:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} exceeds the {data_sizes['train']} training examples"
            )
        self._sizes(cfg, self.load_data(cfg))

    def _sizes(self, cfg: IntrinsicDimConfig, data) -> dict[str, list[int]]:
        if len(data.input_shape) != 1:
            raise ConfigError(
                f"--data {cfg.data} has inputs of shape {data.input_shape}; this recipe's MLPs "
                "need flat feature vectors"
            )
        d_in, k = data.input_shape[0], data.num_classes
        sizes = {model_name(h): [d_in, *h, k] for h in cfg.hidden}
        too_big = [m for m, s in sizes.items() if cfg.dim_values[-1] > n_params(s)]
        if too_big:
            raise ConfigError(
                f"--dims {cfg.dim_values[-1]} exceeds the parameter count of model(s) "
                f"{', '.join(too_big)}; use smaller dims or wider models"
            )
        return sizes

    def run(self, cfg: IntrinsicDimConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.adapters.subspace import subspace
        from weightlab.models import build
        from weightlab.population import MemberSpec, Population

        data = self.load_data(cfg)
        sizes = self._sizes(cfg, data)
        dims = cfg.dim_values
        d_max = dims[-1]
        sub_cfg = TrainConfig(cfg.epochs, cfg.batch_size, 0, OptimConfig("adam", lr=cfg.lr))
        dense_cfg = TrainConfig(
            cfg.dense_epochs, cfg.batch_size, 0, OptimConfig("adam", lr=cfg.dense_lr)
        )

        def record(name, d, s, res):
            return {
                "model": name,
                "d": d,
                "seed": s,
                "params": n_params(sizes[name]),
                **res.to_dict(),
                "test_acc": res.best.test_acc,
            }

        def compute(s: int):
            out = []
            data_seed = derive_seed(self.name, "data", s)
            init = {m: derive_seed(self.name, "init", s, m) for m in sizes}
            factories = {m: model_factory(MLP, sz) for m, sz in sizes.items()}
            dense = Population.sweep(
                factories,
                [(m, MemberSpec(seed=init[m], data_seed=data_seed)) for m in sizes],
                device=cfg.device,
            ).fit(data, dense_cfg, progress=progress)
            for m, res in zip(sizes, dense, strict=True):
                out.append(record(m, 0, s, res))
            for m, sz in sizes.items():
                proj_seed = derive_seed(self.name, "projection", s, m)

                def factory(seed, sz=sz, proj_seed=proj_seed):
                    return subspace(build(MLP, sz, seed=seed), d_max, cfg.projection, proj_seed)

                specs = [
                    MemberSpec(
                        seed=init[m],
                        data_seed=data_seed,
                        masks={"z": (torch.arange(d_max) < d).float()},
                    )
                    for d in dims
                ]
                results = Population(factory, specs, device=cfg.device, data_seed=data_seed).fit(
                    data, sub_cfg, progress=progress
                )
                out.extend(record(m, d, s, r) for d, r in zip(dims, results, strict=True))
            return {"seed": s, "members": out}, {}

        records = seed_units(rd, self.name, cfg.seeds, compute, _check_unit, progress)
        return self.summarize(cfg, records, chance=100 * majority_rate(data.test.y))

    # -- summary and claims -------------------------------------------------------------
    def summarize(self, cfg: IntrinsicDimConfig, records: list[dict], chance: float) -> dict:
        dims = cfg.dim_values
        models = list(dict.fromkeys(r["model"] for r in records))
        rows, curves = [], []
        for m in models:
            recs = [r for r in records if r["model"] == m]
            seeds = sorted({r["seed"] for r in recs})
            by = {(r["seed"], r["d"]): r for r in recs}
            dense = [by[(s, 0)] for s in seeds]
            per_seed = []
            for s in seeds:
                base = dense[seeds.index(s)]["test_acc"]
                accs = [by[(s, d)]["test_acc"] for d in dims]
                if base is None or any(a is None for a in accs):
                    per_seed.append((math.nan, "missing"))
                    continue
                per_seed.append(d90(dims, accs, THRESHOLD * base))
            for d in dims:
                vals = [
                    100 * by[(s, d)]["test_acc"]
                    for s in seeds
                    if by[(s, d)]["test_acc"] is not None
                ]
                mu, sd = mean_std(vals)
                curves.append({"model": m, "d": d, "test_acc_mean": mu, "test_acc_std": sd})
            dacc = [100 * r["test_acc"] for r in dense if r["test_acc"] is not None]
            dm, dsd = mean_std(dacc)
            d90s = [v for v, _ in per_seed]
            mu, sd = mean_std(d90s)
            params = recs[0]["params"]
            rows.append(
                {
                    "model": m,
                    "params": params,
                    "dense_acc_mean": dm,
                    "dense_acc_std": dsd,
                    "dense_early_stop_mean": mean_std([r["early_stop_step"] for r in dense])[0],
                    "dense_last_step": max(r["last_step"] for r in dense),
                    "d90_values": d90s,
                    "d90_status": [st for _, st in per_seed],
                    "d90_mean": mu,
                    "d90_std": sd,
                    "d90_fraction": mu / params if math.isfinite(mu) else None,
                    "subspace_acc_at_dmax": curves[-1]["test_acc_mean"],
                    "diverged": [f"{m} d={r['d']} seed {r['seed']}" for r in recs if r["diverged"]],
                    "n": len(seeds),
                }
            )
        claims = [c.to_dict() for c in self.check_claims(rows, chance, dims)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "curves": curves,
            "claims": claims,
            "chance_pct": chance,
            "members": len(records),
            "diverged_members": [n for r in rows for n in r["diverged"]],
            "threshold": THRESHOLD,
            "projection": cfg.projection,
            "steps": {
                "subspace_epochs": cfg.epochs,
                "dense_epochs": cfg.dense_epochs,
                "batch_size": cfg.batch_size,
            },
            "accuracy": "test accuracy (%) at the early-stopping evaluation (minimum validation loss)",
        }

    @staticmethod
    def check_claims(rows: list[dict], chance: float, dims: list[int]) -> list[ClaimResult]:
        """(a) max/min of the seed-mean d90 over models <= 2; (b) every model's seed-mean
        d90 < 10% of its parameters. Preconditions: the dense baselines learned and
        converged, every model's subspace arm learned at the largest d, nothing diverged,
        and (a) every d90 inside the grid."""
        learned = [
            baseline_learned(r["dense_acc_mean"], chance=chance, name=f"dense {r['model']}")
            for r in rows
        ]
        # the subspace arm must learn too: at the largest d it must beat chance (a broken lr
        # leaves it near chance there, and every d90 would then read "above the grid")
        learned += [
            baseline_learned(
                r["subspace_acc_at_dmax"], chance=chance, name=f"subspace {r['model']} d={dims[-1]}"
            )
            for r in rows
        ]
        converged = [
            f"the dense {r['model']} baseline was still improving (early stop at step "
            f"{r['dense_early_stop_mean']:.0f} of {r['dense_last_step']})"
            for r in rows
            if r["dense_early_stop_mean"] >= (1 - LATE_FRACTION) * r["dense_last_step"]
        ]
        diverged = no_divergence([n for r in rows for n in r["diverged"]])
        censored = [
            f"{r['model']} ({', '.join(sorted(set(st for st in r['d90_status'] if st != 'ok')))})"
            for r in rows
            if any(st != "ok" for st in r["d90_status"])
        ]
        in_grid = (
            None
            if not censored
            else f"d90 outside the d grid [{dims[0]}, {dims[-1]}] for {', '.join(censored)}"
        )
        few = None if len(rows) >= 2 else "the run has fewer than two models"
        base = [*learned, *converged, diverged]

        def check_a():
            means = {r["model"]: r["d90_mean"] for r in rows}
            hi = max(means, key=means.get)
            lo = min(means, key=means.get)
            ratio = means[hi] / means[lo]
            detail = (
                f"seed-mean d90 from {means[lo]:.0f} ({lo}) to {means[hi]:.0f} ({hi}): "
                f"max/min {ratio:.2f}, needed <= {MAX_RATIO:g}; parameters from "
                f"{min(r['params'] for r in rows):,} to {max(r['params'] for r in rows):,}"
            )
            return ratio <= MAX_RATIO, detail, {"d90_means": means, "ratio": ratio}

        def check_b():
            parts, ok = [], True
            for r in rows:
                frac = r["d90_mean"] / r["params"]
                above = "above" in r["d90_status"]
                good = frac < MAX_PARAM_FRACTION and not above
                ok = ok and good
                parts.append(
                    f"{r['model']} {'>' if above else ''}{r['d90_mean']:.0f}/{r['params']:,} "
                    f"= {100 * frac:.1f}%"
                )
            detail = (
                "d90 / parameters: "
                + ", ".join(parts)
                + f"; needed each < {100 * MAX_PARAM_FRACTION:g}%"
            )
            return (
                ok,
                detail,
                {"fractions": {r["model"]: r["d90_mean"] / r["params"] for r in rows}},
            )

        # (b) can be decided with a d90 censored above the grid when d_max already exceeds
        # 10% of that model's parameters (then it fails); otherwise censoring blocks it
        blocking_b = [
            r["model"]
            for r in rows
            if any(st != "ok" for st in r["d90_status"])
            and not ("above" in r["d90_status"] and dims[-1] >= MAX_PARAM_FRACTION * r["params"])
        ]
        in_grid_b = (
            None
            if not blocking_b
            else f"d90 outside the d grid [{dims[0]}, {dims[-1]}] for {', '.join(blocking_b)}"
        )
        return [
            judge(
                "a",
                QUOTE_A,
                f"max/min over models of the seed-mean d90 is <= {MAX_RATIO:g} "
                f"(d90 = d reaching {THRESHOLD:.0%} of dense test accuracy, log-d interpolation)",
                [few, *base, in_grid],
                check_a,
            ),
            judge(
                "b",
                QUOTE_B,
                f"every model's seed-mean d90 is below {MAX_PARAM_FRACTION:.0%} of its "
                "parameter count",
                [*base, in_grid_b],
                check_b,
            ),
        ]

    # -- report ------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        rows = [
            [
                r["model"],
                f"{r['params']:,}",
                _pm(r["dense_acc_mean"], r["dense_acc_std"], 2),
                _pm(r["d90_mean"], r["d90_std"], 0),
                ", ".join(
                    f"{v:.0f}" + ("" if st == "ok" else f" ({st})")
                    for v, st in zip(r["d90_values"], r["d90_status"], strict=True)
                ),
                f"{100 * r['d90_fraction']:.2f}%" if r["d90_fraction"] is not None else "n/a",
                str(r["n"]),
            ]
            for r in summary["rows"]
        ]
        dims = sorted({c["d"] for c in summary["curves"]})
        by = {(c["model"], c["d"]): c for c in summary["curves"]}
        curve_rows = [
            [
                r["model"],
                *(
                    _pm(
                        by[(r["model"], d)]["test_acc_mean"], by[(r["model"], d)]["test_acc_std"], 1
                    )
                    for d in dims
                ),
            ]
            for r in summary["rows"]
        ]
        st = summary["steps"]
        return [
            (
                f"d90 per model (mean ± std over seeds; {summary['projection']} P; subspace "
                f"{st['subspace_epochs']} epochs, dense {st['dense_epochs']} epochs, batch "
                f"{st['batch_size']})",
                ["model", "params", "dense acc %", "d90", "d90 per seed", "d90 / params", "seeds"],
                rows,
            ),
            (
                "Subspace test accuracy % by d (mean ± std over seeds)",
                ["model", *(f"d={d}" for d in dims)],
                curve_rows,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        cmap = plt.get_cmap("viridis")
        rows = summary["rows"]
        for i, r in enumerate(rows):
            color = cmap(i / max(1, len(rows) - 1))
            pts = sorted(
                (c for c in summary["curves"] if c["model"] == r["model"]), key=lambda c: c["d"]
            )
            axes[0].errorbar(
                [c["d"] for c in pts],
                [_num(c["test_acc_mean"]) for c in pts],
                yerr=[_num(c["test_acc_std"]) for c in pts],
                fmt="o-",
                ms=3,
                capsize=2,
                color=color,
                label=f"{r['model']} ({r['params']:,})",
            )
            axes[0].axhline(THRESHOLD * _num(r["dense_acc_mean"]), color=color, lw=0.6, ls=":")
            axes[1].errorbar(
                [r["params"]],
                [_num(r["d90_mean"])],
                yerr=[_num(r["d90_std"])],
                fmt="o",
                color=color,
                capsize=2,
            )
            axes[1].annotate(r["model"], (r["params"], _num(r["d90_mean"])), fontsize=7)
        ps = [r["params"] for r in rows]
        xs = [min(ps), max(ps)]
        axes[1].plot(xs, [MAX_PARAM_FRACTION * x for x in xs], "k--", lw=0.8, label="10% of params")
        axes[0].set_xscale("log")
        axes[0].set_xlabel("subspace dimension d")
        axes[0].set_ylabel("test accuracy (%)  (dotted: 90% of dense)")
        axes[1].set_xscale("log")
        axes[1].set_yscale("log")
        axes[1].set_xlabel("parameters D")
        axes[1].set_ylabel("d90")
        for ax in axes:
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
        fig.suptitle(
            "Intrinsic dimension d90 of MLPs on " + "digits" + f" ({summary['projection']} P)"
        )
        return [
            Figure(
                "intrinsic_dim.png", "Accuracy vs subspace dimension; d90 vs size", figure_png(fig)
            )
        ]
