"""Recipe ``rs2``: Okanovic et al. (2023), "Repeated Random Sampling for Minimizing the
Time-to-Accuracy of Learning" (row [#34]).

MNIST-1D, an MLP (Adam), every arm trained for the same total number of steps (``epochs``
passes of the full train split), each step a batch of ``batch_size``:

- ``rs2``: Repeated Sampling of Random Subsets without replacement
  (:func:`weightlab.train.samplers.rs2_order`): every round a fresh random subset of
  ``m = fraction · n`` examples rounded down to whole batches, cycling through a
  permutation before any example repeats;
- ``static-random``: one random subset of the same ``m`` examples, fixed for the whole run
  and reshuffled every pass over it (:func:`~weightlab.train.samplers.static_subset_order`);
- ``static-el2n``: the ``m`` hardest examples by EL2N (:mod:`weightlab.probes.data_scores`,
  ``score_seeds`` MLPs scored after ``score_epoch`` epochs, averaged), fixed;
- ``full``: all the data, the reference.

All arms of one seed train as one population (one unit per seed). Accuracy is test
accuracy at the early-stopping evaluation (minimum validation loss), mean ± std over
seeds. Time to accuracy: the first evaluation step at which an arm's seed-mean test
accuracy reaches 95% of the full-data arm's (seed-mean, early-stopping) accuracy; for
``static-el2n`` the scoring networks' training steps (``score_seeds × scoring step``)
are added, since that selection costs training before training begins.

Claim (threshold fixed below, from the issue): RS2's test accuracy beats the static random
subset's by >= 1 point (seed means). Preconditions: the full-data baseline learned; no
member read diverged.

At equal total steps RS2 without replacement draws the same kind of stream as full-data
SGD (a permutation of the split after another; only the reshuffle points differ), so it
should track the full-data arm; the paper's time-to-accuracy gain comes from running
fewer steps than full data, which the steps-to-95% table reads off the same curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.data.task import TaskData
from weightlab.errors import ConfigError
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import (
    baseline_learned,
    judge,
    majority_rate,
    no_divergence,
    still_improving,
)
from weightlab.recipes.options import int_list
from weightlab.recipes.probes.data_diet import subsample_train
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed
from weightlab.train.config import OptimConfig, TrainConfig
from weightlab.train.order import steps_per_epoch

QUOTE = "RS2 significantly reduces time-to-accuracy compared to existing techniques"
# Fixed claim thresholds (from the issue), not options.
MIN_GAIN_PTS = 1.0  # RS2 >= static random subset + 1 point (seed means)
TARGET_FRACTION = 0.95  # time to 95% of the full-data accuracy
ARMS = ("full", "rs2", "static-random", "static-el2n")


@dataclass(frozen=True)
class RS2Config(RecipeConfig):
    fraction: float = opt(0.3, "per-round subset fraction f of the training split", gt=0, lt=1)
    hidden: str = opt("300,100", "hidden widths of the MLP")
    epochs: int = opt(
        30, "total training length in passes of the full train split (equal for every arm)", min=1
    )
    batch_size: int = opt(60, "batch size", min=1)
    lr: float = opt(1e-3, "Adam learning rate", gt=0, max=10)
    score_seeds: int = opt(5, "networks whose EL2N scores select the static-el2n subset", min=1)
    score_epoch: float = opt(3.0, "epochs of training before EL2N scoring", min=0, max=1000)
    eval_every: int = opt(0, "steps between evaluations (0: every full-data epoch)", min=0)
    n_train: int = opt(
        0, "train on a seeded random subset of this many training examples (0: all)", min=0
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        int_list(self.hidden, "hidden")

    @property
    def hidden_widths(self) -> list[int]:
        return int_list(self.hidden, "hidden", distinct=False, sort=False)


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"seed": int, "members": list}, "the metrics")
    opt_num = (int, float, type(None))
    expect_list_of(
        metrics["members"],
        {
            "arm": str,
            "seed": int,
            "subset": int,
            "distinct_seen": int,
            "diverged": bool,
            "test_acc": opt_num,
            "final_test_acc": opt_num,
            "early_stop_step": int,
            "last_step": int,
            "history": list,
        },
        "members",
    )
    for i, m in enumerate(metrics["members"]):
        if m["arm"] not in ARMS:
            raise ValueError(f"members[{i}] has arm {m['arm']!r}, expected one of {ARMS}")


def _check_scores(metrics: dict) -> None:
    expect_fields(metrics, {"kind": str, "step": int, "seeds": list, "n": int}, "scores")


class RS2(Recipe):
    name = "rs2"
    family = "probes"
    row = 34
    paper = (
        "Okanovic et al. 2023, Repeated Random Sampling for Minimizing the Time-to-Accuracy "
        "of Learning (arXiv:2305.18424)"
    )
    claim = (
        "a fresh random subset every epoch (RS2) beats a static subset of the same size at "
        "equal total steps"
    )
    Config = RS2Config
    # a sweep over these runs side by side and merges their train_members calls
    member_fields = ("lr", "seeds")
    tasks = ("mnist1d", "digits", "wine", "breast_cancer")
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "score_seeds": 2,
        "score_epoch": 1.0,
        "epochs": 3,
        "lr": 1e-2,
        "hidden": "32",
        "n_train": 600,
        "batch_size": 50,
    }
    broken: ClassVar[dict] = {"lr": 10.0, "epochs": 1}
    # measured in-process, one thread, MNIST-1D cached, second run of the process: 0.4 s
    # CPU (wall 1.9-3.7 s with the 2 cores shared, load ~15)
    smoke_seconds = 0.5

    def _data(self, cfg: RS2Config) -> TaskData:
        data = self.load_data(cfg)
        if len(data.input_shape) != 1:
            raise ConfigError(
                f"--data {cfg.data} has inputs of shape {data.input_shape}; this recipe's MLP "
                "needs flat feature vectors"
            )
        return subsample_train(data, cfg.n_train, derive_seed(self.name, "n_train"))

    def validate(self, cfg: RS2Config, data_sizes: dict[str, int]) -> None:
        """A round's subset holds at least one batch."""
        n = min(cfg.n_train or data_sizes["train"], data_sizes["train"])
        if cfg.batch_size > math.floor(cfg.fraction * n):
            raise ConfigError(
                f"--batch-size {cfg.batch_size} exceeds the {math.floor(cfg.fraction * n)} "
                f"examples of a {cfg.fraction:g} subset of {n}; lower it or raise --fraction"
            )

    def train_config(self, cfg: RS2Config) -> TrainConfig:
        return TrainConfig(
            cfg.epochs, cfg.batch_size, cfg.eval_every, OptimConfig("adam", lr=cfg.lr)
        )

    # -- run ----------------------------------------------------------------------------
    def run(self, cfg: RS2Config, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.probes.data_scores import early_scores

        data = self._data(cfg)
        d_in, k = data.input_shape[0], data.num_classes
        factory = model_factory(MLP, [d_in, *cfg.hidden_widths, k])

        def score_unit():
            sc = early_scores(
                factory,
                data,
                self.train_config(cfg),
                [derive_seed(self.name, "score", i) for i in range(cfg.score_seeds)],
                epoch=cfg.score_epoch,
                data_seed=derive_seed(self.name, "score-data"),
                device=cfg.device,
                progress=progress,
            )
            return sc.to_dict(), {"scores": sc.scores}

        score_meta, tensors = rd.unit("scores", score_unit, check=_check_scores)
        records = []
        for s in range(cfg.seeds):
            metrics, _ = rd.unit(
                f"seed-{s:02d}",
                lambda s=s: self._train_unit(cfg, data, factory, tensors["scores"], s, progress),
                check=_check_unit,
            )
            records.extend(metrics["members"])
        return self.summarize(cfg, records, score_meta, 100 * majority_rate(data.test.y))

    def orders(self, cfg: RS2Config, n: int, scores: torch.Tensor, s: int) -> dict:
        """Each arm's ``(data seed, (T, B) order, subset size)`` for training seed ``s``."""
        from weightlab.probes.data_scores import prune_by_score
        from weightlab.train.samplers import rs2_order, rs2_subset_size, static_subset_order

        total = steps_per_epoch(n, cfg.batch_size) * cfg.epochs
        m = rs2_subset_size(n, cfg.fraction, cfg.batch_size)  # f·n in whole batches
        out = {}
        for arm in ARMS:
            ds = derive_seed(self.name, "order", arm, s)
            if arm == "full":
                order, sub = (
                    static_subset_order(torch.arange(n), cfg.batch_size, 1, ds, steps=total),
                    n,
                )
            elif arm == "rs2":
                order, sub = rs2_order(n, cfg.fraction, cfg.batch_size, 1, ds, steps=total), m
            else:
                if arm == "static-random":
                    keep = prune_by_score(
                        scores, m, "random", seed=derive_seed(self.name, "random", s)
                    )
                else:
                    keep = prune_by_score(scores, m, "hardest")
                order = static_subset_order(keep, cfg.batch_size, 1, ds, steps=total)
                sub = len(keep)
            out[arm] = (ds, order, sub)
        return out

    def _train_unit(self, cfg, data, factory, scores, s, progress):
        from weightlab.population import MemberSpec
        from weightlab.recipes.members import train_members

        arms = self.orders(cfg, len(data.train), scores, s)
        init = derive_seed(self.name, "init", s)
        specs = [MemberSpec(seed=init, data_seed=ds) for ds, _, _ in arms.values()]
        results, _ = train_members(
            factory,
            specs,
            data,
            self.train_config(cfg),
            device=cfg.device,
            orders={ds: order for ds, order, _ in arms.values()},
            progress=progress,
        )
        members = [
            {
                "arm": arm,
                "seed": s,
                "subset": sub,
                "distinct_seen": int(order.unique().numel()),
                **res.to_dict(),
                "test_acc": res.best.test_acc,
                "final_test_acc": res.final.test_acc,
            }
            for (arm, (_, order, sub)), res in zip(arms.items(), results, strict=True)
        ]
        return {"seed": s, "members": members}, {}

    # -- summary and claims -------------------------------------------------------------
    @staticmethod
    def member_name(m: dict) -> str:
        return f"{m['arm']} seed {m['seed']}"

    def summarize(self, cfg: RS2Config, records: list[dict], score_meta: dict, chance: float):
        rows = []
        for arm in ARMS:
            ms = sorted((m for m in records if m["arm"] == arm), key=lambda m: m["seed"])
            if not ms:
                continue
            kept = [m for m in ms if not m["diverged"]]
            acc = [100 * _num(m["test_acc"]) for m in kept]
            am, asd = mean_std(acc)
            fm, fsd = mean_std([100 * _num(m["final_test_acc"]) for m in kept])
            em, esd = mean_std([m["early_stop_step"] for m in kept])
            curve = self.mean_curve(kept)
            rows.append(
                {
                    "arm": arm,
                    "subset": ms[0]["subset"],
                    "distinct_seen_mean": mean_std([m["distinct_seen"] for m in kept])[0],
                    "test_acc_mean": am,
                    "test_acc_std": asd,
                    "test_acc_values": acc,
                    "final_test_acc_mean": fm,
                    "final_test_acc_std": fsd,
                    "early_stop_mean": em,
                    "early_stop_std": esd,
                    "last_step_mean": mean_std([m["last_step"] for m in kept])[0],
                    "curve": curve,
                    "diverged": len(ms) - len(kept),
                    "excluded": [self.member_name(m) for m in ms if m["diverged"]],
                    "n": len(kept),
                }
            )
        scoring_steps = len(score_meta["seeds"]) * score_meta["step"]
        tta = self.time_to_accuracy(rows, scoring_steps)
        return {
            "recipe": self.name,
            "paper": self.paper,
            "fraction": cfg.fraction,
            "scores": score_meta,
            "scoring_steps": scoring_steps,
            "rows": rows,
            "time_to_accuracy": tta,
            "still_improving": still_improving(rows, lambda r: r["arm"]),
            "claims": [c.to_dict() for c in self.check_claims(rows, chance)],
            "chance_pct": chance,
            "members": len(records),
            "diverged_members": [self.member_name(m) for m in records if m["diverged"]],
            "accuracy": "test accuracy (%) at the early-stopping evaluation (minimum "
            "validation loss); every arm trains the same number of steps",
        }

    @staticmethod
    def mean_curve(members: list[dict]) -> list[dict]:
        """Seed-mean test accuracy (%) at each evaluation step all members reached."""
        if not members:
            return []
        steps = [[p["step"] for p in m["history"]] for m in members]
        common = sorted(set(steps[0]).intersection(*map(set, steps[1:])))
        out = []
        for t in common:
            vals = [
                100 * _num(next(p for p in m["history"] if p["step"] == t).get("test_acc"))
                for m in members
            ]
            mean, std = mean_std(vals)
            out.append({"step": t, "test_acc_mean": mean, "test_acc_std": std})
        return out

    @staticmethod
    def time_to_accuracy(rows: list[dict], scoring_steps: int) -> dict:
        """Per arm, the first evaluation step whose seed-mean test accuracy reaches
        ``TARGET_FRACTION`` of the full-data arm's (None: never within the run); for
        ``static-el2n`` also that step plus the scoring networks' steps."""
        by = {r["arm"]: r for r in rows}
        if "full" not in by or not math.isfinite(_num(by["full"]["test_acc_mean"])):
            return {"target_pct": None, "arms": []}
        target = TARGET_FRACTION * by["full"]["test_acc_mean"]
        arms = []
        for r in rows:
            hit = next((p["step"] for p in r["curve"] if p["test_acc_mean"] >= target), None)
            extra = scoring_steps if r["arm"] == "static-el2n" else 0
            arms.append(
                {
                    "arm": r["arm"],
                    "steps": hit,
                    "selection_steps": extra,
                    "total_steps": None if hit is None else hit + extra,
                }
            )
        return {"target_pct": target, "arms": arms}

    @staticmethod
    def check_claims(rows: list[dict], chance: float) -> list[ClaimResult]:
        """RS2 >= static random subset + 1 point (seed means)."""
        by = {r["arm"]: r for r in rows}
        missing = [a for a in ("full", "rs2", "static-random") if a not in by]
        pre: list[str | None]
        if missing:
            pre = [f"the run has no {', '.join(missing)} arm"]
        else:
            pre = [
                baseline_learned(by["full"]["test_acc_mean"], chance=chance, name="full-data"),
                no_divergence(
                    n for a in ("full", "rs2", "static-random") for n in by[a]["excluded"]
                ),
            ]

        def check():
            r, s = by["rs2"]["test_acc_mean"], by["static-random"]["test_acc_mean"]
            f = by["full"]["test_acc_mean"]
            detail = (
                f"RS2 {r:.2f}%, static random subset {s:.2f}% ({r - s:+.2f} pts, needed >= "
                f"+{MIN_GAIN_PTS:g}); full data {f:.2f}%"
            )
            return (
                r - s >= MIN_GAIN_PTS,
                detail,
                {"rs2": r, "static_random": s, "full": f, "gain_pts": r - s},
            )

        return [
            judge(
                "a",
                QUOTE,
                "at equal total steps and the same per-epoch subset size, RS2 (a fresh random "
                "subset each round, without replacement) beats a static random subset by >= "
                f"{MIN_GAIN_PTS:g} point of test accuracy (seed means)",
                pre,
                check,
            )
        ]

    # -- report ---------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        header = [
            "arm",
            "examples per epoch",
            "distinct examples seen",
            "test acc %",
            "final test acc %",
            "early-stop step",
            "n",
        ]
        rows = [
            [
                r["arm"],
                str(r["subset"]),
                f"{r['distinct_seen_mean']:.0f}",
                _pm(r["test_acc_mean"], r["test_acc_std"]),
                _pm(r["final_test_acc_mean"], r["final_test_acc_std"]),
                _pm(r["early_stop_mean"], r["early_stop_std"], 0),
                str(r["n"]) + (f" ({r['diverged']} diverged)" if r["diverged"] else ""),
            ]
            for r in summary["rows"]
        ]
        tta = summary["time_to_accuracy"]
        target = tta["target_pct"]
        tta_rows = [
            [
                a["arm"],
                "not reached" if a["steps"] is None else str(a["steps"]),
                str(a["selection_steps"]),
                "not reached" if a["total_steps"] is None else str(a["total_steps"]),
            ]
            for a in tta["arms"]
        ]
        title = (
            f"Steps to {TARGET_FRACTION:.0%} of the full-data accuracy"
            + (f" ({target:.2f}%)" if target is not None else "")
            + "; selection steps: the EL2N scoring networks' training steps, all networks"
        )
        return [
            (
                f"Test accuracy by arm (mean ± std over seeds; f = {summary['fraction']:g})",
                header,
                rows,
            ),
            (title, ["arm", "training steps", "selection steps", "total"], tta_rows),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7.5, 4.4))
        colors = {
            "full": "gray",
            "rs2": "tab:blue",
            "static-random": "tab:red",
            "static-el2n": "tab:green",
        }
        for r in summary["rows"]:
            c = r["curve"]
            if not c:
                continue
            xs = [p["step"] for p in c]
            m = [_num(p["test_acc_mean"]) for p in c]
            sd = [_num(p["test_acc_std"]) for p in c]
            ax.plot(xs, m, "-", color=colors[r["arm"]], label=r["arm"])
            ax.fill_between(
                xs,
                [a - b for a, b in zip(m, sd, strict=True)],
                [a + b for a, b in zip(m, sd, strict=True)],
                color=colors[r["arm"]],
                alpha=0.15,
            )
        target = summary["time_to_accuracy"]["target_pct"]
        if target is not None:
            ax.axhline(
                target, color="k", ls=":", lw=0.8, label=f"{TARGET_FRACTION:.0%} of full data"
            )
        ax.set_xlabel("training step")
        ax.set_ylabel("test accuracy (%, seed mean ± std)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"RS2 vs static subsets (f = {summary['fraction']:g}), equal total steps")
        return [Figure("rs2_curves.png", "Test accuracy during training", figure_png(fig))]
