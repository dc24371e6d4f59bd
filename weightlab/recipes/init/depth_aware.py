"""Recipe ``depth-aware``: "Depth-Aware Initialization for Stable and Efficient Neural
Network Training" (row [#96]).

A 20-layer ReLU MLP (``40 → 64 × 19 → 10``) on MNIST-1D, initialized four ways through the
registry (:func:`weightlab.init.initialize`): Xavier (``glorot``), He, orthogonal (gain 1)
and ``depth_aware`` (:mod:`weightlab.init.depth_aware`, our reading of the abstract: He's
variance times a factor rising with ``ℓ/L``, activation variance growing ``growth``-fold
from the first layer to the last). Biases zero. Adam, batch 128; each init's seeds are one
population, the init entering as ``MemberSpec.init_state``. Accuracy is test accuracy at the
early-stopping evaluation (minimum validation loss).

Claim: the depth-aware mean accuracy is at least He's (the abstract gives no number).
Precondition: He learned (>= chance + 20 pts). The per-layer pre-activation variance at init
(a batch of training inputs, mean over seeds) is plotted, not judged: it grows by design.

Budget: 40 epochs, chosen so that He's validation loss has reached its minimum well before
the end (its early-stopping step is reported beside its last step), then kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.core.snapshots import take_snapshot
from weightlab.errors import ConfigError
from weightlab.init.registry import initialize
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import LATE_FRACTION, judge, majority_rate, no_divergence
from weightlab.recipes.members import accuracy_record
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields
from weightlab.seeding import derive_seed
from weightlab.train.config import OptimConfig, TrainConfig

QUOTE = (
    "Experiments shows that proposed method performs better than the existing initialization scheme"
)
QUOTE_VAR = (
    "for deeper networks theoretical assumption of unit variance throughout the network does "
    "not perform well"
)
INITS = ("xavier", "he", "orthogonal", "depth_aware")
# Fixed thresholds (from the issue), not options.
HE_MARGIN_PTS = 20.0  # precondition: He >= chance + 20 pts


def _scheme(init: str, growth: float) -> tuple[str, dict]:
    return {
        "xavier": ("glorot", {}),
        "he": ("he", {}),
        "orthogonal": ("orthogonal", {"gain": 1.0}),
        "depth_aware": ("depth_aware", {"growth": growth}),
    }[init]


def _check_unit(m: dict) -> None:
    expect_fields(m, {"init": str, "members": list, "variance": list}, "the metrics")


@dataclass(frozen=True)
class DepthAwareConfig(RecipeConfig):
    seeds: int = opt(5, "number of seeds (error bars are over seeds)", min=1, max=1000)
    layers: int = opt(20, "Linear layers of the MLP", min=2, max=200)
    width: int = opt(64, "hidden width", min=1, max=4096)
    growth: float = opt(
        4.0, "depth_aware: activation-variance growth from the first layer to the last", gt=0
    )
    lr: float = opt(1e-3, "Adam learning rate", gt=0, max=10)
    epochs: int = opt(
        40, "training epochs (chosen so He's validation loss bottoms out before the end)", min=1
    )
    batch_size: int = opt(128, "batch size", min=1)


class DepthAware(Recipe):
    name = "depth-aware"
    family = "init"
    row = 96
    paper = "Depth-Aware Initialization for Stable and Efficient Neural Network Training"
    claim = "a depth-aware variance schedule reaches at least He's accuracy on a deep MLP"
    Config = DepthAwareConfig
    tasks = ("mnist1d", "digits", "iris", "wine", "breast_cancer")
    kinds = ("classification",)
    smoke: ClassVar[dict] = {"seeds": 2, "epochs": 1, "layers": 6, "width": 16}
    broken: ClassVar[dict] = {"lr": 10.0, "epochs": 1}
    smoke_seconds = 2.0

    def validate(self, cfg: DepthAwareConfig, data_sizes: dict[str, int]) -> None:
        """The batch fits the training split."""
        if cfg.batch_size > data_sizes["train"]:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} exceeds the {data_sizes['train']} training examples"
            )

    def run(self, cfg: DepthAwareConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec, Population

        data = self.load_data(cfg)
        if len(data.input_shape) != 1:
            raise ConfigError(
                f"--data {cfg.data} has inputs of shape {data.input_shape}; the MLP needs flat "
                "feature vectors"
            )
        d_in, k = data.input_shape[0], data.num_classes
        widths = [d_in] + [cfg.width] * (cfg.layers - 1) + [k]
        factory = model_factory(MLP, widths)
        tcfg = TrainConfig(cfg.epochs, cfg.batch_size, 0, OptimConfig("adam", lr=cfg.lr))
        probe_x = data.train.x[:512].reshape(min(512, len(data.train)), -1)
        records, variance = [], {}
        bar = progress_bar(len(INITS), self.name, "init", progress, line_each_update=True)
        for init in INITS:

            def compute(init=init):
                scheme, params = _scheme(init, cfg.growth)
                specs, profiles = [], []
                for s in range(cfg.seeds):
                    model = factory(s)
                    initialize(model, scheme, seed=derive_seed(self.name, "init", s), **params)
                    profiles.append(self.variance_profile(model, probe_x))
                    specs.append(
                        MemberSpec(
                            seed=s,
                            data_seed=derive_seed(self.name, "data", s),
                            init_state=take_snapshot(model),
                        )
                    )
                results = Population(factory, specs, device=cfg.device).fit(
                    data, tcfg, progress=progress
                )
                members = [{"seed": s, **accuracy_record(r)} for s, r in enumerate(results)]
                mean_prof = [
                    sum(p[i] for p in profiles) / len(profiles) for i in range(len(profiles[0]))
                ]
                return {"init": init, "members": members, "variance": mean_prof}, {}

            m, _ = rd.unit(f"init-{init.replace('_', '-')}", compute, check=_check_unit)
            records.extend({**x, "init": init} for x in m["members"])
            variance[init] = m["variance"]
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return self.summarize(cfg, records, variance, 100 * majority_rate(data.test.y))

    @staticmethod
    @torch.no_grad()
    def variance_profile(model: MLP, x: torch.Tensor) -> list[float]:
        """Variance of every layer's pre-activation on ``x`` at init."""
        out, h = [], x.to(next(model.parameters()).dtype)
        for i, layer in enumerate(model.layers):
            h = layer(h)
            out.append(float(h.var()))
            if i < len(model.layers) - 1:
                h = torch.relu(h)
        return out

    def summarize(self, cfg, records: list[dict], variance: dict, chance: float) -> dict:
        rows = []
        for init in INITS:
            ms = sorted((m for m in records if m["init"] == init), key=lambda m: m["seed"])
            kept = [m for m in ms if not m["diverged"]]
            acc = [100 * m["test_acc"] if m["test_acc"] is not None else None for m in kept]
            am, asd = mean_std(acc)
            em, esd = mean_std([m["early_stop_step"] for m in kept])
            rows.append(
                {
                    "init": init,
                    "test_acc_mean": am,
                    "test_acc_std": asd,
                    "test_acc_values": acc,
                    "early_stop_mean": em,
                    "early_stop_std": esd,
                    "last_step_mean": mean_std([m["last_step"] for m in kept])[0],
                    "final_acc_mean": mean_std(
                        [100 * m["final_test_acc"] for m in kept if m["final_test_acc"] is not None]
                    )[0],
                    "n": len(kept),
                    "excluded": [f"{init} seed {m['seed']}" for m in ms if m["diverged"]],
                }
            )
        late = [
            r["init"]
            for r in rows
            if r["n"] and r["early_stop_mean"] > (1 - LATE_FRACTION) * r["last_step_mean"]
        ]
        claims = [c.to_dict() for c in self.check_claims(rows, chance)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "members": len(records),
            "diverged_members": [f"{m['init']} seed {m['seed']}" for m in records if m["diverged"]],
            "rows": rows,
            "variance_profile": variance,
            "still_improving": late,
            "chance_pct": chance,
            "claims": claims,
            "accuracy": "test accuracy (%) at the early-stopping evaluation (minimum validation loss)",
        }

    @staticmethod
    def check_claims(rows: list[dict], chance: float) -> list[ClaimResult]:
        """Depth-aware mean accuracy >= He's; needs He >= chance + 20 pts and no diverged
        member of either."""
        by = {r["init"]: r for r in rows}
        he, da = by["he"], by["depth_aware"]
        he_acc = _num(he["test_acc_mean"])
        learned = (
            None
            if he_acc >= chance + HE_MARGIN_PTS
            else f"He did not learn: {he_acc:.1f}% < chance {chance:.1f}% + {HE_MARGIN_PTS:g} pts"
        )

        def check():
            d = _num(da["test_acc_mean"]) - he_acc
            detail = (
                f"depth-aware {_pm(da['test_acc_mean'], da['test_acc_std'])}% vs He "
                f"{_pm(he['test_acc_mean'], he['test_acc_std'])}% (difference {d:+.2f} pts); "
                "needed >= 0"
            )
            return d >= 0, detail, {"difference_pts": d}

        return [
            judge(
                "accuracy",
                QUOTE,
                "depth-aware init reaches at least He's mean test accuracy (20-layer MLP)",
                [learned, no_divergence(he["excluded"] + da["excluded"])],
                check,
            )
        ]

    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        rows = [
            [
                r["init"],
                _pm(r["test_acc_mean"], r["test_acc_std"], 2),
                f"{_num(r['final_acc_mean']):.2f}",
                _pm(r["early_stop_mean"], r["early_stop_std"], 0),
                f"{_num(r['last_step_mean']):.0f}",
                str(r["n"]),
            ]
            for r in summary["rows"]
        ]
        var = summary["variance_profile"]
        n = len(next(iter(var.values())))
        pick = sorted({0, n // 4, n // 2, (3 * n) // 4, n - 1})
        vrows = [[init] + [f"{v[i]:.3g}" for i in pick] for init, v in var.items()]
        late = summary.get("still_improving", [])
        return [
            (
                f"Test accuracy at early stop (mean ± std over seeds; chance "
                f"{summary['chance_pct']:.1f}%; still improving in the last "
                f"{LATE_FRACTION:.0%}: {', '.join(late) or 'none'})",
                ["init", "test acc %", "final acc %", "early-stop step", "last step", "n"],
                rows,
            ),
            (
                "Pre-activation variance at init by layer (mean over seeds; unjudged)",
                ["init"] + [f"layer {i + 1}" for i in pick],
                vrows,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for init, v in summary["variance_profile"].items():
            axes[0].plot(range(1, len(v) + 1), v, "o-", ms=3, label=init)
        axes[0].set_yscale("log")
        axes[0].set_xlabel("layer")
        axes[0].set_ylabel("pre-activation variance at init")
        axes[0].set_title("Variance profile (unjudged)")
        rows = summary["rows"]
        axes[1].bar(
            [r["init"] for r in rows],
            [_num(r["test_acc_mean"]) for r in rows],
            yerr=[_num(r["test_acc_std"]) for r in rows],
            capsize=3,
            color="tab:gray",
        )
        axes[1].axhline(summary["chance_pct"], color="k", lw=0.8, ls="--", label="chance")
        axes[1].set_ylabel("test accuracy at early stop (%)")
        axes[1].legend(fontsize=8)
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        png = figure_png(fig)
        return [Figure("depth_aware.png", "Variance profile and accuracy by init", png)]


__all__ = ["DepthAware", "DepthAwareConfig"]
