"""Recipe ``neural-collapse``: Dang, Tran, Osher, Tran-The, Ho & Nguyen (2023), "Neural
Collapse in Deep Linear Networks: From Balanced to Imbalanced Data" (row [#73]); metrics
of Papyan, Han & Donoho (2020) (:mod:`weightlab.probes.collapse`).

Model: an MLP backbone ``64 → h → h`` (ReLU, with biases) followed by 3 bias-free linear
layers ``h → h → h → 10`` (the paper's deep linear head; ``head.0``–``head.2``). The
features are the input of the last layer ``head.2``, whose weight is the classifier.
Data: scikit-learn digits (fixed split). Four arms, each trained as one population of
``seeds`` members (SGD with momentum 0.9, weight decay, batch 128, ``steps`` steps):

- ``mse-balanced`` and ``ce-balanced``: the training split cut to the smallest class's
  size in every class;
- ``mse-imbalanced`` and ``ce-imbalanced``: class ``c`` keeps ``round(n_min ·
  ratio^{c/9})`` examples (``ratio`` = 0.1: 10× between the largest and the smallest).

Weight decay differs by loss (fixed in code): ``WD_CE`` = 5e-3 for cross-entropy,
``WD_MSE`` = 5e-4 for MSE (at 5e-3 the imbalanced MSE networks stopped fitting: 43% train
accuracy in a trial run). NC1 is measured after the first epoch (a snapshot) and at the
end, on the training split.

Claims (thresholds fixed below):

- ``nc1``: in every arm NC1 at the end is ≤ 1/10 of its value after the first epoch
  (seed means);
- ``etf``: balanced arms: the mean pairwise cosine of the centred class means is within
  0.05 of ``−1/(K−1)`` (seed means);
- ``orthogonal``: ``mse-imbalanced``: the uncentred class means are nearly orthogonal
  (mean ``|cos|`` ≤ 0.1) with norms rising with class size (Spearman ≥ 0.8), seed means.

Preconditions: the terminal phase of training was reached (every member of the arms a
claim reads has train accuracy ≥ 99%), the networks learned (test accuracy ≥ chance +
10 points) and nothing diverged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate, no_divergence
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator

QUOTE_NC1 = "the last-layer features collapse to their class-means"
QUOTE_ETF = "those class-means are the vertices of a simplex Equiangular Tight Frame (ETF)"
QUOTE_ORTH = (
    "convergence of the last-layer features and classifiers to a geometry consisting of "
    "orthogonal vectors, whose lengths depend on the amount of data in their corresponding "
    "classes"
)
NC1_FACTOR = 10.0  # NC1 falls >= 10x from its value after the first epoch
ETF_TOL = 0.05  # balanced: mean cosine within 0.05 of -1/(K-1)
ORTH_MAX_ABS_COS = 0.1  # imbalanced MSE: mean |cos| <= 0.1
NORM_SPEARMAN = 0.8  # imbalanced MSE: Spearman(norm, class size) >= 0.8
TPT_TRAIN_ACC = 99.0  # terminal phase of training: train accuracy >= 99%
WD_CE, WD_MSE = 5e-3, 5e-4
BATCH = 128
ARMS = ("mse-balanced", "ce-balanced", "mse-imbalanced", "ce-imbalanced")


class CollapseNet(nn.Module):
    """MLP backbone ``d → h → h`` (ReLU) + 3 bias-free linear layers ``h → h → h → k``."""

    def __init__(self, d: int, h: int, k: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.head = nn.Sequential(
            nn.Linear(h, h, bias=False), nn.Linear(h, h, bias=False), nn.Linear(h, k, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def class_subset(y: torch.Tensor, k: int, ratio: float, seed: int) -> torch.Tensor:
    """Indices keeping ``round(n_min · ratio^{c/(k−1)})`` examples of class ``c`` (``ratio``
    1: balanced at the smallest class's size), drawn from ``seed``."""
    g = generator(seed)
    n_min = int(torch.bincount(y, minlength=k).min())
    out = []
    for c in range(k):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        out.append(idx[: max(1, round(n_min * ratio ** (c / (k - 1))))])
    return torch.cat(out).sort().values


@dataclass(frozen=True)
class NeuralCollapseConfig(RecipeConfig):
    data: str = opt("digits", "task: scikit-learn digits (10 classes)")
    hidden: int = opt(64, "width h of the backbone and the linear head", min=2, max=4096)
    steps: int = opt(3000, "SGD steps per arm (batch 128)", min=1, max=10**7)
    lr: float = opt(0.05, "SGD learning rate (momentum 0.9)", gt=0, max=10)
    ratio: float = opt(0.1, "imbalanced arms: smallest / largest class size", gt=0, max=1)


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"arm": str, "members": list}, "the metrics")
    numt = (int, float, type(None))
    expect_list_of(
        metrics["members"],
        {
            "seed": int,
            "diverged": bool,
            "train_acc": numt,
            "test_acc": numt,
            "nc1_first": numt,
            "final": dict,
            "frame": dict,
        },
        "members",
    )


