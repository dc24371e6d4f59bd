"""Recipe ``lottery-ticket``: Frankle & Carbin (2019), "The Lottery Ticket Hypothesis:
Finding Sparse, Trainable Neural Networks" (row [#16]).

Iterative magnitude pruning (IMP) of an MLP 40-300-100-10 on MNIST-1D (or 64-300-100-10
on scikit-learn digits; any flat-feature classification task, e.g. iris, wine, breast
cancer or a user's ``FILE.npz``, works the same way): each round trains, prunes ``rate`` of the remaining weights of
every hidden layer (``output_rate``, half of it, in the output layer, as in the paper's
Section 2), and rewinds the survivors to their initial values θ0 (or to iteration k).
At every density three arms train side by side, as one population per round:

- ``ticket``: the IMP mask with the rewound weights (the winning ticket);
- ``reinit``: the ticket's mask with a fresh random initialization (paper, Sec. 2);
- ``random``: a random mask with the ticket's layer-wise densities, on θ0;

and round 0 (density 1) is the dense baseline. Accuracy is test accuracy at the
early-stopping iteration (minimum validation loss), the paper's measure.

Members that diverge are left out of every mean; a seed whose ticket diverged is left
out of the later rounds too (its masks were pruned from non-finite weights).
"""

from __future__ import annotations

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
    baseline_learned,
    judge,
    majority_rate,
    no_divergence,
    stopped_before_end,
)
from weightlab.recipes.members import ENGINES, train_members
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator
from weightlab.sparsity import IMPConfig, imp_step, random_masks
from weightlab.sparsity.imp import IMPPlan, plan_imp
from weightlab.train.config import SCHEDULES, OptimConfig, Schedule, TrainConfig
from weightlab.train.order import steps_per_epoch

ARMS = ("ticket", "reinit", "random")
QUOTE_SIZE = (
    "We consistently find winning tickets that are less than 10-20% of the size of several "
    "fully-connected and convolutional feed-forward architectures for MNIST and CIFAR10"
)
QUOTE_FASTER = (
    "Above this size, the winning tickets that we find learn faster than the original network "
    "and reach higher test accuracy"
)
# Fixed claim thresholds (proposals from methods.md row #16), not options: a claim is
# checked the same way on every run.
MATCH_DENSITY = 0.2  # "down to about 20% density"
MATCH_TOLERANCE_PTS = 1.0  # ticket >= dense - 1 pt
LOW_DENSITY = 0.1  # "low density": at or below 10%
REINIT_GAP_PTS = 2.0  # reinit below ticket by more than 2 pts


