"""Recipe ``dynamical-decoupling``: Montanari & Urbani (2025), "Dynamical Decoupling of
Generalization and Overfitting in Large Two-Layer Networks" (row [#98]), a reduced version
(``n ≈ md``, not ``m ≫ n``).

Task ``teacher_relu``: ``x ~ N(0, I_d)``, ``y = ReLU(w*ᵀx) − 1/√(2π) + N(0, 0.25)`` (noise
standard deviation 0.5), ``d = 50``, ``n = 1,000`` training examples, 2,000 clean test
examples (the test MSE is the excess risk; the zero predictor scores ≈ 0.341). Student: the
mean-field two-layer network ``f(x) = (1/m) Σ_j a_j ReLU(w_jᵀx)``, ``m = 50``, no biases,
``w_j ~ N(0, I_d/d)`` and ``a_j ~ N(0, s²)`` for ``s ∈ {0.01, 1, 4}`` (the same ``w`` and
the same standard normal draws of ``a`` for every ``s`` of a seed, so the scales are
paired). Both layers train by full-batch GD on the mean squared error with step
``0.05·m`` for 20,000 steps. The network is a weightlab ``MLP`` ``d-m-1`` whose stored
readout is ``ã = a/m``; GD on ``a`` with step ``η`` is GD on ``ã`` with step ``η/m²``, so
the readout's parameter group gets ``lr_mult = 1/m²`` and the (zero) biases ``lr_mult = 0``.
The seeds of one ``s`` train as one population (one resumable unit per ``s``).

Measured at 40 log-spaced steps (plus step 0) from weight snapshots, vectorized over the
seeds: test error, training error, the alignment ``mean_j |w_jᵀw*| / ‖w_j‖``, the norm
``(1/m) Σ_j |a_j| ‖w_j‖`` (:func:`weightlab.dynamics.norms.two_layer_norm`, the "path
norm" of the claims) and the ℓ1 path norm ``𝟙ᵀ|ã||W|𝟙``
(:func:`weightlab.dynamics.norms.path_norm`).

Claims, judged on the seed-mean curves (fixed thresholds below): ``t_feat`` = first
evaluation where the test error has made 90% of its drop from step 0 to the minimum;
``t_over`` = first evaluation after the minimum where it has made half its later rise
(minimum to final).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.dynamics.norms import path_norm, two_layer_norm
from weightlab.errors import ConfigError
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, no_divergence
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import pm as _pm
from weightlab.recipes.tasks import task_opt
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator
from weightlab.train.config import OptimConfig, ParamGroup, TrainConfig

QUOTE_A = "A separation of time scales between feature learning and overfitting"
QUOTE_B = (
    "A non-monotone behavior of the test error and, correspondingly, a `feature unlearning' "
    "phase at large times"
)
QUOTE_C = (
    "algorithmic inductive bias towards small complexity, but only if the initialization "
    "has small enough complexity"
)
# Fixed claim thresholds (from the issue), not options.
FEAT_FRACTION = 0.9  # t_feat: 90% of the drop from step 0 to the minimum
OVER_FRACTION = 0.5  # t_over: half of the rise from the minimum to the final value
RATIO_MIN = 5.0  # (a) t_over / t_feat >= 5
RISE_MIN = 2.0  # (b) final test error >= 2x its minimum ...
UNLEARN_MAX = 0.75  # ... and final alignment <= 0.75x its peak
INIT_RATIO_MAX = 0.8  # (c) min test error at the smallest s <= 0.8x at the largest s
SERIES = ("test_err", "train_err", "alignment", "norm", "path_norm")


def log_steps(total: int, count: int) -> list[int]:
    """``count`` distinct integer steps in ``[1, total]``, log-spaced (as evenly as integer
    rounding allows; the last is ``total``). ``count`` is capped at ``total``."""
    count = min(count, total)
    k = count
    while True:
        grid = torch.logspace(0, math.log10(total), k, dtype=torch.float64)
        steps = sorted({int(round(float(v))) for v in grid})
        if len(steps) >= count:
            break
        k += 1
    # drop surplus points from the dense low end, keeping 1 and total
    while len(steps) > count:
        steps.pop(1)
    return steps


def time_scales(steps: list[int], err: list[float]) -> dict:
    """``t_feat``, ``t_min``, ``t_over`` of a test-error curve (``steps[0] = 0``).

    ``t_feat``: first step with ``err <= e0 − 0.9 (e0 − e_min)``; ``t_over``: first step
    after the minimum with ``err >= e_min + 0.5 (e_final − e_min)`` (``None`` when the
    minimum is the last evaluation)."""
    e0, e_fin = err[0], err[-1]
    i_min = min(range(len(err)), key=lambda i: (err[i], i))
    e_min = err[i_min]
    thr = e0 - FEAT_FRACTION * (e0 - e_min)
    t_feat = next(s for s, e in zip(steps, err, strict=True) if e <= thr)
    t_over = None
    if i_min < len(err) - 1:
        thr2 = e_min + OVER_FRACTION * (e_fin - e_min)
        t_over = next(
            (s for s, e in zip(steps[i_min + 1 :], err[i_min + 1 :], strict=True) if e >= thr2),
            None,
        )
    return {
        "e0": e0,
        "e_min": e_min,
        "t_min": steps[i_min],
        "e_final": e_fin,
        "t_feat": t_feat,
        "t_over": t_over,
        "ratio": (t_over / t_feat) if t_over is not None and t_feat > 0 else None,
    }


@torch.no_grad()
def snapshot_series(
    stacked: dict[str, torch.Tensor], data, w_star: torch.Tensor, m: int
) -> dict[str, torch.Tensor]:
    """Per member ``(N,)``: test and train MSE, alignment, two-layer norm and ℓ1 path norm
    of stacked ``d-m-1`` MLP weights (``layers.0.weight (N, m, d)``, ``layers.1.weight
    (N, 1, m)``, biases)."""
    w, b1 = stacked["layers.0.weight"].double(), stacked["layers.0.bias"].double()
    a, b2 = stacked["layers.1.weight"].double(), stacked["layers.1.bias"].double()

    def mse(split) -> torch.Tensor:
        h = torch.relu(torch.einsum("nd,kmd->knm", split.x.double(), w) + b1[:, None, :])
        f = (h * a[:, None, 0, :]).sum(-1) + b2[:, :1]
        return (f - split.y[:, 0].double()).square().mean(-1)

    align = ((w @ w_star.double()).abs() / w.norm(dim=-1).clamp_min(1e-300)).mean(-1)
    return {
        "test_err": mse(data.test),
        "train_err": mse(data.train),
        "alignment": align,
        "norm": two_layer_norm(w, m * a, member_dims=1),
        "path_norm": path_norm([w, a], member_dims=1),
    }


@dataclass(frozen=True)
class DynamicalDecouplingConfig(RecipeConfig):
    seeds: int = opt(5, "number of seeds (initializations; one population per scale)", min=1)
    data: str = opt("teacher_relu", "task: the centred single-ReLU teacher")
    d: int = task_opt("teacher_relu", "d")
    n_train: int = task_opt("teacher_relu", "n_train")
    n_test: int = task_opt("teacher_relu", "n_test")
    noise: float = opt(
        0.5,
        "standard deviation of the training-label noise (0.5: N(0, 0.25))",
        min=0,
        max=10,
    )
    width: int = opt(50, "hidden units m", min=1, max=100000)
    scales: str = opt(
        "0.01,1,4", "readout init scales s (a_j ~ N(0, s²)), comma-separated, increasing"
    )
    lr_factor: float = opt(0.05, "GD step = lr_factor · m (mean-field scaling)", gt=0, max=100)
    steps: int = opt(20000, "full-batch GD steps", min=2, max=10_000_000)
    evals: int = opt(40, "log-spaced evaluation steps (plus step 0)", min=3, max=1000)

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            vals = [float(v) for v in self.scales.split(",")]
        except ValueError:
            raise ConfigError(
                f"--scales must be comma-separated numbers like 0.01,1,4; got {self.scales!r}"
            ) from None
        if not vals or any(not (math.isfinite(v) and v > 0) for v in vals):
            raise ConfigError(f"--scales must be finite and > 0; got {self.scales!r}")
        if any(b <= a for a, b in zip(vals, vals[1:], strict=False)):
            raise ConfigError(f"--scales must increase (e.g. 0.01,1,4); got {self.scales!r}")

    @property
    def scale_values(self) -> list[float]:
        return [float(v) for v in self.scales.split(",")]


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"scale": (int, float), "steps": list, "members": list}, "the metrics")
    expect_list_of(
        metrics["members"],
        {"seed": int, "diverged": bool, **{k: list for k in SERIES}},
        "members",
    )


class DynamicalDecoupling(Recipe):
    name = "dynamical-decoupling"
    family = "dynamics"
    row = 98
    paper = (
        "Montanari & Urbani 2025, Dynamical Decoupling of Generalization and Overfitting in "
        "Large Two-Layer Networks (arXiv:2502.21269)"
    )
    claim = (
        "feature learning (test error falls) and overfitting (it rises again, alignment is "
        "unlearned) happen on separated time scales; a small initialization generalizes better"
    )
    Config = DynamicalDecouplingConfig
    tasks = ("teacher_relu",)
    kinds = ("regression",)
    task_fields = ("d", "n_train", "n_test")
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "d": 10,
        "width": 10,
        "n_train": 100,
        "n_test": 200,
        "steps": 300,
        "evals": 12,
    }
    broken: ClassVar[dict] = {"lr_factor": 100.0}
    # CPU time, one thread, shared machine: 1.5 s warm in-process, 2.6 s in the conformance run
    smoke_seconds = 2.6

    def task_params(self, cfg: DynamicalDecouplingConfig) -> dict:
        return {**super().task_params(cfg), "noise": cfg.noise, "n_val": 1}

    def validate(self, cfg: DynamicalDecouplingConfig, data_sizes: dict[str, int]) -> None:
        """More evaluations than steps cannot be distinct steps."""
        if cfg.evals > cfg.steps:
            raise ConfigError(
                f"--evals {cfg.evals} exceeds --steps {cfg.steps}; lower --evals or train longer"
            )

    def run(self, cfg: DynamicalDecouplingConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec, Population
        from weightlab.progress import progress_bar

        data = self.load_data(cfg)
        if "w_star" not in data.info:
            raise ConfigError(f"--data {cfg.data} has no teacher direction; use teacher_relu")
        d, m, n = cfg.d, cfg.width, len(data.train)
        factory = model_factory(MLP, [d, m, 1])
        steps = [0, *log_steps(cfg.steps, cfg.evals)]
        optim = OptimConfig(
            "sgd",
            lr=cfg.lr_factor * m,
            groups=(
                ParamGroup(("*.bias",), lr_mult=0.0),
                ParamGroup(("layers.1.weight",), lr_mult=1.0 / m**2),
            ),
        )
        train_cfg = TrainConfig(cfg.steps, n, cfg.steps, optim, loss="mse")

        def init_state(seed: int, s: float) -> dict[str, torch.Tensor]:
            g = generator(derive_seed(self.name, "init", seed))
            w = torch.randn((m, d), generator=g) / math.sqrt(d)
            z = torch.randn((1, m), generator=g)
            return {
                "layers.0.weight": w,
                "layers.0.bias": torch.zeros(m),
                "layers.1.weight": s * z / m,  # stored ã = a/m, a ~ N(0, s²)
                "layers.1.bias": torch.zeros(1),
            }

        def compute(s: float):
            specs = [
                MemberSpec(seed=derive_seed(self.name, "member", k), init_state=init_state(k, s))
                for k in range(cfg.seeds)
            ]
            pop = Population(factory, specs, device=cfg.device)
            results = pop.fit(data, train_cfg, snapshot_steps=steps, progress=progress)
            series = {k: [] for k in SERIES}
            for t in steps:
                stacked = {
                    name: torch.stack([r.snapshots[t][name] for r in results])
                    for name in results[0].snapshots[t]
                }
                vals = snapshot_series(stacked, data, data.info["w_star"], m)
                for k in SERIES:
                    series[k].append(vals[k].tolist())
            members = []
            for j, r in enumerate(results):
                members.append(
                    {
                        "seed": j,
                        "diverged": bool(r.diverged),
                        **{k: [_json(v[j]) for v in series[k]] for k in SERIES},
                    }
                )
            finals = {
                f"seed{j}.{k}": v for j in range(len(results)) for k, v in pop.state(j).items()
            }
            return {"scale": s, "steps": steps, "members": members}, finals

        units = []
        bar = progress_bar(
            len(cfg.scale_values), self.name, "scale", progress, line_each_update=True
        )
        for s in cfg.scale_values:
            metrics, _ = rd.unit(f"scale-{s:g}", lambda s=s: compute(s), check=_check_unit)
            units.append(metrics)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        var_test = float(data.test.y.double().var(unbiased=False))
        return self.summarize(cfg, units, var_test)

    # -- summary and claims -------------------------------------------------------------
    def summarize(self, cfg: DynamicalDecouplingConfig, units: list[dict], var_test: float) -> dict:
        rows = []
        for u in units:
            kept = [mb for mb in u["members"] if not mb["diverged"] and _finite(mb["test_err"])]
            steps = u["steps"]
            row: dict = {
                "scale": u["scale"],
                "steps": steps,
                "n": len(kept),
                "diverged": [
                    f"s={u['scale']:g} seed {mb['seed']}"
                    for mb in u["members"]
                    if mb["diverged"] or not _finite(mb["test_err"])
                ],
            }
            for k in SERIES:
                cols = list(zip(*[mb[k] for mb in kept], strict=True)) if kept else []
                ms = [mean_std(c) for c in cols]
                row[f"{k}_mean"] = [_json(a) for a, _ in ms]
                row[f"{k}_std"] = [_json(b) for _, b in ms]
            if kept:
                row["curve"] = time_scales(steps, row["test_err_mean"])
                al = row["alignment_mean"]
                row["alignment_peak"] = max(al)
                row["alignment_final"] = al[-1]
                i_min = steps.index(row["curve"]["t_min"])
                row["norm_at_min"] = row["norm_mean"][i_min]
                row["norm_final"] = row["norm_mean"][-1]
                per = [time_scales(steps, mb["test_err"]) for mb in kept]
                for key in ("e_min", "t_feat", "t_over", "ratio", "e_final"):
                    vals = [p[key] for p in per]
                    row[f"seeds_{key}"] = vals
                row["r2_at_min"] = 1.0 - row["curve"]["e_min"] / var_test
            rows.append(row)
        claims = [c.to_dict() for c in self.check_claims(rows)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "var_test": var_test,
            "claims": claims,
            "members": sum(len(u["members"]) for u in units),
            "diverged_members": [x for r in rows for x in r["diverged"]],
            "reduced_version": (
                "reduced version: n ≈ md (here n = "
                f"{cfg.n_train}, m = {cfg.width}, d = {cfg.d}), not the paper's m ≫ n"
            ),
        }

    @staticmethod
    def check_claims(rows: list[dict]) -> list[ClaimResult]:
        """(a) t_over/t_feat >= 5 and (b) final >= 2x minimum test error and final alignment
        <= 0.75x its peak, both on the seed-mean curves at the smallest s; (c) the minimum of
        the mean test error at the smallest s <= 0.8x at the largest s."""
        small, large = rows[0], rows[-1]
        diverged = [x for r in rows for x in r["diverged"]]
        if small["n"] == 0:
            learned = f"every member at s={small['scale']:g} diverged"
        else:
            learned = baseline_learned(
                small["r2_at_min"], "regression", name=f"s={small['scale']:g}"
            )
        interior = None
        if small["n"] and small["curve"]["t_over"] is None:
            interior = (
                f"at s={small['scale']:g} the test error has not risen after its minimum "
                f"(step {small['curve']['t_min']}): train longer"
            )
        two = None if len(rows) >= 2 else "the run has one scale only"
        s_small = f"s = {small['scale']:g}"

        def check_a():
            c = small["curve"]
            ok = c["ratio"] >= RATIO_MIN
            detail = (
                f"{s_small} (seed mean): test error {c['e0']:.3f} at step 0 -> minimum "
                f"{c['e_min']:.3f} at step {c['t_min']} -> {c['e_final']:.3f} at the end; "
                f"t_feat = {c['t_feat']}, t_over = {c['t_over']}, ratio {c['ratio']:.1f} "
                f"(needed >= {RATIO_MIN:g}); per seed ratios "
                + ", ".join("n/a" if v is None else f"{v:.1f}" for v in small["seeds_ratio"])
            )
            return ok, detail, {"curve": c, "seed_ratios": small["seeds_ratio"]}

        def check_b():
            c = small["curve"]
            rise = c["e_final"] / c["e_min"] if c["e_min"] > 0 else math.inf
            unlearn = small["alignment_final"] / small["alignment_peak"]
            ok = rise >= RISE_MIN and unlearn <= UNLEARN_MAX
            detail = (
                f"{s_small} (seed mean): final test error {c['e_final']:.3f} = {rise:.2f}x its "
                f"minimum {c['e_min']:.3f} (needed >= {RISE_MIN:g}x); alignment peak "
                f"{small['alignment_peak']:.3f} -> final {small['alignment_final']:.3f} = "
                f"{unlearn:.2f}x (needed <= {UNLEARN_MAX:g}x); norm "
                f"{small['norm_at_min']:.2f} at the minimum -> {small['norm_final']:.2f}"
            )
            return ok, detail, {"rise": rise, "unlearning": unlearn}

        def check_c():
            a, b = small["curve"]["e_min"], large["curve"]["e_min"]
            ratio = a / b if b > 0 else math.inf
            detail = (
                f"minimum mean test error {a:.4f} at {s_small} vs {b:.4f} at "
                f"s = {large['scale']:g}: ratio {ratio:.2f} (needed <= {INIT_RATIO_MAX:g}); "
                "all scales: "
                + ", ".join(f"s={r['scale']:g} {r['curve']['e_min']:.4f}" for r in rows if r["n"])
            )
            return ratio <= INIT_RATIO_MAX, detail, {"ratio": ratio, "small": a, "large": b}

        no_large = None
        if len(rows) >= 2 and large["n"] == 0:
            no_large = f"every member at s={large['scale']:g} diverged"
        return [
            judge(
                "a",
                QUOTE_A,
                f"at the smallest init scale, t_over / t_feat >= {RATIO_MIN:g} (t_feat: "
                f"{FEAT_FRACTION:.0%} of the drop to the minimum; t_over: {OVER_FRACTION:.0%} of "
                "the later rise), on the seed-mean test error",
                [learned, interior, no_divergence(small["diverged"])],
                check_a,
            ),
            judge(
                "b",
                QUOTE_B,
                f"at the smallest init scale the final test error is >= {RISE_MIN:g}x its "
                f"minimum and the final alignment <= {UNLEARN_MAX:g}x its peak (seed means)",
                [learned, interior, no_divergence(small["diverged"])],
                check_b,
            ),
            judge(
                "c",
                QUOTE_C,
                f"the minimum test error at the smallest init scale is <= {INIT_RATIO_MAX:g}x "
                "that at the largest (seed means)",
                [two, learned, no_large, no_divergence(diverged)],
                check_c,
            ),
        ]

    # -- report ------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        header = [
            "s",
            "test err step 0",
            "min (step)",
            "final",
            "t_feat",
            "t_over",
            "t_over/t_feat",
            "alignment peak → final",
            "norm at min → final",
            "n",
        ]
        out = []
        for r in summary["rows"]:
            if not r["n"]:
                out.append([f"{r['scale']:g}", *["n/a"] * 8, "0"])
                continue
            c = r["curve"]
            e_min = mean_std(r["seeds_e_min"])
            ratios = [v for v in r["seeds_ratio"] if v is not None]
            out.append(
                [
                    f"{r['scale']:g}",
                    f"{c['e0']:.3f}",
                    f"{c['e_min']:.3f} ({c['t_min']}); seeds {_pm(*e_min, 3)}",
                    f"{c['e_final']:.3f}",
                    str(c["t_feat"]),
                    "n/a" if c["t_over"] is None else str(c["t_over"]),
                    ("n/a" if c["ratio"] is None else f"{c['ratio']:.1f}")
                    + (f"; seeds {_pm(*mean_std(ratios), 1)}" if ratios else ""),
                    f"{r['alignment_peak']:.3f} → {r['alignment_final']:.3f}",
                    f"{r['norm_at_min']:.2f} → {r['norm_final']:.2f}",
                    str(r["n"]) + (f" ({len(r['diverged'])} diverged)" if r["diverged"] else ""),
                ]
            )
        title = (
            "Seed-mean test-error curve per readout init scale s (per-seed mean ± std where "
            f"noted) — {summary['reduced_version']}"
        )
        return [(title, header, out)]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
        keys = (
            ("test_err", "test error (MSE)"),
            ("alignment", "mean |w_jᵀw*| / ‖w_j‖"),
            ("norm", "(1/m) Σ |a_j| ‖w_j‖"),
        )
        for r in summary["rows"]:
            if not r["n"]:
                continue
            x = [max(t, 0.7) for t in r["steps"]]  # step 0 drawn at 0.7 on the log axis
            for ax, (k, _) in zip(axes, keys, strict=True):
                mu = [_f(v) for v in r[f"{k}_mean"]]
                sd = [_f(v) for v in r[f"{k}_std"]]
                (line,) = ax.plot(x, mu, "-", lw=1.5, label=f"s = {r['scale']:g}")
                ax.fill_between(
                    x,
                    [a - b for a, b in zip(mu, sd, strict=True)],
                    [a + b for a, b in zip(mu, sd, strict=True)],
                    color=line.get_color(),
                    alpha=0.2,
                )
            if r is summary["rows"][0]:
                c = r["curve"]
                for t, ls in ((c["t_feat"], ":"), (c["t_over"], "--")):
                    if t is not None:
                        axes[0].axvline(t, color=line.get_color(), ls=ls, lw=1)
        axes[0].plot([], [], "k:", label="t_feat (smallest s)")
        axes[0].plot([], [], "k--", label="t_over (smallest s)")
        for ax, (_, lab) in zip(axes, keys, strict=True):
            ax.set_xscale("log")
            ax.set_xlabel("GD step (step 0 at 0.7)")
            ax.set_ylabel(lab)
            ax.grid(alpha=0.3, which="both")
        axes[0].legend(fontsize=8)
        fig.suptitle(
            "Dynamical decoupling: test error, alignment and path norm vs step "
            "(mean ± std over seeds)"
        )
        png = figure_png(fig)
        return [Figure("decoupling.png", "Test error, alignment and path norm vs GD step", png)]


def _json(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _f(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _finite(xs: list) -> bool:
    return all(v is not None for v in xs)
