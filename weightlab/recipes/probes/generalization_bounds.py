"""Recipe ``generalization-bounds``: He, Yu & Goldfeld (2024), "Information-Theoretic
Generalization Bounds for Deep Neural Networks" (row [#80]).

The paper's analytic setting: binary Gaussian classification, ``y ∈ {0, 1}`` balanced,
``x | y ~ N((2y − 1) μ, I_d)`` with ``μ = mu · e₁``, learned by a bias-free linear DNN
``d → d → … → d → 2`` (``depth`` linear layers) with cross-entropy (full-batch SGD on
``n_train`` examples drawn per seed; test: ``n_test`` fresh examples), the registered task
``binary_gaussian`` (:mod:`weightlab.data.gaussian`) with its seed set to the run's seed.

For every hidden representation ``T_k`` (the output of linear layer ``k``, all of width
``d``; module paths ``layers.0`` … ``layers.{depth−2}``) the recipe measures the divergence
between its train distribution (the training examples' representations) and its test
distribution (:mod:`weightlab.probes.generalization`):

- *estimated*: Gaussian-fit KL(train ‖ test) and sliced W₁ (256 seeded directions) from
  the captured features;
- *analytic* (Gaussian approximations in closed form): the training inputs' sample moments
  ``(μ̂, Σ̂)`` and the population test moments ``(0, I + μμᵀ)`` pushed through the product
  ``P_k = W_k ⋯ W_1`` (a linear layer maps ``N(m, S)`` to ``N(Wm, WSWᵀ)``).

The W₁ bound at layer ``k`` multiplies the distance by the Lipschitz constant of the rest of
the network, ``‖W_L ⋯ W_{k+1}‖₂`` (the loss's own Lipschitz constant in the logits is the
same for every layer and left out): ``bound_k = ‖W_L ⋯ W_{k+1}‖₂ · SW₁(T_k)``. Deep layers
have a small remaining Lipschitz constant, early layers a small distance; a minimum in
between is the paper's "generalization funnel".

Claim (thresholds fixed below): the estimated W₁ bound has an interior minimizing hidden
layer, at least ``FUNNEL_MARGIN`` (10%) below both the first and the last hidden layer's
value, and the same layer wins in at least two thirds of the seeds (2 of 3). The KL's
decrease with depth follows from the data-processing inequality; it is reported as an
estimator test (fraction of consecutive layers where KL does not increase), not a claim.
Preconditions: every seed's network learned (test accuracy ≥ chance + 10 pts) and none
diverged.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from weightlab.data.task import TaskData
from weightlab.errors import ConfigError, DataError
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, no_divergence
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed

QUOTE = (
    "the Wasserstein bound implies the existence of a layer that serves as a generalization "
    "funnel, which attains a minimal 1-Wasserstein distance"
)
FUNNEL_MARGIN = 0.10  # the interior minimum is >= 10% below the first and the last layer
SAME_LAYER_FRACTION = 2 / 3  # the same layer wins in >= 2 of 3 seeds
PROJECTIONS = 256
KL_RIDGE = 1e-8


class LinearNet(nn.Module):
    """A bias-free linear DNN with layers ``widths[i] → widths[i+1]`` (``layers.i``)."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


@dataclass(frozen=True)
class GeneralizationBoundsConfig(RecipeConfig):
    data: str = opt(
        "binary_gaussian",
        "task: binary Gaussian classification (drawn per seed from the options below)",
    )
    d: int = opt(16, "input dimension (and width of every hidden layer)", min=2, max=512)
    depth: int = opt(6, "number of linear layers (hidden representations: depth - 1)", min=4)
    mu: float = opt(1.0, "class-mean distance from the origin along e1", gt=0, max=100)
    n_train: int = opt(40, "training examples per seed", min=4, max=100000)
    n_test: int = opt(4000, "test examples per seed", min=20, max=200000)
    steps: int = opt(300, "full-batch SGD steps", min=1, max=1000000)
    lr: float = opt(0.05, "SGD learning rate", gt=0, max=10)


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"members": list}, "the metrics")
    expect_list_of(
        metrics["members"],
        {
            "seed": int,
            "test_acc": (int, float, type(None)),
            "train_loss": (int, float, type(None)),
            "diverged": bool,
            "layers": list,
        },
        "members",
    )
    for m in metrics["members"]:
        expect_list_of(
            m["layers"],
            {
                "name": str,
                **{
                    k: (int, float, type(None))
                    for k in (
                        "kl",
                        "kl_analytic",
                        "sw1",
                        "sw1_analytic",
                        "lipschitz",
                        "bound",
                        "bound_analytic",
                    )
                },
            },
            "layers",
        )


def _finite(v: float) -> float:
    return float(v) if math.isfinite(v) else float("nan")


