"""Recipe ``random-sparse-search``: "Random Search as a Baseline for Sparse Neural Network
Architecture Search" (2024, row [#31]).

The lottery MLP 40-300-100-10 on MNIST-1D. Per seed and node sparsity ``s`` (50, 80,
90% of each hidden layer's units removed, :mod:`weightlab.sparsity.node_search`),
``trials`` random node masks of the same parent initialization are trained
``proxy_epochs`` epochs as one population and ranked by their validation loss at the
end (the short-proxy reward). The best mask and one independently drawn random mask at
the same sparsity (the paper's "random counterpart") are then trained ``epochs`` epochs
from that initialization, beside the dense parent, as one population. Accuracy is test
accuracy at the early-stopping iteration (minimum validation loss); the early-stopping
step measures how fast each converges.

The claim is a no-difference claim: it holds only if at every sparsity the 90% CI of the
paired difference best - random (over seeds) lies inside ±1 pt
(:func:`weightlab.recipes.stats.within_margin`), and the positive control differs:
random masks at 50% and 90% sparsity are more than 1 pt apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.errors import ConfigError
from weightlab.init.schemes import INIT_SCHEMES
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate, no_divergence
from weightlab.recipes.members import train_members
from weightlab.recipes.stats import mean_std, within_margin
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator
from weightlab.sparsity.node_search import (
    best_candidate,
    node_keep_counts,
    node_masks,
    proxy_scores,
    random_node_keep,
)
from weightlab.train.config import OptimConfig, TrainConfig

QUOTE = (
    "initialized sparse networks found by Random Search neither perform better nor converge "
    "more efficiently than their random counterparts"
)
MARGIN_PTS = 1.0  # best - random: 90% CI inside ±1 pt
CONTROL_PTS = 1.0  # positive control: random at the lowest vs highest sparsity differ > 1 pt
ARMS = ("best", "random")


@dataclass(frozen=True)
class RandomSparseSearchConfig(RecipeConfig):
    seeds: int = opt(5, "number of independent seeds (paired best vs random)", min=1, max=1000)
    hidden: str = opt("300,100", "hidden widths of the MLP, comma-separated")
    sparsities: str = opt(
        "0.5,0.8,0.9", "node sparsities (fraction of hidden units removed), comma-separated"
    )
    trials: int = opt(50, "random node masks per sparsity and seed", min=1, max=10000)
    proxy_epochs: int = opt(2, "proxy training epochs that rank the candidates", min=1)
    epochs: int = opt(60, "full training epochs of the best and the random mask", min=1)
    init: str = opt(
        "glorot_normal", "weight initialization (as lottery-ticket)", choices=tuple(INIT_SCHEMES)
    )
    lr: float = opt(1.2e-3, "Adam learning rate (the lottery MLP's)", gt=0, max=10)
    batch_size: int = opt(60, "batch size", min=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            widths = [int(w) for w in self.hidden.split(",")]
            sps = [float(s) for s in self.sparsities.split(",")]
        except ValueError:
            raise ConfigError(
                "--hidden must be integers like 300,100 and --sparsities numbers like "
                f"0.5,0.8,0.9; got {self.hidden!r} and {self.sparsities!r}"
            ) from None
        if not widths or any(w <= 0 for w in widths):
            raise ConfigError(f"--hidden widths must be positive; got {self.hidden!r}")
        if not sps or any(not 0 <= s < 1 for s in sps) or len(set(sps)) != len(sps):
            raise ConfigError(
                f"--sparsities must be distinct numbers in [0, 1); got {self.sparsities!r}"
            )
        node_keep_counts([1, *widths, 1], max(sps))

    @property
    def hidden_widths(self) -> list[int]:
        return [int(w) for w in self.hidden.split(",")]

    @property
    def sparsity_list(self) -> list[float]:
        return sorted(float(s) for s in self.sparsities.split(","))


def _check_search(metrics: dict) -> None:
    expect_fields(metrics, {"seed": int, "searches": list}, "the metrics")
    expect_list_of(
        metrics["searches"],
        {"sparsity": (int, float), "best": int, "val_loss": list, "val_acc": list},
        "searches",
    )


def _check_final(metrics: dict) -> None:
    expect_fields(metrics, {"members": list}, "the metrics")
    expect_list_of(
        metrics["members"],
        {"arm": str, "seed": int, "sparsity": (int, float), "diverged": bool},
        "members",
    )


class RandomSparseSearch(Recipe):
    name = "random-sparse-search"
    family = "sparsity"
    row = 31
    paper = "Random Search as a Baseline for Sparse Neural Network Architecture Search (2024)"
    claim = (
        "node masks picked by random search with a short proxy neither beat nor converge "
        "faster than one random mask at the same sparsity"
    )
    Config = RandomSparseSearchConfig
    # a sweep over these runs side by side and merges their train_members calls
    member_fields = ("lr", "seeds")
    tasks = ("mnist1d", "digits", "iris", "wine", "breast_cancer")
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "hidden": "32,16",
        "trials": 4,
        "proxy_epochs": 1,
        "epochs": 2,
    }
    broken: ClassVar[dict] = {"lr": 10.0, "epochs": 1}
    # measured in-process, one thread, MNIST-1D cached (CPU time; the machine was shared)
    smoke_seconds = 2.8

    def _setup(self, cfg: RandomSparseSearchConfig):
        data = self.load_data(cfg)
        if len(data.input_shape) != 1:
            raise ConfigError(
                f"--data {cfg.data} has inputs of shape {data.input_shape}; this recipe's MLP "
                "needs flat feature vectors (reshape x to (n, features))"
            )
        widths = [data.input_shape[0], *cfg.hidden_widths, data.num_classes]
        return data, widths

    def validate(self, cfg: RandomSparseSearchConfig, data_sizes: dict[str, int]) -> None:
        """The batch fits the training split."""
        if cfg.batch_size > data_sizes["train"]:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} exceeds the {data_sizes['train']} training "
                f"examples; choose at most {data_sizes['train']}"
            )
        self._setup(cfg)

    @staticmethod
    def candidates(widths, sparsity: float, seed: int, trials: int) -> list[list[torch.Tensor]]:
        """The ``trials`` random node subsets searched for ``seed`` at ``sparsity``."""
        g = generator(derive_seed("random-sparse-search", "trial", seed, sparsity))
        return [random_node_keep(widths, sparsity, g) for _ in range(trials)]

    @staticmethod
    def counterpart(widths, sparsity: float, seed: int) -> list[torch.Tensor]:
        """The one random node subset the best is compared with (drawn independently)."""
        g = generator(derive_seed("random-sparse-search", "counterpart", seed, sparsity))
        return random_node_keep(widths, sparsity, g)

    def run(self, cfg: RandomSparseSearchConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec

        data, widths = self._setup(cfg)
        factory = model_factory(MLP, widths, init=cfg.init)
        seeds = list(range(cfg.seeds))
        sparsities = cfg.sparsity_list
        init_seed = {s: derive_seed("random-sparse-search", "init", s) for s in seeds}
        data_seed = {s: derive_seed("random-sparse-search", "data", s) for s in seeds}
        optim = OptimConfig("adam", lr=cfg.lr)
        proxy_cfg = TrainConfig(cfg.proxy_epochs, cfg.batch_size, 0, optim)
        full_cfg = TrainConfig(cfg.epochs, cfg.batch_size, 0, optim)
        bar = progress_bar(len(seeds) + 1, "random-sparse-search", "unit", progress, True)

        # 1. per seed: every sparsity's trials, one population ranked by the proxy
        searches: dict[int, dict[float, dict]] = {}
        for s in seeds:
            if bar is not None:
                bar.set_description(f"search seed {s}")

            def compute(s=s):
                cands, owner = [], []
                for sp in sparsities:
                    for keep in self.candidates(widths, sp, s, cfg.trials):
                        cands.append(node_masks(widths, keep))
                        owner.append(sp)
                scores = proxy_scores(
                    factory,
                    cands,
                    data,
                    proxy_cfg,
                    seed=init_seed[s],
                    data_seed=data_seed[s],
                    device=cfg.device,
                    progress=progress,
                )
                out = []
                for sp in sparsities:
                    mine = [sc for sc, o in zip(scores, owner, strict=True) if o == sp]
                    out.append(
                        {
                            "sparsity": sp,
                            "best": best_candidate(mine),
                            "val_loss": [m["val_loss"] for m in mine],
                            "val_acc": [m["val_acc"] for m in mine],
                        }
                    )
                return {"seed": s, "searches": out}, {}

            metrics, _ = rd.unit(f"search-{s:02d}", compute, check=_check_search)
            searches[s] = {x["sparsity"]: x for x in metrics["searches"]}
            if bar is not None:
                bar.update(1)

        # 2. best vs random counterpart at every sparsity, and the dense parent
        def compute_final():
            specs, meta = [], []
            for s in seeds:
                specs.append(MemberSpec(seed=init_seed[s], data_seed=data_seed[s]))
                meta.append(("dense", s, 0.0))
                for sp in sparsities:
                    best = self.candidates(widths, sp, s, cfg.trials)[searches[s][sp]["best"]]
                    for arm, keep in (("best", best), ("random", self.counterpart(widths, sp, s))):
                        specs.append(
                            MemberSpec(
                                seed=init_seed[s],
                                data_seed=data_seed[s],
                                masks=node_masks(widths, keep),
                            )
                        )
                        meta.append((arm, s, sp))
            results, _ = train_members(
                factory, specs, data, full_cfg, device=cfg.device, progress=progress
            )
            members = [
                {
                    "arm": arm,
                    "seed": s,
                    "sparsity": sp,
                    **r.to_dict(),
                    "test_acc": r.best.test_acc,
                }
                for (arm, s, sp), r in zip(meta, results, strict=True)
            ]
            return {"members": members}, {}

        if bar is not None:
            bar.set_description("best vs random")
        final, _ = rd.unit("final", compute_final, check=_check_final)
        if bar is not None:
            bar.update(1)
            bar.close()
        return self.summarize(
            cfg, final["members"], searches, widths, chance=100 * majority_rate(data.test.y)
        )

    # -- summary and claims ---------------------------------------------------------
    def summarize(self, cfg, members: list[dict], searches, widths, chance: float) -> dict:
        rows = []
        keys = [("dense", 0.0)] + [(a, sp) for sp in cfg.sparsity_list for a in ARMS]
        for arm, sp in keys:
            ms = sorted(
                (m for m in members if m["arm"] == arm and m["sparsity"] == sp),
                key=lambda m: m["seed"],
            )
            kept = [m for m in ms if not m["diverged"]]
            acc = [100 * m["test_acc"] if m["test_acc"] is not None else None for m in kept]
            es = [m["early_stop_step"] for m in kept]
            (am, asd), (em, esd) = mean_std(acc), mean_std(es)
            rows.append(
                {
                    "arm": arm,
                    "sparsity": sp,
                    "kept_units": node_keep_counts(widths, sp),
                    "test_acc_mean": am,
                    "test_acc_std": asd,
                    "test_acc_values": acc,
                    "early_stop_mean": em,
                    "early_stop_std": esd,
                    "early_stop_values": es,
                    "seeds": [m["seed"] for m in kept],
                    "diverged": [
                        f"{arm} seed {m['seed']} at {sp:.0%}" for m in ms if m["diverged"]
                    ],
                    "n": len(kept),
                }
            )
        search_rows = []
        for sp in cfg.sparsity_list:
            per_seed = [searches[s][sp] for s in sorted(searches)]
            best_acc = [
                100 * x["val_acc"][x["best"]] if x["val_acc"][x["best"]] is not None else None
                for x in per_seed
            ]
            med = []
            for x in per_seed:
                vals = sorted(v for v in x["val_acc"] if v is not None)
                med.append(100 * vals[len(vals) // 2] if vals else None)
            search_rows.append(
                {
                    "sparsity": sp,
                    "proxy_val_acc_best_mean": mean_std(best_acc)[0],
                    "proxy_val_acc_median_mean": mean_std(med)[0],
                    "best_index": [x["best"] for x in per_seed],
                }
            )
        claims = [c.to_dict() for c in self.check_claims(rows, chance)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "search": search_rows,
            "claims": claims,
            "chance_pct": chance,
            "members": len(members),
            "diverged_members": [f"{m['arm']} seed {m['seed']}" for m in members if m["diverged"]],
            "accuracy": "test accuracy (%) at the early-stopping iteration (minimum validation loss)",
        }

    @staticmethod
    def check_claims(rows: list[dict], chance: float) -> list[ClaimResult]:
        """The no-difference claim: at every sparsity the 90% CI of best - random (paired
        over seeds) lies inside ±MARGIN_PTS, and the positive control (random masks at the
        lowest vs the highest sparsity, seed means) differs by more than CONTROL_PTS.
        Needs the dense parent to have learned and no member it reads to have diverged."""
        dense = next(r for r in rows if r["arm"] == "dense")
        sps = sorted({r["sparsity"] for r in rows if r["arm"] != "dense"})
        by = {(r["arm"], r["sparsity"]): r for r in rows}
        reasons = [
            baseline_learned(dense["test_acc_mean"], chance=chance),
            no_divergence([d for r in rows for d in r["diverged"]]),
            None if len(sps) >= 2 else "the positive control needs at least two sparsities",
        ]

        def paired(sp):
            b, r = by[("best", sp)], by[("random", sp)]
            common = sorted(set(b["seeds"]) & set(r["seeds"]))
            bv = [b["test_acc_values"][b["seeds"].index(s)] for s in common]
            rv = [r["test_acc_values"][r["seeds"].index(s)] for s in common]
            return bv, rv

        def check():
            per = []
            for sp in sps:
                inside, ev = within_margin(*paired(sp), MARGIN_PTS)
                b, r = by[("best", sp)], by[("random", sp)]
                per.append(
                    {
                        "sparsity": sp,
                        "inside": inside,
                        **ev,
                        "early_stop_best": b["early_stop_mean"],
                        "early_stop_random": r["early_stop_mean"],
                    }
                )
            lo, hi = by[("random", sps[0])], by[("random", sps[-1])]
            control = lo["test_acc_mean"] - hi["test_acc_mean"]
            control_ok = abs(control) > CONTROL_PTS
            parts = [
                f"{p['sparsity']:.0%}: {p['mean_difference']:+.2f} pts "
                f"[{p['ci_low']:+.2f}, {p['ci_high']:+.2f}]" + ("" if p["inside"] else " (outside)")
                for p in per
            ]
            detail = (
                "best - random, 90% CI over seeds: " + "; ".join(parts) + f"; needed inside "
                f"±{MARGIN_PTS:g} pt. Positive control: random at {sps[0]:.0%} - at "
                f"{sps[-1]:.0%} = {control:+.2f} pts (needed |.| > {CONTROL_PTS:g})"
                + ("" if control_ok else " (failed: the test cannot see a difference)")
            )
            ev = {"per_sparsity": per, "control_pts": control, "control_ok": control_ok}
            return all(p["inside"] for p in per) and control_ok, detail, ev

        return [
            judge(
                "a",
                QUOTE,
                f"at every sparsity the best of the random-search masks is within ±{MARGIN_PTS:g} "
                "pt of one random mask (90% CI of the paired difference); early-stop steps "
                "reported",
                reasons,
                check,
            )
        ]

    # -- report -------------------------------------------------------------------------
    def tables(self, summary: dict):
        header = ["sparsity", "arm", "kept units", "test acc %", "early-stop step", "n"]
        rows = [
            [
                f"{r['sparsity']:.0%}",
                r["arm"],
                ",".join(map(str, r["kept_units"])),
                _pm(r["test_acc_mean"], r["test_acc_std"]),
                _pm(r["early_stop_mean"], r["early_stop_std"], 0),
                str(r["n"]) + (f" ({len(r['diverged'])} diverged)" if r["diverged"] else ""),
            ]
            for r in summary["rows"]
        ]
        search = [
            [
                f"{x['sparsity']:.0%}",
                _pm(x["proxy_val_acc_best_mean"], 0.0).split(" ±")[0],
                _pm(x["proxy_val_acc_median_mean"], 0.0).split(" ±")[0],
                ", ".join(map(str, x["best_index"])),
            ]
            for x in summary["search"]
        ]
        return [
            ("Best of the search vs one random mask (mean ± std over seeds)", header, rows),
            (
                "Proxy search: validation accuracy after the proxy epochs (mean over seeds)",
                ["sparsity", "best candidate %", "median candidate %", "best index per seed"],
                search,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = summary["rows"]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        dense = next(r for r in rows if r["arm"] == "dense")
        for ax, key, label in (
            (axes[0], "test_acc", "test accuracy at early stop (%)"),
            (axes[1], "early_stop", "early-stop step"),
        ):
            for j, arm in enumerate(ARMS):
                pts = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["sparsity"])
                x = [100 * r["sparsity"] + (j - 0.5) * 1.5 for r in pts]
                m = [math.nan if r[f"{key}_mean"] is None else r[f"{key}_mean"] for r in pts]
                s = [0.0 if r[f"{key}_std"] is None else r[f"{key}_std"] for r in pts]
                ax.errorbar(x, m, yerr=s, fmt="o-", capsize=3, label=arm)
            if dense[f"{key}_mean"] is not None:
                ax.axhline(dense[f"{key}_mean"], color="gray", ls="--", lw=1, label="dense")
            ax.set_xlabel("node sparsity (%)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle("Random node-mask search: best of the proxy vs one random mask")
        png = figure_png(fig)
        return [Figure("random_sparse_search.png", "Best vs random by sparsity", png)]
