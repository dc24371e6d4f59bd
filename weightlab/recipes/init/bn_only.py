"""Recipe ``bn-only``: Frankle, Schwab & Morcos (2021), "Training BatchNorm and Only
BatchNorm: On the Expressive Power of Random Features in CNNs" (ICLR; row [#2]).

A CNN of 3 conv-BN-ReLU blocks (:class:`weightlab.models.convnets.SmallCNN`, channels
32-64-128, a 2x2 max-pool before blocks 2 and 3, global average pooling, linear
classifier) on sklearn's 8x8 digits, all weights at their random init (Kaiming uniform).
Three arms per seed, one Adam configuration:

- (a) ``bn``: only the BatchNorm affine parameters γ, β train (every other parameter has
  ``lr_mult = 0`` through a :class:`~weightlab.train.ParamGroup`);
- (b) ``random``: as many randomly chosen conv-weight entries as (a) has BN parameters
  train, everything else frozen (BN at γ = 1, β = 0): a :class:`RandomSubset` transform
  ``W = where(M, V, W₀)`` passes gradient to the chosen entries only;
- (c) ``all``: everything trains.

The output layer is frozen in (a) and (b). Reported: test accuracy at the
early-stopping evaluation (minimum validation loss), and in (a) the share of γ that ends
with ``|γ| < 0.05 · mean|γ₀|`` ("disabled" features; the paper's figure is about a third
at scale). Members train in the single-model loop (``engine="loop"``): arm (b)'s
transform and BatchNorm's running statistics are not stacked by the population engines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from weightlab.core.transforms import Transform, attach
from weightlab.errors import ConfigError
from weightlab.models import build
from weightlab.models.convnets import SmallCNN
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import (
    LATE_FRACTION,
    judge,
    majority_rate,
    no_divergence,
    still_improving,
)
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.recipes.units import seed_units
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator
from weightlab.train.config import OptimConfig, ParamGroup, TrainConfig

ARMS = ("bn", "random", "all")
QUOTE_ACC = (
    "sufficiently deep ResNets reach 82% (CIFAR-10) and 32% (ImageNet, top-5) accuracy in "
    "this configuration, far higher than when training an equivalent number of randomly "
    "chosen parameters elsewhere in the network"
)
QUOTE_GAMMA = "naturally learning to disable around a third of the random features"
# Fixed thresholds (from the issue).
BN_ABOVE_CHANCE_PTS = 20.0  # (a) BN-only >= chance + 20 pt ...
BEATS_RANDOM_PTS = 5.0  # ... and beats (b) by > 5 pt (proposal)
ALL_ABOVE_CHANCE_PTS = 30.0  # precondition: (c) >= chance + 30 pt
GAMMA_REL = 0.05  # |γ| < 0.05 · mean|γ0| counts as disabled
GAMMA_SHARE = 0.10  # >= 10% of γ disabled


class DigitsCNN(nn.Module):
    """:class:`SmallCNN` on flat 8x8 images: reshapes ``(B, 64)`` to ``(B, 1, 8, 8)``."""

    def __init__(self, channels: Sequence[int] = (32, 64, 128), num_classes: int = 10) -> None:
        super().__init__()
        self.net = SmallCNN(1, channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, 1, 8, 8))


class RandomSubset(Transform):
    """``W = where(mask, V, W₀)``: only the masked entries of the stored ``V`` reach the
    network (and receive gradient); the rest stay at ``W₀``, the weight at attach."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.bool())
        self.register_buffer("frozen", torch.zeros(mask.shape))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, v, self.frozen.to(v.dtype))

    @torch.no_grad()
    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        self.frozen.copy_(w)
        return w


def bn_names(model: nn.Module) -> list[str]:
    """Plain names of every BatchNorm affine parameter (γ then β per layer)."""
    return [
        f"{n}.{a}"
        for n, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for a in ("weight", "bias")
    ]


