"""Recipe ``inductive-bias``: Boopathy et al. (2024), "Towards Exact Computation of Inductive
Bias" (row [#15]).

The inductive bias a task requires relative to a hypothesis space is ``−log₂ P(L(h) ≤ ε)``
for hypotheses h drawn from it (:func:`weightlab.kernels.inductive_bias.inductive_bias_bits`),
with the test-loss distribution modelled from 1000 sampled hypotheses. The model is named in
the summary (``lognormal``: a Gaussian fitted to the log test losses; the paper body's model
could not be confirmed here), beside the empirical fraction of sampled hypotheses under ε and
the model's binomial consistency check against that count; a claim reads only tasks whose
model is consistent with its sample (else "not tested").

Hypotheses: random ReLU features (width 50, ``W`` rows ~ N(0, I/d)) with a least-squares
readout fitted on a fixed training budget of 100 examples; test MSE on held-out points.

- Teacher-student tasks (``teacher_mlp``: a random ReLU MLP d-32-32-1, noise 0), d ∈ {4, 8,
  16, 32}, 100 training and 500 test points, ε = 0.5·Var(y_test) per task; 5 seeds (teacher,
  inputs and hypotheses).
- Contrast on digits, at the same budget (100 training examples drawn per seed from the
  training split, the full test split; one-hot targets, MSE over the 10 outputs) and the same
  ε rule (0.5 × the mean per-output variance of the test targets): random ReLU features
  against equal-width random Fourier features of a Gaussian kernel, median-heuristic
  bandwidth (:func:`~weightlab.kernels.inductive_bias.fourier_feature_hypotheses`); 5 seeds.

Claims (fixed):

- (a) the bits rise strictly with d (means over seeds), each step by more than
  :data:`MIN_STEP_BITS` (0.01 bit: differences of ~0 bits, i.e. P ≈ 1, are not a rise);
- (b) on digits, the bits relative to random ReLU features are below those relative to
  random Fourier features by more than their 5-seed spread: every Fourier seed's bits exceed
  every ReLU seed's (the two ranges over seeds do not overlap).

One unit per seed (:func:`weightlab.recipes.units.seed_units`): every task of that seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.data import load_dataset
from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.kernels.inductive_bias import (
    LOSS_MODELS,
    fourier_feature_hypotheses,
    inductive_bias_bits,
    relu_feature_hypotheses,
)
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import judge
from weightlab.recipes.options import int_list
from weightlab.recipes.stats import mean_std
from weightlab.recipes.units import seed_units
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator

QUOTE_DIM = "higher dimensional tasks require greater inductive bias"
QUOTE_NN = (
    "relative to other expressive model classes, neural networks as a model class encode large "
    "amounts of inductive bias"
)
EPS_FRACTION = 0.5  # eps = 0.5 Var(y) per task (the issue's)
MIN_STEP_BITS = 0.01  # (a) each step in d must raise the mean bits by more than this


@dataclass(frozen=True)
class InductiveBiasConfig(RecipeConfig):
    seeds: int = opt(5, "independent seeds (tasks, training subsets and hypotheses)", min=1)
    data: str = opt(
        "teacher_mlp",
        "the teacher-student family (d is swept); the contrast always runs on digits",
        choices=("teacher_mlp",),
    )
    dims: str = opt("4,8,16,32", "teacher input dimensions d")
    n_train: int = opt(100, "training budget: examples the readout is fitted on", min=2)
    n_test: int = opt(500, "test points of the teacher tasks", min=2)
    width: int = opt(50, "random features per hypothesis (ReLU and Fourier alike)", min=1)
    hypotheses: int = opt(1000, "hypotheses sampled per (task, seed)", min=10, max=10_000_000)
    model: str = opt("lognormal", "test-loss distribution model", choices=tuple(LOSS_MODELS))

    def __post_init__(self) -> None:
        super().__post_init__()
        int_list(self.dims, "dims")

    @property
    def dim_values(self) -> list[int]:
        return int_list(self.dims, "dims")


def digits_subset(digits: TaskData, n: int, seed: int) -> TaskData:
    """``n`` training examples drawn (without replacement, seeded) from digits' training split;
    the test split unchanged."""
    if n > len(digits.train):
        raise ConfigError(f"--n-train {n} exceeds digits' {len(digits.train)} training examples")
    idx = torch.randperm(len(digits.train), generator=generator(derive_seed("ib-digits", seed)))[:n]
    tr = Split(digits.train.x[idx], digits.train.y[idx])
    return TaskData("digits", tr, digits.val, digits.test, digits.num_classes)


def eps_for(task: TaskData) -> float:
    """``0.5 · Var(y_test)``; for classification the mean per-output variance of one-hot targets."""
    y = task.test.y
    if not y.is_floating_point():
        y = torch.nn.functional.one_hot(y, task.num_classes)
    y = y.to(torch.float64).reshape(len(y), -1)
    return EPS_FRACTION * float(y.var(0).mean())


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"seed": int, "members": list}, "metrics")
    expect_list_of(
        metrics["members"],
        {
            "task": str,
            "space": str,
            "d": int,
            "seed": int,
            "bits": (int, float),
            "eps": (int, float),
            "empirical_fraction": (int, float),
            "loss_mean": (int, float),
            "params": dict,
            "consistent": bool,
            "consistency_p": (int, float),
        },
        "members",
    )


class InductiveBias(Recipe):
    name = "inductive-bias"
    family = "kernels"
    row = 15
    paper = "Boopathy et al. 2024, Towards Exact Computation of Inductive Bias (IJCAI 2024)"
    claim = (
        "the inductive bias (bits to pick a hypothesis with test loss <= eps) rises with the "
        "task dimension; relative to random Fourier features, random ReLU features need fewer "
        "bits on digits"
    )
    Config = InductiveBiasConfig
    tasks = ("teacher_mlp",)
    kinds = ("regression",)
    smoke: ClassVar[dict] = {"seeds": 2, "dims": "2,4", "hypotheses": 40, "n_test": 50}
    trains = False
    # measured in-process, one thread, digits loaded, imports done: 1.6 s CPU
    smoke_seconds = 1.6

    def validate(self, cfg: InductiveBiasConfig, data_sizes: dict[str, int]) -> None:
        if cfg.n_train > 1257:  # digits' training split
            raise ConfigError(f"--n-train {cfg.n_train} exceeds digits' 1257 training examples")

    def load_data(self, cfg: InductiveBiasConfig) -> TaskData:
        key = ("teacher", cfg.dim_values[0], cfg.n_train, cfg.n_test)
        if key not in self._data_cache:
            self._data_cache[key] = self._teacher(cfg, cfg.dim_values[0], 0)
        return self._data_cache[key]

    @staticmethod
    def _teacher(cfg: InductiveBiasConfig, d: int, seed: int) -> TaskData:
        return load_dataset(
            "teacher_mlp",
            d_in=d,
            n_train=cfg.n_train,
            n_val=1,
            n_test=cfg.n_test,
            noise=0.0,
            seed=seed,
        )

    def run(self, cfg: InductiveBiasConfig, rd: RunDir, progress: bool = False) -> dict:
        digits = load_dataset("digits")

        def one(task, space, sampler, d, s, key):
            eps = eps_for(task)
            r = inductive_bias_bits(
                sampler,
                task,
                eps,
                num_hypotheses=cfg.hypotheses,
                model=cfg.model,
                seed=derive_seed(self.name, key, d, s),
            )
            return {
                "task": key,
                "space": space,
                "d": d,
                "seed": s,
                "bits": r.bits if math.isfinite(r.bits) else 1e300,
                "eps": eps,
                "empirical_fraction": r.empirical_fraction,
                "loss_mean": r.loss_mean,
                "loss_std": r.loss_std,
                "params": r.params,
                "consistent": r.consistent,
                "consistency_p": r.consistency_p,
            }

        relu = relu_feature_hypotheses(cfg.width)
        fourier = fourier_feature_hypotheses(cfg.width)

        def compute(s: int):
            out = [
                one(self._teacher(cfg, d, s), "relu", relu, d, s, "teacher") for d in cfg.dim_values
            ]
            sub = digits_subset(digits, cfg.n_train, s)
            out.append(one(sub, "relu", relu, 64, s, "digits"))
            out.append(one(sub, "fourier", fourier, 64, s, "digits"))
            return {"seed": s, "members": out}, {}

        records = seed_units(rd, self.name, cfg.seeds, compute, _check_unit, progress)
        return self.summarize(cfg, records)

    # -- summary and claims ---------------------------------------------------------------
    def summarize(self, cfg: InductiveBiasConfig, records: list[dict]) -> dict:
        rows = []
        for key, space, d in sorted(
            {(r["task"], r["space"], r["d"]) for r in records},
            key=lambda t: (t[0] != "teacher", t[1], t[2]),
        ):
            ms = sorted(
                (r for r in records if (r["task"], r["space"], r["d"]) == (key, space, d)),
                key=lambda r: r["seed"],
            )
            bits = [r["bits"] for r in ms]
            mu, sd = mean_std(bits)
            rows.append(
                {
                    "task": key,
                    "space": space,
                    "d": d,
                    "bits_mean": mu,
                    "bits_std": sd,
                    "bits_values": bits,
                    "empirical_fraction_mean": mean_std([r["empirical_fraction"] for r in ms])[0],
                    "loss_over_eps_mean": mean_std([r["loss_mean"] / r["eps"] for r in ms])[0],
                    "inconsistent_seeds": [r["seed"] for r in ms if not r["consistent"]],
                }
            )
        claims = [c.to_dict() for c in self.check_claims(rows)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "claims": claims,
            "loss_model": cfg.model,
            "loss_model_description": LOSS_MODELS[cfg.model]
            + " (the paper body's model could not be confirmed here)",
            "members": len(records),
            "diverged_members": [],
            "hypotheses": cfg.hypotheses,
            "width": cfg.width,
            "n_train": cfg.n_train,
        }

    @staticmethod
    def check_claims(rows: list[dict]) -> list[ClaimResult]:
        teacher = sorted((r for r in rows if r["task"] == "teacher"), key=lambda r: r["d"])
        dig = {r["space"]: r for r in rows if r["task"] == "digits"}
        few = None if len(teacher) >= 2 else "the run has fewer than two dimensions"
        infinite = [f"d={r['d']}" for r in teacher if any(b >= 1e300 for b in r["bits_values"])]
        inf_reason = (
            f"a loss model gave P = 0 (infinite bits) at {', '.join(infinite)}"
            if infinite
            else None
        )

        def misfit(rs: list[dict]) -> str | None:
            bad = [
                f"{r['task']} {r['space']} d={r['d']} (seeds {r['inconsistent_seeds']})"
                for r in rs
                if r["inconsistent_seeds"]
            ]
            if not bad:
                return None
            return (
                "the loss model contradicts the sampled hypotheses' count under eps "
                f"(binomial p < 1e-3) at {', '.join(bad)}"
            )

        def check_a():
            means = [(r["d"], r["bits_mean"]) for r in teacher]
            ok = all(
                b - a > MIN_STEP_BITS for (_, a), (_, b) in zip(means, means[1:], strict=False)
            )
            detail = (
                "bits by d (mean ± std over seeds): "
                + ", ".join(
                    f"d={r['d']} {r['bits_mean']:.2f} ± {r['bits_std']:.2f}" for r in teacher
                )
                + f"; needed each step to rise by > {MIN_STEP_BITS} bit"
            )
            return ok, detail, {"bits": {str(d): b for d, b in means}}

        both = None if {"relu", "fourier"} <= set(dig) else "the run lacks the digits contrast"
        few_seeds = None
        if not both and len(dig["relu"]["bits_values"]) < 2:
            few_seeds = "one seed has no spread"

        def check_b():
            r, f = dig["relu"], dig["fourier"]
            ok = min(f["bits_values"]) > max(r["bits_values"])
            detail = (
                f"digits: ReLU features {r['bits_mean']:.2f} ± {r['bits_std']:.2f} bits (range "
                f"{min(r['bits_values']):.2f}..{max(r['bits_values']):.2f}), Fourier features "
                f"{f['bits_mean']:.2f} ± {f['bits_std']:.2f} (range {min(f['bits_values']):.2f}.."
                f"{max(f['bits_values']):.2f}); needed every Fourier seed above every ReLU seed"
            )
            return ok, detail, {"relu": r["bits_values"], "fourier": f["bits_values"]}

        return [
            judge(
                "a",
                QUOTE_DIM,
                "on teacher-student tasks at a fixed training budget, the bits of inductive "
                "bias relative to random ReLU features rise strictly with the input dimension d",
                [few, inf_reason, misfit(teacher)],
                check_a,
            ),
            judge(
                "b",
                QUOTE_NN,
                "on digits at the same eps rule, the bits relative to random ReLU features are "
                "below those relative to equal-width random Fourier features by more than their "
                "5-seed spread (the ranges over seeds do not overlap)",
                [both, few_seeds, None if both else misfit(list(dig.values()))],
                check_b,
            ),
        ]

    # -- report ---------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        body = [
            [
                r["task"],
                r["space"],
                str(r["d"]),
                f"{r['bits_mean']:.3f} ± {r['bits_std']:.3f}",
                f"{r['empirical_fraction_mean']:.3f}",
                f"{r['loss_over_eps_mean']:.3f}",
                ", ".join(map(str, r["inconsistent_seeds"])) or "-",
            ]
            for r in summary["rows"]
        ]
        return [
            (
                f"Bits of inductive bias, -log2 P(test MSE <= eps), mean ± std over seeds; loss "
                f"model: {summary['loss_model_description']}",
                [
                    "task",
                    "hypotheses",
                    "d",
                    "bits",
                    "empirical P(L <= eps)",
                    "mean L / eps",
                    "seeds where the model misfits",
                ],
                body,
            )
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        t = [r for r in summary["rows"] if r["task"] == "teacher"]
        axes[0].errorbar(
            [r["d"] for r in t],
            [r["bits_mean"] for r in t],
            yerr=[r["bits_std"] for r in t],
            fmt="o-",
            capsize=3,
        )
        axes[0].set_xscale("log", base=2)
        axes[0].set_xlabel("teacher input dimension d")
        axes[0].set_ylabel("bits of inductive bias")
        axes[0].set_title("teacher-student tasks, random ReLU features")
        dg = [r for r in summary["rows"] if r["task"] == "digits"]
        axes[1].bar(
            [r["space"] for r in dg],
            [r["bits_mean"] for r in dg],
            yerr=[r["bits_std"] for r in dg],
            capsize=4,
        )
        axes[1].set_ylabel("bits of inductive bias")
        axes[1].set_title("digits: ReLU vs Fourier random features")
        for ax in axes:
            ax.grid(alpha=0.3)
        return [Figure("inductive_bias.png", "Bits of inductive bias", figure_png(fig))]
