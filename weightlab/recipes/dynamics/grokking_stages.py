"""Recipe ``grokking-stages``: Tian 2025, "Provable Scaling Laws of Feature Emergence from
Learning Dynamics of Grokking" (row [#27]), a reduced version.

Task: modular addition ``a + b mod 59`` (task ``modular``), a seeded ``train_fraction`` of
all 3,481 pairs to train (0.4 at the base), every other pair to test (:func:`grok_task`:
``val`` is the train split, so an evaluation's ``val_acc`` is the train accuracy). Network:
weightlab's ``MLP([2p, 256, p])``: the first Linear on ``[onehot(a), onehot(b)]`` is the sum
of two embeddings, ``E_a[a] + E_b[b]``, then ReLU and a Linear read-out ("top layer");
cross-entropy; full-batch AdamW (lr 1e-2, decoupled weight decay 1, betas (0.9, 0.98)),
3,000 steps, evaluated and probed every 50 (step 0 probed too).

Probes: the Fourier concentration of every hidden unit's weights over ``a`` and over ``b``
(:func:`weightlab.dynamics.fourier.fourier_probe`; median over the 2 × 256 vectors) and
the built-in relative change ``‖W − W₀‖_F / ‖W₀‖_F`` of both layers. Stage times by the
fixed rule :data:`weightlab.dynamics.stages.RULE` (printed in the summary): ``t_mem`` train
accuracy >= 99%, ``t_feat`` median concentration >= 0.3, ``t_gen`` test accuracy >= 95%;
unreached times are censored at the budget.

Arms (``seeds`` seeds each, seed ``s`` starting from the same θ₀ in every arm): ``base``;
``wd0`` (weight decay 0); one arm per other train fraction of ``fractions`` (0.3, 0.5);
``low_lr`` (lr 3e-3). Different fractions are different data (``MemberSpec`` varies the
data order, not the data), so the arms form one population per fraction: base, wd0 and
low_lr share fraction 0.4 (9 members, per-member optimizer), each other fraction is its own
population; one resumable unit per fraction, ``--workers`` of them at once in spawned
processes (:func:`weightlab.runs.parallel.run_units`, one intra-op thread each, so the
numbers do not depend on the worker count). The split is one seeded permutation of the
pairs (``split_seed``), so the train sets are nested (0.3 ⊂ 0.4 ⊂ 0.5) and seeds differ in
θ₀ only.

Claims (thresholds are module constants):

- (a) "At the lazy learning stage, top layer overfits to random hidden representation and
  the model appears to memorize": in every base seed, at ``t_mem`` the test accuracy is
  <= chance + :data:`LAZY_TEST_MARGIN_PTS` points (chance = the test split's majority-class
  rate), the median concentration <= :data:`LAZY_CONC_RATIO` × its step-0 value, and the
  top layer's relative change >= :data:`LAZY_TOP_RATIO` × the hidden layer's.
- (b) in every base seed ``t_mem < t_feat < t_gen``.
- (c) "roles played by key hyperparameters such as weight decay, learning rate and sample
  sizes in grokking": at weight decay 0 every seed's ``t_gen`` is censored or >=
  :data:`WD0_SLOWDOWN` × the same seed's base ``t_gen``; and the seed-mean ``t_gen``
  (censored counted as the budget, a lower bound) falls strictly from each train fraction
  to the next larger one, the larger one never censored. Learning rate: reported (the
  abstract gives no direction).

Precondition of every claim ("not tested" otherwise): the base arm groks (``t_gen``
reached) in every seed, and no member the claim reads diverged.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

from weightlab.data import is_user_data, load_dataset
from weightlab.dynamics.fourier import fourier_probe
from weightlab.dynamics.stages import (
    FEAT_CONCENTRATION,
    GEN_TEST_ACC,
    MEM_TRAIN_ACC,
    RULE,
    detect_stages,
)
from weightlab.errors import ConfigError
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import judge, majority_rate, no_divergence
from weightlab.recipes.members import ENGINES
from weightlab.recipes.sparsity.grokking_tickets import grok_task
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.recipes.tasks import task_opt
from weightlab.runs.parallel import UnitJob, run_units
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed
from weightlab.train import probes as P
from weightlab.train.config import OptimConfig, TrainConfig

QUOTE_LAZY = (
    "At the lazy learning stage, top layer overfits to random hidden representation and the "
    "model appears to memorize"
)
QUOTE_STAGES = "three key stages for the grokking behavior of 2-layer nonlinear networks"
QUOTE_HYPER = (
    "roles played by key hyperparameters such as weight decay, learning rate and sample "
    "sizes in grokking"
)
# Fixed claim thresholds (the issue's), not options.
LAZY_TEST_MARGIN_PTS = 5.0  # (a) test accuracy at t_mem <= chance + 5 points
LAZY_CONC_RATIO = 1.5  # (a) median concentration at t_mem <= 1.5x its step-0 value
LAZY_TOP_RATIO = 3.0  # (a) top layer's relative change >= 3x the hidden layer's at t_mem
WD0_SLOWDOWN = 2.0  # (c) at weight decay 0, t_gen censored or >= 2x base's
HIDDEN, TOP = "layers.0.weight", "layers.1.weight"
NAME = "grokking-stages"
ARMS = ("base", "wd0", "low_lr")  # plus one "frac<f>" arm per other train fraction


def parse_fractions(text: str, base: float) -> list[float]:
    """The train-fraction sweep: strictly increasing numbers in (0, 1) containing the base
    ``train_fraction``; a one-line :class:`ConfigError` otherwise."""
    try:
        vals = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"--fractions must be comma-separated numbers like 0.3,0.4,0.5; got {text!r}"
        ) from None
    if not vals or any(not (math.isfinite(v) and 0 < v < 1) for v in vals):
        raise ConfigError(f"--fractions must list numbers in (0, 1); got {text!r}")
    if any(b <= a for a, b in zip(vals, vals[1:], strict=False)):
        raise ConfigError(
            f"--fractions must increase strictly (a sweep, e.g. 0.3,0.4,0.5); got {text!r}"
        )
    if base not in vals:
        raise ConfigError(
            f"--fractions {text!r} must contain the base --train-fraction {base:g}; add it"
        )
    return vals


def frac_arm(f: float) -> str:
    return f"frac{f:g}"


@dataclass(frozen=True)
class GrokkingStagesConfig(RecipeConfig):
    data: str = opt("modular", "task: modular (a o b mod p, one-hot pair inputs)")
    p: int = opt(59, "the modulus p (task parameter of modular)", min=3, max=300)
    op: str = task_opt("modular", "op")
    train_fraction: float = opt(
        0.4, "the base arms' fraction of all pairs used for training", gt=0, lt=1
    )
    fractions: str = opt(
        "0.3,0.4,0.5", "train-fraction sweep (strictly increasing, contains --train-fraction)"
    )
    split_seed: int = opt(0, "seed of the permutation of pairs (the train/test split)", min=0)
    hidden: int = opt(256, "hidden ReLU units", min=1, max=4096)
    lr: float = opt(1e-2, "AdamW learning rate (base)", gt=0, max=10)
    low_lr: float = opt(3e-3, "learning rate of the low_lr arm", gt=0, max=10)
    weight_decay: float = opt(1.0, "AdamW decoupled weight decay (base)", min=0, max=100)
    beta2: float = opt(0.98, "AdamW beta2", min=0, lt=1)
    steps: int = opt(
        3000, "full-batch steps (the budget; unreached stage times censor here)", min=1
    )
    eval_every: int = opt(50, "steps between evaluations and probes", min=1)
    workers: int = opt(
        2,
        "train fractions computed at once in worker processes (one thread each; the numbers "
        "do not depend on it)",
        min=1,
        max=64,
    )
    engine: str = opt(
        "population",
        "train each fraction's members as one population, or in a loop",
        choices=ENGINES,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_fractions(self.fractions, self.train_fraction)


def arm_table(cfg: GrokkingStagesConfig) -> list[tuple[str, float, float, float]]:
    """``(arm, train fraction, lr, weight decay)`` for every arm, in report order."""
    base = cfg.train_fraction
    arms = [("base", base, cfg.lr, cfg.weight_decay), ("wd0", base, cfg.lr, 0.0)]
    arms += [
        (frac_arm(f), f, cfg.lr, cfg.weight_decay)
        for f in parse_fractions(cfg.fractions, base)
        if f != base
    ]
    arms.append(("low_lr", base, cfg.low_lr, cfg.weight_decay))
    return arms


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"members": list, "cpu_seconds": (int, float)}, "the metrics")
    expect_list_of(
        metrics["members"],
        {
            "arm": str,
            "seed": int,
            "fraction": (int, float),
            "diverged": bool,
            "acc_steps": list,
            "train_acc": list,
            "test_acc": list,
            "probe_steps": list,
            "conc": list,
            "peak_share": list,
            "rel_hidden": list,
            "rel_top": list,
        },
        "members",
    )


def member_record(arm: str, seed: int, fraction: float, res) -> dict:
    """A member's curves: accuracies at the evaluations, probes at the probe steps."""
    rows = [r for r in res.probes if "fourier/median" in r]
    return {
        "arm": arm,
        "seed": seed,
        "fraction": fraction,
        "diverged": bool(res.diverged),
        "acc_steps": [int(h.step) for h in res.history],
        "train_acc": [_float(h.val_acc) for h in res.history],
        "test_acc": [_float(h.test_acc) for h in res.history],
        "probe_steps": [int(r["step"]) for r in rows],
        "conc": [_float(r["fourier/median"]) for r in rows],
        "peak_share": [_float(r["fourier/peak_share"]) for r in rows],
        "rel_hidden": [_float(r.get(f"relative_change/{HIDDEN}")) for r in rows],
        "rel_top": [_float(r.get(f"relative_change/{TOP}")) for r in rows],
    }