def conv_weight_names(model: nn.Module) -> list[str]:
    return [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def random_subset_masks(model: nn.Module, k: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """``k`` entries chosen uniformly among all conv weights, as per-tensor masks."""
    names = conv_weight_names(model)
    shapes = [model.get_submodule(n.rpartition(".")[0]).weight.shape for n in names]
    sizes = [s.numel() for s in shapes]
    total = sum(sizes)
    if k > total:
        raise ConfigError(f"cannot pick {k} random weights out of {total}")
    flat = torch.zeros(total, dtype=torch.bool)
    flat[torch.randperm(total, generator=g)[:k]] = True
    out, start = {}, 0
    for n, s, size in zip(names, shapes, sizes, strict=True):
        out[n] = flat[start : start + size].reshape(s)
        start += size
    return out


@dataclass(frozen=True)
class BNOnlyConfig(RecipeConfig):
    data: str = opt("digits", "task: 8x8 digits (64 flat features)")
    seeds: int = opt(5, "number of independent seeds (error bars are over seeds)", min=1, max=1000)
    channels: str = opt("32,64,128", "channels of the 3 conv-BN-ReLU blocks")
    lr: float = opt(1e-2, "Adam learning rate (every arm)", gt=0, max=10)
    epochs: int = opt(30, "training epochs", min=1, max=100000)
    batch_size: int = opt(64, "batch size", min=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            cs = [int(c) for c in self.channels.split(",")]
        except ValueError:
            raise ConfigError(
                f"--channels must be comma-separated integers like 32,64,128; got {self.channels!r}"
            ) from None
        if len(cs) != 3 or any(c <= 0 for c in cs):
            raise ConfigError(f"--channels must be 3 positive integers; got {self.channels!r}")

    @property
    def channel_values(self) -> list[int]:
        return [int(c) for c in self.channels.split(",")]


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"seed": int, "members": list}, "the metrics")
    expect_list_of(
        metrics["members"],
        {
            "arm": str,
            "seed": int,
            "trainable": int,
            "diverged": bool,
            "test_acc": (int, float, type(None)),
            "gamma_disabled": (int, float, type(None)),
            "history": list,
        },
        "members",
    )


class BNOnly(Recipe):
    name = "bn-only"
    family = "init"
    row = 2
    paper = (
        "Frankle, Schwab & Morcos 2021, Training BatchNorm and Only BatchNorm: On the "
        "Expressive Power of Random Features in CNNs (ICLR)"
    )
    claim = (
        "training only BatchNorm's γ, β on random features beats training as many random "
        "weights, and disables a share of the features"
    )
    Config = BNOnlyConfig
    tasks = ("digits",)
    smoke: ClassVar[dict] = {"seeds": 2, "epochs": 1, "channels": "4,8,8"}
    broken: ClassVar[dict] = {"lr": 10.0, "epochs": 1}
    smoke_seconds = 3.2  # CPU, measured warm in-process (2 cores shared by ~8 jobs)

    def validate(self, cfg: BNOnlyConfig, data_sizes: dict[str, int]) -> None:
        """The batch fits the training split; the inputs are 8x8 images."""
        if cfg.batch_size > data_sizes["train"]:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} exceeds the {data_sizes['train']} training examples"
            )
        if self.load_data(cfg).input_shape != (64,):
            raise ConfigError(
                f"--data {cfg.data}: this recipe's CNN needs 8x8 images (64 features)"
            )

    def run(self, cfg: BNOnlyConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.core.snapshots import take_snapshot
        from weightlab.population import MemberSpec
        from weightlab.recipes.members import train_members

        data = self.load_data(cfg)
        chans = cfg.channel_values

        def compute(s: int):
            seed = derive_seed(self.name, "init", s)
            probe = build(DigitsCNN, chans, data.num_classes, seed=seed, init="kaiming_uniform")
            bn = bn_names(probe)
            gamma0 = torch.cat(
                [take_snapshot(probe)[n].reshape(-1) for n in bn if n.endswith("weight")]
            )
            k = sum(take_snapshot(probe)[n].numel() for n in bn)
            masks = random_subset_masks(probe, k, generator(derive_seed(self.name, "pick", s)))
            out = []
            for arm in ARMS:

                def factory(seed, arm=arm):
                    model = build(
                        DigitsCNN, chans, data.num_classes, seed=seed, init="kaiming_uniform"
                    )
                    if arm == "random":
                        for n, m in masks.items():
                            attach(model, n, RandomSubset(m))
                    return model

                if arm == "bn":
                    groups = (ParamGroup(tuple(bn)), ParamGroup(("*",), lr_mult=0.0))
                    trainable = k
                elif arm == "random":
                    groups = (
                        ParamGroup(tuple(masks)),
                        ParamGroup(("*",), lr_mult=0.0),
                    )
                    trainable = int(sum(int(m.sum()) for m in masks.values()))
                else:
                    groups = ()
                    trainable = sum(p.numel() for p in probe.parameters())
                train_cfg = TrainConfig(
                    cfg.epochs, cfg.batch_size, 0, OptimConfig("adam", lr=cfg.lr, groups=groups)
                )
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
                disabled = None
                if arm == "bn":
                    gamma = torch.cat(
                        [finals[0][n].reshape(-1) for n in bn if n.endswith("weight")]
                    )
                    thr = GAMMA_REL * float(gamma0.abs().mean())
                    disabled = float((gamma.abs() < thr).double().mean())
                out.append(
                    {
                        "arm": arm,
                        "seed": s,
                        "trainable": trainable,
                        **res.to_dict(),
                        "test_acc": res.best.test_acc,
                        "gamma_disabled": disabled,
                    }
                )
            return {"seed": s, "members": out}, {}

        records = seed_units(rd, self.name, cfg.seeds, compute, _check_unit, progress)
        return self.summarize(cfg, records, chance=100 * majority_rate(data.test.y))

    def summarize(self, cfg: BNOnlyConfig, records: list[dict], chance: float) -> dict:
        rows = []
        for arm in ARMS:
            ms = sorted((m for m in records if m["arm"] == arm), key=lambda m: m["seed"])
            kept = [m for m in ms if not m["diverged"]]
            acc = [100 * m["test_acc"] if m["test_acc"] is not None else None for m in kept]
            dis = [100 * m["gamma_disabled"] for m in kept if m["gamma_disabled"] is not None]
            rows.append(
                {
                    "arm": arm,
                    "trainable": ms[0]["trainable"],
                    "test_acc_mean": mean_std(acc)[0],
                    "test_acc_std": mean_std(acc)[1],
                    "test_acc_values": acc,
                    "gamma_disabled_pct_mean": mean_std(dis)[0] if dis else None,
                    "gamma_disabled_pct_std": mean_std(dis)[1] if dis else None,
                    "early_stop_mean": mean_std([m["early_stop_step"] for m in kept])[0],
                    "last_step_mean": mean_std([m["last_step"] for m in kept])[0],
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
            "still_improving": still_improving(rows, lambda r: r["arm"]),
            "chance_pct": chance,
            "members": len(records),
            "diverged_members": [n for r in rows for n in r["excluded"]],
            "accuracy": "test accuracy (%) at the early-stopping evaluation (minimum validation loss)",
        }

    @staticmethod
    def check_claims(rows: list[dict], chance: float) -> list[ClaimResult]:
        """(a) BN-only >= chance + 20 pt and beats (b) by > 5 pt; (b) >= 10% of γ in (a)
        end with |γ| < 0.05 · mean|γ0|. Precondition for both: (c) >= chance + 30 pt and
        no diverged member."""
        by = {r["arm"]: r for r in rows}
        bn, rnd, full = by["bn"], by["random"], by["all"]
        need = chance + ALL_ABOVE_CHANCE_PTS
        pre = [
            None
            if full["test_acc_mean"] >= need
            else (
                f"training everything reached {full['test_acc_mean']:.1f}%, below chance + "
                f"{ALL_ABOVE_CHANCE_PTS:g} pt ({need:.1f}%)"
            ),
            no_divergence(bn["excluded"] + rnd["excluded"] + full["excluded"]),
        ]

        def check_acc():
            gap = bn["test_acc_mean"] - rnd["test_acc_mean"]
            above = bn["test_acc_mean"] - chance
            ok = above >= BN_ABOVE_CHANCE_PTS and gap > BEATS_RANDOM_PTS
            detail = (
                f"BN-only {bn['test_acc_mean']:.2f}% ({above:+.2f} pts over chance "
                f"{chance:.1f}%, needed >= {BN_ABOVE_CHANCE_PTS:g}); {rnd['trainable']} random "
                f"weights {rnd['test_acc_mean']:.2f}% (BN-only ahead by {gap:+.2f} pts, "
                f"needed > {BEATS_RANDOM_PTS:g}); everything {full['test_acc_mean']:.2f}%"
            )
            return ok, detail, {"above_chance_pts": above, "gap_to_random_pts": gap}

        def check_gamma():
            share = bn["gamma_disabled_pct_mean"]
            detail = (
                f"{share:.1f}% of γ end with |γ| < {GAMMA_REL:g}·mean|γ0| (mean over seeds); "
                f"needed >= {100 * GAMMA_SHARE:g}%"
            )
            return share >= 100 * GAMMA_SHARE, detail, {"disabled_pct": share}

        return [
            judge(
                "a",
                QUOTE_ACC,
                f"BN-only reaches >= chance + {BN_ABOVE_CHANCE_PTS:g} pt and beats an equal "
                f"count of random weights by > {BEATS_RANDOM_PTS:g} pt (proposal)",
                pre,
                check_acc,
            ),
            judge(
                "b",
                QUOTE_GAMMA,
                f">= {100 * GAMMA_SHARE:g}% of γ in BN-only training end with |γ| < "
                f"{GAMMA_REL:g}·mean|γ0|",
                pre,
                check_gamma,
            ),
        ]

    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        header = ["arm", "trainable params", "test acc %", "γ disabled %", "n"]
        rows = [
            [
                r["arm"],
                str(r["trainable"]),
                _pm(r["test_acc_mean"], r["test_acc_std"], 2),
                "-"
                if r["gamma_disabled_pct_mean"] is None
                else _pm(r["gamma_disabled_pct_mean"], r["gamma_disabled_pct_std"], 1),
                str(r["n"]) + (f" ({r['diverged']} diverged)" if r["diverged"] else ""),
            ]
            for r in summary["rows"]
        ]
        late = summary.get("still_improving", [])
        title = "BN-only vs random subset vs everything (mean ± std over seeds)"
        if late:
            title += (
                f"; still improving (early stop in the last {LATE_FRACTION:.0%} of training): "
                + ", ".join(late)
            )
        return [(title, header, rows)]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = summary["rows"]
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        ax.bar(
            [f"{r['arm']}\n({r['trainable']})" for r in rows],
            [_num(r["test_acc_mean"]) for r in rows],
            yerr=[_num(r["test_acc_std"]) for r in rows],
            color=["tab:blue", "tab:red", "tab:gray"],
            capsize=4,
        )
        ax.axhline(summary["chance_pct"], color="k", lw=0.8, ls="--", label="chance")
        ax.set_ylabel("test accuracy at early stop (%)")
        ax.legend(fontsize=8)
        ax.set_title("Training only BatchNorm on random features")
        png = figure_png(fig)
        return [Figure("bn_only.png", "Accuracy by trainable subset", png)]