class NeuralCollapse(Recipe):
    name = "neural-collapse"
    family = "probes"
    row = 73
    paper = (
        "Dang et al. 2023, Neural Collapse in Deep Linear Networks: From Balanced to "
        "Imbalanced Data; metrics of Papyan, Han & Donoho 2020"
    )
    claim = (
        "NC1 falls >= 10x; balanced class means form a simplex ETF; imbalanced MSE class "
        "means are orthogonal with norms rising with class size"
    )
    Config = NeuralCollapseConfig
    # a sweep over these runs side by side and merges their train_members calls
    member_fields = ("lr", "seeds")
    tasks = ("digits",)
    kinds = ("classification",)
    smoke: ClassVar[dict] = {"seeds": 2, "steps": 30, "hidden": 16}
    broken: ClassVar[dict] = {"lr": 10.0, "steps": 10}
    # measured in-process, one thread: 1.44 s CPU after imports; wall 5.9 s on the loaded 2-core machine (load 12)
    smoke_seconds = 3.0

    def validate(self, cfg: NeuralCollapseConfig, data_sizes: dict[str, int]) -> None:
        data = self.load_data(cfg)
        if len(data.input_shape) != 1:
            raise ConfigError(f"--data {cfg.data}: this recipe's MLP needs flat feature vectors")
        idx = class_subset(data.train.y, data.num_classes, cfg.ratio, 0)
        if len(idx) < BATCH:
            raise ConfigError(
                f"the imbalanced training set has {len(idx)} examples, fewer than a batch of "
                f"{BATCH}; raise --ratio"
            )

    def run(self, cfg: NeuralCollapseConfig, rd: RunDir, progress: bool = False) -> dict:
        data = self.load_data(cfg)
        records = []
        for arm in ARMS:
            metrics, _ = rd.unit(
                f"arm-{arm}", lambda arm=arm: self._arm(cfg, data, arm, progress), _check_unit
            )
            records += [{"arm": arm, **m} for m in metrics["members"]]
        return self.summarize(cfg, records, 100 * majority_rate(data.test.y), data.num_classes)

    def _arm(self, cfg: NeuralCollapseConfig, data: TaskData, arm: str, progress: bool):
        from weightlab.models.factory import model_factory
        from weightlab.population import MemberSpec
        from weightlab.probes.collapse import classifier_inputs, collapse_probe, orthogonal_frame
        from weightlab.recipes.members import train_members
        from weightlab.train.config import OptimConfig, TrainConfig
        from weightlab.train.order import steps_per_epoch

        loss, balance = arm.split("-")
        k = data.num_classes
        idx = class_subset(
            data.train.y,
            k,
            1.0 if balance == "balanced" else cfg.ratio,
            derive_seed(self.name, balance),
        )
        train = Split(data.train.x[idx], data.train.y[idx])
        task = TaskData(data.name, train, data.val, data.test, k)
        spe = steps_per_epoch(len(train), BATCH)
        epochs = max(1, -(-cfg.steps // spe))
        wd = WD_MSE if loss == "mse" else WD_CE
        optim = OptimConfig("sgd", lr=cfg.lr, momentum=0.9, weight_decay=wd)
        train_cfg = TrainConfig(
            epochs, BATCH, epochs * spe, optim, loss="mse" if loss == "mse" else "cross_entropy"
        )
        factory = model_factory(CollapseNet, data.input_shape[0], cfg.hidden, k)
        specs = [
            MemberSpec(
                seed=derive_seed(self.name, "init", s), data_seed=derive_seed(self.name, "order", s)
            )
            for s in range(cfg.seeds)
        ]
        results, finals = train_members(
            factory,
            specs,
            task,
            train_cfg,
            device=cfg.device,
            snapshot_steps=(spe,),
            progress=progress,
        )
        model = factory(0).to(cfg.device)
        members = []
        for s, (res, final) in enumerate(zip(results, finals, strict=True)):
            finite = all(torch.isfinite(v).all() for v in final.values())
            rec = {
                "seed": s,
                "diverged": bool(res.diverged or not finite),
                "train_acc": None,
                "test_acc": None,
                "nc1_first": None,
                "final": {},
                "frame": {},
            }
            if rec["diverged"]:
                members.append(rec)
                continue
            model.load_state_dict(res.snapshots[spe])
            first = collapse_probe(model, train.x, train.y, "head.2")
            model.load_state_dict(final)
            last = collapse_probe(model, train.x, train.y, "head.2")
            frame = orthogonal_frame(
                classifier_inputs(model, train.x, "head.2"), train.y, name="head.2"
            )
            with torch.no_grad():
                acc = float((model(train.x).argmax(1) == train.y).double().mean())
            rec.update(
                train_acc=100 * acc,
                test_acc=100 * float(res.final.test_acc),
                nc1_first=first.nc1,
                final=last.to_dict(),
                frame=frame.to_dict(),
            )
            members.append(rec)
        return {"arm": arm, "members": members}, {}

    # -- summary and claims -----------------------------------------------------------
    def summarize(self, cfg, records: list[dict], chance: float, k: int) -> dict:
        arms = {}
        for arm in ARMS:
            ms = [r for r in records if r["arm"] == arm]
            kept = [r for r in ms if not r["diverged"]]

            def stat(f, kept=kept):
                m, sd = mean_std([f(r) for r in kept])
                return {"mean": m, "std": sd}

            arms[arm] = {
                "n": len(kept),
                "train_acc": stat(lambda r: r["train_acc"]),
                "train_acc_min": min((r["train_acc"] for r in kept), default=None),
                "test_acc": stat(lambda r: r["test_acc"]),
                "nc1_first": stat(lambda r: r["nc1_first"]),
                "nc1_final": stat(lambda r: r["final"]["nc1"]),
                "cos_mean": stat(lambda r: r["final"]["cos_mean"]),
                "equinorm": stat(lambda r: r["final"]["equinorm"]),
                "etf_distance": stat(lambda r: r["final"]["etf_distance"]),
                "nc3": stat(lambda r: r["final"]["nc3"]),
                "nc4": stat(lambda r: r["final"]["nc4"]),
                "abs_cos": stat(lambda r: r["frame"]["abs_cos_mean"]),
                "frame_distance": stat(lambda r: r["frame"]["frame_distance"]),
                "spearman": stat(lambda r: r["frame"]["norm_size_spearman"]),
                "class_sizes": kept[0]["frame"]["class_sizes"] if kept else [],
                "norms": [mean_std([r["frame"]["norms"][c] for r in kept])[0] for c in range(k)]
                if kept
                else [],
                "diverged": [f"{arm} seed {r['seed']}" for r in ms if r["diverged"]],
            }
        summary = {
            "recipe": self.name,
            "paper": self.paper,
            "arms": arms,
            "etf_cosine": -1.0 / (k - 1),
            "chance_pct": chance,
            "members": len(records),
            "diverged_members": [d for a in arms.values() for d in a["diverged"]],
            "setup": {
                "hidden": cfg.hidden,
                "steps": cfg.steps,
                "lr": cfg.lr,
                "ratio": cfg.ratio,
                "wd_ce": WD_CE,
                "wd_mse": WD_MSE,
                "batch": BATCH,
            },
        }
        summary["claims"] = [c.to_dict() for c in self.check_claims(summary)]
        return summary

    @staticmethod
    def _pre(summary: dict, arms: tuple[str, ...]) -> list[str | None]:
        out = []
        for a in arms:
            s = summary["arms"][a]
            out.append(no_divergence(s["diverged"]))
            out.append(
                baseline_learned(s["test_acc"]["mean"], chance=summary["chance_pct"], name=a)
            )
            lo = s["train_acc_min"]
            if lo is None or lo < TPT_TRAIN_ACC:
                out.append(
                    f"{a} did not reach the terminal phase (lowest train accuracy "
                    f"{_num(lo):.1f}% < {TPT_TRAIN_ACC:g}%)"
                )
        return out

    @classmethod
    def check_claims(cls, summary: dict) -> list[ClaimResult]:
        arms = summary["arms"]
        etf = summary["etf_cosine"]

        def check_nc1():
            ratios = {
                a: _num(arms[a]["nc1_first"]["mean"]) / _num(arms[a]["nc1_final"]["mean"])
                for a in ARMS
            }
            detail = (
                "; ".join(
                    f"{a}: NC1 {_num(arms[a]['nc1_first']['mean']):.3g} after epoch 1 -> "
                    f"{_num(arms[a]['nc1_final']['mean']):.3g} ({ratios[a]:.1f}x)"
                    for a in ARMS
                )
                + f"; needed >= {NC1_FACTOR:g}x in every arm"
            )
            return all(r >= NC1_FACTOR for r in ratios.values()), detail, {"ratios": ratios}

        bal = ("mse-balanced", "ce-balanced")

        def check_etf():
            gaps = {a: abs(_num(arms[a]["cos_mean"]["mean"]) - etf) for a in bal}
            detail = (
                "; ".join(
                    f"{a}: mean cosine {_pm(arms[a]['cos_mean']['mean'], arms[a]['cos_mean']['std'], 3)}"
                    f" (gap {gaps[a]:.3f})"
                    for a in bal
                )
                + f"; ETF value {etf:.3f}, needed gap <= {ETF_TOL:g}"
            )
            return all(g <= ETF_TOL for g in gaps.values()), detail, {"gaps": gaps}

        def check_orth():
            s = arms["mse-imbalanced"]
            ac, rho = _num(s["abs_cos"]["mean"]), _num(s["spearman"]["mean"])
            detail = (
                f"mse-imbalanced: mean |cos| of class means {_pm(ac, s['abs_cos']['std'], 3)} "
                f"(needed <= {ORTH_MAX_ABS_COS:g}); Spearman(norm, class size) "
                f"{_pm(rho, s['spearman']['std'], 2)} (needed >= {NORM_SPEARMAN:g})"
            )
            return (
                ac <= ORTH_MAX_ABS_COS and rho >= NORM_SPEARMAN,
                detail,
                {"abs_cos": ac, "spearman": rho},
            )

        return [
            judge(
                "nc1",
                QUOTE_NC1,
                f"NC1 at the end <= 1/{NC1_FACTOR:g} of NC1 after the first "
                "epoch, in every arm (seed means)",
                cls._pre(summary, ARMS),
                check_nc1,
            ),
            judge(
                "etf",
                QUOTE_ETF,
                f"balanced arms: mean pairwise cosine of centred class means "
                f"within {ETF_TOL:g} of -1/(K-1)",
                cls._pre(summary, bal),
                check_etf,
            ),
            judge(
                "orthogonal",
                QUOTE_ORTH,
                f"imbalanced MSE: mean |cos| of class means <= "
                f"{ORTH_MAX_ABS_COS:g} and Spearman(norm, class size) >= {NORM_SPEARMAN:g}",
                cls._pre(summary, ("mse-imbalanced",)),
                check_orth,
            ),
        ]

    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        st = summary["setup"]
        rows = []
        for a, s in summary["arms"].items():
            rows.append(
                [
                    a,
                    _pm(s["train_acc"]["mean"], s["train_acc"]["std"], 1),
                    _pm(s["test_acc"]["mean"], s["test_acc"]["std"], 1),
                    _pm(s["nc1_first"]["mean"], s["nc1_first"]["std"], 3),
                    _pm(s["nc1_final"]["mean"], s["nc1_final"]["std"], 3),
                    _pm(s["cos_mean"]["mean"], s["cos_mean"]["std"], 3),
                    _pm(s["equinorm"]["mean"], s["equinorm"]["std"], 3),
                    _pm(s["nc3"]["mean"], s["nc3"]["std"], 3),
                    _pm(s["nc4"]["mean"], s["nc4"]["std"], 3),
                    _pm(s["abs_cos"]["mean"], s["abs_cos"]["std"], 3),
                    _pm(s["spearman"]["mean"], s["spearman"]["std"], 2),
                ]
            )
        return [
            (
                f"Neural-collapse metrics at the end of training (mean ± std over seeds; hidden "
                f"{st['hidden']}, {st['steps']} SGD steps, lr {st['lr']:g}, weight decay CE "
                f"{st['wd_ce']:g} / MSE {st['wd_mse']:g}; ETF cosine {summary['etf_cosine']:.3f})",
                [
                    "arm",
                    "train acc",
                    "test acc",
                    "NC1 epoch 1",
                    "NC1 end",
                    "cos (centred)",
                    "equinorm",
                    "NC3",
                    "NC4",
                    "|cos| (uncentred)",
                    "Spearman norm~size",
                ],
                rows,
            )
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        arms = summary["arms"]
        xs = range(len(ARMS))
        axes[0].bar(
            [x - 0.2 for x in xs],
            [_num(arms[a]["nc1_first"]["mean"]) for a in ARMS],
            0.4,
            label="after epoch 1",
        )
        axes[0].bar(
            [x + 0.2 for x in xs],
            [_num(arms[a]["nc1_final"]["mean"]) for a in ARMS],
            0.4,
            label="end",
        )
        axes[0].set_yscale("log")
        axes[0].set_xticks(list(xs), ARMS, rotation=20, fontsize=8)
        axes[0].set_ylabel("NC1 = tr(Σ_W Σ_B⁺)/K")
        axes[0].legend()
        for a in ("mse-imbalanced", "ce-imbalanced"):
            s = arms[a]
            if s["norms"]:
                axes[1].plot(s["class_sizes"], s["norms"], "o-", label=a)
        axes[1].set_xlabel("class size")
        axes[1].set_ylabel("class-mean norm (seed mean)")
        axes[1].legend()
        axes[1].grid(alpha=0.3)
        fig.suptitle("Neural collapse on digits")
        return [
            Figure("neural_collapse.png", "NC1 and imbalanced class-mean norms", figure_png(fig))
        ]
