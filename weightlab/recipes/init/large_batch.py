"""Recipe ``large-batch``: Hoffer, Hubara & Soudry (2017), "Train longer, generalize better:
closing the generalization gap in large batch training of neural networks" (row [#10]).

An MLP with batch normalization (:class:`~weightlab.models.ghost_bn.MLPBN`, 40-w-w-10) on
MNIST-1D, SGD with momentum, the learning rate divided by 10 once at 75% of each arm's
updates (the end of the "high learning rate phase"). Four arms, same init seeds:

- (a) batch 32 (``--small-batch``), ``E`` epochs, lr ``η``;
- (b) batch 1024 (``--large-batch``), ``E`` epochs, lr ``η``;
- (c) = (b) with Ghost Batch Normalization over ghost batches of 32 (Sec. 4.1);
- (d) = (c) with lr ``η·√(1024/32)`` (the paper's square-root rule, Sec. 4) and as many
  updates as (a) (Sec. 5, "regime adaptation": more epochs).

The seeds of one arm train as one population (the generic ``vmap`` path: BN buffers per
member). ``‖w_t − w_0‖`` is the loop's built-in ``distance_from_init`` probe, taken every
step and kept at ``--fit-points`` log-spaced steps of the high-lr phase.

Claims (thresholds from the issue, module constants): (1) (a)'s distance fits
``a·log t + b`` with R² > 0.9 and a residual sum of squares ≤ 0.5× that of the random-walk
fit ``a·√t + b``, for every seed; a free ``a·t^p + b`` fit is reported, not judged.
(2) acc(d) − acc(b) ≥ 50% of acc(a) − acc(b). (3) acc(c) − acc(b) exceeds one standard error
of the paired difference. Precondition of (2) and (3): acc(a) − acc(b) ≥ 1 pt and above its
standard error. Accuracy is the final test accuracy (%), mean ± std over seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.errors import ConfigError
from weightlab.models.factory import model_factory
from weightlab.models.ghost_bn import MLPBN
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate, no_divergence
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed
from weightlab.train.config import OptimConfig, Schedule, TrainConfig
from weightlab.train.order import steps_per_epoch
from weightlab.train.probes import distance_from_init

ARMS = ("a", "b", "c", "d")
ARM_LABELS = {
    "a": "(a) small batch",
    "b": "(b) large batch",
    "c": "(c) large + ghost BN",
    "d": "(d) large + GBN + √k lr + matched updates",
}
QUOTE_LOG = (
    "We find that the weight distance from its initialization grows logarithmically with the "
    "number of weight updates."
)
QUOTE_REGIME = (
    'the "generalization gap" stems from the relatively small number of updates rather than '
    "the batch size, and can be completely eliminated by adapting the training regime used"
)
QUOTE_GHOST = (
    'a novel algorithm named "Ghost Batch Normalization" which enables significant decrease in '
    "the generalization gap without increasing the number of updates"
)
# Fixed claim thresholds (from the issue), not options.
MIN_LOG_R2 = 0.9
MAX_RSS_RATIO = 0.5  # RSS(log fit) <= 0.5 x RSS(sqrt fit)
MOST_OF_GAP = 0.5
MIN_GAP_PTS = 1.0
MIN_FIT_POINTS = 20  # (a)'s fit needs >= 20 log-spaced steps of the high-lr phase
DECAY_AT = 0.75  # lr / 10 after 75% of the updates: the high-lr phase is before it
P_GRID = [round(0.02 + 0.01 * i, 2) for i in range(149)]  # 0.02 .. 1.50


@dataclass(frozen=True)
class LargeBatchConfig(RecipeConfig):
    width: int = opt(128, "hidden width w of the 40-w-w-10 MLP+BN", min=2, max=4096)
    epochs: int = opt(20, "epochs E of arms (a), (b), (c)", min=1, max=10000)
    small_batch: int = opt(32, "batch size of arm (a) and ghost-batch size of (c), (d)", min=2)
    large_batch: int = opt(1024, "batch size of arms (b), (c), (d)", min=2)
    lr: float = opt(
        0.02, "SGD learning rate of (a), (b), (c); (d) uses lr·√(large/small)", gt=0, max=10
    )
    momentum: float = opt(0.9, "SGD momentum", min=0, lt=1)
    fit_points: int = opt(
        30, "log-spaced steps of the high-lr phase used in the fits", min=3, max=1000
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.large_batch <= self.small_batch:
            raise ConfigError(
                f"--large-batch {self.large_batch} must exceed --small-batch {self.small_batch}"
            )


def fit_curves(t: list[float], d: list[float]) -> dict:
    """Least-squares fits of ``d(t)``: ``a·log t + b``, ``a·√t + b`` and ``a·t^p + b``
    (``p`` on a grid of 0.02..1.5, the best RSS). Returns each fit's ``a``, ``b``, R² and
    residual sum of squares, and ``rss_ratio`` = RSS(log) / RSS(√). Closed-form simple
    regression in Python floats (``math.fsum``), so a resumed run gives identical digits."""
    n = len(d)
    y_mean = math.fsum(d) / n
    ss_tot = math.fsum((v - y_mean) ** 2 for v in d)

    def linfit(f: list[float]) -> dict:
        f_mean = math.fsum(f) / n
        sxx = math.fsum((u - f_mean) ** 2 for u in f)
        sxy = math.fsum((u - f_mean) * (v - y_mean) for u, v in zip(f, d, strict=True))
        a = sxy / sxx if sxx > 0 else 0.0
        b = y_mean - a * f_mean
        rss = math.fsum((a * u + b - v) ** 2 for u, v in zip(f, d, strict=True))
        return {"a": a, "b": b, "rss": rss, "r2": 1 - rss / ss_tot if ss_tot > 0 else math.nan}

    log = linfit([math.log(u) for u in t])
    sqrt = linfit([math.sqrt(u) for u in t])
    best = min((dict(linfit([u**p for u in t]), p=p) for p in P_GRID), key=lambda r: r["rss"])
    ratio = log["rss"] / sqrt["rss"] if sqrt["rss"] > 0 else math.inf
    return {"log": log, "sqrt": sqrt, "power": best, "rss_ratio": ratio}


def log_spaced(last: int, k: int) -> list[int]:
    """Up to ``k`` distinct integer steps in ``[1, last]``, log-spaced."""
    if last < 1:
        return []
    raw = torch.logspace(0, math.log10(last), k, dtype=torch.float64).round().long()
    return sorted({int(v) for v in raw.clamp(1, last)})


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"arm": str, "steps": int, "members": list}, "the metrics")
    expect_list_of(
        metrics["members"],
        {
            "seed": int,
            "diverged": bool,
            "test_acc": (int, float, type(None)),
            "train_acc": (int, float, type(None)),
            "distance": list,
            "history": list,
        },
        "members",
    )


class LargeBatch(Recipe):
    name = "large-batch"
    family = "init"
    row = 10
    paper = (
        "Hoffer, Hubara & Soudry 2017, Train longer, generalize better: closing the "
        "generalization gap in large batch training of neural networks (arXiv:1705.08741)"
    )
    claim = (
        "‖w_t − w_0‖ grows like log t; the large-batch gap comes from too few updates (regime "
        "adaptation closes most of it) and ghost BN shrinks it at equal updates"
    )
    Config = LargeBatchConfig
    tasks = ("mnist1d", "digits")
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "epochs": 1,
        "width": 16,
        "large_batch": 512,
        "small_batch": 64,
        "fit_points": 8,
        "data": "digits",
    }
    broken: ClassVar[dict] = {"lr": 10.0, "epochs": 1}
    # measured in-process, one thread, CPU time (first run of a process; 1.1 s after)
    smoke_seconds = 3.2

    def validate(self, cfg: LargeBatchConfig, data_sizes: dict[str, int]) -> None:
        if cfg.large_batch > data_sizes["train"]:
            raise ConfigError(
                f"--large-batch {cfg.large_batch} exceeds the {data_sizes['train']} training "
                "examples; choose a smaller batch"
            )

    def plan(self, cfg: LargeBatchConfig, n: int) -> dict[str, dict]:
        """Per arm: batch, ghost batch, lr, epochs and update count."""
        spe_s, spe_l = steps_per_epoch(n, cfg.small_batch), steps_per_epoch(n, cfg.large_batch)
        target = spe_s * cfg.epochs
        d_epochs = math.ceil(target / spe_l)
        scale = math.sqrt(cfg.large_batch / cfg.small_batch)
        out = {
            "a": (cfg.small_batch, None, cfg.lr, cfg.epochs),
            "b": (cfg.large_batch, None, cfg.lr, cfg.epochs),
            "c": (cfg.large_batch, cfg.small_batch, cfg.lr, cfg.epochs),
            "d": (cfg.large_batch, cfg.small_batch, cfg.lr * scale, d_epochs),
        }
        plan = {}
        for arm, (batch, ghost, lr, epochs) in out.items():
            steps = steps_per_epoch(n, batch) * epochs
            plan[arm] = {
                "batch": batch,
                "ghost": ghost,
                "lr": lr,
                "epochs": epochs,
                "steps": steps,
                "decay_step": max(1, math.ceil(DECAY_AT * steps)),
            }
        return plan

    def run(self, cfg: LargeBatchConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec, Population

        data = self.load_data(cfg)
        if len(data.input_shape) != 1:
            raise ConfigError(
                f"--data {cfg.data} has inputs of shape {data.input_shape}; this recipe's MLP "
                "needs flat feature vectors"
            )
        widths = [data.input_shape[0], cfg.width, cfg.width, data.num_classes]
        plan = self.plan(cfg, len(data.train))
        units = {}
        bar = progress_bar(len(ARMS), self.name, "arm", progress, line_each_update=True)
        for arm in ARMS:
            p = plan[arm]

            def compute(arm=arm, p=p):
                factory = model_factory(MLPBN, widths, virtual_batch=p["ghost"])
                sched = Schedule("step", step_size=p["decay_step"], gamma=0.1)
                tcfg = TrainConfig(
                    p["epochs"],
                    p["batch"],
                    0,
                    OptimConfig("sgd", lr=p["lr"], momentum=cfg.momentum, schedule=sched),
                )
                specs = [
                    MemberSpec(
                        seed=derive_seed(self.name, "init", s),
                        data_seed=derive_seed(self.name, "data", s),
                    )
                    for s in range(cfg.seeds)
                ]
                pop = Population(factory, specs, device=cfg.device)
                keep = set(log_spaced(p["decay_step"], cfg.fit_points))
                results = pop.fit(data, tcfg, probes=[distance_from_init(1)], progress=progress)
                members = []
                for s, res in enumerate(results):
                    model = pop.member(s)
                    train_acc = _accuracy(model, data.train)
                    dist = [
                        [r["step"], r["distance_from_init"]]
                        for r in res.probes
                        if r["step"] in keep
                    ]
                    members.append(
                        {
                            "seed": s,
                            "diverged": bool(res.diverged),
                            "test_acc": res.final.test_acc,
                            "train_acc": train_acc,
                            "distance": dist,
                            "history": [h.to_dict() for h in res.history],
                        }
                    )
                return {"arm": arm, "steps": p["steps"], "members": members}, {}

            units[arm], _ = rd.unit(f"arm-{arm}", compute, check=_check_unit)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return self.summarize(cfg, plan, units, 100 * majority_rate(data.test.y))

    # -- summary and claims ------------------------------------------------------------
    def summarize(self, cfg, plan: dict, units: dict, chance: float) -> dict:
        rows = []
        for arm in ARMS:
            ms = units[arm]["members"]
            acc = [100 * m["test_acc"] if m["test_acc"] is not None else None for m in ms]
            tr = [100 * m["train_acc"] if m["train_acc"] is not None else None for m in ms]
            (am, asd), (tm, tsd) = mean_std(acc), mean_std(tr)
            rows.append(
                {
                    "arm": arm,
                    "label": ARM_LABELS[arm],
                    **plan[arm],
                    "test_acc_mean": am,
                    "test_acc_std": asd,
                    "test_acc_values": acc,
                    "train_acc_mean": tm,
                    "train_acc_std": tsd,
                    "diverged": [m["seed"] for m in ms if m["diverged"]],
                }
            )
        fits = []
        for m in units["a"]["members"]:
            t = [float(x[0]) for x in m["distance"] if x[0] >= 1]
            d = [float(x[1]) for x in m["distance"] if x[0] >= 1]
            fit = fit_curves(t, d) if len(t) >= 3 else None
            fits.append({"seed": m["seed"], "points": len(t), "fit": fit})
        curves = {arm: [m["distance"] for m in units[arm]["members"]] for arm in ARMS}
        claims = [c.to_dict() for c in self.check_claims(rows, fits, chance)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "fits": fits,
            "curves": curves,
            "claims": claims,
            "chance_pct": chance,
            "members": sum(len(units[a]["members"]) for a in ARMS),
            "diverged_members": [
                f"({a}) seed {m['seed']}"
                for a in ARMS
                for m in units[a]["members"]
                if m["diverged"]
            ],
            "accuracy": "final test accuracy (%), mean ± std over seeds",
        }

    @staticmethod
    def check_claims(rows: list[dict], fits: list[dict], chance: float) -> list[ClaimResult]:
        by = {r["arm"]: r for r in rows}
        diverged = [f"{r['arm']} seed {s}" for r in rows for s in r["diverged"]]
        learned = baseline_learned(by["a"]["test_acc_mean"], chance=chance, name="(a) small-batch")

        def paired(x: str, y: str) -> tuple[float, float]:
            d = [
                u - v
                for u, v in zip(by[x]["test_acc_values"], by[y]["test_acc_values"], strict=True)
                if u is not None and v is not None
            ]
            m, s = mean_std(d)
            return m, (s / math.sqrt(len(d)) if len(d) > 1 else math.inf)

        gap, gap_se = paired("a", "b")
        gap_pre = None
        if not (math.isfinite(gap) and gap >= MIN_GAP_PTS and gap > gap_se):
            gap_pre = (
                f"no generalization gap to close: acc(a) − acc(b) = {gap:+.2f} pts "
                f"(SE {gap_se:.2f}); needed ≥ {MIN_GAP_PTS:g} pt and above its SE"
            )
        few = [
            f"seed {f['seed']} has {f['points']} fit points (< 3)" for f in fits if f["fit"] is None
        ]
        too_few = (
            f"fewer than {MIN_FIT_POINTS} log-spaced steps in the high-lr phase "
            f"({min(f['points'] for f in fits)})"
            if fits and min(f["points"] for f in fits) < MIN_FIT_POINTS
            else None
        )

        def check_log():
            ok, parts = True, []
            for f in fits:
                fit = f["fit"]
                good = fit["log"]["r2"] > MIN_LOG_R2 and fit["rss_ratio"] <= MAX_RSS_RATIO
                ok = ok and good
                parts.append(
                    f"seed {f['seed']}: log R² {fit['log']['r2']:.3f}, RSS log/√ "
                    f"{fit['rss_ratio']:.3f}, free fit p = {fit['power']['p']:.2f} "
                    f"(R² {fit['power']['r2']:.3f})"
                )
            detail = "; ".join(parts) + (
                f"; needed R² > {MIN_LOG_R2:g} and RSS ratio ≤ {MAX_RSS_RATIO:g} for every seed"
            )
            return ok, detail, {"fits": fits}

        def check_regime():
            closed, _ = paired("d", "b")
            share = closed / gap
            detail = (
                f"acc(d) − acc(b) = {closed:+.2f} pts of the gap acc(a) − acc(b) = "
                f"{gap:+.2f} pts ({100 * share:.0f}%); needed ≥ {100 * MOST_OF_GAP:.0f}%"
            )
            return (
                share >= MOST_OF_GAP,
                detail,
                {"closed_pts": closed, "gap_pts": gap, "share": share},
            )

        def check_ghost():
            gain, se = paired("c", "b")
            detail = (
                f"acc(c) − acc(b) = {gain:+.2f} pts, standard error {se:.2f} (paired over "
                f"seeds); needed gain > 1 SE"
            )
            return gain > se, detail, {"gain_pts": gain, "se_pts": se, "gap_pts": gap}

        div = no_divergence(diverged)
        return [
            judge(
                "log-distance",
                QUOTE_LOG,
                f"(a)'s ‖w_t − w_0‖ at ≥ {MIN_FIT_POINTS} log-spaced steps of the high-lr phase fits "
                f"a·log t + b with R² > {MIN_LOG_R2:g} and RSS ≤ {MAX_RSS_RATIO:g}× the "
                "random-walk fit a·√t + b (every seed); a free a·t^p + b fit is reported",
                [learned, div, too_few, *few],
                check_log,
            ),
            judge(
                "regime-adaptation",
                QUOTE_REGIME,
                f"acc(d) − acc(b) ≥ {100 * MOST_OF_GAP:.0f}% of acc(a) − acc(b) (means)",
                [learned, div, gap_pre],
                check_regime,
            ),
            judge(
                "ghost-bn",
                QUOTE_GHOST,
                "acc(c) − acc(b) exceeds one standard error of the paired difference",
                [learned, div, gap_pre],
                check_ghost,
            ),
        ]

    # -- report ------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        header = ["arm", "batch", "ghost", "lr", "epochs", "updates", "test acc %", "train acc %"]
        rows = [
            [
                r["label"],
                str(r["batch"]),
                str(r["ghost"] or "-"),
                f"{r['lr']:.4g}",
                str(r["epochs"]),
                str(r["steps"]),
                _pm(r["test_acc_mean"], r["test_acc_std"]),
                _pm(r["train_acc_mean"], r["train_acc_std"]),
            ]
            for r in summary["rows"]
        ]
        fit_rows = []
        for f in summary["fits"]:
            fit = f["fit"]
            if fit is None:
                continue
            fit_rows.append(
                [
                    str(f["seed"]),
                    str(f["points"]),
                    f"{fit['log']['r2']:.4f}",
                    f"{fit['sqrt']['r2']:.4f}",
                    f"{fit['rss_ratio']:.3f}",
                    f"{fit['power']['p']:.2f}",
                    f"{fit['power']['r2']:.4f}",
                ]
            )
        return [
            ("Final test accuracy per arm (mean ± std over seeds)", header, rows),
            (
                "‖w_t − w_0‖ fits of arm (a), high-lr phase",
                ["seed", "points", "R² log", "R² √t", "RSS log/√t", "free p", "R² t^p"],
                fit_rows,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        colors = {"a": "tab:blue", "b": "tab:red", "c": "tab:orange", "d": "tab:green"}
        for arm in ARMS:
            for i, c in enumerate(summary["curves"][arm]):
                pts = [x for x in c if x[0] >= 1]
                axes[0].plot(
                    [x[0] for x in pts],
                    [x[1] for x in pts],
                    "-",
                    color=colors[arm],
                    alpha=0.7,
                    label=ARM_LABELS[arm] if i == 0 else None,
                )
        axes[0].set_xscale("log")
        axes[0].set_xlabel("update t (log)")
        axes[0].set_ylabel("‖w_t − w_0‖ (high-lr phase)")
        rows = summary["rows"]
        axes[1].bar(
            range(len(rows)),
            [_num(r["test_acc_mean"]) for r in rows],
            yerr=[_num(r["test_acc_std"]) for r in rows],
            capsize=3,
            color=[colors[r["arm"]] for r in rows],
        )
        axes[1].set_xticks(range(len(rows)), [f"({r['arm']})" for r in rows])
        axes[1].set_ylabel("final test accuracy (%)")
        finite = [_num(r["test_acc_mean"]) for r in rows if math.isfinite(_num(r["test_acc_mean"]))]
        if finite:
            axes[1].set_ylim(max(0, min(finite) - 10), min(100, max(finite) + 5))
        for ax in axes:
            ax.grid(alpha=0.3, which="both")
        axes[0].legend(fontsize=7)
        fig.suptitle("Large batches: distance from init and the generalization gap")
        png = figure_png(fig)
        return [Figure("large_batch.png", "Distance from init and accuracy per arm", png)]


@torch.no_grad()
def _accuracy(model: torch.nn.Module, split) -> float:
    model.eval()
    return float((model(split.x).argmax(-1) == split.y).double().mean())
