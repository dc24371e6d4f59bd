"""Recipe ``mip-hypernet``: Ortiz, Guttag & Dalca (2023), "Magnitude Invariant
Parametrizations Improve Hypernetwork Learning" (row [#71]), reduced to MNIST-1D.

A hypernetwork (hidden 64-64) maps ``γ ∈ [0, 1]`` to every weight of a target MLP
40-64-10 (ReLU). Each step draws one ``γ ~ U[0, 1]`` (a seeded stream) and trains on the
mixed objective ``L_γ = (1 − γ)·CE(y) + γ·CE(π(y))``, ``π`` a fixed class permutation, so
one hypernetwork must produce a whole family of classifiers. Two hypernetworks per seed,
on the same data order, ``γ`` stream and seeded weights:

- ``default``: raw ``γ`` input, zero output bias (the control);
- ``mip``: ``[cos(πγ/2), sin(πγ/2)]`` input and ``θ(γ) = θ₀ + head(h)`` with ``θ₀`` the
  target's initial weights (:mod:`weightlab.hyper.mip`, as in the authors' HyperLight).

Scenarios: the hypernetwork's activation {ReLU, tanh} × {Adam 1e-3, Adam 1e-4, SGD
(momentum 0.9) 1e-2}, 2,000 steps of batch 64 each, every run in the ONE loop
(:func:`weightlab.train.train`): ``γ`` enters through a step callback
(:class:`~weightlab.hyper.mip.GammaStream`), the loss through
:meth:`~weightlab.hyper.mip.HyperTarget.loss`. A reduced version of the paper's settings
(OASIS/Voxelmorph registration, hypernetwork-conditioned classifiers): one small MLP
target, 3 seeds.

Reported by construction at init: ``‖θ(1)‖ / ‖θ(0.1)‖`` (exactly 10 for the raw ReLU
hypernetwork: zero biases make it positively homogeneous). Claims, per scenario:
(a) MIP's mean training loss over the run is below the default's for every seed;
(b) MIP's seed standard deviation of that mean is below the default's. The validation
loss (mean of ``L_γ`` over γ ∈ {0, 0.25, 0.5, 0.75, 1}) is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.hyper.mip import (
    GammaStream,
    HyperTarget,
    default_hypernet,
    magnitude_ratio,
    mip_hypernet,
    mixed_loss,
)
from weightlab.models.factory import build
from weightlab.models.mlp import MLP
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate, no_divergence
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator
from weightlab.threads import intra_op_threads
from weightlab.train.callbacks import LossRecorder
from weightlab.train.config import OptimConfig, TrainConfig
from weightlab.train.loop import train
from weightlab.train.order import batch_indices, steps_per_epoch

ARMS = ("default", "mip")
LABELS = {"default": "default hypernetwork", "mip": "MIP hypernetwork"}
ACTIVATIONS = ("relu", "tanh")
OPTIMIZERS = (("adam", 1e-3), ("adam", 1e-4), ("sgd", 1e-2))
SCENARIOS = tuple((a, o, lr) for a in ACTIVATIONS for o, lr in OPTIMIZERS)
GAMMA_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)  # validation loss: mean of L_γ over these
CURVE_POINTS = 100  # training-loss curve stored as this many bin means
QUOTE_A = "MIP improves training in all scenarios"
QUOTE_B = "it consistently stabilizes training"
MOMENTUM = 0.9  # SGD scenarios


@dataclass(frozen=True)
class MIPHypernetConfig(RecipeConfig):
    seeds: int = opt(3, "number of independent seeds (error bars are over seeds)", min=2, max=100)
    data: str = opt("mnist1d", "task: mnist1d (10 classes, 40 features)")
    steps: int = opt(2000, "training steps per run (one γ per step)", min=1, max=1_000_000)
    batch_size: int = opt(64, "batch size", min=1)
    hidden: int = opt(64, "target MLP hidden width (in-h-classes)", min=1, max=4096)
    hyper_width: int = opt(64, "hypernetwork hidden width (two layers)", min=1, max=4096)
    lr_scale: float = opt(
        1.0, "multiplies every scenario's learning rate (1e-3, 1e-4 Adam; 1e-2 SGD)", gt=0
    )


def scenario_key(activation: str, optimizer: str, lr: float) -> str:
    return f"{activation}-{optimizer}-{lr:g}"


def scenario_label(activation: str, optimizer: str, lr: float) -> str:
    name = "Adam" if optimizer == "adam" else f"SGD (momentum {MOMENTUM:g})"
    return f"{'ReLU' if activation == 'relu' else 'tanh'}, {name} {lr:g}"


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"scenario": str, "members": list}, "the metrics")
    expect_list_of(
        metrics["members"],
        {
            "arm": str,
            "seed": int,
            "diverged": bool,
            "mean_train_loss": (int, float, type(None)),
            "final_train_loss": (int, float, type(None)),
            "val_loss": (int, float, type(None)),
            "test_acc_gamma0": (int, float, type(None)),
            "test_acc_gamma1": (int, float, type(None)),
            "norm_ratio": (int, float),
            "curve": list,
        },
        "members",
    )


def class_permutation(num_classes: int) -> torch.Tensor:
    """The fixed class permutation ``π`` (one seeded draw, the same for every run)."""
    return torch.randperm(num_classes, generator=generator(derive_seed("mip-hypernet", "pi")))


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


@torch.no_grad()
def evaluate(model: HyperTarget, split: Split) -> dict[str, float]:
    """``val_loss``: mean of ``L_γ`` over :data:`GAMMA_GRID`; test accuracies of ``f(θ(0))``
    on ``y`` and of ``f(θ(1))`` on ``π(y)`` (%). ``model``'s ``γ`` is restored after."""
    was, gamma0 = model.training, model.gamma.clone()
    model.eval()
    try:
        losses = []
        for g in GAMMA_GRID:
            model.set_gamma(g)
            pred = model(split.x)
            losses.append(
                float(mixed_loss(pred, split.y, model.gamma[0], model.permutation).mean())
            )
        model.set_gamma(0.0)
        acc0 = 100.0 * float((model(split.x).argmax(-1) == split.y).float().mean())
        model.set_gamma(1.0)
        acc1 = 100.0 * float(
            (model(split.x).argmax(-1) == model.permutation[split.y]).float().mean()
        )
    finally:
        model.gamma.copy_(gamma0)
        model.train(was)
    return {"loss": sum(losses) / len(losses), "acc_gamma0": acc0, "acc_gamma1": acc1}


