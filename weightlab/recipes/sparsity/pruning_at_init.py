"""Recipe ``pruning-at-init``: pruning at initialization, five scores side by side, with
the claim of Liu et al. (2022), "The Unreasonable Effectiveness of Random Pruning:
Return of the Most Naive Baseline for Sparse Training" (row [#18]).

The lottery MLP (40-300-100-10 on MNIST-1D, Glorot-normal init, Adam at 1.2e-3,
batch 60, as in the ``lottery-ticket`` recipe) is pruned *before training* to each
density by one of five scores with one global threshold (``--allocation`` also offers
layer-wise and ERK):

- ``snip``: ``|w ⊙ ∂L/∂w|`` on one batch (Lee et al. 2019, Eq. 6);
- ``grasp``: keep the top ``w ⊙ Hg`` (Wang et al. 2020, Eq. 8);
- ``synflow``: iterative, data-free, ``--synflow-rounds`` rounds (Tanaka et al. 2020);
- ``magnitude``: ``|w|`` at init;
- ``random``: uniform random scores (the paper's random pruning, global: every layer keeps
  about the same fraction).

Then every pruned network trains from its (masked) initialization; the dense network of
the same seed is the baseline. Each density is one unit: its masks are computed from the
seeds' initial weights and all scores × seeds train as one population. Accuracy is test
accuracy at the early-stopping evaluation (minimum validation loss). Layer collapse
(:func:`~weightlab.sparsity.collapse.layer_collapse`: an empty layer or no input-output
path) is recorded per member as a structural check.
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
from weightlab.recipes.claims import (
    LATE_FRACTION,
    baseline_learned,
    judge,
    majority_rate,
    no_divergence,
    still_improving,
)
from weightlab.recipes.members import ENGINES, train_members
from weightlab.recipes.stats import mean_std, paired_difference_ci
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator
from weightlab.sparsity.collapse import layer_collapse
from weightlab.sparsity.saliency import ALLOCATIONS, SCORES, prune_at_init
from weightlab.train.config import OptimConfig, TrainConfig

QUOTE_MATCH = (
    "sparsely training a randomly pruned network from scratch can match the performance of "
    "its dense equivalent"
)
# Fixed claim thresholds (from the issue), not options.
MATCH_DENSITY = 0.10  # random pruning at 10% density ...
MATCH_MARGIN_PTS = 2.0  # ... is at least dense - 2 pts (90% CI of the paired difference)
CONTROL_DENSITY = 0.01  # positive control: random at 1% is more than 2 pts below dense
CI_LEVEL = 0.90
CURVE_MARGIN_PTS = 5.0  # the figure draws an arm's curve where it beats chance by >= 5 pts


def _parse_list(text: str, flag: str, kind=float) -> list:
    try:
        items = [kind(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--{flag} must be a comma-separated list; got {text!r}") from None
    if not items:
        raise ConfigError(f"--{flag} must list at least one value; got {text!r}")
    return items


@dataclass(frozen=True)
class PruningAtInitConfig(RecipeConfig):
    hidden: str = opt("300,100", "hidden widths of the MLP, comma-separated")
    init: str = opt(
        "glorot_normal", "weight initialization (as lottery-ticket)", choices=tuple(INIT_SCHEMES)
    )
    optimizer: str = opt("adam", "optimizer", choices=("adam", "sgd"))
    lr: float = opt(1.2e-3, "learning rate (lottery-ticket's Adam rate)", gt=0, max=10)
    epochs: int = opt(60, "training epochs per network", min=1, max=10000)
    batch_size: int = opt(60, "batch size", min=1)
    scores: str = opt(
        ",".join(SCORES), f"pruning-at-init scores, comma-separated, from {', '.join(SCORES)}"
    )
    densities: str = opt(
        "10,5,2,1,0.5,0.2,0.1", "densities in percent of the prunable weights, comma-separated"
    )
    allocation: str = opt("global", "how scores become masks", choices=ALLOCATIONS)
    synflow_rounds: int = opt(100, "SynFlow's pruning rounds (Tanaka et al. 2020: 100)", min=1)
    score_batch: int = opt(256, "training examples in the SNIP/GraSP scoring batch", min=1)
    engine: str = opt(
        "population",
        "train each density's members as one population, or in a loop",
        choices=ENGINES,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        widths = _parse_list(self.hidden, "hidden", int)
        if any(w <= 0 for w in widths):
            raise ConfigError(f"--hidden widths must be positive; got {self.hidden!r}")
        for s in self.score_names:
            if s not in SCORES:
                raise ConfigError(f"--scores: unknown score {s!r}; use some of {', '.join(SCORES)}")
        if len(set(self.score_names)) != len(self.score_names):
            raise ConfigError(f"--scores lists a score twice: {self.scores!r}")
        ds = _parse_list(self.densities, "densities")
        if any(not 0 < d <= 100 for d in ds):
            raise ConfigError(
                f"--densities must be percentages in (0, 100]; got {self.densities!r}"
            )
        if len(set(ds)) != len(ds):
            raise ConfigError(f"--densities lists a density twice: {self.densities!r}")

    @property
    def hidden_widths(self) -> list[int]:
        return _parse_list(self.hidden, "hidden", int)

    @property
    def score_names(self) -> list[str]:
        return [s.strip() for s in self.scores.split(",") if s.strip()]

    @property
    def density_values(self) -> list[float]:
        """Densities as fractions, largest first."""
        return sorted((d / 100 for d in _parse_list(self.densities, "densities")), reverse=True)


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"unit": str, "members": list}, "the metrics")
    num, opt_num = (int, float), (int, float, type(None))
    expect_list_of(
        metrics["members"],
        {
            "score": str,
            "seed": int,
            "density": num,
            "target_density": num,
            "diverged": bool,
            "early_stop_step": int,
            "last_step": int,
            "test_acc": opt_num,
            "final_test_acc": opt_num,
            "collapse": dict,
            "history": list,
        },
        "members",
    )


def _unit_key(d: float) -> str:
    return "density-" + f"{100 * d:g}".replace(".", "p")


class PruningAtInit(Recipe):
    name = "pruning-at-init"
    family = "sparsity"
    row = 18
    paper = (
        "Liu et al. 2022, The Unreasonable Effectiveness of Random Pruning (arXiv:2202.02643); "
        "scores from Lee et al. 2019 (SNIP), Wang et al. 2020 (GraSP), Tanaka et al. 2020 "
        "(SynFlow)"
    )
    claim = "a randomly pruned network trained from scratch matches its dense equivalent"
    Config = PruningAtInitConfig
    # a sweep over these runs side by side and merges their train_members calls
    member_fields = ("lr", "seeds")
    tasks = ("mnist1d", "digits", "iris", "wine", "breast_cancer")
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "epochs": 2,
        "hidden": "64,32",
        "densities": "10,1",
        "synflow_rounds": 10,
        "score_batch": 64,
    }
    broken: ClassVar[dict] = {"lr": 10.0, "epochs": 1}
    # measured in-process, one thread, MNIST-1D cached, CPU time (the 2 cores were shared
    # by 8 jobs): 3.9 s for the first run of a process (imports, SynFlow's rounds), 1.0 s after
    smoke_seconds = 3.9

    # -- setup ------------------------------------------------------------------
    def _setup(self, cfg: PruningAtInitConfig):
        data = self.load_data(cfg)
        if len(data.input_shape) != 1:
            raise ConfigError(
                f"--data {cfg.data} has inputs of shape {data.input_shape}; this recipe's MLP "
                "needs flat feature vectors"
            )
        widths = [data.input_shape[0], *cfg.hidden_widths, data.num_classes]
        factory = model_factory(MLP, widths, init=cfg.init)
        train_cfg = TrainConfig(
            cfg.epochs, cfg.batch_size, 0, OptimConfig(cfg.optimizer, lr=cfg.lr)
        )
        return data, factory, train_cfg

    def validate(self, cfg: PruningAtInitConfig, data_sizes: dict[str, int]) -> None:
        """The batch and the scoring batch fit the training split."""
        n = data_sizes["train"]
        if cfg.batch_size > n:
            raise ConfigError(f"--batch-size {cfg.batch_size} exceeds the {n} training examples")
        if cfg.score_batch > n:
            raise ConfigError(f"--score-batch {cfg.score_batch} exceeds the {n} training examples")

    # -- run ----------------------------------------------------------------------
    def run(self, cfg: PruningAtInitConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec

        data, factory, train_cfg = self._setup(cfg)
        seeds = list(range(cfg.seeds))
        init_seed = {s: derive_seed(self.name, "init", s) for s in seeds}
        data_seed = {s: derive_seed(self.name, "data", s) for s in seeds}
        records: list[dict] = []
        densities = cfg.density_values
        plan = [("dense", 1.0)] + [(_unit_key(d), d) for d in densities]
        bar = progress_bar(len(plan), self.name, "unit", progress, line_each_update=True)
        for key, d in plan:
            if bar is not None:
                bar.set_description(key)

            def compute(key=key, d=d):
                specs, meta, saved = [], [], {}
                for s in seeds:
                    if key == "dense":
                        specs.append(MemberSpec(seed=init_seed[s], data_seed=data_seed[s]))
                        meta.append(("dense", s, None))
                        continue
                    model = factory(init_seed[s])
                    perm = torch.randperm(
                        len(data.train), generator=generator(derive_seed(self.name, "batch", s))
                    )[: cfg.score_batch].to(data.train.x.device)
                    batch = (data.train.x[perm].cpu(), data.train.y[perm].cpu())
                    for score in cfg.score_names:
                        masks = prune_at_init(
                            score,
                            model,
                            batch,
                            d,
                            allocation=cfg.allocation,
                            rounds=cfg.synflow_rounds,
                            generator=generator(derive_seed(self.name, "random", s, d)),
                        )
                        rep = layer_collapse(model, masks)
                        specs.append(
                            MemberSpec(seed=init_seed[s], data_seed=data_seed[s], masks=masks)
                        )
                        meta.append((score, s, rep))
                        saved.update({f"{score}.{s}.{n}": m for n, m in masks.items()})
                results, _ = train_members(
                    factory,
                    specs,
                    data,
                    train_cfg,
                    engine=cfg.engine,
                    device=cfg.device,
                    progress=progress,
                )
                members = []
                for (score, s, rep), spec, res in zip(meta, specs, results, strict=True):
                    kept = sum(int(m.sum()) for m in (spec.masks or {}).values())
                    total = sum(m.numel() for m in (spec.masks or {}).values())
                    members.append(
                        {
                            "score": score,
                            "seed": s,
                            "target_density": d,
                            "density": kept / total if total else 1.0,
                            **res.to_dict(),
                            "test_acc": res.best.test_acc,
                            "final_test_acc": res.final.test_acc,
                            "collapse": rep.to_dict() if rep is not None else {},
                        }
                    )
                return {"unit": key, "members": members}, saved

            metrics, _ = rd.unit(key, compute, check=_check_unit)
            records.extend(metrics["members"])
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return self.summarize(cfg, records, chance=100 * majority_rate(data.test.y))

    # -- summary and claims -------------------------------------------------------------
    @staticmethod
    def member_name(m: dict) -> str:
        if m["score"] == "dense":
            return f"dense seed {m['seed']}"
        return f"{m['score']} seed {m['seed']} at {100 * m['target_density']:g}%"

    def summarize(self, cfg: PruningAtInitConfig, records: list[dict], chance: float) -> dict:
        """Rows of mean ± std over seeds per (score, density), diverged members left out,
        the collapse counts, and the claim."""
        rows = []
        keys = []
        for m in records:
            k = (m["score"], m["target_density"])
            if k not in keys:
                keys.append(k)
        for score, d in keys:
            ms = sorted(
                (m for m in records if m["score"] == score and m["target_density"] == d),
                key=lambda m: m["seed"],
            )
            kept = [m for m in ms if not m["diverged"]]
            excluded = [self.member_name(m) for m in ms if m["diverged"]]
            acc = [100 * m["test_acc"] if m["test_acc"] is not None else None for m in kept]
            (am, asd), (em, esd) = mean_std(acc), mean_std([m["early_stop_step"] for m in kept])
            fm, fsd = mean_std(
                [
                    100 * m["final_test_acc"] if m["final_test_acc"] is not None else None
                    for m in kept
                ]
            )
            rows.append(
                {
                    "score": score,
                    "density": d,
                    "test_acc_mean": am,
                    "test_acc_std": asd,
                    "test_acc_values": acc,
                    "seeds": [m["seed"] for m in kept],
                    "early_stop_mean": em,
                    "early_stop_std": esd,
                    "last_step_mean": mean_std([m["last_step"] for m in kept])[0],
                    "final_test_acc_mean": fm,
                    "final_test_acc_std": fsd,
                    "collapsed": sum(bool(m["collapse"].get("collapsed")) for m in ms),
                    "diverged": len(excluded),
                    "excluded": excluded,
                    "n": len(kept),
                }
            )
        claims = [c.to_dict() for c in self.check_claims(rows, chance)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "still_improving": still_improving(
                rows, lambda r: f"{r['score']} {100 * r['density']:g}%"
            ),
            "claims": claims,
            "chance_pct": chance,
            "allocation": cfg.allocation,
            "members": len(records),
            "diverged_members": [self.member_name(m) for m in records if m["diverged"]],
            "accuracy": "test accuracy (%) at the early-stopping evaluation (minimum validation loss)",
        }

    @staticmethod
    def check_claims(rows: list[dict], chance: float) -> list[ClaimResult]:
        """The claim on the summary rows (``chance``: majority-class rate in percent).
        Random at 10% matches dense: the 90% CI of the paired (by seed) difference
        random − dense lies above −2 pts. Positive control (else "not tested"): random at
        1% is more than 2 pts below dense on the mean. Also needs a dense baseline that
        learned and no diverged member among those read."""
        by = {(r["score"], r["density"]): r for r in rows}
        dense = by.get(("dense", 1.0))
        rnd = next(
            (
                r
                for r in rows
                if r["score"] == "random" and math.isclose(r["density"], MATCH_DENSITY)
            ),
            None,
        )
        ctl = next(
            (
                r
                for r in rows
                if r["score"] == "random" and math.isclose(r["density"], CONTROL_DENSITY)
            ),
            None,
        )
        missing = None
        if dense is None or rnd is None or ctl is None:
            missing = (
                f"the run lacks the dense arm or random pruning at {MATCH_DENSITY:.0%} and "
                f"{CONTROL_DENSITY:.0%}"
            )
        pre: list[str | None] = [missing]
        if missing is None:
            pre.append(baseline_learned(dense["test_acc_mean"], chance=chance))
            pre.append(no_divergence([*dense["excluded"], *rnd["excluded"], *ctl["excluded"]]))

        def paired(row):
            by_seed = dict(zip(row["seeds"], row["test_acc_values"], strict=True))
            dense_seed = dict(zip(dense["seeds"], dense["test_acc_values"], strict=True))
            common = sorted(set(by_seed) & set(dense_seed))
            return [by_seed[s] for s in common], [dense_seed[s] for s in common]

        if missing is None and not any(pre):
            ctl_gap = ctl["test_acc_mean"] - dense["test_acc_mean"]
            if not ctl_gap < -MATCH_MARGIN_PTS:
                pre.append(
                    f"positive control failed: random at {CONTROL_DENSITY:.0%} is "
                    f"{ctl_gap:+.2f} pts from dense, not more than {MATCH_MARGIN_PTS:g} pts "
                    "below, so this run cannot see a gap of that size"
                )

        def check():
            a, b = paired(rnd)
            mean, lo, hi = paired_difference_ci(a, b, CI_LEVEL)
            held = math.isfinite(lo) and lo >= -MATCH_MARGIN_PTS
            ctl_gap = ctl["test_acc_mean"] - dense["test_acc_mean"]
            detail = (
                f"dense {dense['test_acc_mean']:.2f}%, random at {MATCH_DENSITY:.0%} "
                f"{rnd['test_acc_mean']:.2f}%: paired difference {mean:+.2f} pts, "
                f"{CI_LEVEL:.0%} CI [{lo:+.2f}, {hi:+.2f}] over {len(a)} seeds; needed CI low "
                f">= -{MATCH_MARGIN_PTS:g}; control: random at {CONTROL_DENSITY:.0%} "
                f"{ctl['test_acc_mean']:.2f}% ({ctl_gap:+.2f} pts)"
            )
            if rnd.get("last_step_mean"):
                detail += (
                    f"; random at {MATCH_DENSITY:.0%} early-stopped at step "
                    f"{rnd['early_stop_mean']:.0f} of {rnd['last_step_mean']:.0f} (dense: "
                    f"{dense['early_stop_mean']:.0f})"
                )
            ev = {
                "dense": dense["test_acc_mean"],
                "random": rnd["test_acc_mean"],
                "mean_difference": mean,
                "ci_low": lo,
                "ci_high": hi,
                "ci_level": CI_LEVEL,
                "margin": MATCH_MARGIN_PTS,
                "pairs": len(a),
                "control_random": ctl["test_acc_mean"],
                "control_gap_pts": ctl_gap,
            }
            return held, detail, ev

        return [
            judge(
                "a",
                QUOTE_MATCH,
                f"random pruning at {MATCH_DENSITY:.0%} density (global) reaches dense test "
                f"accuracy - {MATCH_MARGIN_PTS:g} pts ({CI_LEVEL:.0%} CI of the paired "
                f"difference); positive control: random at {CONTROL_DENSITY:.0%} is more than "
                f"{MATCH_MARGIN_PTS:g} pts below dense",
                pre,
                check,
            )
        ]

    # -- report ------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        header = [
            "score",
            "density",
            "test acc % (mean ± std)",
            "early-stop step",
            "final acc %",
            "collapsed",
            "n",
        ]
        rows = [
            [
                r["score"],
                f"{100 * r['density']:g}%",
                _pm(r["test_acc_mean"], r["test_acc_std"], 2),
                _pm(r["early_stop_mean"], r["early_stop_std"], 0),
                _pm(r["final_test_acc_mean"], r["final_test_acc_std"], 2),
                f"{r['collapsed']}/{r['n'] + r['diverged']}",
                str(r["n"]) + (f" ({r['diverged']} diverged)" if r["diverged"] else ""),
            ]
            for r in summary["rows"]
        ]
        late = summary.get("still_improving", [])
        return [
            (
                f"Accuracy by score and density ({summary.get('allocation', 'global')} "
                "allocation; collapsed: members with an empty layer or no input-output path; "
                f"{len(late)} of {len(rows)} rows early-stop in the last "
                f"{LATE_FRACTION:.0%} of training, i.e. were still improving)",
                header,
                rows,
            )
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = summary["rows"]
        chance = summary["chance_pct"]
        dense = next((r for r in rows if r["score"] == "dense"), None)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        colors = {
            "snip": "tab:blue",
            "grasp": "tab:orange",
            "synflow": "tab:green",
            "magnitude": "tab:purple",
            "random": "tab:red",
        }
        scores = [s for s in colors if any(r["score"] == s for r in rows)]
        for s in scores:
            pts = sorted((r for r in rows if r["score"] == s), key=lambda r: -r["density"])
            x = [100 * r["density"] for r in pts]
            m = [_num(r["test_acc_mean"]) for r in pts]
            sd = [_num(r["test_acc_std"]) for r in pts]
            good = [v >= chance + CURVE_MARGIN_PTS for v in m]
            xs = [a for a, g in zip(x, good, strict=True) if g]
            ms = [a for a, g in zip(m, good, strict=True) if g]
            ss = [a for a, g in zip(sd, good, strict=True) if g]
            if xs:
                axes[0].errorbar(
                    xs, ms, yerr=ss, fmt="o-", ms=3, capsize=2, color=colors[s], label=s
                )
            bad = [(a, v) for a, v, g in zip(x, m, good, strict=True) if not g]
            if bad:
                axes[0].plot(
                    [b[0] for b in bad],
                    [b[1] for b in bad],
                    "x",
                    color=colors[s],
                    label=None if xs else f"{s} (at chance)",
                )
            axes[1].plot(
                x,
                [r["collapsed"] / max(1, r["n"] + r["diverged"]) for r in pts],
                "o-",
                ms=3,
                color=colors[s],
                label=s,
            )
        if dense is not None:
            axes[0].axhline(
                _num(dense["test_acc_mean"]), color="gray", ls="--", lw=1, label="dense"
            )
        axes[0].axhline(chance, color="k", ls=":", lw=1, label="chance")
        axes[0].set_ylabel("test accuracy at early stop (%)")
        axes[0].set_title(
            f"curves where the mean beats chance by >= {CURVE_MARGIN_PTS:g} pts; x: not"
        )
        axes[1].set_ylabel("fraction of seeds collapsed")
        axes[1].set_ylim(-0.05, 1.05)
        for ax in axes:
            ax.set_xscale("log")
            ax.invert_xaxis()
            ax.set_xlabel("weights remaining (%)")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        fig.suptitle(
            "Pruning at initialization: accuracy and layer collapse (mean ± std over seeds)"
        )
        png = figure_png(fig)
        return [Figure("accuracy_vs_density.png", "Accuracy and collapse vs density", png)]
