"""Recipe ``opposing-signals``: Rosenfeld & Risteski (2023), "Outliers with Opposing Signals
Have an Outsized Effect on Neural Network Optimization" (row [#89]).

A tanh MLP 40-200-200-10 is trained on the first ``n`` MNIST-1D training examples by
full-batch gradient descent (plain SGD on the whole set, no momentum) with the mean squared
error against one-hot targets (the loop's ``mse``: the mean over the 10 outputs, so the
Hessian is a tenth of that of the summed squared error and the step sizes are ten times those
quoted for it), at two step sizes η, seeds as separate runs (the per-step loss history is a
step callback, which needs the loop engine). Every ``sharpness_every`` steps the top Hessian
eigenvalue of the training loss (:func:`weightlab.probes.hessian.top_eigenvalue`, power
iteration) is recorded; after every step the loss of every training example.

Gradient descent at step size η is stable on a quadratic only while the sharpness is at most
2/η; the edge of stability (Cohen et al. 2021) is sharpness rising to 2/η and hovering there.
The paper attributes it to opposing signals: loss spikes where two groups of examples trade
loss. Around each loss spike (:func:`weightlab.probes.opposing.loss_spikes`: a local maximum
``spike_rise`` above the minimum of the preceding ``spike_window`` steps) the finder
(:func:`~weightlab.probes.opposing.find_opposing_groups`) takes the ``k`` most oscillating
examples over ``±half_window`` steps and splits them into two groups; their mean loss
changes' correlation is recorded.

Claims (thresholds fixed below), per η: (a) the sharpness rises (its mean over the last third
of training exceeds its value at step 0) and then stays within 20% of 2/η over the last third
(every seed-mean measurement there); (b) the finder's two groups have anti-correlated loss
changes around loss spikes: mean correlation over all spikes of all seeds ≤ −0.3.
Preconditions: no run diverged; the model learned (test accuracy above chance); (b) at
least one spike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.errors import ConfigError
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate, no_divergence
from weightlab.recipes.options import float_list
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields
from weightlab.seeding import derive_seed

QUOTE_A = "it implies a conceptually new cause for progressive sharpening and the edge of stability"
QUOTE_B = (
    "subsequent sharpening causes their loss to rise rapidly, oscillating between high on one "
    "group and then the other, until the overall loss spikes"
)
# Fixed claim thresholds (from the issue), not options.
EOS_TOL = 0.20  # (a) last-third sharpness within 20% of 2/eta
MAX_CORR = -0.3  # (b) mean between-group correlation around spikes


@dataclass(frozen=True)
class OpposingSignalsConfig(RecipeConfig):
    data: str = opt("mnist1d", "task: MNIST-1D (the first --n training examples)")
    n: int = opt(2000, "training examples (full batch)", min=10)
    hidden: int = opt(200, "width of the two tanh hidden layers", min=1, max=4096)
    etas: str = opt("0.5,1.0", "full-batch GD step sizes (comma list; mse = mean over outputs)")
    steps: int = opt(2000, "gradient-descent steps", min=3, max=1000000)
    sharpness_every: int = opt(100, "steps between sharpness measurements", min=1)
    power_iters: int = opt(20, "power iterations per sharpness measurement", min=1, max=1000)
    spike_rise: float = opt(0.1, "a spike: loss >= (1 + rise) x the recent minimum", gt=0)
    spike_window: int = opt(20, "steps before a spike whose minimum it is compared to", min=1)
    half_window: int = opt(10, "finder window: steps either side of a spike", min=1)
    k: int = opt(20, "finder: number of most oscillating examples", min=2)


def _check_unit(metrics: dict) -> None:
    expect_fields(
        metrics,
        {
            "eta": float,
            "seed": int,
            "sharpness": list,
            "loss": list,
            "spikes": list,
            "groups": list,
            "test_acc": float,
            "diverged": bool,
        },
        "the metrics",
    )


class OpposingSignals(Recipe):
    name = "opposing-signals"
    family = "probes"
    row = 89
    paper = (
        "Rosenfeld & Risteski 2023, Outliers with Opposing Signals Have an Outsized Effect on "
        "Neural Network Optimization (arXiv:2311.04163)"
    )
    claim = (
        "full-batch GD sharpness rises to 2/eta and stays there; around loss spikes the most "
        "oscillating examples form two groups with anti-correlated losses"
    )
    Config = OpposingSignalsConfig
    tasks = ("mnist1d",)
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "n": 200,
        "hidden": 16,
        "steps": 60,
        "sharpness_every": 20,
        "power_iters": 5,
        "k": 6,
    }
    broken: ClassVar[dict] = {"etas": "1000.0"}
    # measured in-process (run_recipe with the smoke config, one thread): 1.6 s wall
    smoke_seconds = 1.6

    def validate(self, cfg: OpposingSignalsConfig, data_sizes: dict[str, int]) -> None:
        float_list(cfg.etas, "--etas", gt=0)
        if cfg.n > data_sizes["train"]:
            raise ConfigError(
                f"--n {cfg.n} exceeds the {data_sizes['train']} training examples; lower it"
            )
        if cfg.k > cfg.n:
            raise ConfigError(f"--k {cfg.k} exceeds --n {cfg.n}; lower it")

    def run(self, cfg: OpposingSignalsConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.data.task import Split, TaskData
        from weightlab.models import build
        from weightlab.models.mlp import MLP
        from weightlab.probes.hessian import sharpness_probe
        from weightlab.probes.opposing import find_opposing_groups, loss_spikes
        from weightlab.progress import progress_bar
        from weightlab.train import OptimConfig, TrainConfig, train
        from weightlab.train.losses import mse_per_example

        full = self.load_data(cfg)
        task = TaskData(
            "mnist1d", Split(full.train.x[: cfg.n], full.train.y[: cfg.n]), full.val, full.test, 10
        )
        etas = float_list(cfg.etas, "--etas", gt=0)
        widths = [task.input_shape[0], cfg.hidden, cfg.hidden, task.num_classes]

        def compute(i: int, eta: float, s: int):
            model = build(
                MLP, widths, seed=derive_seed(self.name, "init", s), activation="tanh"
            ).to(cfg.device)
            hist: list[torch.Tensor] = []

            def record(m, ctx):
                with torch.no_grad():
                    hist.append(mse_per_example(m(task.train.x), task.train.y).float())

            tcfg = TrainConfig(cfg.steps, cfg.n, cfg.steps, OptimConfig("sgd", lr=eta), loss="mse")
            probe = sharpness_probe(cfg.sharpness_every, iters=cfg.power_iters, tol=1e-3)
            res = train(model, task, tcfg, 0, seed=s, probes=[probe], callbacks=[record])
            h = torch.stack(hist) if hist else torch.zeros(0, cfg.n)
            curve = h.mean(1)
            finite = bool(torch.isfinite(curve).all()) and not res.diverged
            spikes = loss_spikes(curve, cfg.spike_rise, cfg.spike_window) if finite else []
            groups = []
            for t in spikes:
                lo, hi = t - cfg.half_window, t + cfg.half_window + 1
                if lo < 0 or hi > len(h):
                    continue
                g = find_opposing_groups(h[lo:hi], k=cfg.k)
                groups.append({"step": t + 1, **g.to_dict()})
            sharp = [
                [r["step"], r.get("sharpness/value")] for r in res.probes if "sharpness/value" in r
            ]
            last = res.history[-1]
            return {
                "eta": eta,
                "seed": s,
                "sharpness": sharp,
                "loss": [float(v) for v in curve],
                "spikes": [t + 1 for t in spikes],
                "groups": groups,
                "test_acc": 100.0 * float(last.test_acc) if last.test_acc is not None else math.nan,
                "diverged": not finite,
            }, {}

        records = []
        bar = progress_bar(len(etas) * cfg.seeds, self.name, "run", progress, line_each_update=True)
        for i, eta in enumerate(etas):
            for s in range(cfg.seeds):
                m, _ = rd.unit(
                    f"eta-{i}-seed-{s:02d}",
                    lambda i=i, e=eta, s=s: compute(i, e, s),
                    check=_check_unit,
                )
                records.append(m)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        return self.summarize(cfg, etas, records, 100 * majority_rate(task.test.y))

    def summarize(self, cfg, etas: list[float], records: list[dict], chance: float) -> dict:
        arms = []
        for eta in etas:
            rs = [r for r in records if r["eta"] == eta]
            steps = [p[0] for p in rs[0]["sharpness"]]
            curve = []
            for j, t in enumerate(steps):
                vals = [r["sharpness"][j][1] for r in rs if j < len(r["sharpness"])]
                vals = [v for v in vals if v is not None and math.isfinite(v)]
                mu, sd = mean_std(vals) if vals else (math.nan, math.nan)
                curve.append({"step": t, "mean": mu, "std": sd})
            corrs = [g["between_corr"] for r in rs for g in r["groups"]]
            corrs = [c for c in corrs if c is not None and math.isfinite(c)]
            acc = mean_std([r["test_acc"] for r in rs])
            arms.append(
                {
                    "eta": eta,
                    "threshold": 2.0 / eta,
                    "sharpness": curve,
                    "spikes_per_seed": [len(r["spikes"]) for r in rs],
                    "between_corr": corrs,
                    "between_corr_mean": sum(corrs) / len(corrs) if corrs else None,
                    "within_corr_mean": _mean([g["within_corr"] for r in rs for g in r["groups"]]),
                    "test_acc": {"mean": acc[0], "std": acc[1]},
                    "final_loss": mean_std([r["loss"][-1] for r in rs if r["loss"]]),
                    "diverged": [f"eta {eta:g} seed {r['seed']}" for r in rs if r["diverged"]],
                    "loss_curves": [r["loss"][:: max(1, len(r["loss"]) // 400)] for r in rs],
                    "spikes": [r["spikes"] for r in rs],
                }
            )
        summary = {
            "recipe": self.name,
            "paper": self.paper,
            "arms": arms,
            "chance_pct": chance,
            "members": len(records),
            "diverged_members": [d for a in arms for d in a["diverged"]],
            "setup": {
                "n": cfg.n,
                "hidden": cfg.hidden,
                "steps": cfg.steps,
                "sharpness_every": cfg.sharpness_every,
                "power_iters": cfg.power_iters,
                "k": cfg.k,
                "half_window": cfg.half_window,
                "spike_rise": cfg.spike_rise,
                "spike_window": cfg.spike_window,
                "loss": "mse (mean over the 10 outputs, one-hot targets)",
            },
        }
        summary["claims"] = [c.to_dict() for c in self.check_claims(summary)]
        return summary

    @staticmethod
    def check_claims(summary: dict) -> list[ClaimResult]:
        """Per η: (a) edge of stability over the last third; (b) anti-correlated groups."""
        out = []
        for arm in summary["arms"]:
            eta, thr = arm["eta"], arm["threshold"]
            div = no_divergence(arm["diverged"])
            learned = baseline_learned(
                arm["test_acc"]["mean"], chance=summary["chance_pct"], name=f"eta {eta:g}"
            )
            curve = [c for c in arm["sharpness"] if c["mean"] is not None]

            def check_a(curve=curve, thr=thr):
                if not curve:
                    return None, "no sharpness measurements", {}
                last_step = curve[-1]["step"]
                tail = [c for c in curve if c["step"] >= 2 * last_step / 3]
                vals = [_num(c["mean"]) for c in tail]
                start = _num(curve[0]["mean"])
                tail_mean = sum(vals) / len(vals)
                rel = [abs(v / thr - 1) for v in vals]
                rises = tail_mean > start
                ok = rises and max(rel) <= EOS_TOL
                detail = (
                    f"sharpness {start:.2f} at step 0 -> {tail_mean:.2f} (mean of the last "
                    f"third, {len(vals)} measurements {min(vals):.2f}-{max(vals):.2f}); 2/eta = "
                    f"{thr:.2f}, largest deviation {100 * max(rel):.0f}% (needed rise and <= "
                    f"{100 * EOS_TOL:.0f}%)"
                )
                return ok, detail, {"start": start, "tail_mean": tail_mean, "max_rel_dev": max(rel)}

            def check_b(arm=arm):
                c = arm["between_corr_mean"]
                detail = (
                    f"between-group correlation of loss changes around {len(arm['between_corr'])} "
                    f"spikes: mean {c:.2f} (range {min(arm['between_corr']):.2f} to "
                    f"{max(arm['between_corr']):.2f}); within-group {arm['within_corr_mean']:.2f}; "
                    f"needed <= {MAX_CORR:g}"
                )
                return c <= MAX_CORR, detail, {"between_corr_mean": c}

            spikes = (
                None
                if arm["between_corr"]
                else "no loss spike (with a full finder window) in any seed"
            )
            out.append(
                judge(
                    f"a eta={eta:g}",
                    QUOTE_A,
                    f"sharpness rises, then stays within {100 * EOS_TOL:.0f}% of 2/eta = {thr:.2f} "
                    "over the last third of training (seed-mean curve)",
                    [div, learned],
                    check_a,
                )
            )
            out.append(
                judge(
                    f"b eta={eta:g}",
                    QUOTE_B,
                    f"around loss spikes the finder's two groups have anti-correlated loss "
                    f"changes (mean correlation <= {MAX_CORR:g})",
                    [div, learned, spikes],
                    check_b,
                )
            )
        return out

    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        st = summary["setup"]
        rows = []
        for arm in summary["arms"]:
            tail = arm["sharpness"][-1]
            rows.append(
                [
                    f"{arm['eta']:g}",
                    f"{arm['threshold']:.2f}",
                    f"{_num(arm['sharpness'][0]['mean']):.2f}",
                    _pm(tail["mean"], tail["std"], 2),
                    ", ".join(str(v) for v in arm["spikes_per_seed"]),
                    "—" if arm["between_corr_mean"] is None else f"{arm['between_corr_mean']:.2f}",
                    "—" if arm["within_corr_mean"] is None else f"{arm['within_corr_mean']:.2f}",
                    _pm(arm["test_acc"]["mean"], arm["test_acc"]["std"], 1),
                ]
            )
        return [
            (
                f"Full-batch GD on {st['n']} MNIST-1D examples, tanh MLP 40-{st['hidden']}-"
                f"{st['hidden']}-10, {st['steps']} steps, {st['loss']}; sharpness by "
                f"{st['power_iters']} power iterations every {st['sharpness_every']} steps "
                "(mean ± std over seeds)",
                [
                    "eta",
                    "2/eta",
                    "sharpness at 0",
                    "sharpness at end",
                    "spikes per seed",
                    "between-group corr",
                    "within-group corr",
                    "test acc %",
                ],
                rows,
            )
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        arms = summary["arms"]
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        for i, arm in enumerate(arms):
            c = f"C{i}"
            xs = [p["step"] for p in arm["sharpness"]]
            mu = [_num(p["mean"]) for p in arm["sharpness"]]
            sd = [_num(p["std"]) for p in arm["sharpness"]]
            axes[0].plot(xs, mu, color=c, label=f"eta {arm['eta']:g}")
            axes[0].fill_between(
                xs,
                [m - s for m, s in zip(mu, sd, strict=True)],
                [m + s for m, s in zip(mu, sd, strict=True)],
                color=c,
                alpha=0.2,
            )
            axes[0].axhline(arm["threshold"], color=c, ls="--", lw=0.8)
            curve = arm["loss_curves"][0]
            stride = max(1, summary["setup"]["steps"] // 400)
            axes[1].plot([stride * (j + 1) for j in range(len(curve))], curve, color=c, lw=0.8)
            for t in arm["spikes"][0]:
                axes[1].axvline(t, color=c, lw=0.4, alpha=0.5)
            if arm["between_corr"]:
                axes[2].scatter(
                    [i] * len(arm["between_corr"]), arm["between_corr"], color=c, alpha=0.6
                )
        axes[0].set_title("sharpness (dashed: 2/eta)")
        axes[0].set_xlabel("step")
        axes[0].legend()
        axes[1].set_title("training loss, seed 0 (lines: spikes)")
        axes[1].set_yscale("log")
        axes[1].set_xlabel("step")
        axes[2].axhline(MAX_CORR, color="grey", ls="--", lw=0.8)
        axes[2].set_xticks(range(len(arms)), [f"eta {a['eta']:g}" for a in arms])
        axes[2].set_title("between-group correlation per spike")
        for ax in axes:
            ax.grid(alpha=0.3)
        return [
            Figure(
                "opposing_signals.png",
                "sharpness, loss spikes and the opposing groups' correlations",
                figure_png(fig),
            )
        ]


def _mean(vals: list) -> float | None:
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None