def curve(losses: list[float], points: int = CURVE_POINTS) -> list[float | None]:
    """``losses`` as ``points`` consecutive bin means (fewer when shorter)."""
    n = len(losses)
    points = max(1, min(points, n))
    edges = [round(i * n / points) for i in range(points + 1)]
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        out.append(_finite(sum(losses[a:b]) / max(1, b - a)))
    return out


class MIPHypernetRecipe(Recipe):
    name = "mip-hypernet"
    family = "growth"
    row = 71
    paper = (
        "Ortiz, Guttag & Dalca 2023, Magnitude Invariant Parametrizations Improve Hypernetwork "
        "Learning (arXiv:2304.07645)"
    )
    claim = (
        "a magnitude-invariant hypernetwork (cos|sin input, θ₀ + head output) trains to lower "
        "and less seed-dependent loss than the default hypernetwork in every scenario"
    )
    Config = MIPHypernetConfig
    tasks = ("mnist1d",)
    kinds = ("classification",)
    smoke: ClassVar[dict] = {"seeds": 2, "steps": 8}
    broken: ClassVar[dict] = {"lr_scale": 1e4}
    # measured in-process, one thread, MNIST-1D cached, CPU time (2 shared cores, load ~4):
    # 2.4 s; the first run of a process 6.7 s (torch.optim's one-time import of
    # torch._dynamo, matplotlib)
    smoke_seconds = 2.4

    def validate(self, cfg: MIPHypernetConfig, data_sizes: dict[str, int]) -> None:
        """Flat inputs, at least 2 classes, a batch that fits the train split."""
        data = self.load_data(cfg)
        if len(data.input_shape) != 1 or data.num_classes < 2:
            raise ConfigError(
                f"--data {cfg.data} has inputs of shape {data.input_shape} and "
                f"{data.num_classes} classes; this recipe needs flat inputs and >= 2 classes"
            )
        if cfg.batch_size > data_sizes["train"]:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} exceeds the {data_sizes['train']} training "
                "examples; use a smaller batch"
            )

    # -- one scenario ------------------------------------------------------------------
    def _optim(self, cfg: MIPHypernetConfig, optimizer: str, lr: float) -> OptimConfig:
        lr = lr * cfg.lr_scale
        if optimizer == "sgd":
            return OptimConfig("sgd", lr=lr, momentum=MOMENTUM)
        return OptimConfig("adam", lr=lr)

    def _scenario(self, cfg, data: TaskData, scenario: tuple, perm: torch.Tensor) -> list[dict]:
        activation, optimizer, lr = scenario
        n = len(data.train)
        epochs = math.ceil(cfg.steps / steps_per_epoch(n, cfg.batch_size))
        d_in, classes = data.input_shape[0], data.num_classes
        train_cfg = TrainConfig(
            1, cfg.batch_size, cfg.steps, self._optim(cfg, optimizer, lr), loss="cross_entropy"
        )
        out = []
        for s in range(cfg.seeds):
            target = build(MLP, [d_in, cfg.hidden, classes], seed=derive_seed(self.name, "t", s))
            order = batch_indices(n, cfg.batch_size, epochs, derive_seed(self.name, "data", s))[
                : cfg.steps
            ].to(data.train.x.device)
            gammas = torch.rand(cfg.steps, generator=generator(derive_seed(self.name, "g", s)))
            for arm in ARMS:
                make = mip_hypernet if arm == "mip" else default_hypernet
                hnet = make(
                    target,
                    hidden=(cfg.hyper_width, cfg.hyper_width),
                    activation=activation,
                    seed=derive_seed(self.name, "hyper", s),
                )
                ratio = magnitude_ratio(hnet)
                model = HyperTarget(hnet, target, perm).to(data.train.x.device)
                rec = LossRecorder()
                run_cfg = TrainConfig(
                    train_cfg.epochs,
                    train_cfg.batch_size,
                    train_cfg.eval_every,
                    train_cfg.optim,
                    loss=model.loss,
                )
                res = train(
                    model,
                    data,
                    run_cfg,
                    0,
                    order=order,
                    callbacks=[GammaStream(model, gammas), rec],
                )
                losses = rec.losses
                mean = sum(losses) / len(losses) if losses else math.nan
                tail = losses[-max(1, len(losses) // 10) :]
                diverged = bool(res.diverged or not math.isfinite(mean))
                ev = evaluate(model, data.val)
                te = evaluate(model, data.test)
                out.append(
                    {
                        "arm": arm,
                        "seed": s,
                        "diverged": diverged,
                        "mean_train_loss": _finite(mean),
                        "final_train_loss": _finite(sum(tail) / len(tail)) if tail else None,
                        "val_loss": _finite(ev["loss"]),
                        "test_acc_gamma0": _finite(te["acc_gamma0"]),
                        "test_acc_gamma1": _finite(te["acc_gamma1"]),
                        "norm_ratio": ratio,
                        "curve": curve(losses),
                    }
                )
        return out

    # -- run -----------------------------------------------------------------------------
    def run(self, cfg: MIPHypernetConfig, rd: RunDir, progress: bool = False) -> dict:
        data = self.load_data(cfg)
        perm = class_permutation(data.num_classes).to(data.train.x.device)
        groups = []
        bar = progress_bar(len(SCENARIOS), self.name, "scenario", progress, line_each_update=True)
        for sc in SCENARIOS:
            key = scenario_key(*sc)

            def compute(sc=sc, key=key):
                return {"scenario": key, "members": self._scenario(cfg, data, sc, perm)}, {}

            with intra_op_threads(1):  # 64-wide layers: threads only add overhead
                metrics, _ = rd.unit(key, compute, check=_check_unit)
            groups.append((sc, metrics["members"]))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        chance = 100.0 * majority_rate(data.test.y)
        return self.summarize(cfg, groups, chance, perm)

    # -- summary and claims -----------------------------------------------------------------
    def summarize(self, cfg, groups: list, chance: float, perm: torch.Tensor) -> dict:
        rows = []
        for sc, members in groups:
            row = {
                "scenario": scenario_key(*sc),
                "label": scenario_label(*sc),
                "activation": sc[0],
                "optimizer": sc[1],
                "lr": sc[2] * cfg.lr_scale,
            }
            for arm in ARMS:
                ms = sorted((m for m in members if m["arm"] == arm), key=lambda m: m["seed"])
                kept = [m for m in ms if not m["diverged"]]
                tm, ts = mean_std([m["mean_train_loss"] for m in kept])
                fm, fs = mean_std([m["final_train_loss"] for m in kept])
                vm, vs = mean_std([m["val_loss"] for m in kept])
                a0, a0s = mean_std([m["test_acc_gamma0"] for m in kept])
                a1, _ = mean_std([m["test_acc_gamma1"] for m in kept])
                rm, _ = mean_std([m["norm_ratio"] for m in ms])
                n_pts = min((len(m["curve"]) for m in kept), default=0)
                curves = [[_num(m["curve"][i]) for m in kept] for i in range(n_pts)]
                row[arm] = {
                    "mean_train": tm,
                    "mean_train_std": ts,
                    "mean_train_values": [m["mean_train_loss"] for m in ms],
                    "final_train": fm,
                    "final_train_std": fs,
                    "val_loss": vm,
                    "val_loss_std": vs,
                    "test_acc_gamma0": a0,
                    "test_acc_gamma0_std": a0s,
                    "test_acc_gamma1": a1,
                    "norm_ratio": rm,
                    "curve_mean": [mean_std(c)[0] for c in curves],
                    "curve_std": [mean_std(c)[1] for c in curves],
                    "n": len(kept),
                    "excluded": [
                        f"{row['scenario']} {arm} seed {m['seed']}" for m in ms if m["diverged"]
                    ],
                }
            rows.append(row)
        claims = [c.to_dict() for c in self.check_claims(rows, chance)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "claims": claims,
            "chance_pct": chance,
            "members": sum(len(ms) for _, ms in groups),
            "diverged_members": [x for r in rows for a in ARMS for x in r[a]["excluded"]],
            "permutation": perm.tolist(),
            "steps": cfg.steps,
            "seeds": cfg.seeds,
            "gamma_grid": list(GAMMA_GRID),
            "reduced_version": (
                f"reduced version: MNIST-1D, target MLP {40}-{cfg.hidden}-10, hypernetwork "
                f"{cfg.hyper_width}-{cfg.hyper_width}, {cfg.steps} steps of batch "
                f"{cfg.batch_size}, {cfg.seeds} seeds (the paper: registration and "
                "classification hypernetworks at full scale)"
            ),
        }

    @staticmethod
    def check_claims(rows: list[dict], chance: float) -> list[ClaimResult]:
        """(a) in every scenario and for every seed, MIP's mean training loss over the run
        < the default's (same seed); (b) in every scenario, MIP's seed std of that mean <
        the default's. Preconditions: in every scenario the default learned the γ = 0 task
        (test accuracy ≥ chance + 10 pts) and no member diverged."""
        pre = [
            baseline_learned(
                r["default"]["test_acc_gamma0"], chance=chance, name=f"default ({r['label']})"
            )
            for r in rows
        ]
        pre = [p for p in pre if p]
        pre.append(no_divergence([x for r in rows for a in ARMS for x in r[a]["excluded"]]))

        def check_a():
            per, wins, total = {}, 0, 0
            for r in rows:
                pairs = list(
                    zip(
                        r["mip"]["mean_train_values"],
                        r["default"]["mean_train_values"],
                        strict=True,
                    )
                )
                ok = [m < d for m, d in pairs]
                wins += sum(ok)
                total += len(ok)
                per[r["scenario"]] = {
                    "mip": r["mip"]["mean_train"],
                    "default": r["default"]["mean_train"],
                    "seeds_lower": sum(ok),
                    "seeds": len(ok),
                }
            detail = f"MIP lower in {wins} of {total} (scenario, seed) pairs; " + "; ".join(
                f"{r['label']}: {r['mip']['mean_train']:.3f} vs {r['default']['mean_train']:.3f}"
                for r in rows
            )
            return wins == total, detail, per

        def check_b():
            per = {
                r["scenario"]: {
                    "mip_std": r["mip"]["mean_train_std"],
                    "default_std": r["default"]["mean_train_std"],
                }
                for r in rows
            }
            ok = [v["mip_std"] < v["default_std"] for v in per.values()]
            detail = f"MIP's seed std smaller in {sum(ok)} of {len(ok)} scenarios; " + "; ".join(
                f"{r['label']}: {r['mip']['mean_train_std']:.4f} vs "
                f"{r['default']['mean_train_std']:.4f}"
                for r in rows
            )
            return all(ok), detail, per

        return [
            judge(
                "a",
                QUOTE_A,
                "in every scenario and every seed, MIP's mean training loss over the run is "
                "below the default hypernetwork's",
                pre,
                check_a,
            ),
            judge(
                "b",
                QUOTE_B,
                "in every scenario, the seed standard deviation of MIP's mean training loss is "
                "below the default hypernetwork's",
                pre,
                check_b,
            ),
        ]

    # -- report ----------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        header = [
            "scenario",
            "hypernetwork",
            "‖θ(1)‖/‖θ(0.1)‖ at init",
            "mean train loss over the run",
            "final train loss (last 10%)",
            "val loss (γ grid)",
            "test acc γ=0 (%)",
            "test acc γ=1 (%)",
            "n",
        ]
        out = []
        for r in summary["rows"]:
            for arm in ARMS:
                a = r[arm]
                out.append(
                    [
                        r["label"],
                        LABELS[arm],
                        f"{_num(a['norm_ratio']):.2f}",
                        _pm(a["mean_train"], a["mean_train_std"], 3),
                        _pm(a["final_train"], a["final_train_std"], 3),
                        _pm(a["val_loss"], a["val_loss_std"], 3),
                        _pm(a["test_acc_gamma0"], a["test_acc_gamma0_std"], 1),
                        f"{_num(a['test_acc_gamma1']):.1f}",
                        str(a["n"]),
                    ]
                )
        title = (
            f"Training and validation loss, mean ± std over seeds — {summary['reduced_version']}"
        )
        return [(title, header, out)]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = summary["rows"]
        colors = {"default": "tab:gray", "mip": "tab:blue"}
        fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex=True)
        steps = summary["steps"]
        for ax, r in zip(axes.flat, rows, strict=False):
            for arm in ARMS:
                m = [_num(v) for v in r[arm]["curve_mean"]]
                sd = [_num(v) for v in r[arm]["curve_std"]]
                if not m:
                    continue
                xs = [(i + 0.5) * steps / len(m) for i in range(len(m))]
                ax.plot(xs, m, color=colors[arm], label=LABELS[arm])
                ax.fill_between(
                    xs,
                    [a - b for a, b in zip(m, sd, strict=True)],
                    [a + b for a, b in zip(m, sd, strict=True)],
                    color=colors[arm],
                    alpha=0.25,
                )
            ax.set_title(r["label"], fontsize=10)
            ax.grid(alpha=0.3)
        for ax in axes[-1]:
            ax.set_xlabel("step")
        for ax in axes[:, 0]:
            ax.set_ylabel("training loss L_γ (bin mean)")
        axes.flat[0].legend(fontsize=8)
        fig.suptitle("MNIST-1D, γ ~ U[0,1] per step: training loss, mean ± std over seeds")
        return [
            Figure("mip_training_loss.png", "Training-loss curves per scenario", figure_png(fig))
        ]