class GeneralizationBounds(Recipe):
    name = "generalization-bounds"
    family = "probes"
    row = 80
    paper = (
        "He, Yu & Goldfeld 2024, Information-Theoretic Generalization Bounds for Deep "
        "Neural Networks"
    )
    claim = (
        "the per-layer W1 generalization bound of a linear DNN has an interior minimizing "
        "layer (a generalization funnel), the same layer in >= 2 of 3 seeds"
    )
    Config = GeneralizationBoundsConfig
    tasks = ("binary_gaussian",)
    kinds = ("classification",)
    smoke: ClassVar[dict] = {"steps": 30, "n_test": 400, "d": 8, "depth": 4}
    broken: ClassVar[dict] = {"lr": 10.0, "steps": 5}
    # measured in-process, one thread: 0.78 s CPU after imports; wall 3.7 s on the loaded 2-core machine (load 12)
    smoke_seconds = 2.0

    def load_data(self, cfg: GeneralizationBoundsConfig):
        """The run's task: seed 0's binary Gaussian draw (the runner checks sizes on it)."""
        return self._task(cfg, 0)

    @staticmethod
    def _task(cfg: GeneralizationBoundsConfig, s: int) -> TaskData:
        from weightlab.data.gaussian import load_binary_gaussian

        return load_binary_gaussian(cfg.n_train, 0, cfg.n_test, cfg.d, cfg.mu, s)

    def validate(self, cfg: GeneralizationBoundsConfig, data_sizes: dict[str, int]) -> None:
        if cfg.data != "binary_gaussian":
            raise ConfigError(
                f"--data {cfg.data!r}: this recipe draws the binary Gaussian task per seed; "
                "use --data binary_gaussian"
            )
        if cfg.n_train <= cfg.d:
            raise ConfigError(
                f"--n-train {cfg.n_train} must exceed --d {cfg.d} so the training "
                "representations' Gaussian fit has a full-rank covariance"
            )

    def run(self, cfg: GeneralizationBoundsConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.recipes.units import seed_units

        def compute(s: int):
            return {"members": [self._member(cfg, s)]}, {}

        records = seed_units(rd, self.name, cfg.seeds, compute, _check_unit, progress)
        return self.summarize(cfg, records)

    @staticmethod
    def _member(cfg: GeneralizationBoundsConfig, s: int) -> dict:
        from weightlab.models.factory import model_factory
        from weightlab.population import MemberSpec
        from weightlab.probes.generalization import (
            gaussian_fit,
            kl_gaussians,
            layer_divergences,
            random_directions,
            sliced_w1_gaussians,
        )
        from weightlab.recipes.members import train_members
        from weightlab.train.config import OptimConfig, TrainConfig

        task = GeneralizationBounds._task(cfg, s)
        widths = [cfg.d] * cfg.depth + [2]
        factory = model_factory(LinearNet, widths)
        train_cfg = TrainConfig(cfg.steps, cfg.n_train, cfg.steps, OptimConfig("sgd", lr=cfg.lr))
        spec = MemberSpec(
            seed=derive_seed("gb", "init", s), data_seed=derive_seed("gb", "order", s)
        )
        (res,), (final,) = train_members(factory, [spec], task, train_cfg, engine="loop")
        model = factory(0)
        model.load_state_dict(final)
        record = {
            "seed": s,
            "test_acc": _finite(100 * res.final.test_acc),
            "train_loss": _finite(res.final.train_loss),
            "diverged": bool(res.diverged),
            "layers": [],
        }
        if res.diverged or not all(torch.isfinite(v).all() for v in final.values()):
            record["diverged"] = True
            return record
        names = [f"layers.{i}" for i in range(cfg.depth - 1)]
        seed = derive_seed("gb", "projections", s)
        try:
            divs = layer_divergences(
                model,
                task.train.x,
                task.test.x,
                names,
                num_projections=PROJECTIONS,
                seed=seed,
                ridge=KL_RIDGE,
            )
        except DataError:  # collapsed (rank-deficient) representations: no divergence
            record["diverged"] = True
            return record
        ws = [layer.weight.detach().double() for layer in model.layers]
        mu_tr, cov_tr = gaussian_fit(task.train.x)
        mean = torch.zeros(cfg.d, dtype=torch.float64)
        mean[0] = cfg.mu
        mu_te = torch.zeros(cfg.d, dtype=torch.float64)
        cov_te = torch.eye(cfg.d, dtype=torch.float64) + torch.outer(mean, mean)
        layers, p = [], torch.eye(cfg.d, dtype=torch.float64)
        for k, dv in enumerate(divs):
            p = ws[k] @ p
            rest = torch.eye(ws[k].shape[0], dtype=torch.float64)
            for w in ws[k + 1 :]:
                rest = w @ rest
            lip = float(torch.linalg.matrix_norm(rest, 2))
            th = random_directions(dv.dim, PROJECTIONS, derive_seed("sliced-w1", seed, dv.dim))
            ridge = KL_RIDGE * float(torch.diagonal(p @ cov_te @ p.T).mean())
            eye = torch.eye(dv.dim, dtype=torch.float64)
            ka = kl_gaussians(
                p @ mu_tr, p @ cov_tr @ p.T + ridge * eye, p @ mu_te, p @ cov_te @ p.T + ridge * eye
            )
            swa = sliced_w1_gaussians(p @ mu_tr, p @ cov_tr @ p.T, p @ mu_te, p @ cov_te @ p.T, th)
            layers.append(
                {
                    "name": dv.name,
                    "kl": _finite(dv.kl_gaussian),
                    "kl_analytic": _finite(ka),
                    "sw1": _finite(dv.sliced_w1),
                    "sw1_analytic": _finite(swa),
                    "lipschitz": _finite(lip),
                    "bound": _finite(lip * dv.sliced_w1),
                    "bound_analytic": _finite(lip * swa),
                }
            )
        record["layers"] = layers
        return record

    # -- summary and claims -----------------------------------------------------------
    def summarize(self, cfg: GeneralizationBoundsConfig, records: list[dict]) -> dict:
        kept = [r for r in records if not r["diverged"] and r["layers"]]
        names = [f"layers.{i}" for i in range(cfg.depth - 1)]
        rows = []
        for i, n in enumerate(names):
            row = {"layer": n}
            for key in (
                "kl",
                "kl_analytic",
                "sw1",
                "sw1_analytic",
                "lipschitz",
                "bound",
                "bound_analytic",
            ):
                m, sd = mean_std([r["layers"][i][key] for r in kept])
                row[key] = {"mean": m, "std": sd}
            rows.append(row)
        per_seed = []
        for r in kept:
            b = [lay["bound"] for lay in r["layers"]]
            k = min(range(len(b)), key=lambda i: (b[i], i))
            kl = [lay["kl"] for lay in r["layers"]]
            kla = [lay["kl_analytic"] for lay in r["layers"]]
            per_seed.append(
                {
                    "seed": r["seed"],
                    "test_acc": r["test_acc"],
                    "train_loss": r["train_loss"],
                    "argmin": k,
                    "argmin_layer": names[k],
                    "min_bound": b[k],
                    "first_bound": b[0],
                    "last_bound": b[-1],
                    "bounds": b,
                    "kl_nonincreasing": _nonincreasing(kl),
                    "kl_analytic_nonincreasing": _nonincreasing(kla),
                }
            )
        summary = {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "per_seed": per_seed,
            "members": len(records),
            "diverged_members": [f"seed {r['seed']}" for r in records if r["diverged"]],
            "test_acc": dict(
                zip(("mean", "std"), mean_std([r["test_acc"] for r in kept]), strict=True)
            ),
            "chance_pct": 50.0,
            "seeds": cfg.seeds,
            "setup": {
                "d": cfg.d,
                "depth": cfg.depth,
                "mu": cfg.mu,
                "n_train": cfg.n_train,
                "n_test": cfg.n_test,
                "steps": cfg.steps,
                "lr": cfg.lr,
                "projections": PROJECTIONS,
            },
        }
        summary["claims"] = [c.to_dict() for c in self.check_claims(summary)]
        return summary

    @staticmethod
    def check_claims(summary: dict) -> list[ClaimResult]:
        """Per seed, the argmin of the estimated W1 bound over hidden layers; a seed has a
        funnel when the argmin is interior and its bound is <= (1 - FUNNEL_MARGIN) x both the
        first and the last layer's. Held: one interior layer is a funnel in >=
        SAME_LAYER_FRACTION of the seeds."""
        per = summary["per_seed"]
        acc = summary["test_acc"]["mean"]
        pre = [
            baseline_learned(acc, chance=summary["chance_pct"], name="linear DNN"),
            no_divergence(summary["diverged_members"]),
            None if per else "no seed finished",
        ]

        def check():
            funnels = []
            for p in per:
                last = len(p["bounds"]) - 1
                ok = (
                    0 < p["argmin"] < last
                    and p["min_bound"] <= (1 - FUNNEL_MARGIN) * p["first_bound"]
                    and p["min_bound"] <= (1 - FUNNEL_MARGIN) * p["last_bound"]
                )
                funnels.append(p["argmin_layer"] if ok else None)
            counts = Counter(f for f in funnels if f is not None)
            layer, wins = counts.most_common(1)[0] if counts else (None, 0)
            need = math.ceil(SAME_LAYER_FRACTION * summary["seeds"] - 1e-9)
            parts = [
                f"seed {p['seed']}: min at {p['argmin_layer']} "
                f"({p['min_bound']:.3g}; first {p['first_bound']:.3g}, last "
                f"{p['last_bound']:.3g})"
                for p in per
            ]
            detail = (
                "; ".join(parts)
                + f". Funnel (interior, >= {FUNNEL_MARGIN:.0%} below first and last): "
                + (f"{layer} in {wins} of {len(per)} seeds" if layer else "none")
                + f"; needed the same layer in >= {need}"
            )
            return (
                wins >= need,
                detail,
                {"funnel_layer": layer, "wins": wins, "needed": need, "per_seed_funnel": funnels},
            )

        return [
            judge(
                "funnel",
                QUOTE,
                f"the estimated W1 bound ||W_L...W_(k+1)||_2 * SW1(T_k) has an interior "
                f"minimizing hidden layer >= {FUNNEL_MARGIN:.0%} below the first and the last "
                f"hidden layer's value, the same layer in >= 2/3 of the seeds",
                pre,
                check,
            )
        ]

    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        def f(c, digits=3):
            return f"{_num(c['mean']):.{digits}g} ± {_num(c['std']):.2g}"

        st = summary["setup"]
        rows = [
            [
                r["layer"],
                f(r["kl"]),
                f(r["kl_analytic"]),
                f(r["sw1"]),
                f(r["sw1_analytic"]),
                f(r["lipschitz"]),
                f(r["bound"]),
                f(r["bound_analytic"]),
            ]
            for r in summary["rows"]
        ]
        seeds = [
            [
                str(p["seed"]),
                f"{p['test_acc']:.1f}",
                f"{p['train_loss']:.3g}",
                p["argmin_layer"],
                " ".join(f"{b:.3g}" for b in p["bounds"]),
                f"{p['kl_nonincreasing']:.2f}",
                f"{p['kl_analytic_nonincreasing']:.2f}",
            ]
            for p in summary["per_seed"]
        ]
        return [
            (
                f"Per hidden layer (mean ± std over seeds): train-vs-test Gaussian-fit KL and "
                f"sliced W1, estimated and analytic (Gaussian), the rest of the network's "
                f"Lipschitz constant and the W1 bound (d = {st['d']}, depth {st['depth']}, "
                f"n_train {st['n_train']}, {st['steps']} SGD steps)",
                [
                    "layer",
                    "KL",
                    "KL analytic",
                    "SW1",
                    "SW1 analytic",
                    "Lipschitz",
                    "bound",
                    "bound analytic",
                ],
                rows,
            ),
            (
                "Per seed: test accuracy %, final train loss, the W1 bound's minimizing layer, "
                "the bounds by layer, and the fraction of consecutive layers where the KL does "
                "not increase (estimator test: data processing)",
                [
                    "seed",
                    "test acc",
                    "train loss",
                    "argmin",
                    "bounds",
                    "KL non-incr.",
                    "analytic KL non-incr.",
                ],
                seeds,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        xs = list(range(1, len(summary["rows"]) + 1))
        for p in summary["per_seed"]:
            axes[0].plot(xs, p["bounds"], "o-", ms=3, label=f"seed {p['seed']}")
        ba = [_num(r["bound_analytic"]["mean"]) for r in summary["rows"]]
        axes[0].plot(xs, ba, "k--", label="analytic (seed mean)")
        axes[0].set_xlabel("hidden layer k")
        axes[0].set_ylabel("W1 bound  ||W_L..W_(k+1)|| * SW1(T_k)")
        axes[0].legend(fontsize=8)
        axes[0].grid(alpha=0.3)
        for key, style in (("kl", "o-"), ("kl_analytic", "s--")):
            axes[1].errorbar(
                xs,
                [_num(r[key]["mean"]) for r in summary["rows"]],
                yerr=[_num(r[key]["std"]) for r in summary["rows"]],
                fmt=style,
                ms=3,
                capsize=2,
                label=key.replace("_", " "),
            )
        axes[1].set_xlabel("hidden layer k")
        axes[1].set_ylabel("Gaussian KL(train || test), nats")
        axes[1].legend(fontsize=8)
        axes[1].grid(alpha=0.3)
        fig.suptitle("Generalization funnel on a linear DNN")
        return [Figure("generalization_bounds.png", "W1 bound and KL by layer", figure_png(fig))]


def _nonincreasing(values: list[float]) -> float:
    """Fraction of consecutive pairs with ``values[i+1] <= values[i]`` (1e-9 slack)."""
    if len(values) < 2:
        return float("nan")
    pairs = list(zip(values[:-1], values[1:], strict=True))
    return sum(b <= a + 1e-9 for a, b in pairs) / len(pairs)