@dataclass(frozen=True)
class LotteryTicketConfig(RecipeConfig):
    hidden: str = opt("300,100", "hidden widths of the MLP, comma-separated")
    init: str = opt(
        "glorot_normal",
        "weight initialization (the paper uses Gaussian Glorot)",
        choices=tuple(INIT_SCHEMES),
    )
    optimizer: str = opt("adam", "optimizer", choices=("adam", "sgd"))
    lr: float = opt(1.2e-3, "learning rate (the paper's Adam rate for LeNet-300-100)", gt=0, max=10)
    epochs: int = opt(
        60,
        "training epochs per network (60: long enough that sparse controls mostly converge; "
        "at 30 they were still improving at the last step)",
        min=1,
        max=10000,
    )
    batch_size: int = opt(60, "batch size", min=1)
    eval_every: int = opt(0, "steps between evaluations; 0 = once per epoch", min=0)
    rate: float = opt(
        0.2, "fraction of remaining weights pruned per round in hidden layers", gt=0, lt=1
    )
    output_rate: float = opt(0.1, "fraction pruned per round in the output layer", gt=0, lt=1)
    target_density: float = opt(0.05, "prune until the overall density is at most this", gt=0, lt=1)
    rewind_step: int = opt(
        0, "rewind survivors to iteration k (0 = to the initialization θ0)", min=0
    )
    engine: str = opt(
        "population",
        "train each round's members as one population, or in a plain loop",
        choices=ENGINES,
    )
    schedule: str = opt("constant", "learning-rate schedule over each round", choices=SCHEDULES)
    warmup_steps: int = opt(0, "linear learning-rate warm-up steps", min=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            widths = [int(w) for w in self.hidden.split(",")]
        except ValueError:
            raise ConfigError(
                f"--hidden must be comma-separated integers like 300,100; got {self.hidden!r}"
            ) from None
        if not widths or any(w <= 0 for w in widths):
            raise ConfigError(f"--hidden widths must be positive; got {self.hidden!r}")

    @property
    def hidden_widths(self) -> list[int]:
        return [int(w) for w in self.hidden.split(",")]


def _prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _check_unit(metrics: dict) -> None:
    """The shape of a round's unit metrics (raises ``ValueError`` naming the problem)."""
    expect_fields(metrics, {"round": int, "members": list}, "the metrics")
    num, opt_num = (int, float), (int, float, type(None))
    expect_list_of(
        metrics["members"],
        {
            "arm": str,
            "seed": int,
            "density": num,
            "diverged": bool,
            "early_stop_step": int,
            "last_step": int,
            "test_acc": opt_num,
            "val_loss": opt_num,
            "final_test_acc": opt_num,
            "history": list,
        },
        "members",
    )
    for i, m in enumerate(metrics["members"]):
        if m["arm"] not in ARMS:
            raise ValueError(f"members[{i}] has arm {m['arm']!r}, expected one of {ARMS}")


class LotteryTicket(Recipe):
    name = "lottery-ticket"
    family = "sparsity"
    row = 16
    paper = "Frankle & Carbin 2019, The Lottery Ticket Hypothesis (arXiv:1803.03635)"
    claim = "IMP finds sparse subnetworks (tickets) that, rewound to init, match dense accuracy and learn faster"
    Config = LotteryTicketConfig
    tasks = ("mnist1d", "digits", "iris", "wine", "breast_cancer")
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "epochs": 2,
        "target_density": 0.5,
        "hidden": "64,32",
        "rate": 0.5,
        "output_rate": 0.25,
    }
    # Adam at lr 10 for one epoch: every arm stays at chance (or diverges).
    broken: ClassVar[dict] = {"lr": 10.0, "epochs": 1}
    # measured in-process on this 2-core CPU, one thread, MNIST-1D cached: 1.7 s for the
    # first run of a process (report imports included), 0.9 s after
    smoke_seconds = 1.7
    # a sweep batches runs differing only in these (each member keeps its optimizer
    # settings; its init reaches the population through init_state)
    member_fields = ("lr", "init", "optimizer", "seeds")

    def members_per_call(self, cfg) -> int:
        """Each pruning round trains ticket, reinit and random-mask arms per seed."""
        return 3 * cfg.seeds

    # -- setup ------------------------------------------------------------------
    def _setup(self, cfg: LotteryTicketConfig):
        data = self.load_data(cfg)
        if len(data.input_shape) != 1:
            raise ConfigError(
                f"--data {cfg.data} has inputs of shape {data.input_shape}; this recipe's MLP "
                "needs flat feature vectors (reshape x to (n, features))"
            )
        widths = [data.input_shape[0], *cfg.hidden_widths, data.num_classes]
        factory = model_factory(MLP, widths, init=cfg.init)
        names = [f"layers.{i}.weight" for i in range(len(widths) - 1)]
        shapes = {n: torch.Size((widths[i + 1], widths[i])) for i, n in enumerate(names)}
        imp = IMPConfig(
            rate=cfg.rate,
            rate_overrides={"last": cfg.output_rate},
            target_density=cfg.target_density,
            rewind="init" if cfg.rewind_step == 0 else cfg.rewind_step,
        )
        schedule = Schedule(cfg.schedule, warmup_steps=cfg.warmup_steps)
        train_cfg = TrainConfig(
            cfg.epochs,
            cfg.batch_size,
            cfg.eval_every,
            OptimConfig(cfg.optimizer, lr=cfg.lr, schedule=schedule),
        )
        plan = self._plan(cfg, data, shapes, imp, train_cfg)
        return data, factory, names, shapes, imp, train_cfg, plan

    @staticmethod
    def _plan(cfg: LotteryTicketConfig, data, shapes, imp: IMPConfig, train_cfg) -> IMPPlan:
        total = steps_per_epoch(len(data.train), cfg.batch_size) * cfg.epochs
        train_cfg.optim.schedule.check(total)
        try:
            return plan_imp(shapes, imp, total)
        except ConfigError:
            if imp.rewind_step <= total:
                raise
            raise ConfigError(
                f"--rewind-step {imp.rewind_step} is past the end of training: each round "
                f"trains {total} steps; choose --rewind-step in 0..{total}"
            ) from None

    def validate(self, cfg: LotteryTicketConfig, data_sizes: dict[str, int]) -> None:
        """Before the run directory opens: the batch fits the data, the warm-up fits the
        run, and the rewind step lies within a round's training (:func:`plan_imp`)."""
        self._setup(cfg)

    # -- run ----------------------------------------------------------------------
    def run(self, cfg: LotteryTicketConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec

        data, factory, names, shapes, imp, train_cfg, plan = self._setup(cfg)
        rates, densities = plan.rates, plan.densities
        seeds = list(range(cfg.seeds))
        init_seed = {s: derive_seed("lottery-ticket", "init", s) for s in seeds}
        data_seed = {s: derive_seed("lottery-ticket", "data", s) for s in seeds}
        rewind_states: dict[int, dict[str, torch.Tensor] | None] = {s: None for s in seeds}
        prev: dict[str, torch.Tensor] = {}
        records: list[dict] = []
        bar = progress_bar(
            len(densities), "lottery-ticket", "round", progress, line_each_update=True
        )
        for r, dens in enumerate(densities):
            if bar is not None:
                bar.set_description(f"round {r} (density {dens:.3f})")

            def compute(r=r, prev=prev):
                specs, meta, saved = [], [], {}
                for s in seeds:
                    if r == 0:
                        specs.append(MemberSpec(seed=init_seed[s], data_seed=data_seed[s]))
                        meta.append(("ticket", s))
                        continue
                    prev_masks = {n: prev[f"ticket.{s}.mask.{n}"].bool() for n in names}
                    # a diverged ticket's weights may be non-finite; its seed is left out of
                    # the claims from here on, but the round still needs definite masks
                    prev_final = {
                        n: torch.nan_to_num(prev[f"ticket.{s}.final.{n}"], 0.0, 0.0, 0.0)
                        for n in names
                    }
                    masks = imp_step(prev_final, prev_masks, rates, imp.scope)
                    keep = {n: int(m.sum()) for n, m in masks.items()}
                    rnd = random_masks(
                        shapes,
                        keep=keep,
                        generator=generator(derive_seed("lottery-ticket", "random-mask", s, r)),
                    )
                    state = rewind_states[s]
                    specs += [
                        MemberSpec(
                            seed=init_seed[s], data_seed=data_seed[s], masks=masks, init_state=state
                        ),
                        MemberSpec(
                            seed=derive_seed("lottery-ticket", "reinit", s, r),
                            data_seed=data_seed[s],
                            masks=masks,
                        ),
                        MemberSpec(
                            seed=init_seed[s], data_seed=data_seed[s], masks=rnd, init_state=state
                        ),
                    ]
                    meta += [("ticket", s), ("reinit", s), ("random", s)]
                    saved.update({f"random.{s}.mask.{n}": m.bool() for n, m in rnd.items()})
                snap = (cfg.rewind_step,) if (r == 0 and cfg.rewind_step > 0) else ()
                results, finals = train_members(
                    factory,
                    specs,
                    data,
                    train_cfg,
                    engine=cfg.engine,
                    device=cfg.device,
                    snapshot_steps=snap,
                    progress=progress,
                )
                members = []
                for (arm, s), spec, res, final in zip(meta, specs, results, finals, strict=True):
                    mask = spec.masks or {n: torch.ones(shapes[n], dtype=torch.bool) for n in names}
                    if arm == "ticket":
                        saved.update({f"ticket.{s}.final.{n}": final[n] for n in names})
                        saved.update({f"ticket.{s}.mask.{n}": mask[n].bool() for n in names})
                        if snap:
                            saved.update(
                                {
                                    f"rewind.{s}.{k}": v
                                    for k, v in res.snapshots[cfg.rewind_step].items()
                                }
                            )
                    best = res.best
                    members.append(
                        {
                            "arm": arm,
                            "seed": s,
                            "density": sum(int(mask[n].sum()) for n in names)
                            / sum(shapes[n].numel() for n in names),
                            **res.to_dict(),
                            "test_acc": best.test_acc,
                            "val_loss": best.val_loss,
                            "final_test_acc": res.final.test_acc,
                        }
                    )
                return {"round": r, "members": members}, saved

            metrics, tensors = rd.unit(f"round-{r:02d}", compute, check=_check_unit)
            for m in metrics["members"]:
                records.append({"round": r, **m})
            prev = tensors
            if r == 0 and cfg.rewind_step > 0:
                for s in seeds:
                    rewind_states[s] = _prefix(tensors, f"rewind.{s}.")
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return self.summarize(cfg, records, chance=100 * majority_rate(data.test.y))

    # -- summary and claims -----------------------------------------------------------
    @staticmethod
    def member_name(m: dict) -> str:
        arm = "dense" if m["round"] == 0 else m["arm"]
        return f"{arm} seed {m['seed']} at {m['density']:.1%}"

    def summarize(self, cfg: LotteryTicketConfig, records: list[dict], chance: float) -> dict:
        """Rows of mean ± std over seeds per (round, arm), diverged members left out, and
        the claims. ``chance``: the test split's majority-class rate in percent."""
        # A seed whose ticket diverged in round r: its later members were pruned from
        # non-finite weights, so they are left out as well.
        tainted_from = {}
        for m in sorted(records, key=lambda m: m["round"]):
            if m["arm"] == "ticket" and m["diverged"] and m["seed"] not in tainted_from:
                tainted_from[m["seed"]] = m["round"]
        rows = []
        for r in sorted({m["round"] for m in records}):
            for arm in ARMS:
                ms = sorted(
                    (m for m in records if m["round"] == r and m["arm"] == arm),
                    key=lambda m: m["seed"],
                )
                if not ms:
                    continue
                excluded, kept = [], []
                for m in ms:
                    if m["diverged"]:
                        step = m.get("diverged_step")
                        at = f" (diverged at step {step})" if step is not None else " (diverged)"
                        excluded.append(self.member_name(m) + at)
                    elif tainted_from.get(m["seed"], r) < r:
                        excluded.append(self.member_name(m) + " (pruned from a diverged ticket)")
                    else:
                        kept.append(m)
                acc = [100 * m["test_acc"] if m["test_acc"] is not None else None for m in kept]
                es = [m["early_stop_step"] for m in kept]
                fin = [
                    100 * m["final_test_acc"] if m["final_test_acc"] is not None else None
                    for m in kept
                ]
                (am, asd), (em, esd), (fm, fsd) = mean_std(acc), mean_std(es), mean_std(fin)
                rows.append(
                    {
                        "round": r,
                        "arm": "dense" if r == 0 else arm,
                        "density": ms[0]["density"],
                        "test_acc_mean": am,
                        "test_acc_std": asd,
                        "test_acc_values": acc,
                        "early_stop_mean": em,
                        "early_stop_std": esd,
                        "early_stop_values": es,
                        "last_step_mean": mean_std([m["last_step"] for m in kept])[0],
                        "final_test_acc_mean": fm,
                        "final_test_acc_std": fsd,
                        "diverged": sum(bool(m["diverged"]) for m in ms),
                        "excluded": excluded,
                        "n": len(kept),
                    }
                )
        claims = [c.to_dict() for c in self.check_claims(rows, chance)]
        diverged = [self.member_name(m) for m in records if m["diverged"]]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "claims": claims,
            "chance_pct": chance,
            "members": len(records),
            "diverged_members": diverged,
            "accuracy": "test accuracy (%) at the early-stopping iteration (minimum validation loss)",
        }

    @staticmethod
    def check_claims(rows: list[dict], chance: float) -> list[ClaimResult]:
        """The three claims on the summary rows. ``chance``: the test split's majority-class
        rate in percent. Every claim first needs a dense baseline that learned and no
        excluded (diverged) member among the rows it reads; (c) also needs dense's
        early-stop iteration to precede its last evaluation."""
        dense = next(r for r in rows if r["arm"] == "dense")
        by = {(r["round"], r["arm"]): r for r in rows}
        tickets = [r for r in rows if r["arm"] == "ticket"]
        learned = baseline_learned(dense["test_acc_mean"], chance=chance)
        big = [t for t in tickets if t["density"] >= MATCH_DENSITY]
        low = [t for t in tickets if t["density"] <= LOW_DENSITY]
        reinit_low = [by[(t["round"], "reinit")] for t in low]
        no_big = None if big else f"no ticket density >= {MATCH_DENSITY:.0%} in this run"
        no_low = None if low else f"no density <= {LOW_DENSITY:.0%} reached in this run"

        def excluded(rs: list[dict]) -> list[str]:
            return [name for r in rs for name in r.get("excluded", [])]

        def check_a():
            gaps = [
                (t["density"], t["test_acc_mean"], t["test_acc_mean"] - dense["test_acc_mean"])
                for t in big
            ]
            worst = min(gaps, key=lambda g: g[2])
            detail = (
                f"dense {dense['test_acc_mean']:.1f}%; over {len(gaps)} ticket densities >= {MATCH_DENSITY:.0%}, "
                f"worst gap {worst[2]:+.2f} pts at {worst[0]:.1%} (ticket {worst[1]:.1f}%); "
                f"needed every gap >= -{MATCH_TOLERANCE_PTS:g} pt"
            )
            ev = {
                "dense": dense["test_acc_mean"],
                "gaps": [{"density": d, "ticket": a, "gap_pts": g} for d, a, g in gaps],
            }
            return all(g[2] >= -MATCH_TOLERANCE_PTS for g in gaps), detail, ev

        def check_b():
            gaps = [
                (t["density"], t["test_acc_mean"], ri["test_acc_mean"])
                for t, ri in zip(low, reinit_low, strict=True)
            ]
            smallest = min(gaps, key=lambda g: g[1] - g[2])
            detail = (
                f"at {len(gaps)} densities <= {LOW_DENSITY:.0%}, smallest ticket-reinit gap {smallest[1] - smallest[2]:+.2f} pts "
                f"at {smallest[0]:.1%} (ticket {smallest[1]:.1f}% vs reinit {smallest[2]:.1f}%); needed every gap > {REINIT_GAP_PTS:g} pts"
            )
            ev = {
                "gaps": [
                    {"density": d, "ticket": a, "reinit": b, "gap_pts": a - b} for d, a, b in gaps
                ]
            }
            return all(a - b > REINIT_GAP_PTS for _, a, b in gaps), detail, ev

        def check_c():
            es = [(t["density"], t["early_stop_mean"]) for t in big]
            late = [e for e in es if e[1] > dense["early_stop_mean"]]
            latest = max(es, key=lambda e: e[1])
            detail = (
                f"dense early-stop iteration {dense['early_stop_mean']:.0f}; tickets >= {MATCH_DENSITY:.0%}: "
                f"{len(es) - len(late)}/{len(es)} no later, latest {latest[1]:.0f} at {latest[0]:.1%}"
            )
            ev = {
                "dense": dense["early_stop_mean"],
                "tickets": [{"density": d, "early_stop": e} for d, e in es],
            }
            return not late, detail, ev

        return [
            judge(
                "a",
                QUOTE_SIZE,
                f"tickets down to about {MATCH_DENSITY:.0%} density match or beat dense test accuracy (within {MATCH_TOLERANCE_PTS:g} pt)",
                [no_big, learned, no_divergence(excluded([dense, *big]))],
                check_a,
            ),
            judge(
                "b",
                QUOTE_SIZE,
                f"at density <= {LOW_DENSITY:.0%} random re-initialization of the ticket's mask is more than {REINIT_GAP_PTS:g} pts below the ticket",
                [no_low, learned, no_divergence(excluded([*low, *reinit_low]))],
                check_b,
            ),
            judge(
                "c",
                QUOTE_FASTER,
                f"tickets at density >= {MATCH_DENSITY:.0%} reach their early-stopping iteration no later than dense (mean over seeds)",
                [
                    no_big,
                    learned,
                    no_divergence(excluded([dense, *big])),
                    stopped_before_end(dense["early_stop_mean"], dense.get("last_step_mean")),
                ],
                check_c,
            ),
        ]

    # -- report ------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        header = [
            "round",
            "density",
            "arm",
            "test acc % (mean ± std)",
            "early-stop iter",
            "final acc %",
            "n",
        ]
        rows = [
            [
                str(r["round"]),
                f"{100 * r['density']:.2f}%",
                r["arm"],
                _pm(r["test_acc_mean"], r["test_acc_std"], 2),
                _pm(r["early_stop_mean"], r["early_stop_std"], 0),
                _pm(r["final_test_acc_mean"], r["final_test_acc_std"], 2),
                str(r["n"]) + (f" ({r['diverged']} diverged)" if r.get("diverged") else ""),
            ]
            for r in summary["rows"]
        ]
        return [("Accuracy by density and arm (over seeds)", header, rows)]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = summary["rows"]
        dense = next(r for r in rows if r["arm"] == "dense")
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        colors = {"ticket": "tab:blue", "reinit": "tab:red", "random": "tab:green"}
        for arm in ARMS:
            pts = [r for r in rows if r["arm"] == arm or (arm == "ticket" and r["arm"] == "dense")]
            pts.sort(key=lambda r: -r["density"])
            if len(pts) < 1:
                continue
            x = [100 * r["density"] for r in pts]
            for ax, key in ((axes[0], "test_acc"), (axes[1], "early_stop")):
                m = [_num(r[f"{key}_mean"]) for r in pts]
                s = [_num(r[f"{key}_std"]) for r in pts]
                ax.plot(x, m, "o-", color=colors[arm], label=arm, ms=3)
                ax.fill_between(
                    x,
                    [a - b for a, b in zip(m, s, strict=True)],
                    [a + b for a, b in zip(m, s, strict=True)],
                    color=colors[arm],
                    alpha=0.15,
                )
        for ax, key, label in (
            (axes[0], "test_acc", "test accuracy at early stop (%)"),
            (axes[1], "early_stop", "early-stop iteration"),
        ):
            ax.axhline(_num(dense[f"{key}_mean"]), color="gray", ls="--", lw=1, label="dense")
            ax.set_xscale("log")
            ticks = [
                t
                for t in (100, 50, 20, 10, 5, 2, 1)
                if t >= 100 * min(r["density"] for r in rows) * 0.9
            ]
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
            ax.invert_xaxis()
            ax.set_xlabel("weights remaining (%)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3, which="both")
            ax.legend()
        fig.suptitle(
            "Lottery ticket: IMP tickets vs random re-init vs random mask (mean ± std over seeds)"
        )
        png = figure_png(fig)
        return [
            Figure(
                "accuracy_vs_density.png",
                "Accuracy and early-stop iteration vs density",
                png,
            )
        ]
