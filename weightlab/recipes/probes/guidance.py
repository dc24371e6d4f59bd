"""Recipe ``guidance``: Subramaniam et al. (2024), "Training the Untrainable: Introducing
Inductive Bias via Representational Alignment" (row [#81]).

A fully connected network (FCN, 64-512-512-512-10, ReLU) on ``n_train`` scikit-learn digits
(a fixed seeded subset of the training split; validation and test splits as ``digits``)
is trained twice per seed from the same initialization and data order (paired arms):

- ``unguided``: cross-entropy;
- ``guided``: cross-entropy + ``Σ_i (1 − linear CKA)`` over 3 layer pairs, the FCN's
  ``layers.0``/``layers.1``/``layers.2`` outputs against the ReLU outputs of the 3 conv blocks
  (``features.2``/``features.6``/``features.10``) of a randomly initialized, frozen
  :class:`~weightlab.models.SmallCNN` (channels 16, 32, 64; one guide per seed) reading the
  digits as 1×8×8 images (:class:`weightlab.probes.guidance.Guided`).

Both arms train in the one training loop (Adam, the guided arm through the ``Guided``
wrapper and its loss; a population cannot run the guide's forward). Accuracy is the test
accuracy at the end of training (the paper's point is the FCN's overfitting); the
early-stopping accuracy (minimum validation loss) is reported beside it.

Claim (thresholds fixed below): guided test accuracy beats unguided on the paired seed mean
and on at least 4 of 5 seeds (``WIN_FRACTION`` of the seeds). Preconditions: the unguided
FCN learned (test accuracy ≥ chance + 10 points) and nothing diverged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate, no_divergence
from weightlab.recipes.stats import mean_std, paired_difference_ci
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator

QUOTE = (
    "this method overcomes the immediate overfitting of fully connected networks on vision tasks"
)
WIN_FRACTION = 0.8  # guided > unguided on >= 4 of 5 seeds
PAIRS = (("layers.0", "features.2"), ("layers.1", "features.6"), ("layers.2", "features.10"))
GUIDE_CHANNELS = (16, 32, 64)


def _images(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(len(x), 1, 8, 8)


@dataclass(frozen=True)
class GuidanceConfig(RecipeConfig):
    seeds: int = opt(5, "number of paired seeds", min=1, max=1000)
    data: str = opt("digits", "task: scikit-learn digits (8x8 images, 64 pixels)")
    n_train: int = opt(500, "training digits (a fixed seeded subset of the train split)", min=10)
    hidden: int = opt(512, "width of the FCN's 3 hidden layers", min=1, max=8192)
    epochs: int = opt(30, "Adam epochs", min=1, max=100000)
    lr: float = opt(1e-3, "Adam learning rate", gt=0, max=10)
    batch_size: int = opt(50, "batch size (>= 4: linear CKA needs n > 3)", min=4)
    weight: float = opt(1.0, "weight of the alignment penalty", min=0, max=1000)


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"members": list}, "the metrics")
    numt = (int, float, type(None))
    expect_list_of(
        metrics["members"],
        {
            "seed": int,
            "arm": str,
            "diverged": bool,
            "test_acc": numt,
            "best_test_acc": numt,
            "train_acc": numt,
            "cka": list,
        },
        "members",
    )


class Guidance(Recipe):
    name = "guidance"
    family = "probes"
    row = 81
    paper = (
        "Subramaniam et al. 2024, Training the Untrainable: Introducing Inductive Bias via "
        "Representational Alignment"
    )
    claim = (
        "an FCN guided by a random small CNN (CE + sum of 1 - linear CKA over 3 layer pairs) "
        "beats the unguided FCN on digits, on the paired mean and on >= 4 of 5 seeds"
    )
    Config = GuidanceConfig
    tasks = ("digits",)
    kinds = ("classification",)
    smoke: ClassVar[dict] = {"seeds": 2, "n_train": 100, "hidden": 32, "epochs": 2}
    broken: ClassVar[dict] = {"lr": 10.0, "epochs": 1}
    # measured in-process, one thread: 0.65 s CPU after imports, 7.1 s CPU as the first run of a process (imports); wall 2.8 s on the loaded 2-core machine (load 12)
    smoke_seconds = 1.5

    def validate(self, cfg: GuidanceConfig, data_sizes: dict[str, int]) -> None:
        data = self.load_data(cfg)
        if data.input_shape != (64,):
            raise ConfigError(
                f"--data {cfg.data}: the guide reads 8x8 images, so inputs must have 64 "
                f"features; got {data.input_shape}"
            )
        if cfg.n_train > data_sizes["train"]:
            raise ConfigError(
                f"--n-train {cfg.n_train} exceeds the {data_sizes['train']} training digits"
            )
        if cfg.batch_size > cfg.n_train:
            raise ConfigError(f"--batch-size {cfg.batch_size} exceeds --n-train {cfg.n_train}")

    def run(self, cfg: GuidanceConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.recipes.units import seed_units

        data = self.load_data(cfg)
        idx = torch.randperm(len(data.train), generator=generator(derive_seed(self.name, "subset")))
        idx = idx[: cfg.n_train].sort().values
        task = TaskData(
            data.name, Split(data.train.x[idx], data.train.y[idx]), data.val, data.test, 10
        )

        def compute(s: int):
            return {"members": self._seed(cfg, task, s)}, {}

        records = seed_units(rd, self.name, cfg.seeds, compute, _check_unit, progress)
        return self.summarize(cfg, records, 100 * majority_rate(data.test.y))

    def _seed(self, cfg: GuidanceConfig, task: TaskData, s: int) -> list[dict]:
        from weightlab.models import build
        from weightlab.models.convnets import SmallCNN
        from weightlab.models.mlp import MLP
        from weightlab.probes.guidance import Guided, guidance_penalty
        from weightlab.train import train
        from weightlab.train.config import OptimConfig, TrainConfig

        widths = [64, cfg.hidden, cfg.hidden, cfg.hidden, 10]
        init_seed = derive_seed(self.name, "init", s)
        order = derive_seed(self.name, "order", s)
        guide = build(SmallCNN, 1, GUIDE_CHANNELS, 10, seed=derive_seed(self.name, "guide", s))
        out = []
        for arm in ("unguided", "guided"):
            fcn = build(MLP, widths, seed=init_seed, device=cfg.device)
            optim = OptimConfig("adam", lr=cfg.lr)
            if arm == "guided":
                model = Guided(fcn, guide.to(cfg.device), PAIRS, cfg.weight, _images)
                tcfg = TrainConfig(cfg.epochs, cfg.batch_size, 0, optim, loss=model.loss())
            else:
                model = fcn
                tcfg = TrainConfig(cfg.epochs, cfg.batch_size, 0, optim)
            res = train(model, task, tcfg, order, seed=init_seed)
            finite = all(torch.isfinite(p).all() for p in fcn.parameters())
            diverged = bool(res.diverged or not finite)
            cka = []
            if not diverged:
                with torch.no_grad():
                    acc = float((fcn(task.train.x).argmax(1) == task.train.y).double().mean())
                try:
                    for p in PAIRS:
                        pen = guidance_penalty(fcn, guide, task.test.x, [p], _images)
                        cka.append(1.0 - float(pen.detach()))
                except ConfigError:
                    cka = []
            out.append(
                {
                    "seed": s,
                    "arm": arm,
                    "diverged": diverged,
                    "test_acc": None if diverged else 100 * float(res.final.test_acc),
                    "best_test_acc": None if diverged else 100 * float(res.best.test_acc),
                    "train_acc": None if diverged else 100 * acc,
                    "cka": cka,
                }
            )
        return out

    # -- summary and claims -----------------------------------------------------------
    def summarize(self, cfg: GuidanceConfig, records: list[dict], chance: float) -> dict:
        def ms(vals):
            m, sd = mean_std(vals)
            return {"mean": m, "std": sd}

        arms = {}
        for arm in ("unguided", "guided"):
            rs = [r for r in records if r["arm"] == arm and not r["diverged"]]
            arms[arm] = {
                "test_acc": ms([r["test_acc"] for r in rs]),
                "best_test_acc": ms([r["best_test_acc"] for r in rs]),
                "train_acc": ms([r["train_acc"] for r in rs]),
                "cka": [ms([r["cka"][i] for r in rs if r["cka"]])["mean"] for i in range(3)]
                if any(r["cka"] for r in rs)
                else [],
            }
        by = {(r["seed"], r["arm"]): r for r in records}
        pairs = [
            {
                "seed": s,
                "unguided": by[(s, "unguided")]["test_acc"],
                "guided": by[(s, "guided")]["test_acc"],
            }
            for s in sorted({r["seed"] for r in records})
            if not by[(s, "unguided")]["diverged"] and not by[(s, "guided")]["diverged"]
        ]
        summary = {
            "recipe": self.name,
            "paper": self.paper,
            "arms": arms,
            "pairs": pairs,
            "seeds": cfg.seeds,
            "chance_pct": chance,
            "members": len(records),
            "diverged_members": [f"{r['arm']} seed {r['seed']}" for r in records if r["diverged"]],
            "setup": {
                "n_train": cfg.n_train,
                "hidden": cfg.hidden,
                "epochs": cfg.epochs,
                "lr": cfg.lr,
                "batch_size": cfg.batch_size,
                "weight": cfg.weight,
                "pairs": [list(p) for p in PAIRS],
            },
        }
        summary["claims"] = [c.to_dict() for c in self.check_claims(summary)]
        return summary

    @staticmethod
    def check_claims(summary: dict) -> list[ClaimResult]:
        un = summary["arms"]["unguided"]["test_acc"]["mean"]
        pre = [
            baseline_learned(un, chance=summary["chance_pct"], name="unguided FCN"),
            no_divergence(summary["diverged_members"]),
            None if summary["pairs"] else "no seed finished both arms",
        ]

        def check():
            g = [p["guided"] for p in summary["pairs"]]
            u = [p["unguided"] for p in summary["pairs"]]
            diff, lo, hi = paired_difference_ci(g, u)
            wins = sum(a > b for a, b in zip(g, u, strict=True))
            need = math.ceil(WIN_FRACTION * summary["seeds"] - 1e-9)
            per = ", ".join(f"{a - b:+.2f}" for a, b in zip(g, u, strict=True))
            detail = (
                f"guided {_pm(*mean_std(g), 2)}% vs unguided {_pm(*mean_std(u), 2)}% test "
                f"accuracy; paired difference {diff:+.2f} pts (90% CI {lo:+.2f} to {hi:+.2f}); "
                f"per seed {per}; guided wins {wins} of {len(g)} (needed > 0 on the mean and "
                f">= {need} wins)"
            )
            return (
                diff > 0 and wins >= need,
                detail,
                {
                    "mean_difference": diff,
                    "ci_low": lo,
                    "ci_high": hi,
                    "wins": wins,
                    "needed_wins": need,
                },
            )

        return [
            judge(
                "guided-beats-unguided",
                QUOTE,
                f"guided test accuracy > unguided on the paired seed mean and on >= "
                f"{WIN_FRACTION:.0%} of the seeds",
                pre,
                check,
            )
        ]

    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        st = summary["setup"]
        arms = summary["arms"]
        rows = [
            [
                a,
                _pm(arms[a]["train_acc"]["mean"], arms[a]["train_acc"]["std"], 2),
                _pm(arms[a]["test_acc"]["mean"], arms[a]["test_acc"]["std"], 2),
                _pm(arms[a]["best_test_acc"]["mean"], arms[a]["best_test_acc"]["std"], 2),
                " / ".join(f"{c:.3f}" for c in arms[a]["cka"]) or "n/a",
            ]
            for a in ("unguided", "guided")
        ]
        per = [
            [
                str(p["seed"]),
                f"{p['unguided']:.2f}",
                f"{p['guided']:.2f}",
                f"{p['guided'] - p['unguided']:+.2f}",
            ]
            for p in summary["pairs"]
        ]
        return [
            (
                f"FCN 64-{st['hidden']}x3-10 on {st['n_train']} digits, {st['epochs']} Adam "
                f"epochs (mean ± std over seeds); CKA: linear CKA with the random CNN guide "
                f"per layer pair on the test digits",
                ["arm", "train acc", "test acc (end)", "test acc (early stop)", "CKA per pair"],
                rows,
            ),
            ("Per seed: test accuracy % at the end", ["seed", "unguided", "guided", "diff"], per),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 4))
        for p in summary["pairs"]:
            ax.plot([0, 1], [p["unguided"], p["guided"]], "o-", color="grey", alpha=0.7)
        for i, a in enumerate(("unguided", "guided")):
            m = summary["arms"][a]["test_acc"]
            ax.errorbar([i], [m["mean"]], yerr=[m["std"]], fmt="s", color="C3", capsize=4)
        ax.set_xticks([0, 1], ["unguided", "guided"])
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("FCN guided by a random CNN (paired seeds)")
        ax.grid(alpha=0.3)
        return [Figure("guidance.png", "Guided vs unguided test accuracy", figure_png(fig))]
