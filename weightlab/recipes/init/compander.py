"""Recipe ``compander``: Cakaj, Mehnert & Yang (2023), "Weight Compander: A Simple Weight
Reparameterization for Regularization" (row [#43]).

An MLP 64-128-128-10 on sklearn digits with only the first 300 training examples (the
overfitting regime; validation and test splits unchanged), trained with Adam and L2
weight decay, with and without the weight compander (:mod:`weightlab.init.compander`,
``w = f(v)`` on every Linear weight, attached at init so both arms start from the same
function); 5 seeds. Reported per arm: test accuracy at the early-stopping evaluation
(minimum validation loss) and the share of near-zero effective weights at the end,
``|w| < 0.1 · std(w₀)`` per tensor (the compander expands small weights away from zero by
design, so its share is reported, not judged).

Members train in the single-model loop (``engine="loop"``): the compander is a
parametrization with its own state, which the population engines do not stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.core.selectors import Selector
from weightlab.core.snapshots import restore_snapshot
from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.init.compander import attach_compander
from weightlab.models import build
from weightlab.models.mlp import MLP
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate, no_divergence
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.recipes.units import seed_units
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed
from weightlab.train.config import OptimConfig, TrainConfig

ARMS = ("wd", "wd+wc")
QUOTE = (
    "using weight compander in addition to standard regularization methods improves the "
    "performance of neural networks"
)
NEAR_ZERO_REL = 0.1  # near zero: |w| < 0.1 * std of the tensor's initial weights


@dataclass(frozen=True)
class CompanderConfig(RecipeConfig):
    data: str = opt("digits", "task: a flat-feature classification task")
    seeds: int = opt(5, "number of independent seeds (error bars are over seeds)", min=1, max=1000)
    n_train: int = opt(300, "training examples kept (the first n of the train split)", min=1)
    hidden: int = opt(128, "width of the two hidden layers", min=1, max=8192)
    lr: float = opt(1e-3, "Adam learning rate", gt=0, max=10)
    weight_decay: float = opt(1e-3, "L2 weight decay (both arms)", min=0)
    mu: float = opt(10.0, "compander mu (slope at 0 is mu / ln(1 + mu))", gt=0, max=1e6)
    knee: float = opt(2.0, "compander knee B in units of the init std of each weight", gt=0)
    epochs: int = opt(150, "training epochs", min=1, max=100000)
    batch_size: int = opt(50, "batch size", min=1)


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"seed": int, "members": list}, "the metrics")
    expect_list_of(
        metrics["members"],
        {
            "arm": str,
            "seed": int,
            "near_zero": (int, float),
            "diverged": bool,
            "test_acc": (int, float, type(None)),
            "train_acc": (int, float, type(None)),
            "history": list,
        },
        "members",
    )


def subset_train(data: TaskData, n: int) -> TaskData:
    """``data`` with only the first ``n`` training examples."""
    train = Split(data.train.x[:n], data.train.y[:n])
    return TaskData(data.name, train, data.val, data.test, data.num_classes, data.kind)


class CompanderRecipe(Recipe):
    name = "compander"
    family = "init"
    row = 43
    paper = (
        "Cakaj, Mehnert & Yang 2023, Weight Compander: A Simple Weight Reparameterization "
        "for Regularization (arXiv:2306.16993)"
    )
    claim = "weight compander on top of weight decay does not lower mean test accuracy"
    Config = CompanderConfig
    tasks = ("digits", "mnist1d", "wine", "breast_cancer")
    smoke: ClassVar[dict] = {"seeds": 2, "epochs": 2, "hidden": 16}
    broken: ClassVar[dict] = {"lr": 10.0, "epochs": 1}
    smoke_seconds = 0.5  # CPU, measured warm in-process (2 cores shared by ~8 jobs)

    def validate(self, cfg: CompanderConfig, data_sizes: dict[str, int]) -> None:
        """``n_train`` and the batch fit the training split."""
        if cfg.n_train > data_sizes["train"]:
            raise ConfigError(
                f"--n-train {cfg.n_train} exceeds the {data_sizes['train']} training examples"
            )
        if cfg.batch_size > cfg.n_train:
            raise ConfigError(f"--batch-size {cfg.batch_size} exceeds --n-train {cfg.n_train}")

    def _factory(self, cfg: CompanderConfig, data: TaskData, arm: str):
        if len(data.input_shape) != 1:
            raise ConfigError(f"--data {cfg.data}: this recipe's MLP needs flat feature vectors")
        widths = [data.input_shape[0], cfg.hidden, cfg.hidden, data.num_classes]

        def factory(seed: int):
            model = build(MLP, widths, seed=seed, init="kaiming_uniform")
            if arm == "wd+wc":
                attach_compander(model, Selector(), mu=cfg.mu, knee=cfg.knee)
            return model

        return factory

    def run(self, cfg: CompanderConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec
        from weightlab.recipes.members import train_members

        data = subset_train(self.load_data(cfg), cfg.n_train)
        train_cfg = TrainConfig(
            cfg.epochs,
            cfg.batch_size,
            0,
            OptimConfig("adam", lr=cfg.lr, weight_decay=cfg.weight_decay),
        )

        def compute(s: int):
            out = []
            seed = derive_seed(self.name, "init", s)
            for arm in ARMS:
                factory = self._factory(cfg, data, arm)
                init = factory(seed)
                stds = {
                    n: float(m.weight.detach().std())
                    for n, m in init.named_modules()
                    if isinstance(m, torch.nn.Linear)
                }
                results, finals = train_members(
                    factory,
                    [MemberSpec(seed=seed)],
                    data,
                    train_cfg,
                    engine="loop",
                    device=cfg.device,
                    data_seed=derive_seed(self.name, "data", s),
                )
                res = results[0]
                model = restore_snapshot(factory(seed), finals[0])
                zero = sum(
                    int((m.weight.detach().abs() < NEAR_ZERO_REL * stds[n]).sum())
                    for n, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear)
                )
                total = sum(
                    m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)
                )
                with torch.no_grad():
                    train_acc = float(
                        (model(data.train.x).argmax(1) == data.train.y).double().mean()
                    )
                out.append(
                    {
                        "arm": arm,
                        "seed": s,
                        "near_zero": zero / total,
                        **res.to_dict(),
                        "test_acc": res.best.test_acc,
                        "train_acc": train_acc,
                    }
                )
            return {"seed": s, "members": out}, {}

        records = seed_units(rd, self.name, cfg.seeds, compute, _check_unit, progress)
        return self.summarize(cfg, records, chance=100 * majority_rate(data.test.y))

    def summarize(self, cfg: CompanderConfig, records: list[dict], chance: float) -> dict:
        rows = []
        for arm in ARMS:
            ms = sorted((m for m in records if m["arm"] == arm), key=lambda m: m["seed"])
            kept = [m for m in ms if not m["diverged"]]
            acc = [100 * m["test_acc"] if m["test_acc"] is not None else None for m in kept]
            zero = [100 * m["near_zero"] for m in kept]
            tr = [100 * m["train_acc"] for m in kept]
            rows.append(
                {
                    "arm": arm,
                    "test_acc_mean": mean_std(acc)[0],
                    "test_acc_std": mean_std(acc)[1],
                    "test_acc_values": acc,
                    "final_train_acc_mean": mean_std(tr)[0],
                    "near_zero_pct_mean": mean_std(zero)[0],
                    "near_zero_pct_std": mean_std(zero)[1],
                    "early_stop_mean": mean_std([m["early_stop_step"] for m in kept])[0],
                    "diverged": len(ms) - len(kept),
                    "excluded": [f"{arm} seed {m['seed']}" for m in ms if m["diverged"]],
                    "n": len(kept),
                }
            )
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "claims": [c.to_dict() for c in self.check_claims(rows, chance)],
            "chance_pct": chance,
            "members": len(records),
            "diverged_members": [n for r in rows for n in r["excluded"]],
            "n_train": cfg.n_train,
            "accuracy": "test accuracy (%) at the early-stopping evaluation (minimum validation loss)",
            "near_zero": f"share of final effective weights with |w| < {NEAR_ZERO_REL:g} x "
            "std of the tensor's initial weights (reported, not judged)",
        }

    @staticmethod
    def check_claims(rows: list[dict], chance: float) -> list[ClaimResult]:
        """WC + WD mean test accuracy >= WD alone; needs WD to have learned and no
        diverged member."""
        by = {r["arm"]: r for r in rows}
        wd, wc = by["wd"], by["wd+wc"]

        def check():
            diff = wc["test_acc_mean"] - wd["test_acc_mean"]
            detail = (
                f"test accuracy WD+WC {wc['test_acc_mean']:.2f}% vs WD {wd['test_acc_mean']:.2f}% "
                f"({diff:+.2f} pts; needed >= 0); near-zero weights "
                f"{wc['near_zero_pct_mean']:.2f}% vs {wd['near_zero_pct_mean']:.2f}%"
            )
            return diff >= 0, detail, {"diff_pts": diff}

        return [
            judge(
                "a",
                QUOTE,
                "with weight decay, adding the weight compander gives a mean test accuracy "
                ">= weight decay alone (means over seeds)",
                [
                    baseline_learned(wd["test_acc_mean"], chance=chance, name="weight-decay"),
                    no_divergence(wd["excluded"] + wc["excluded"]),
                ],
                check,
            )
        ]

    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        header = ["arm", "test acc %", "final train acc %", "near-zero weights %", "n"]
        rows = [
            [
                r["arm"],
                _pm(r["test_acc_mean"], r["test_acc_std"], 2),
                f"{r['final_train_acc_mean']:.1f}",
                _pm(r["near_zero_pct_mean"], r["near_zero_pct_std"], 2),
                str(r["n"]) + (f" ({r['diverged']} diverged)" if r["diverged"] else ""),
            ]
            for r in summary["rows"]
        ]
        return [
            (
                f"Weight decay ± weight compander, {summary['n_train']} training examples "
                "(mean ± std over seeds)",
                header,
                rows,
            )
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = summary["rows"]
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
        names = [r["arm"] for r in rows]
        colors = ["tab:gray", "tab:green"]
        axes[0].bar(
            names,
            [_num(r["test_acc_mean"]) for r in rows],
            yerr=[_num(r["test_acc_std"]) for r in rows],
            color=colors,
            capsize=4,
        )
        for i, r in enumerate(rows):
            axes[0].scatter([i] * len(r["test_acc_values"]), r["test_acc_values"], color="k", s=8)
        axes[0].set_ylabel("test accuracy at early stop (%)")
        axes[1].bar(
            names,
            [_num(r["near_zero_pct_mean"]) for r in rows],
            yerr=[_num(r["near_zero_pct_std"]) for r in rows],
            color=colors,
            capsize=4,
        )
        axes[1].set_ylabel(f"weights with |w| < {NEAR_ZERO_REL:g} std(w0) (%)")
        fig.suptitle("Weight compander on top of weight decay")
        png = figure_png(fig)
        return [Figure("compander.png", "Accuracy and near-zero weights", png)]