def _float(v) -> float | None:
    """A finite float, or None (JSON null) for a missing or non-finite value."""
    return None if v is None or not math.isfinite(float(v)) else float(v)


def stages_of(m: dict):
    """The member's :class:`~weightlab.dynamics.stages.Stages` by the fixed rule."""
    nan = float("nan")
    return detect_stages(
        m["acc_steps"],
        [nan if v is None else v for v in m["train_acc"]],
        [nan if v is None else v for v in m["test_acc"]],
        m["probe_steps"],
        [nan if v is None else v for v in m["conc"]],
    )


def value_at(m: dict, key: str, step: int | None, steps_key: str = "probe_steps"):
    """``m[key]`` at ``step`` (None when not recorded there)."""
    if step is None or step not in m[steps_key]:
        return None
    return m[key][m[steps_key].index(step)]


class GrokkingStages(Recipe):
    name = NAME
    family = "dynamics"
    row = 27
    paper = (
        "Provable Scaling Laws of Feature Emergence from Learning Dynamics of Grokking "
        "(Li_2, one author, 2025)"
    )
    claim = (
        "grokking passes a lazy stage (top layer memorizes on random features), then Fourier "
        "features emerge, then the model generalizes; weight decay and sample size set when"
    )
    Config = GrokkingStagesConfig
    tasks = ("modular",)
    kinds = ("classification",)
    task_fields = ("p", "op", "train_fraction")
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "p": 23,
        "hidden": 32,
        "steps": 60,
        "eval_every": 10,
        "workers": 1,  # spawning a worker (importing torch) costs more than the smoke run
    }
    # lr 1e-7 for 20 steps: nothing memorizes, so the base never groks (claims not tested)
    broken: ClassVar[dict] = {"lr": 1e-7, "low_lr": 1e-7, "steps": 20}
    # measured: CPU time of one in-process smoke run after imports, one thread (2 cores
    # shared by ~8 jobs): 2.2 s
    smoke_seconds = 2.5

    def task_params(self, cfg: GrokkingStagesConfig) -> dict:
        if is_user_data(cfg.data):
            return {}
        return {
            "p": cfg.p,
            "op": cfg.op,
            "train_fraction": cfg.train_fraction,
            "seed": cfg.split_seed,
        }

    def _task(self, cfg: GrokkingStagesConfig, fraction: float):
        """The grokking view of the modular task at ``fraction`` (cached per fraction)."""
        key = ("fraction", fraction, cfg.p, cfg.op, cfg.split_seed, cfg.device)
        if key not in self._data_cache:
            raw = load_dataset(
                "modular",
                cfg.device,
                p=cfg.p,
                op=cfg.op,
                train_fraction=fraction,
                seed=cfg.split_seed,
            )
            self._data_cache[key] = grok_task(raw)
        return self._data_cache[key]

    def validate(self, cfg: GrokkingStagesConfig, data_sizes: dict[str, int]) -> None:
        if is_user_data(cfg.data):
            raise ConfigError(
                f"--data {cfg.data}: the Fourier probe needs one-hot Z_p pair inputs; use "
                "--data modular"
            )
        if cfg.eval_every > cfg.steps or cfg.steps % cfg.eval_every:
            raise ConfigError(
                f"--steps {cfg.steps} must be a multiple of --eval-every {cfg.eval_every} "
                "(evaluations and probes share one grid); change either"
            )
        for f in parse_fractions(cfg.fractions, cfg.train_fraction):
            self._task(cfg, f)  # a fraction that leaves no train or test pair fails here

    # -- run -------------------------------------------------------------------------------
    def run(self, cfg: GrokkingStagesConfig, rd: RunDir, progress: bool = False) -> dict:
        fractions = parse_fractions(cfg.fractions, cfg.train_fraction)
        arms = arm_table(cfg)
        # the costliest population first, so two workers finish close together
        work = {f: sum(a[1] == f for a in arms) * f for f in fractions}
        order = sorted(fractions, key=lambda f: -work[f])
        workers = cfg.workers if cfg.device == "cpu" else 1
        jobs = [
            UnitJob(
                f"fraction-{f:g}", fraction_unit, (cfg, f, progress and workers == 1), _check_unit
            )
            for f in order
        ]
        done = run_units(rd, jobs, workers=workers, threads=1, progress=progress, label=self.name)
        by_fraction = {f: metrics for f, (metrics, _) in zip(order, done, strict=True)}
        records, cpu = [], {}
        for f in fractions:
            metrics = by_fraction[f]
            records += metrics["members"]
            n_train = len(self._task(cfg, f).train)
            cpu[f] = (metrics["cpu_seconds"], len(metrics["members"]), n_train)
        self._measurements = [
            (
                "CPU time per population (one intra-op thread; machine-dependent)",
                ["train fraction", "members", "train pairs", "CPU s", "ms per member-step"],
                [
                    [f"{f:g}", str(n), str(ntr), f"{c:.1f}", f"{1000 * c / (n * cfg.steps):.2f}"]
                    for f, (c, n, ntr) in cpu.items()
                ],
            )
        ]
        chance = 100 * majority_rate(self._task(cfg, cfg.train_fraction).test.y)
        return self.summarize(cfg, records, chance)

    # -- summary ----------------------------------------------------------------------------
    def summarize(self, cfg: GrokkingStagesConfig, records: list[dict], chance: float) -> dict:
        budget = cfg.steps
        for m in records:
            st = stages_of(m)
            m["stages"] = st.to_dict()
            t = st.t_mem
            m["at_mem"] = {
                "step": t,
                "test_acc": value_at(m, "test_acc", t, "acc_steps"),
                "conc": value_at(m, "conc", t),
                "conc_start": value_at(m, "conc", 0),
                "rel_hidden": value_at(m, "rel_hidden", t),
                "rel_top": value_at(m, "rel_top", t),
            }
        rows = []
        for arm, f, lr, wd in arm_table(cfg):
            ms = sorted((m for m in records if m["arm"] == arm), key=lambda m: m["seed"])
            row = {"arm": arm, "fraction": f, "lr": lr, "weight_decay": wd}
            row["seeds"] = [m["seed"] for m in ms]
            row["diverged"] = [member_name(m) for m in ms if m["diverged"]]
            for k in ("t_mem", "t_feat", "t_gen"):
                ts = [m["stages"][k] for m in ms]
                row[k] = ts
                row[f"{k}_censored"] = sum(t is None for t in ts)
                row[f"{k}_mean"], row[f"{k}_std"] = mean_std(
                    [budget if t is None else t for t in ts]
                )
            row["ordered"] = [m["stages"]["ordered"] for m in ms]
            row["final_train_acc"] = mean_std([m["train_acc"][-1] for m in ms])[0]
            row["final_test_acc"] = mean_std([m["test_acc"][-1] for m in ms])[0]
            row["final_conc"] = mean_std([m["conc"][-1] for m in ms])[0]
            row["final_peak_share"] = mean_std([m["peak_share"][-1] for m in ms])[0]
            row["at_mem"] = [m["at_mem"] for m in ms]
            ok = [m for m in ms if not m["diverged"]]
            if ok and all(m["acc_steps"] == ok[0]["acc_steps"] for m in ok):
                row["acc_steps"] = ok[0]["acc_steps"]
                row["probe_steps"] = ok[0]["probe_steps"]
                for key in ("train_acc", "test_acc", "conc", "rel_hidden", "rel_top"):
                    row[f"{key}_curve"] = _mean_curve([m[key] for m in ok])
            rows.append(row)
        claims = [c.to_dict() for c in self.check_claims(rows, chance, budget)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rule": RULE,
            "thresholds": {
                "mem_train_acc": MEM_TRAIN_ACC,
                "feat_concentration": FEAT_CONCENTRATION,
                "gen_test_acc": GEN_TEST_ACC,
            },
            "chance_pct": chance,
            "budget": budget,
            "rows": rows,
            "claims": claims,
            "members": len(records),
            "diverged_members": [member_name(m) for m in records if m["diverged"]],
        }

    @staticmethod
    def check_claims(rows: list[dict], chance: float, budget: int) -> list[ClaimResult]:
        by = {r["arm"]: r for r in rows}
        base = by.get("base")

        def pre(arms: list[str]) -> list[str | None]:
            out: list[str | None] = []
            if base is None or not base["seeds"]:
                return ["the run has no base arm"]
            missing = [i for i, t in zip(base["seeds"], base["t_gen"], strict=True) if t is None]
            if missing:
                out.append(
                    f"the base arm did not grok (test accuracy >= {GEN_TEST_ACC:g} within "
                    f"{budget} steps) in seed(s) {', '.join(map(str, missing))}"
                )
            out.append(no_divergence([n for a in arms if a in by for n in by[a]["diverged"]]))
            return out

        def check_a():
            fails, per = [], []
            for s, at in zip(base["seeds"], base["at_mem"], strict=True):
                te, c, c0 = at["test_acc"], at["conc"], at["conc_start"]
                rh, rt = at["rel_hidden"], at["rel_top"]
                if None in (te, c, c0, rh, rt) or not rh:
                    fails.append(f"seed {s}: a probe is missing at t_mem {at['step']}")
                    continue
                ratio = rt / rh
                ok = (
                    100 * te <= chance + LAZY_TEST_MARGIN_PTS
                    and c <= LAZY_CONC_RATIO * c0
                    and ratio >= LAZY_TOP_RATIO
                )
                per.append(
                    {
                        "seed": s,
                        "t_mem": at["step"],
                        "test_acc": te,
                        "conc": c,
                        "conc_start": c0,
                        "rel_top": rt,
                        "rel_hidden": rh,
                        "ratio": ratio,
                        "held": ok,
                    }
                )
                if not ok:
                    fails.append(f"seed {s}")
            detail = "; ".join(
                f"seed {d['seed']}: t_mem {d['t_mem']}, test {100 * d['test_acc']:.1f}% "
                f"(chance {chance:.1f}%), concentration {d['conc']:.3f} vs {d['conc_start']:.3f}"
                f" at step 0, top/hidden relative change {d['rel_top']:.3f}/"
                f"{d['rel_hidden']:.3f} = {d['ratio']:.1f}x"
                for d in per
            )
            if fails:
                detail += f"; fails in {', '.join(fails)}"
            return not fails, detail, {"seeds": per, "chance_pct": chance}

        def check_b():
            per = [
                {"seed": s, "t_mem": a, "t_feat": b, "t_gen": c, "ordered": o}
                for s, a, b, c, o in zip(
                    base["seeds"],
                    base["t_mem"],
                    base["t_feat"],
                    base["t_gen"],
                    base["ordered"],
                    strict=True,
                )
            ]

            def t(v):
                return f">{budget}" if v is None else str(v)

            detail = "; ".join(
                f"seed {d['seed']}: {t(d['t_mem'])} / {t(d['t_feat'])} / {t(d['t_gen'])}"
                + ("" if d["ordered"] else " (not ordered)")
                for d in per
            )
            return all(base["ordered"]), "t_mem / t_feat / t_gen: " + detail, {"seeds": per}

        def check_c():
            parts, ev = [], {}
            wd0 = by.get("wd0")
            if wd0 is None:
                return None, "the run has no weight-decay-0 arm", {}
            slow = []
            for s, tb, tw in zip(base["seeds"], base["t_gen"], wd0["t_gen"], strict=True):
                ok = tw is None or tw >= WD0_SLOWDOWN * tb
                slow.append({"seed": s, "base": tb, "wd0": tw, "held": ok})
            wd_held = all(d["held"] for d in slow)
            parts.append(
                "weight decay 0: t_gen "
                + ", ".join(
                    f"{'>' + str(budget) if d['wd0'] is None else d['wd0']} vs base {d['base']}"
                    for d in slow
                )
                + f" ({'' if wd_held else 'not '}censored or >= {WD0_SLOWDOWN:g}x base in every "
                "seed)"
            )
            fr = sorted(
                (
                    r
                    for r in rows
                    if r["lr"] == base["lr"] and r["weight_decay"] == base["weight_decay"]
                ),
                key=lambda r: r["fraction"],
            )
            pairs, fr_held = [], len(fr) >= 2
            for lo, hi in zip(fr, fr[1:], strict=False):
                ok = hi["t_gen_censored"] == 0 and hi["t_gen_mean"] < lo["t_gen_mean"]
                pairs.append(
                    {
                        "from": lo["fraction"],
                        "to": hi["fraction"],
                        "t_gen_from": lo["t_gen_mean"],
                        "t_gen_to": hi["t_gen_mean"],
                        "held": ok,
                    }
                )
                fr_held = fr_held and ok

            def fmt(r):
                c = f" ({r['t_gen_censored']} censored at {budget})" if r["t_gen_censored"] else ""
                return f"{r['fraction']:g}: {r['t_gen_mean']:.0f}{c}"

            parts.append(
                "mean t_gen by train fraction "
                + ", ".join(fmt(r) for r in fr)
                + (" (falls at every step)" if fr_held else " (does not fall at every step)")
            )
            lr = by.get("low_lr")
            if lr is not None:
                parts.append(
                    f"reported, unjudged: lr {lr['lr']:g} t_mem / t_feat / t_gen means "
                    f"{lr['t_mem_mean']:.0f} / {lr['t_feat_mean']:.0f} / {lr['t_gen_mean']:.0f} "
                    f"({lr['t_gen_censored']} censored) vs base {base['t_mem_mean']:.0f} / "
                    f"{base['t_feat_mean']:.0f} / {base['t_gen_mean']:.0f}"
                )
                ev["low_lr"] = {k: lr[k] for k in ("lr", "t_mem", "t_feat", "t_gen")}
            ev.update(
                {"wd0": slow, "fractions": pairs, "fractions_held": fr_held, "wd0_held": wd_held}
            )
            return wd_held and fr_held, "; ".join(parts), ev

        frac_arms = [r["arm"] for r in rows if r["arm"].startswith("frac")]
        return [
            judge(
                "a",
                QUOTE_LAZY,
                f"in every base seed, at t_mem: test accuracy <= chance + "
                f"{LAZY_TEST_MARGIN_PTS:g} pts, median Fourier concentration <= "
                f"{LAZY_CONC_RATIO:g}x its step-0 value, top-layer relative change >= "
                f"{LAZY_TOP_RATIO:g}x the hidden layer's",
                pre(["base"]),
                check_a,
            ),
            judge(
                "b",
                QUOTE_STAGES,
                "t_mem < t_feat < t_gen in every base seed (" + RULE + ")",
                pre(["base"]),
                check_b,
            ),
            judge(
                "c",
                QUOTE_HYPER,
                f"at weight decay 0, t_gen is censored or >= {WD0_SLOWDOWN:g}x base's in every "
                "seed; the seed-mean t_gen falls strictly with each larger train fraction "
                "(censored counted as the budget; the larger fraction never censored); "
                "learning rate reported",
                pre(["base", "wd0", *frac_arms]),
                check_c,
            ),
        ]

    # -- report -----------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        budget = summary["budget"]

        def ts(v):
            return ", ".join(f">{budget}" if t is None else str(t) for t in v)

        rows = [
            [
                r["arm"],
                f"{r['fraction']:g}",
                f"{r['lr']:g}",
                f"{r['weight_decay']:g}",
                ts(r["t_mem"]),
                ts(r["t_feat"]),
                ts(r["t_gen"]),
                f"{100 * _num(r['final_test_acc']):.1f}",
                f"{_num(r['final_conc']):.3f}",
                f"{_num(r['final_peak_share']):.2f}",
            ]
            for r in summary["rows"]
        ]
        lazy = [
            [
                str(s),
                f">{budget}" if a["step"] is None else str(a["step"]),
                f"{100 * _num(a['test_acc']):.1f}",
                f"{_num(a['conc_start']):.3f}",
                f"{_num(a['conc']):.3f}",
                f"{_num(a['rel_hidden']):.4f}",
                f"{_num(a['rel_top']):.4f}",
            ]
            for r in summary["rows"]
            if r["arm"] == "base"
            for s, a in zip(r["seeds"], r["at_mem"], strict=True)
        ]
        means = [
            [
                r["arm"],
                *(_pm(r[f"{k}_mean"], r[f"{k}_std"], 0) for k in ("t_mem", "t_feat", "t_gen")),
            ]
            for r in summary["rows"]
        ]
        return [
            (
                f"Stage times per seed (rule: {summary['rule']}); final metrics are seed means",
                [
                    "arm",
                    "fraction",
                    "lr",
                    "wd",
                    "t_mem",
                    "t_feat",
                    "t_gen",
                    "final test %",
                    "final median conc.",
                    "same-peak share",
                ],
                rows,
            ),
            (
                f"Stage times, mean ± std over seeds (censored counted as {budget})",
                ["arm", "t_mem", "t_feat", "t_gen"],
                means,
            ),
            (
                f"Base arm at t_mem (chance {summary['chance_pct']:.1f}%)",
                [
                    "seed",
                    "t_mem",
                    "test %",
                    "conc. step 0",
                    "conc. t_mem",
                    "ΔW/W0 hidden",
                    "ΔW/W0 top",
                ],
                lazy,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = summary["rows"]
        fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(15, 4.2))
        base = next((r for r in rows if r["arm"] == "base"), None)
        if base is not None and "train_acc_curve" in base:
            ax.plot(base["acc_steps"], base["train_acc_curve"], color="tab:blue", label="train")
            ax.plot(base["acc_steps"], base["test_acc_curve"], color="tab:orange", label="test")
            for k, color in (
                ("t_mem", "tab:blue"),
                ("t_feat", "tab:green"),
                ("t_gen", "tab:orange"),
            ):
                for i, t in enumerate(base[k]):
                    if t is not None:
                        ax.axvline(t, color=color, ls=":", lw=1, label=k if i == 0 else None)
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy (base, mean over seeds)")
        ax.set_title("base: accuracy and stage times (per seed)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        cmap = plt.get_cmap("tab10")
        for i, r in enumerate(rows):
            if "test_acc_curve" not in r:
                continue
            lab = f"{r['arm']} (f {r['fraction']:g}, lr {r['lr']:g}, wd {r['weight_decay']:g})"
            bx.plot(r["acc_steps"], r["test_acc_curve"], color=cmap(i), label=lab)
            cx.plot(r["probe_steps"], r["conc_curve"], color=cmap(i), label=r["arm"])
        bx.set_xlabel("step")
        bx.set_ylabel("test accuracy (mean over seeds)")
        bx.set_title("test accuracy per arm")
        bx.legend(fontsize=6)
        bx.grid(alpha=0.3)
        cx.axhline(FEAT_CONCENTRATION, color="k", ls=":", lw=0.8, label="t_feat threshold")
        cx.set_xlabel("step")
        cx.set_ylabel("median Fourier concentration (mean over seeds)")
        cx.set_title("first-layer Fourier concentration")
        cx.legend(fontsize=6)
        cx.grid(alpha=0.3)
        fig.suptitle("Grokking stages: lazy -> independent -> interactive (a + b mod p)")
        return [
            Figure(
                "stages.png", "Accuracy with stage times; concentration per arm", figure_png(fig)
            )
        ]


def fraction_unit(cfg: GrokkingStagesConfig, fraction: float, progress: bool = False):
    """One resumable unit (module-level: :func:`~weightlab.runs.parallel.run_units` may run it
    in a spawned worker): every arm at train fraction ``fraction`` as one population (per-member
    optimizer), probed every ``eval_every`` steps. Returns ``(metrics, {})``."""
    from weightlab.population import MemberSpec

    t0 = time.process_time()
    raw = load_dataset(
        "modular", cfg.device, p=cfg.p, op=cfg.op, train_fraction=fraction, seed=cfg.split_seed
    )
    data = grok_task(raw)
    factory = model_factory(MLP, [2 * cfg.p, cfg.hidden, cfg.p])
    probes = [
        fourier_probe(cfg.eval_every, cfg.p),
        P.relative_change(cfg.eval_every, params=(HIDDEN, TOP)),
    ]
    specs, meta = [], []
    for arm, f, lr, wd in arm_table(cfg):
        if f != fraction:
            continue
        for s in range(cfg.seeds):
            optim = OptimConfig("adamw", lr=lr, weight_decay=wd, betas=(0.9, cfg.beta2))
            specs.append(MemberSpec(seed=derive_seed(NAME, "init", s), optim=optim))
            meta.append((arm, s))
    train_cfg = TrainConfig(cfg.steps, len(data.train), cfg.eval_every, specs[0].optim)
    results = _train(factory, specs, data, train_cfg, probes, cfg, progress)
    members = [
        member_record(arm, s, fraction, r) for (arm, s), r in zip(meta, results, strict=True)
    ]
    return {"members": members, "cpu_seconds": time.process_time() - t0}, {}


def _train(factory, specs, data, train_cfg, probes, cfg, progress):
    """Train the members with the probes: one population, or one loop run each."""
    if cfg.engine == "population":
        from weightlab.population import Population

        pop = Population(factory, specs, device=cfg.device)
        return pop.fit(data, train_cfg, probes=probes, progress=progress)
    from dataclasses import replace

    from weightlab.population.spec import build_member
    from weightlab.train.loop import train

    out = []
    for spec in specs:
        model = build_member(factory, spec, cfg.device)
        out.append(
            train(
                model,
                data,
                replace(train_cfg, optim=spec.optim),
                0,
                seed=spec.seed,
                probes=probes,
                progress=progress,
            )
        )
    return out


def _mean_curve(curves: list[list]) -> list[float | None]:
    out = []
    for vals in zip(*curves, strict=True):
        v = [x for x in vals if x is not None]
        out.append(sum(v) / len(v) if len(v) == len(vals) else None)
    return out


def member_name(m: dict) -> str:
    return f"{m['arm']} seed {m['seed']}"
