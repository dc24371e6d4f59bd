"""Recipe ``snnk``: Sehanobish et al. (2023), "Scalable Neural Network Kernels" (row [#85]).

Two parts, both with the ``sin`` activation (:class:`weightlab.kernels.snnk.SNNKLinear`, whose
docstring derives the exact Gaussian random-feature identity):

(i) **Pointwise estimation** (reported, not judged: it holds by construction). 256 neuron-input
pairs ``(w, x)``, both ~ N(0, I/d) in d = 16 (norms ≈ 1), bias 0; the SNNK estimate
``Φ(x)ᵀΨ(w)`` of ``sin(⟨w, x⟩)`` with m ∈ {16, 32, …, 1024} random features, 10 independent
feature draws per m. Reported: the RMS error per m and its fitted log-log slope
(:func:`weightlab.kernels.power_law.fit_power_law`; −1/2 for an unbiased Monte-Carlo mean).

(ii) **MNIST-1D**: the MLP 40-256-256-10 with ``sin`` units (``weightlab.models.MLP``,
activation ``"sin"``) against the same net with its second hidden layer ``sin(W h + b)``
replaced by an SNNK layer ``Φ(c·[h, 1]) V`` whose V (m × 256) is trained directly, started at
``Ψ(W̃/c)`` of the original layer's init (so at init the layer estimates the original one
without bias), for m ∈ {64, 256}. The first and last layers start from the same weights as
the original (paired seeds). Adam (lr 1e-3, batch 60), 40 epochs; accuracy is test accuracy
at the early-stopping evaluation (minimum validation loss). Trainable parameters reported.

Claim (the issue's, a proposal): the SNNK net at the largest m is within
:data:`MARGIN_PTS` = 3 pt of the original: the 90% CI of the paired difference lies inside
±3 pt (:func:`weightlab.recipes.stats.within_margin`), and the test can see a difference: the
positive control, a linear classifier (MLP 40-10) trained alike, is worse than the original
by more than the margin (its CI lies entirely beyond −3 pt).

One unit ``pointwise`` and one unit per arm: each arm's seeds train as one population
(:func:`weightlab.recipes.members.train_members`; seed s draws its init and data order from
``derive_seed("snnk", "init" | "data", s)``, shared by every arm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.kernels.snnk import SNNKLinear
from weightlab.models.factory import build
from weightlab.models.mlp import MLP
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate, no_divergence
from weightlab.recipes.options import int_list
from weightlab.recipes.stats import mean_std, paired_difference_ci, within_margin
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator
from weightlab.train.config import OptimConfig, TrainConfig

QUOTE = (
    "Our mechanism provides up to 5x reduction in the number of trainable parameters, while "
    "maintaining competitive accuracy"
)
MARGIN_PTS = 3.0  # the proposal: within 3 pt of the original
POINT_DIM = 16
POINT_PAIRS = 256
POINT_DRAWS = 10


@dataclass(frozen=True)
class SNNKConfig(RecipeConfig):
    point_features: str = opt(
        "16,32,64,128,256,512,1024", "random-feature counts m of the pointwise-error sweep"
    )
    features: str = opt("64,256", "random-feature counts m of the SNNK layer on MNIST-1D")
    hidden: int = opt(256, "hidden width of the 40-w-w-10 MLP", min=1, max=100_000)
    epochs: int = opt(40, "training epochs", min=1, max=10_000)
    lr: float = opt(1e-3, "Adam learning rate", gt=0, max=10)
    batch_size: int = opt(60, "batch size", min=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        int_list(self.point_features, "point-features")
        int_list(self.features, "features")


class SNNKMLP(nn.Module):
    """``base`` (an ``MLP`` with three Linear layers and ``sin`` units) with its second hidden
    layer replaced by :class:`SNNKLinear` (``Φ(c·[h, 1]) V``, V initialized to Ψ of that
    layer's weights); the first and last layers are ``base``'s."""

    def __init__(self, base: MLP, num_features: int, seed: int) -> None:
        super().__init__()
        if len(base.layers) != 3 or base.activation != "sin":
            raise ConfigError("SNNKMLP needs a 3-layer MLP with sin units (in-w-w-out)")
        self.first = base.layers[0]
        self.snnk = SNNKLinear.from_linear(base.layers[1], num_features, "sin", seed=seed)
        self.last = base.layers[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.snnk(torch.sin(self.first(x.flatten(1)))))


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def pointwise_errors(ms: list[int], seed: int = 0) -> dict:
    """RMS error of the SNNK estimate of ``sin(⟨w, x⟩)`` per m (module docstring, part (i))."""
    g = generator(derive_seed("snnk", "pointwise", seed))
    d = POINT_DIM
    x = torch.randn((POINT_PAIRS, d), generator=g, dtype=torch.float64) / math.sqrt(d)
    w = torch.randn((POINT_PAIRS, d), generator=g, dtype=torch.float64) / math.sqrt(d)
    exact = torch.sin((x * w).sum(-1))
    rows = []
    for m in ms:
        errs = []
        for r in range(POINT_DRAWS):
            layer = SNNKLinear(
                d,
                POINT_PAIRS,
                m,
                "sin",
                input_scale=1.0,
                weights=(w, None),
                seed=r,
                dtype=torch.float64,
            )
            with torch.no_grad():
                est = torch.diagonal(layer(x))  # pair i: input i through neuron i
            errs.append(float((est - exact).square().mean().sqrt()))
        mu, sd = mean_std(errs)
        rows.append({"m": m, "rms_error": mu, "rms_error_std": sd})
    return {"rows": rows, "exact_rms": float(exact.square().mean().sqrt())}


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"seed": int, "members": list}, "metrics")
    num, opt_num = (int, float), (int, float, type(None))
    expect_list_of(
        metrics["members"],
        {
            "arm": str,
            "m": int,
            "seed": int,
            "trainable": int,
            "diverged": bool,
            "test_acc": opt_num,
            "final_test_acc": opt_num,
            "early_stop_step": num,
            "last_step": num,
        },
        "members",
    )


def _check_point(metrics: dict) -> None:
    expect_fields(metrics, {"rows": list, "exact_rms": (int, float)}, "metrics")


class SNNK(Recipe):
    name = "snnk"
    family = "kernels"
    row = 85
    paper = "Sehanobish et al. 2023, Scalable Neural Network Kernels (ICLR 2024)"
    claim = (
        "a hidden layer replaced by an SNNK random-feature layer keeps accuracy within a few "
        "points with fewer trainable parameters; the pointwise error falls as m^-1/2"
    )
    Config = SNNKConfig
    # a sweep over these runs side by side and merges their train_members calls
    member_fields = ("lr", "seeds")
    tasks = ("mnist1d", "digits")
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "epochs": 1,
        "hidden": 32,
        "features": "16",
        "point_features": "16,64,256",
    }
    broken: ClassVar[dict] = {"lr": 10.0}
    # measured in-process, one thread, MNIST-1D cached, imports done: 2.2 s CPU (6.4 s in a
    # fresh test session that generates MNIST-1D first)
    smoke_seconds = 2.5

    def validate(self, cfg: SNNKConfig, data_sizes: dict[str, int]) -> None:
        if cfg.batch_size > data_sizes["train"]:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} exceeds the {data_sizes['train']} training examples"
            )

    def run(self, cfg: SNNKConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec
        from weightlab.recipes.members import train_members

        data = self.load_data(cfg)
        if len(data.input_shape) != 1:
            raise ConfigError(f"--data {cfg.data}: the MLP needs flat feature vectors")
        d_in, k, h = data.input_shape[0], data.num_classes, cfg.hidden
        point, _ = rd.unit(
            "pointwise",
            lambda: (pointwise_errors(int_list(cfg.point_features, "point-features")), {}),
            check=_check_point,
        )
        tcfg = TrainConfig(cfg.epochs, cfg.batch_size, 0, OptimConfig("adam", lr=cfg.lr))

        def base(seed: int) -> MLP:
            return build(MLP, [d_in, h, h, k], activation="sin", seed=seed)

        def linear(seed: int) -> MLP:
            return build(MLP, [d_in, k], seed=seed)

        arms: list[tuple[str, int, object]] = [("original", 0, base), ("linear", 0, linear)]
        for m in int_list(cfg.features, "features"):
            arms.append(("snnk", m, lambda seed, m=m: SNNKMLP(base(seed), m, seed)))

        def compute(arm: str, m: int, factory):
            specs = [
                MemberSpec(
                    seed=derive_seed(self.name, "init", s),
                    data_seed=derive_seed(self.name, "data", s),
                )
                for s in range(cfg.seeds)
            ]
            results, _ = train_members(factory, specs, data, tcfg, device=cfg.device)
            count = trainable(factory(specs[0].seed))
            out = [
                {
                    "arm": arm,
                    "m": m,
                    "seed": s,
                    "trainable": count,
                    "diverged": bool(res.diverged),
                    "test_acc": res.best.test_acc,
                    "final_test_acc": res.final.test_acc,
                    "early_stop_step": res.best.step,
                    "last_step": res.final.step,
                }
                for s, res in enumerate(results)
            ]
            return {"seed": 0, "members": out}, {}

        records = []
        bar = progress_bar(len(arms), self.name, "arm", progress, line_each_update=True)
        for arm, m, factory in arms:
            key = f"arm-{arm}" + (f"-m{m}" if arm == "snnk" else "")
            metrics, _ = rd.unit(
                key, lambda a=arm, m=m, f=factory: compute(a, m, f), check=_check_unit
            )
            records.extend(metrics["members"])
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return self.summarize(cfg, records, point, 100 * majority_rate(data.test.y))

    # -- summary and claims ---------------------------------------------------------------
    def summarize(self, cfg: SNNKConfig, records: list[dict], point: dict, chance: float) -> dict:
        from weightlab.kernels.power_law import fit_power_law

        rows = []
        for arm, m in sorted({(r["arm"], r["m"]) for r in records}, key=lambda t: (t[0], t[1])):
            ms = sorted(
                (r for r in records if r["arm"] == arm and r["m"] == m), key=lambda r: r["seed"]
            )
            kept = [r for r in ms if not r["diverged"]]
            acc = [100 * r["test_acc"] if r["test_acc"] is not None else math.nan for r in kept]
            mu, sd = mean_std(acc)
            rows.append(
                {
                    "arm": arm,
                    "m": m,
                    "trainable": ms[0]["trainable"],
                    "test_acc_mean": mu,
                    "test_acc_std": sd,
                    "test_acc_values": acc,
                    "seeds": [r["seed"] for r in kept],
                    "excluded": [f"{arm} m={m} seed {r['seed']}" for r in ms if r["diverged"]],
                    "n": len(kept),
                }
            )
        pts = point["rows"]
        fit = fit_power_law([p["m"] for p in pts], [p["rms_error"] for p in pts])
        pointwise = {
            "rows": pts,
            "exact_rms": point["exact_rms"],
            "slope": fit.slope,
            "slope_stderr": fit.exponent_stderr,
            "r2": fit.r2,
            "note": "m^-1/2 holds by construction (an unbiased Monte-Carlo mean): reported only",
        }
        claims = [c.to_dict() for c in self.check_claims(rows, chance)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "pointwise": pointwise,
            "claims": claims,
            "chance_pct": chance,
            "members": len(records),
            "diverged_members": [n for r in rows for n in r["excluded"]],
            "accuracy": "test accuracy (%) at the early-stopping evaluation (minimum validation loss)",
        }

    @staticmethod
    def check_claims(rows: list[dict], chance: float) -> list[ClaimResult]:
        by = {(r["arm"], r["m"]): r for r in rows}
        orig = by.get(("original", 0))
        lin = by.get(("linear", 0))
        snnk = sorted((r for r in rows if r["arm"] == "snnk"), key=lambda r: r["m"])
        top = snnk[-1] if snnk else None
        pre = [
            None if orig and top and lin else "the run lacks the original, SNNK or linear arm",
            baseline_learned(
                orig["test_acc_mean"] if orig else None, chance=chance, name="original"
            ),
            no_divergence([n for r in rows for n in r["excluded"]]),
        ]
        few = None
        if orig and top and len(orig["seeds"]) < 2:
            few = "one seed cannot give a confidence interval"
        pre.append(few)

        def paired(a: dict, b: dict) -> tuple[list[float], list[float]]:
            common = sorted(set(a["seeds"]) & set(b["seeds"]))
            va = [a["test_acc_values"][a["seeds"].index(s)] for s in common]
            vb = [b["test_acc_values"][b["seeds"].index(s)] for s in common]
            return va, vb

        def check():
            a, b = paired(top, orig)
            inside, ev = within_margin(a, b, MARGIN_PTS)
            ca, cb = paired(lin, orig)
            cm, clo, chi = paired_difference_ci(ca, cb)
            control = chi < -MARGIN_PTS
            ev = {
                **ev,
                "snnk_m": top["m"],
                "snnk_trainable": top["trainable"],
                "original_trainable": orig["trainable"],
                "control": {
                    "mean_difference": cm,
                    "ci_low": clo,
                    "ci_high": chi,
                    "differs": control,
                },
            }
            detail = (
                f"SNNK (m={top['m']}, {top['trainable']:,} trainable) - original "
                f"({orig['trainable']:,}): {ev['mean_difference']:+.2f} pts, 90% CI "
                f"[{ev['ci_low']:+.2f}, {ev['ci_high']:+.2f}], needed inside ±{MARGIN_PTS:g}; "
                f"control (linear - original) {cm:+.2f}, CI [{clo:+.2f}, {chi:+.2f}] "
                f"{'differs' if control else 'does NOT differ'} (needed CI < -{MARGIN_PTS:g})"
            )
            return inside and control, detail, ev

        return [
            judge(
                "a",
                QUOTE,
                f"the MLP with its second hidden layer replaced by an SNNK layer (largest m) is "
                f"within {MARGIN_PTS:g} pt of the original's test accuracy (90% CI of the paired "
                "difference; proposal), with a linear-classifier positive control that differs",
                pre,
                check,
            )
        ]

    # -- report ---------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        acc = [
            [
                r["arm"],
                str(r["m"]) if r["arm"] == "snnk" else "-",
                f"{r['trainable']:,}",
                _pm(r["test_acc_mean"], r["test_acc_std"], 2),
                str(r["n"]),
            ]
            for r in summary["rows"]
        ]
        p = summary["pointwise"]
        pts = [[str(x["m"]), f"{x['rms_error']:.4f} ± {x['rms_error_std']:.4f}"] for x in p["rows"]]
        return [
            (
                "Test accuracy (%) at early stop, mean ± std over seeds",
                ["arm", "m", "trainable params", "test acc %", "n"],
                acc,
            ),
            (
                f"Pointwise RMS error of the SNNK estimate of sin(<w, x>) (exact RMS "
                f"{p['exact_rms']:.3f}); fitted log-log slope {p['slope']:.3f} ± "
                f"{p['slope_stderr']:.3f} (m^-1/2 by construction)",
                ["m", "RMS error (mean ± std over draws)"],
                pts,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        p = summary["pointwise"]
        ms = [x["m"] for x in p["rows"]]
        axes[0].errorbar(
            ms,
            [x["rms_error"] for x in p["rows"]],
            yerr=[x["rms_error_std"] for x in p["rows"]],
            fmt="o-",
            ms=3,
            capsize=2,
            label=f"SNNK (slope {p['slope']:.2f})",
        )
        ref = p["rows"][0]["rms_error"] * (torch.tensor(ms, dtype=torch.float64) / ms[0]) ** -0.5
        axes[0].plot(ms, ref.tolist(), "k--", lw=0.8, label="m^-1/2")
        axes[0].set_xscale("log", base=2)
        axes[0].set_yscale("log")
        axes[0].set_xlabel("random features m")
        axes[0].set_ylabel("RMS error vs sin(<w, x>)")
        axes[0].legend(fontsize=8)
        rows = summary["rows"]
        labels = [r["arm"] + (f" m={r['m']}" if r["arm"] == "snnk" else "") for r in rows]
        axes[1].bar(
            range(len(rows)),
            [r["test_acc_mean"] for r in rows],
            yerr=[r["test_acc_std"] for r in rows],
            capsize=3,
            color="tab:blue",
        )
        axes[1].set_xticks(range(len(rows)), labels, rotation=20, fontsize=8)
        axes[1].set_ylabel("test accuracy at early stop (%)")
        for ax in axes:
            ax.grid(alpha=0.3, which="both")
        fig.suptitle("SNNK: pointwise estimation error and MNIST-1D accuracy")
        return [Figure("snnk.png", "Pointwise error vs m; accuracy by arm", figure_png(fig))]
