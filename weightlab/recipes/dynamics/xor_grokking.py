"""Recipe ``xor-grokking``: Xu, Wang, Frei, Vardi & Hu (2023), "Benign Overfitting and
Grokking in ReLU Networks for XOR Cluster Data" (row [#45]), a reduced version (finite
``n`` and ``d``).

Task ``xor``: ``n = 200`` training points in ``d = 8,000`` dimensions, cluster means
``±μ₁, ±μ₂`` (orthogonal, ``‖μ‖² = 300``), ``N(0, I_d)`` noise, 10% of the training labels
flipped, 2,000 clean test points (so the Bayes-optimal rule, class of ``argmax(|xᵀμ₁|,
|xᵀμ₂|)``, is ≈ 100% accurate; its accuracy on the test split is reported). Network: the
paper's two-layer ReLU net ``f(x) = Σ_j a_j ReLU(w_jᵀx)``, width ``m = 100``, no biases,
``w_j ~ N(0, ω² I)`` with ``ω = 1e-6``, readout fixed at ``a_j = ±1/√m`` (half each).
Training: full-batch GD on the logistic loss ``log(1 + exp(−ỹ f(x)))`` (``ỹ = ±1``),
step 0.1, 1,000 steps, only the ``w_j`` trained.

The net is a weightlab ``MLP`` ``d-m-2`` with two logits ``(−f/2, f/2)``: readout rows
``∓a/2`` and zero biases, all frozen by ``lr_mult = 0``. Cross-entropy on these logits is
exactly the logistic loss of ``f`` with class 1 as ``ỹ = +1``, and ``argmax`` is
``sign f``. The 5 seeds (initializations; one data set) train as one population, logged
at every step up to step 100 and every 50 after: two calls of the training loop (100
steps evaluated every step, then 900 more from the first call's weights evaluated every
50); GD without momentum keeps no optimizer state, so this is one 1,000-step run. Each
call is a resumable unit. A probe records, per step, the training accuracy on the given
(noisy) labels, the fit of the flipped labels and of the clean ones; the built-in
``weight_norm`` probe records ``‖W‖_F``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.errors import ConfigError
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import judge, no_divergence
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator
from weightlab.train.config import OptimConfig, ParamGroup, TrainConfig
from weightlab.train.probes import Probe, weight_norm

QUOTE_A = (
    "after the first step of GD, the network achieves 100% training accuracy, perfectly "
    "fitting the noisy labels in the training data, but achieves near-random test accuracy"
)
QUOTE_B = (
    "At a later training step, the network achieves near-optimal test accuracy while still "
    "fitting the random labels in the training data"
)
# Fixed claim thresholds (from the issue), not options.
STEP1_TRAIN_MIN = 0.98  # (a) train accuracy after step 1 >= 98% in every seed ...
STEP1_TEST_RANGE = (0.35, 0.65)  # ... and test accuracy within [0.35, 0.65]
BAYES_GAP = 0.05  # (b) final test accuracy >= Bayes - 5 pt in every seed ...
FLIPPED_FIT = 1.0  # ... and every flipped training label fit
REPORT_TEST = 0.9  # reported: first step with test accuracy >= 90%
SERIES = ("test_acc", "train_acc", "flipped_fit", "clean_fit", "weight_norm")


@dataclass(frozen=True)
class XorGrokkingConfig(RecipeConfig):
    seeds: int = opt(5, "number of seeds (initializations, trained as one population)", min=1)
    data: str = opt("xor", "task: XOR clusters with label flips")
    n_train: int = opt(200, "training points n", min=1, max=100000)
    n_test: int = opt(2000, "clean test points", min=1, max=100000)
    d: int = opt(8000, "input dimension d", min=2, max=1_000_000)
    mu_sq: float = opt(300.0, "squared norm ‖μ‖² of each cluster mean", gt=0, max=1e9)
    flip: float = opt(
        0.1, "fraction of training labels flipped (in [0, 0.5): below half)", min=0, lt=0.5
    )
    width: int = opt(100, "hidden units m", min=2, max=100000)
    init_scale: float = opt(1e-6, "standard deviation ω of the first-layer init", gt=0, max=10)
    lr: float = opt(0.1, "GD step", gt=0, max=1e6)
    steps: int = opt(1000, "full-batch GD steps", min=1, max=1_000_000)
    dense_steps: int = opt(100, "evaluate at every step up to this one", min=1, max=1_000_000)
    late_every: int = opt(50, "steps between evaluations after --dense-steps", min=1)

    @property
    def mu(self) -> float:
        return math.sqrt(self.mu_sq)


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"steps": list, "members": list}, "the metrics")
    expect_list_of(
        metrics["members"],
        {"seed": int, "diverged": bool, **{k: list for k in SERIES}},
        "members",
    )


def bayes_accuracy(data) -> float:
    """Accuracy on the test split of the Bayes-optimal rule for the XOR mixture: class 0
    (means ``±μ₁``) iff ``|xᵀμ₁| > |xᵀμ₂|`` (the class likelihoods are ``∝ cosh(xᵀμ_k)``
    with equal ``‖μ_k‖``)."""
    x = data.test.x.double()
    s1 = (x @ data.info["mu1"].double().to(x.device)).abs()
    s2 = (x @ data.info["mu2"].double().to(x.device)).abs()
    pred = (s2 > s1).long()
    return float((pred == data.test.y).double().mean())


class XorGrokking(Recipe):
    name = "xor-grokking"
    family = "dynamics"
    row = 45
    paper = (
        "Xu, Wang, Frei, Vardi & Hu 2023, Benign Overfitting and Grokking in ReLU Networks "
        "for XOR Cluster Data (arXiv:2310.02541)"
    )
    claim = (
        "one GD step fits the noisy training labels at chance test accuracy; later GD steps "
        "reach near-optimal test accuracy while still fitting the flipped labels"
    )
    Config = XorGrokkingConfig
    tasks = ("xor",)
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "n_train": 40,
        "n_test": 200,
        "d": 400,
        "width": 20,
        "steps": 30,
        "dense_steps": 10,
        "late_every": 10,
    }
    broken: ClassVar[dict] = {"lr": 1e-9}
    # CPU time, one thread, shared machine: 1.0-1.2 s in-process, 0.9 s in the conformance run
    smoke_seconds = 1.2

    def task_params(self, cfg: XorGrokkingConfig) -> dict:
        return {
            "n_train": cfg.n_train,
            "n_val": 1,
            "n_test": cfg.n_test,
            "d": cfg.d,
            "mu": cfg.mu,
            "flip": cfg.flip,
            "eval_flip": 0.0,
        }

    def validate(self, cfg: XorGrokkingConfig, data_sizes: dict[str, int]) -> None:
        """The dense logging phase fits in the run; the later evaluations land on the end."""
        if cfg.dense_steps > cfg.steps:
            raise ConfigError(
                f"--dense-steps {cfg.dense_steps} exceeds --steps {cfg.steps}; lower it"
            )
        if (cfg.steps - cfg.dense_steps) % cfg.late_every:
            raise ConfigError(
                f"--steps {cfg.steps} minus --dense-steps {cfg.dense_steps} is not a multiple "
                f"of --late-every {cfg.late_every}; pick values that make the last step an "
                "evaluation"
            )

    def init_state(self, cfg: XorGrokkingConfig, seed: int) -> dict[str, torch.Tensor]:
        """``w_j ~ N(0, ω² I)``; readout rows ``∓a/2`` with ``a_j = +1/√m`` for the first
        half of the units and ``−1/√m`` for the rest; zero biases."""
        m, d = cfg.width, cfg.d
        g = generator(derive_seed(self.name, "init", seed))
        a = torch.full((m,), 1.0 / math.sqrt(m))
        a[m // 2 :] *= -1
        return {
            "layers.0.weight": cfg.init_scale * torch.randn((m, d), generator=g),
            "layers.0.bias": torch.zeros(m),
            "layers.1.weight": torch.stack([-a / 2, a / 2]),
            "layers.1.bias": torch.zeros(2),
        }

    def run(self, cfg: XorGrokkingConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec, Population

        data = self.load_data(cfg)
        if "train_flipped" not in data.info:
            raise ConfigError(f"--data {cfg.data} has no record of flipped labels; use xor")
        factory = model_factory(MLP, [cfg.d, cfg.width, 2])
        optim = OptimConfig(
            "sgd", lr=cfg.lr, groups=(ParamGroup(("layers.1.*", "*.bias"), lr_mult=0.0),)
        )
        flipped = data.info["train_flipped"].to(data.train.y.device)
        n = len(data.train)

        def fit(model, ctx) -> dict:
            out = {}
            pred = model(ctx.data.train.x).argmax(-1)
            ok = (pred == ctx.data.train.y).double()
            out["train_acc"] = ok.mean()
            out["flipped_fit"] = ok[flipped].mean() if bool(flipped.any()) else math.nan
            out["clean_fit"] = ok[~flipped].mean() if bool((~flipped).any()) else math.nan
            if ctx.step == 0:  # the loop evaluates after updates only: step 0's test accuracy
                test = model(ctx.data.test.x).argmax(-1)
                out["test_acc"] = (test == ctx.data.test.y).double().mean()
            return out

        def phase(key: str, steps: int, every: int, offset: int, start: list | None):
            def compute():
                specs = [
                    MemberSpec(
                        seed=derive_seed(self.name, "member", k),
                        init_state=self.init_state(cfg, k) if start is None else start[k],
                    )
                    for k in range(cfg.seeds)
                ]
                pop = Population(factory, specs, device=cfg.device)
                probes = [Probe("fit", every, fit), weight_norm(every, ("layers.0.weight",))]
                train_cfg = TrainConfig(steps, n, every, optim)
                results = pop.fit(data, train_cfg, probes=probes, progress=progress)
                members = []
                for k, r in enumerate(results):
                    rows = {p["step"]: p for p in r.probes if offset == 0 or p["step"] > 0}
                    hist = {h.step: h.test_acc for h in r.history}
                    steps_k = sorted(rows)
                    rec = {"seed": k, "diverged": bool(r.diverged)}
                    rec["test_acc"] = [
                        _json(rows[t].get("fit/test_acc", hist.get(t))) for t in steps_k
                    ]
                    for key_ in ("train_acc", "flipped_fit", "clean_fit"):
                        rec[key_] = [_json(rows[t].get(f"fit/{key_}")) for t in steps_k]
                    rec["weight_norm"] = [
                        _json(rows[t].get("weight_norm/layers.0.weight")) for t in steps_k
                    ]
                    members.append(rec)
                    steps_all = [offset + t for t in steps_k]
                finals = {
                    f"seed{k}.{name}": v
                    for k in range(len(results))
                    for name, v in pop.state(k).items()
                }
                return {"steps": steps_all, "members": members}, finals

            return rd.unit(key, compute, check=_check_unit)

        first, tensors = phase("steps-dense", cfg.dense_steps, 1, 0, None)
        units = [first]
        if cfg.steps > cfg.dense_steps:
            start = [
                {
                    name: tensors[f"seed{k}.{name}"]
                    for name in (
                        "layers.0.weight",
                        "layers.0.bias",
                        "layers.1.weight",
                        "layers.1.bias",
                    )
                }
                for k in range(cfg.seeds)
            ]
            late, _ = phase(
                "steps-late", cfg.steps - cfg.dense_steps, cfg.late_every, cfg.dense_steps, start
            )
            units.append(late)
        return self.summarize(cfg, units, bayes_accuracy(data), int(flipped.sum()))

    # -- summary and claims -------------------------------------------------------------
    def summarize(
        self, cfg: XorGrokkingConfig, units: list[dict], bayes: float, n_flipped: int
    ) -> dict:
        steps = [t for u in units for t in u["steps"]]
        members = []
        for k in range(cfg.seeds):
            rec = {"seed": k, "diverged": any(u["members"][k]["diverged"] for u in units)}
            for key in SERIES:
                rec[key] = [v for u in units for v in u["members"][k][key]]
            members.append(rec)
        kept = [m for m in members if not m["diverged"]]
        curves = {}
        for key in SERIES:
            cols = list(zip(*[m[key] for m in kept], strict=True)) if kept else []
            ms = [mean_std(c) for c in cols]
            curves[f"{key}_mean"] = [_json(a) for a, _ in ms]
            curves[f"{key}_std"] = [_json(b) for _, b in ms]
        per_seed = []
        i1 = steps.index(1) if 1 in steps else None
        for m in members:
            first90 = next(
                (
                    t
                    for t, v in zip(steps, m["test_acc"], strict=True)
                    if v is not None and v >= REPORT_TEST
                ),
                None,
            )
            per_seed.append(
                {
                    "seed": m["seed"],
                    "diverged": m["diverged"],
                    "step1_train": m["train_acc"][i1] if i1 is not None else None,
                    "step1_test": m["test_acc"][i1] if i1 is not None else None,
                    "final_train": m["train_acc"][-1],
                    "final_test": m["test_acc"][-1],
                    "final_flipped_fit": m["flipped_fit"][-1],
                    "first_step_test_90": first90,
                }
            )
        claims = [c.to_dict() for c in self.check_claims(per_seed, bayes, n_flipped)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "steps": steps,
            "curves": curves,
            "per_seed": per_seed,
            "bayes_test_acc": bayes,
            "n_flipped": n_flipped,
            "claims": claims,
            "members": len(members),
            "diverged_members": [f"seed {m['seed']}" for m in members if m["diverged"]],
            "reduced_version": (
                f"reduced version: finite n = {cfg.n_train}, d = {cfg.d}, ‖μ‖² = {cfg.mu_sq:g} "
                "(the paper's theorems are asymptotic)"
            ),
        }

    @staticmethod
    def check_claims(per_seed: list[dict], bayes: float, n_flipped: int) -> list[ClaimResult]:
        """(a) after step 1 every seed has train accuracy >= 98% and test accuracy in [0.35,
        0.65]; (b) at the last step every seed has test accuracy >= Bayes − 5 pt and fits
        every flipped training label."""
        diverged = [f"seed {s['seed']}" for s in per_seed if s["diverged"]]
        no_step1 = (
            None
            if per_seed and per_seed[0]["step1_train"] is not None
            else ("the run has no evaluation after step 1")
        )
        no_flip = None if n_flipped > 0 else "no training label is flipped (--flip 0)"
        lo, hi = STEP1_TEST_RANGE

        def check_a():
            ok = all(
                s["step1_train"] is not None
                and s["step1_train"] >= STEP1_TRAIN_MIN
                and s["step1_test"] is not None
                and lo <= s["step1_test"] <= hi
                for s in per_seed
            )
            detail = (
                "after step 1, train / test accuracy per seed: "
                + ", ".join(f"{_pct(s['step1_train'])} / {_pct(s['step1_test'])}" for s in per_seed)
                + f"; needed train >= {STEP1_TRAIN_MIN:.0%} and test in [{lo:g}, {hi:g}] in "
                "every seed"
            )
            return ok, detail, {"per_seed": per_seed}

        def check_b():
            need = bayes - BAYES_GAP
            ok = all(
                s["final_test"] is not None
                and s["final_test"] >= need
                and s["final_flipped_fit"] is not None
                and s["final_flipped_fit"] >= FLIPPED_FIT
                for s in per_seed
            )
            detail = (
                "at the last step, test accuracy / flipped-label fit per seed: "
                + ", ".join(
                    f"{_pct(s['final_test'])} / {_pct(s['final_flipped_fit'])}" for s in per_seed
                )
                + f"; needed test >= Bayes {bayes:.1%} − {BAYES_GAP * 100:g} pt = {need:.1%} and "
                f"all {n_flipped} flipped labels fit, in every seed; first step with test >= "
                f"{REPORT_TEST:.0%}: " + ", ".join(str(s["first_step_test_90"]) for s in per_seed)
            )
            return ok, detail, {"bayes": bayes, "per_seed": per_seed}

        return [
            judge(
                "a",
                QUOTE_A,
                f"after one GD step every seed has train accuracy >= {STEP1_TRAIN_MIN:.0%} and "
                f"test accuracy in [{lo:g}, {hi:g}]",
                [no_step1, no_divergence(diverged)],
                check_a,
            ),
            judge(
                "b",
                QUOTE_B,
                f"at the last step every seed has test accuracy >= Bayes − {BAYES_GAP * 100:g} pt "
                "and fits every flipped training label",
                [no_flip, no_divergence(diverged)],
                check_b,
            ),
        ]

    # -- report ------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        header = [
            "seed",
            "step 1 train",
            "step 1 test",
            "first step test ≥ 90%",
            "final train",
            "final test",
            "final flipped fit",
        ]
        rows = [
            [
                str(s["seed"]) + (" (diverged)" if s["diverged"] else ""),
                _pct(s["step1_train"]),
                _pct(s["step1_test"]),
                str(s["first_step_test_90"]),
                _pct(s["final_train"]),
                _pct(s["final_test"]),
                _pct(s["final_flipped_fit"]),
            ]
            for s in summary["per_seed"]
        ]
        c, steps = summary["curves"], summary["steps"]
        pick = [t for t in (0, 1, 2, 3, 5, 10, 20, 50, 100) if t in steps]
        if steps and steps[-1] not in pick:
            pick.append(steps[-1])
        curve_rows = [
            [
                str(t),
                *(
                    _pm(
                        _pc(c[f"{k}_mean"][steps.index(t)]),
                        _pc(c[f"{k}_std"][steps.index(t)]),
                        1,
                    )
                    for k in ("train_acc", "test_acc", "flipped_fit", "clean_fit")
                ),
                f"{_f(c['weight_norm_mean'][steps.index(t)]):.3g}",
            ]
            for t in pick
        ]
        title = (
            f"Per seed (Bayes-optimal test accuracy {summary['bayes_test_acc']:.1%}; "
            f"{summary['n_flipped']} flipped training labels) — {summary['reduced_version']}"
        )
        return [
            (title, header, rows),
            (
                "Accuracy (%) by step, mean ± std over seeds",
                ["step", "train", "test", "flipped fit", "clean fit", "‖W‖_F"],
                curve_rows,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps, c = summary["steps"], summary["curves"]
        x = [max(t, 0.7) for t in steps]  # step 0 drawn at 0.7 on the log axis
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        labels = {
            "train_acc": "train (noisy labels)",
            "test_acc": "test (clean)",
            "flipped_fit": "flipped labels fit",
            "clean_fit": "clean train labels fit",
        }
        for k, lab in labels.items():
            mu = [_f(v) for v in c[f"{k}_mean"]]
            sd = [_f(v) for v in c[f"{k}_std"]]
            (line,) = axes[0].plot(x, mu, "-", lw=1.5, label=lab)
            axes[0].fill_between(
                x,
                [a - b for a, b in zip(mu, sd, strict=True)],
                [a + b for a, b in zip(mu, sd, strict=True)],
                color=line.get_color(),
                alpha=0.2,
            )
        axes[0].axhline(summary["bayes_test_acc"], color="k", ls=":", lw=1, label="Bayes (test)")
        axes[0].axhline(0.5, color="gray", ls="--", lw=0.8)
        axes[0].set_ylabel("accuracy")
        axes[0].legend(fontsize=8)
        axes[1].plot(x, [_f(v) for v in c["weight_norm_mean"]], "-", color="tab:purple")
        axes[1].set_yscale("log")
        axes[1].set_ylabel("‖W‖_F (first layer)")
        for ax in axes:
            ax.set_xscale("log")
            ax.set_xlabel("GD step (step 0 at 0.7)")
            ax.grid(alpha=0.3, which="both")
        fig.suptitle("XOR clusters: benign overfitting and grokking (mean ± std over seeds)")
        png = figure_png(fig)
        return [Figure("accuracy_vs_step.png", "Train/test accuracy and flipped-label fit", png)]


def _json(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _f(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _pc(v: float | None) -> float | None:
    return None if v is None else 100 * v


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"
