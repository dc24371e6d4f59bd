"""Recipe ``hourglass``: "Rethinking the shape convention of an MLP" (row [#68]), reduced to
denoising 8×8 digits.

Task: scikit-learn's digits (64 pixels in [0, 1], weightlab's fixed 1257 / 180 / 360
split); inputs ``x + σ·ε`` with ``ε ~ N(0, I)``, ``σ = 0.3`` (one fixed draw per split,
seeded), targets the clean ``x``; loss MSE (mean over the 64 pixels). A reduced version of
the paper's generative tasks on image datasets: a denoising autoencoder on digits.

Grid, every config trained for ``--seeds`` seeds as one population (torch.func vmap path),
2,000 Adam steps (lr 1e-3), batch 128, evaluated every 50 steps; a member's numbers are
taken at its early-stopping evaluation (minimum validation MSE):

- conventional (:class:`~weightlab.hyper.hourglass.ConventionalNet`): ``L`` blocks
  ``64 → m → 64``, ``L ∈ {1, 2, 4}``, ``m ∈ {64, 128, 256}``;
- Hourglass (:class:`~weightlab.hyper.hourglass.HourglassNet`): frozen random lift
  ``64 → D``, ``L`` blocks ``D → b → D``, trained head ``D → 64``; ``L ∈ {2, 4}``,
  ``D ∈ {128, 256}``, ``b ∈ {16, 32, 64}``. Parameter counts include the frozen lift.

Per budget (35k, 70k, 140k parameters), each family's config with the lowest mean
validation MSE among those within the budget is chosen and compared on test. At each
distinct chosen Hourglass config, two more arms train on the same seeds (same initial
weights otherwise): the lift trained (a Parameter from the same draw) and a rank-16 frozen
lift (the positive control).

Claims (thresholds fixed below, seed means, spread shown):

- (a) "this projection can remain fixed at random initialization throughout training":
  at every chosen Hourglass config the frozen lift's test MSE is at most 5% above the
  trained lift's — the 90% CI of the paired relative excess ``frozen/trained − 1`` lies
  below +5% — and the positive control differs: the rank-16 lift's CI lies above +5%;
- (b) "Hourglass architectures consistently achieve superior Pareto frontiers": at every
  budget the chosen Hourglass config has a lower mean test MSE than the chosen
  conventional one, and a lower one in at least 2 of 3 seeds (⌈2n/3⌉ of n).

Cost (default run, 2026-11-26, alone on the idle 2-core machine): 4:43 wall, 496 s CPU
(user + sys); 69 members, 22 units, the grid's configs trained two at a time in worker
processes (``--workers 2``, one intra-op thread each; the numbers do not depend on it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.hyper.hourglass import (
    conventional_factory,
    conventional_parameters,
    hourglass_factory,
    hourglass_parameters,
)
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, no_divergence
from weightlab.recipes.stats import mean_std, paired_difference_ci
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.parallel import UnitJob, run_units
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator
from weightlab.threads import intra_op_threads
from weightlab.train.config import OptimConfig, TrainConfig
from weightlab.train.order import batch_indices, steps_per_epoch

QUOTE_FROZEN = "this projection can remain fixed at random initialization throughout training"
QUOTE_PARETO = (
    "Hourglass architectures consistently achieve superior Pareto frontiers compared to "
    "conventional designs"
)
# Fixed claim thresholds (from the issue), not options.
LIFT_MARGIN = 0.05  # (a) frozen <= 1.05 x trained lift (90% CI of the relative excess)
CI_LEVEL = 0.90
SEED_WIN_FRACTION = 2 / 3  # (b) Hourglass lower in >= ceil(2n/3) of n seeds
LIFT_ARMS = ("trained", "low_rank")


def _ints(text: str, flag: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(
            f"--{flag} must be comma-separated integers like 1,2,4; got {text!r}"
        ) from None
    if not vals or any(v <= 0 for v in vals):
        raise ConfigError(f"--{flag} must list positive integers; got {text!r}")
    if len(set(vals)) != len(vals):
        raise ConfigError(f"--{flag} lists a value twice: {text!r}")
    return sorted(vals)


@dataclass(frozen=True)
class HourglassConfig(RecipeConfig):
    data: str = opt("digits", "task whose inputs are denoised (flat feature vectors)")
    noise: float = opt(0.3, "std σ of the Gaussian noise added to the inputs", gt=0, max=10)
    steps: int = opt(2000, "Adam steps per member", min=1, max=1_000_000)
    batch_size: int = opt(128, "batch size", min=1)
    lr: float = opt(1e-3, "Adam learning rate", gt=0, max=10)
    eval_every: int = opt(50, "steps between evaluations (early stop: minimum val MSE)", min=1)
    conv_depths: str = opt("1,2,4", "conventional depths L (blocks d -> m -> d)")
    conv_widths: str = opt("64,128,256", "conventional hidden widths m")
    hg_depths: str = opt("2,4", "Hourglass depths L (blocks D -> b -> D)")
    hg_widths: str = opt("128,256", "Hourglass skip widths D (the lift's output)")
    hg_bottlenecks: str = opt("16,32,64", "Hourglass bottleneck widths b")
    budgets: str = opt(
        "35000,70000,140000", "parameter budgets (frozen lift counted) at which to compare"
    )
    control_rank: int = opt(16, "rank of the positive control's frozen lift", min=1)
    workers: int = opt(
        2,
        "worker processes training grid configs at once, one thread each (on the CPU; "
        "results do not depend on it)",
        min=1,
        max=64,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for flag in (
            "conv_depths",
            "conv_widths",
            "hg_depths",
            "hg_widths",
            "hg_bottlenecks",
            "budgets",
        ):
            _ints(getattr(self, flag), flag.replace("_", "-"))
        if self.control_rank > min(_ints(self.hg_widths, "hg-widths")):
            raise ConfigError(
                f"--control-rank {self.control_rank} exceeds the smallest --hg-widths; "
                "choose a smaller rank"
            )

    def grid(self, d: int) -> list[dict]:
        """Every config of both families with its parameter count (inputs of width ``d``)."""
        out = []
        for depth in _ints(self.conv_depths, "conv-depths"):
            for m in _ints(self.conv_widths, "conv-widths"):
                out.append(
                    {
                        "family": "conventional",
                        "depth": depth,
                        "width": m,
                        "bottleneck": None,
                        "params": conventional_parameters(d, m, depth),
                    }
                )
        for depth in _ints(self.hg_depths, "hg-depths"):
            for w in _ints(self.hg_widths, "hg-widths"):
                for b in _ints(self.hg_bottlenecks, "hg-bottlenecks"):
                    out.append(
                        {
                            "family": "hourglass",
                            "depth": depth,
                            "width": w,
                            "bottleneck": b,
                            "params": hourglass_parameters(d, w, b, depth),
                        }
                    )
        return out


def config_key(c: dict) -> str:
    """Unit key / label of a grid config: ``conv-L2-m128`` or ``hg-L4-D256-b32``."""
    if c["family"] == "conventional":
        return f"conv-L{c['depth']}-m{c['width']}"
    return f"hg-L{c['depth']}-D{c['width']}-b{c['bottleneck']}"


def denoising_task(task: TaskData, sigma: float, seed: int = 0) -> TaskData:
    """A regression task: inputs ``x + σ·ε`` (``ε ~ N(0, I)``, one seeded draw per split),
    targets the clean ``x`` (flattened)."""
    if len(task.input_shape) != 1:
        raise ConfigError(
            f"--data {task.name} has inputs of shape {task.input_shape}; the denoising "
            "recipe needs flat feature vectors"
        )

    def noisy(split: Split, name: str) -> Split:
        x = split.x.float()
        g = generator(derive_seed("hourglass", "noise", seed, name))
        eps = torch.randn(tuple(x.shape), generator=g).to(x.device)
        return Split(x + sigma * eps, x.clone())

    return TaskData(
        f"{task.name}-denoise",
        noisy(task.train, "train"),
        noisy(task.val, "val"),
        noisy(task.test, "test"),
        0,
        "regression",
    )


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"key": str, "members": list}, "the metrics")
    opt_num = (int, float, type(None))
    expect_list_of(
        metrics["members"],
        {
            "arm": str,
            "seed": int,
            "params": int,
            "diverged": bool,
            "val_mse": opt_num,
            "test_mse": opt_num,
            "test_r2": opt_num,
            "final_test_mse": opt_num,
            "early_stop_step": int,
            "last_step": int,
        },
        "members",
    )


def _record(arm: str, seed: int, params: int, res) -> dict:
    best, final = res.best, res.final
    return {
        "arm": arm,
        "seed": seed,
        "params": params,
        "diverged": bool(res.diverged),
        "val_mse": best.val_loss,
        "test_mse": best.test_loss,
        "test_r2": best.test_r2,
        "final_test_mse": final.test_loss,
        "early_stop_step": best.step,
        "last_step": final.step,
    }


class Hourglass(Recipe):
    name = "hourglass"
    family = "growth"
    row = 68
    paper = "Rethinking the shape convention of an MLP (Hourglass MLPs)"
    claim = (
        "a frozen random input lift trains as well as a trained one; Hourglass (wide skip, "
        "narrow residual) MLPs beat conventional ones at matched parameter budgets"
    )
    Config = HourglassConfig
    tasks = ("digits",)
    kinds = ("classification", "regression")
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "steps": 40,
        "eval_every": 20,
        "conv_depths": "1",
        "conv_widths": "64",
        "hg_depths": "1",
        "hg_widths": "128",
        "hg_bottlenecks": "16",
        "budgets": "40000",
        "workers": 1,  # spawning a worker (importing torch) alone takes ~2 s
    }
    broken: ClassVar[dict] = {"lr": 10.0}
    # measured in-process, one thread, CPU time (2 cores shared by ~8-15 jobs): 2.0 s after
    # the process's first run; 5.0 s for the first (importing scikit-learn, scipy, matplotlib)
    smoke_seconds = 2.0

    # -- setup ---------------------------------------------------------------------
    def _task(self, cfg: HourglassConfig) -> TaskData:
        return denoising_task(self.load_data(cfg), cfg.noise)

    def validate(self, cfg: HourglassConfig, data_sizes: dict[str, int]) -> None:
        """The batch fits the training split; the control's rank fits the input width."""
        if cfg.batch_size > data_sizes["train"]:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} exceeds the {data_sizes['train']} training examples"
            )
        task = self._task(cfg)
        d = task.input_shape[0]
        if cfg.control_rank > d:
            raise ConfigError(
                f"--control-rank {cfg.control_rank} exceeds the input width {d}; choose a "
                "smaller rank"
            )

    def _order(self, cfg: HourglassConfig, n: int, data_seed: int) -> torch.Tensor:
        epochs = math.ceil(cfg.steps / steps_per_epoch(n, cfg.batch_size))
        return batch_indices(n, cfg.batch_size, epochs, data_seed)[: cfg.steps]

    def _train(self, cfg, task, factories: dict, arms: list[tuple[str, int]], params: dict):
        """Train ``arms`` ((arm, seed) pairs; arm keys ``factories``) as one population sweep
        (one vmap bucket per arm); return their records in order."""
        from weightlab.population import MemberSpec, Population

        train_cfg = TrainConfig(
            epochs=1,
            batch_size=cfg.batch_size,
            eval_every=cfg.eval_every,
            optim=OptimConfig("adam", lr=cfg.lr),
            loss="mse",
        )
        n = len(task.train)
        data_seeds = {s: derive_seed(self.name, "data", s) for _, s in arms}
        orders = {ds: self._order(cfg, n, ds) for ds in data_seeds.values()}
        members = [
            (arm, MemberSpec(seed=derive_seed(self.name, "init", s), data_seed=data_seeds[s]))
            for arm, s in arms
        ]
        pop = Population.sweep(factories, members, device=cfg.device)
        # tiny models (<= 167k parameters, batch 128): splitting each op over threads only costs
        with intra_op_threads(1):
            results = pop.fit(task, train_cfg, orders=orders)
        return [_record(arm, s, params[arm], r) for (arm, s), r in zip(arms, results, strict=True)]

    # -- run -----------------------------------------------------------------------
    def run(self, cfg: HourglassConfig, rd: RunDir, progress: bool = False) -> dict:
        task = self._task(cfg)
        d = task.input_shape[0]
        grid = cfg.grid(d)
        workers = cfg.workers if torch.device(cfg.device).type == "cpu" else 1
        jobs = [UnitJob(config_key(c), _grid_unit, (cfg, c), _check_unit) for c in grid]
        done = run_units(rd, jobs, workers=workers, progress=progress, label=self.name)
        records = {config_key(c): m["members"] for c, (m, _) in zip(grid, done, strict=True)}
        timings = [
            [config_key(c), f"{m.get('seconds', math.nan):.1f}"]
            for c, (m, _) in zip(grid, done, strict=True)
        ]

        y = task.test.y.double()
        variance = float(((y - y.mean(0)) ** 2).mean())
        rows = [self.config_row(c, records[config_key(c)], variance) for c in grid]
        budgets = _ints(cfg.budgets, "budgets")
        choices = self.choose(rows, budgets)
        chosen_hg = sorted({ch["hourglass"] for ch in choices if ch["hourglass"]})
        by_key = {r["key"]: r for r in rows}
        jobs = [
            UnitJob(f"lift-{key}", _lift_unit, (cfg, by_key[key]), _check_unit) for key in chosen_hg
        ]
        done = run_units(rd, jobs, workers=workers, progress=progress, label=f"{self.name} lift")
        lift = {key: m["members"] for key, (m, _) in zip(chosen_hg, done, strict=True)}
        timings += [
            [f"lift-{key}", f"{m.get('seconds', math.nan):.1f}"]
            for key, (m, _) in zip(chosen_hg, done, strict=True)
        ]
        self._measurements = [("Training time per unit (s, wall)", ["unit", "seconds"], timings)]
        return self.summarize(cfg, rows, choices, records, lift, variance)

    # -- summary -------------------------------------------------------------------
    @staticmethod
    def config_row(c: dict, members: list[dict], variance: float) -> dict:
        ms = sorted(members, key=lambda m: m["seed"])
        val, test = [m["val_mse"] for m in ms], [m["test_mse"] for m in ms]
        (vm, vs), (tm, ts) = mean_std(val), mean_std(test)
        return {
            **c,
            "key": config_key(c),
            "val_mse_mean": vm,
            "val_mse_std": vs,
            "test_mse_mean": tm,
            "test_mse_std": ts,
            "test_mse_values": test,
            "test_r2_mean": mean_std([m["test_r2"] for m in ms])[0],
            "pooled_r2_mean": _pooled_r2(tm, variance),
            "final_test_mse_mean": mean_std([m["final_test_mse"] for m in ms])[0],
            "early_stop_mean": mean_std([m["early_stop_step"] for m in ms])[0],
            "last_step_mean": mean_std([m["last_step"] for m in ms])[0],
            "diverged": [f"{config_key(c)} seed {m['seed']}" for m in ms if m["diverged"]],
            "n": len(ms),
        }

    @staticmethod
    def choose(rows: list[dict], budgets: list[int]) -> list[dict]:
        """Per budget, each family's config with the lowest mean validation MSE among those
        with at most ``budget`` parameters (``None`` when the family has none)."""

        def score(r):
            v = r["val_mse_mean"]
            return (v if v is not None and math.isfinite(v) else math.inf, r["params"], r["key"])

        out = []
        for b in budgets:
            pick = {}
            for fam in ("conventional", "hourglass"):
                cands = [r for r in rows if r["family"] == fam and r["params"] <= b]
                pick[fam] = min(cands, key=score)["key"] if cands else None
            out.append({"budget": b, **pick})
        return out

    def summarize(self, cfg, rows, choices, records, lift, variance: float) -> dict:
        """Comparisons per budget, the lift arms' relative excess over the trained lift
        (paired per seed, 90% CI), and the claims. ``variance``: the test targets' variance
        pooled over pixels, the MSE of predicting the test mean image (pooled R²)."""
        by_key = {r["key"]: r for r in rows}
        comparisons = []
        for ch in choices:
            conv, hg = by_key.get(ch["conventional"]), by_key.get(ch["hourglass"])
            item = {"budget": ch["budget"], "conventional": ch["conventional"]}
            item["hourglass"] = ch["hourglass"]
            if conv and hg:
                cv, hv = conv["test_mse_values"], hg["test_mse_values"]
                item.update(
                    {
                        "conventional_test_mse": cv,
                        "hourglass_test_mse": hv,
                        "conventional_mean": conv["test_mse_mean"],
                        "hourglass_mean": hg["test_mse_mean"],
                        "seeds_hourglass_lower": sum(
                            1 for a, b in zip(hv, cv, strict=True) if _lt(a, b)
                        ),
                    }
                )
            comparisons.append(item)
        lift_rows = []
        for key, ms in sorted(lift.items()):
            frozen = sorted(records[key], key=lambda m: m["seed"])
            row = {"key": key, "params": by_key[key]["params"], "frozen": _arm_stats(frozen)}
            for arm in LIFT_ARMS:
                row[arm] = _arm_stats(sorted((m for m in ms if m["arm"] == arm), key=_seed))
                row[arm]["pooled_r2"] = _pooled_r2(row[arm]["mean"], variance)
            tv = row["trained"]["values"]
            for arm in ("frozen", "low_rank"):
                rel = [_ratio(a, b) - 1 for a, b in zip(row[arm]["values"], tv, strict=True)]
                m, lo, hi = paired_difference_ci(rel, [0.0] * len(rel), CI_LEVEL)
                row[f"{arm}_excess"] = {"values": rel, "mean": m, "ci_low": lo, "ci_high": hi}
            row["diverged"] = [
                f"{key} {m['arm']} seed {m['seed']}" for m in [*frozen, *ms] if m["diverged"]
            ]
            lift_rows.append(row)
        claims = [c.to_dict() for c in self.check_claims(cfg, rows, comparisons, lift_rows)]
        all_members = [m for ms in records.values() for m in ms] + [
            m for ms in lift.values() for m in ms
        ]
        diverged = [x for r in rows for x in r["diverged"]] + [
            x for lr in lift_rows for x in lr["diverged"]
        ]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "choices": choices,
            "comparisons": comparisons,
            "lift": lift_rows,
            "claims": claims,
            "members": len(all_members),
            "diverged_members": diverged,
            "reduced_version": (
                "reduced version of the paper's generative image tasks: a denoising "
                f"autoencoder on 8×8 digits (σ = {cfg.noise:g}), {cfg.steps} Adam steps, "
                f"{cfg.seeds} seeds"
            ),
            "metric": "test MSE (mean over pixels) at the early-stopping evaluation",
            "test_variance": variance,
            "noisy_input_mse": cfg.noise**2,
        }

    @staticmethod
    def check_claims(cfg, rows, comparisons, lift_rows) -> list[ClaimResult]:
        by_key = {r["key"]: r for r in rows}
        n = cfg.seeds
        few = None if n >= 2 else "a confidence interval needs at least 2 seeds"

        # (a) frozen vs trained lift, rank-r control
        pre_a = [few, None if lift_rows else "no Hourglass config was chosen at any budget"]
        for lr in lift_rows:
            pre_a.append(
                baseline_learned(
                    lr["trained"]["pooled_r2"],
                    "regression",
                    name=f"trained-lift {lr['key']} (pooled R²)",
                )
            )
        pre_a.append(no_divergence([x for lr in lift_rows for x in lr["diverged"]]))

        def check_a():
            parts, ok, ev = [], True, {}
            for lr in lift_rows:
                fe, ce = lr["frozen_excess"], lr["low_rank_excess"]
                non_inferior = fe["ci_high"] <= LIFT_MARGIN
                control = ce["ci_low"] > LIFT_MARGIN
                ok = ok and non_inferior and control
                parts.append(
                    f"{lr['key']}: frozen {_e3(lr['frozen']['mean'])} vs trained "
                    f"{_e3(lr['trained']['mean'])} (×1e-3), excess {100 * fe['mean']:+.1f}% "
                    f"(90% CI {100 * fe['ci_low']:+.1f}% … {100 * fe['ci_high']:+.1f}%); "
                    f"rank-{cfg.control_rank} {_e3(lr['low_rank']['mean'])}, excess "
                    f"{100 * ce['mean']:+.1f}% (CI low {100 * ce['ci_low']:+.1f}%)"
                )
                ev[lr["key"]] = {
                    "frozen_excess": fe,
                    "low_rank_excess": ce,
                    "non_inferior": non_inferior,
                    "control_differs": control,
                }
            detail = "; ".join(parts) + (
                f"; needed the frozen CI high <= +{100 * LIFT_MARGIN:g}% and the control's CI "
                f"low > +{100 * LIFT_MARGIN:g}% at every chosen config"
            )
            return ok, detail, ev

        # (b) Hourglass vs conventional at every budget
        need = math.ceil(SEED_WIN_FRACTION * n - 1e-9)
        pre_b = []
        chosen = set()
        for c in comparisons:
            for fam in ("conventional", "hourglass"):
                if c[fam] is None:
                    pre_b.append(f"no {fam} config fits the budget of {c['budget']:,} parameters")
                else:
                    chosen.add(c[fam])
        for key in sorted(chosen):
            pre_b.append(
                baseline_learned(
                    by_key[key]["pooled_r2_mean"], "regression", name=f"{key} (pooled R²)"
                )
            )
        pre_b.append(no_divergence([x for k in sorted(chosen) for x in by_key[k]["diverged"]]))

        def check_b():
            parts, ok = [], True
            for c in comparisons:
                lower = _lt(c["hourglass_mean"], c["conventional_mean"])
                wins = c["seeds_hourglass_lower"]
                ok = ok and lower and wins >= need
                parts.append(
                    f"{c['budget'] // 1000}k: {c['hourglass']} {_e3(c['hourglass_mean'])} vs "
                    f"{c['conventional']} {_e3(c['conventional_mean'])} (×1e-3), lower in "
                    f"{wins}/{n} seeds"
                )
            detail = "; ".join(parts) + (
                f"; needed a lower mean at every budget and lower in >= {need} of {n} seeds"
            )
            return ok, detail, {"comparisons": comparisons, "seeds_needed": need}

        return [
            judge(
                "a",
                QUOTE_FROZEN,
                f"at every chosen Hourglass config the frozen random lift's test MSE is at most "
                f"{100 * LIFT_MARGIN:g}% above the trained lift's (90% CI of the paired relative "
                f"excess); positive control: a rank-{cfg.control_rank} frozen lift is more than "
                f"{100 * LIFT_MARGIN:g}% above",
                pre_a,
                check_a,
            ),
            judge(
                "b",
                QUOTE_PARETO,
                "at every parameter budget the validation-chosen Hourglass config has a lower "
                "mean test MSE than the validation-chosen conventional config, and a lower one "
                f"in at least {need} of {n} seeds",
                pre_b,
                check_b,
            ),
        ]

    # -- report --------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        grid = [
            [
                r["key"],
                f"{r['params']:,}",
                _pm(_scale(r["val_mse_mean"]), _scale(r["val_mse_std"]), 2),
                _pm(_scale(r["test_mse_mean"]), _scale(r["test_mse_std"]), 2),
                f"{_num(r['pooled_r2_mean']):.3f}",
                f"{_num(r['early_stop_mean']):.0f} / {_num(r['last_step_mean']):.0f}",
                str(r["n"]) + (f" ({len(r['diverged'])} diverged)" if r["diverged"] else ""),
            ]
            for r in summary["rows"]
        ]
        comp = [
            [
                f"{c['budget']:,}",
                c["conventional"] or "—",
                _e3(c.get("conventional_mean")),
                c["hourglass"] or "—",
                _e3(c.get("hourglass_mean")),
                str(c.get("seeds_hourglass_lower", "—")),
            ]
            for c in summary["comparisons"]
        ]
        lift = [
            [
                lr["key"],
                _pm(_scale(lr["frozen"]["mean"]), _scale(lr["frozen"]["std"]), 2),
                _pm(_scale(lr["trained"]["mean"]), _scale(lr["trained"]["std"]), 2),
                _pm(_scale(lr["low_rank"]["mean"]), _scale(lr["low_rank"]["std"]), 2),
                _ci(lr["frozen_excess"]),
                _ci(lr["low_rank_excess"]),
            ]
            for lr in summary["lift"]
        ]
        title = "Grid (MSE ×1e-3, mean ± std over seeds, at the early-stopping evaluation)"
        return [
            (
                title + f" — {summary['reduced_version']}",
                ["config", "params", "val MSE", "test MSE", "pooled R²", "early stop / last", "n"],
                grid,
            ),
            (
                "Per budget: each family's validation-chosen config on test (MSE ×1e-3)",
                ["budget", "conventional", "test MSE", "hourglass", "test MSE", "seeds HG lower"],
                comp,
            ),
            (
                "Lift arms at the chosen Hourglass configs (test MSE ×1e-3; excess over the "
                "trained lift, mean and 90% CI)",
                ["config", "frozen", "trained", "low-rank frozen", "frozen excess", "low-rank"],
                lift,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=[1.6, 1])
        ax = axes[0]
        colors = {"conventional": "tab:gray", "hourglass": "tab:blue"}
        for fam in ("conventional", "hourglass"):
            pts = sorted((r for r in summary["rows"] if r["family"] == fam), key=_params)
            xs = [r["params"] for r in pts]
            ys = [1e3 * _num(r["test_mse_mean"]) for r in pts]
            es = [1e3 * _num(r["test_mse_std"]) for r in pts]
            ax.errorbar(xs, ys, yerr=es, fmt="o", ms=4, capsize=2, color=colors[fam], label=fam)
            front, best = [], math.inf
            for x, y in zip(xs, ys, strict=True):
                if y < best:
                    best = y
                    front.append((x, y))
            if front:  # the frontier runs on to the family's largest config
                front.append((xs[-1], front[-1][1]))
                ax.step(*zip(*front, strict=True), where="post", color=colors[fam], lw=1.2)
        for c in summary["comparisons"]:
            ax.axvline(c["budget"], color="k", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("parameters (frozen lift counted)")
        ax.set_ylabel("test MSE ×1e-3 (early stop)")
        ax.set_title("Pareto: test MSE vs parameters (budgets dotted)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        ax = axes[1]
        lift = summary["lift"]
        arms = [("frozen", "tab:blue"), ("trained", "tab:green"), ("low_rank", "tab:red")]
        for j, (arm, col) in enumerate(arms):
            xs = [i + (j - 1) * 0.27 for i in range(len(lift))]
            ys = [1e3 * _num(lr[arm]["mean"]) for lr in lift]
            es = [1e3 * _num(lr[arm]["std"]) for lr in lift]
            ax.bar(xs, ys, width=0.25, yerr=es, capsize=2, color=col, label=arm.replace("_", "-"))
        ax.set_xticks(range(len(lift)), [lr["key"] for lr in lift], rotation=20, fontsize=7)
        ax.set_ylabel("test MSE ×1e-3")
        ax.set_title("Lift: frozen vs trained vs low-rank frozen")
        ax.legend(fontsize=8)
        fig.suptitle(f"Hourglass vs conventional MLPs ({summary['reduced_version']})", fontsize=9)
        return [Figure("pareto.png", "Pareto frontier and lift arms", figure_png(fig))]


def _seed(m: dict) -> int:
    return m["seed"]


def _params(r: dict) -> int:
    return r["params"]


def _lt(a, b) -> bool:
    return a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and a < b


def _ratio(a, b) -> float:
    if a is None or b is None or not b:
        return math.nan
    return float(a) / float(b)


def _arm_stats(ms: list[dict]) -> dict:
    values = [m["test_mse"] for m in ms]
    m, s = mean_std(values)
    return {
        "values": values,
        "mean": m,
        "std": s,
        "r2_mean": mean_std([x["test_r2"] for x in ms])[0],
    }


def _pooled_r2(mse, variance: float):
    """``1 − MSE / Var`` with the test targets' variance pooled over pixels (per-pixel R²
    is meaningless for the digits' near-constant border pixels)."""
    if mse is None or not math.isfinite(mse) or not variance > 0:
        return math.nan
    return 1.0 - mse / variance


def _scale(v) -> float:
    return 1e3 * _num(v)


def _e3(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{1e3 * v:.2f}"


def _ci(e: dict) -> str:
    lo, hi = e["ci_low"], e["ci_high"]
    span = (
        ""
        if not (math.isfinite(lo) and math.isfinite(hi))
        else f" [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    )
    return f"{100 * _num(e['mean']):+.1f}%{span}"


# -- units (module-level: run_units may compute them in spawned worker processes) ----------
def _grid_unit(cfg: HourglassConfig, c: dict) -> tuple[dict, dict]:
    """One grid config trained for ``cfg.seeds`` seeds as one population."""
    t0 = time.perf_counter()
    recipe = Hourglass()
    task = recipe._task(cfg)
    d = task.input_shape[0]
    if c["family"] == "conventional":
        fac = conventional_factory(d, c["width"], c["depth"])
    else:
        fac = hourglass_factory(d, c["width"], c["bottleneck"], c["depth"])
    seeds = range(cfg.seeds)
    recs = recipe._train(
        cfg, task, {"grid": fac}, [("grid", s) for s in seeds], {"grid": c["params"]}
    )
    return {"key": config_key(c), "members": recs, "seconds": time.perf_counter() - t0}, {}


def _lift_unit(cfg: HourglassConfig, row: dict) -> tuple[dict, dict]:
    """The trained-lift and rank-r-lift arms at one chosen Hourglass config."""
    t0 = time.perf_counter()
    recipe = Hourglass()
    task = recipe._task(cfg)
    args = (task.input_shape[0], row["width"], row["bottleneck"], row["depth"])
    factories = {
        "trained": hourglass_factory(*args, train_lift=True),
        "low_rank": hourglass_factory(*args, lift_rank=cfg.control_rank),
    }
    arms = [(a, s) for a in LIFT_ARMS for s in range(cfg.seeds)]
    recs = recipe._train(cfg, task, factories, arms, {a: row["params"] for a in LIFT_ARMS})
    return {"key": row["key"], "members": recs, "seconds": time.perf_counter() - t0}, {}
