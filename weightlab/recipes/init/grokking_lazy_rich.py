"""Recipe ``grokking-lazy-rich``: Kumar, Bordelon, Gershman & Pehlevan 2024, "Grokking as
the Transition from Lazy to Rich Training Dynamics" (ICLR 2024, arXiv:2310.06110, row [#39]).

The paper's task, not modular arithmetic: full-batch gradient descent (SGD without
momentum, batch = the training set) on polynomial regression, ``y = x₁ x₂`` with
``x ~ N(0, I_50)`` (task ``teacher_poly``), by a two-layer ReLU MLP ``50 -> width -> 1``
wrapped as ``f = α (f_θ − f_θ0)`` (:func:`weightlab.init.output_scale`, centred, so
``f = 0`` at init on every input) and trained with ``η = η₀ / α²``
(:func:`~weightlab.init.output_scale.default_lr`: the same function-space speed for every
α, so α only sets how much the features move: large α is lazy). α ∈ {0.5, 1, 2, 4, 8},
3 seeds, MSE; seed ``s`` starts from the same θ0 at every α (paired). The output scale α is
a property of the wrapped module, so each α is one population of its seeds (per-member lr
through ``MemberSpec.optim``); the α's run one after another as resumable units.

Losses are normalised by the split's own target variance, ``L / Var(y)`` (= 1 − R²;
``Var(x₁x₂) = 1``). ``t_train`` is the first probed step with normalised train loss
<= :data:`SHARE` (train MSE over the whole training set, probed every ``eval_every``
steps), ``t_test`` the same for the test loss (evaluated every ``eval_every`` steps), and
the delay is ``t_test − t_train``. A member whose test loss never gets there within the
budget ``B = steps`` is *censored*: ``t_test = B`` and its delay ``B − t_train`` is only a
lower bound.

Claims (fixed rules, module constants):

1. "delay increases with α": over every consecutive pair of α of the grid, the mean
   delay rises strictly. A pair of α whose members are *all* censored shows no rise: both
   delays are lower bounds set by the budget, so their order is unknown and the claim
   is not shown (the pair is named "unresolved" in the detail).
2. "at the smallest α the delay is <= 10% of the largest α's" (:data:`MAX_RATIO`): mean
   delay at the smallest α <= ``MAX_RATIO`` × the mean at the largest. A censored largest
   α makes this conservative (its true delay is larger); a censored smallest α cannot
   pass (its delay is a lower bound of at least ``B − t_train``).

Preconditions ("not tested" otherwise): every member reaches the train threshold (the
fit happened at every α), no member diverged, and at least :data:`MIN_ALPHAS` α values
(claim 1) or two (claim 2). η₀ is chosen so that the smallest α (lr ``4 η₀`` at α = 0.5)
is stable, and kept.

Reported, unjudged: the initial kernel–target alignment ``yᵀKy / (‖K‖_F ‖y‖²)`` of each
member's empirical NTK on the training inputs (:mod:`weightlab.init.kernel_alignment`;
α-invariant, so one value per seed repeats across α), and the laziness check
``‖W_T − W_0‖_F / ‖W_0‖_F`` per layer and α.

Deviation, disclosed: the issue asks for "a few hundred samples"; the default is
``n_train = 1000``. In trial runs (width 32, η₀ = 0.2, 1 seed) the richest α = 0.5
reached a minimum normalised test loss of 0.104 at n = 800 (never <= 0.10) and 0.079 at
n = 1000, so with a few hundred samples no α generalises to the threshold and both
claims would be decided by censoring alone. In those trials every α >= 1 stayed above the
threshold for the whole run (test loss flat after ~2000 steps): this ReLU net shows
lazy-vs-rich generalisation, not a late drop of test loss at large α.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from weightlab.core import take_snapshot
from weightlab.data import is_user_data
from weightlab.errors import ConfigError
from weightlab.init.kernel_alignment import initial_alignment
from weightlab.init.output_scale import default_lr, output_scale
from weightlab.models import build
from weightlab.models.mlp import MLP
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import judge, no_divergence
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.recipes.tasks import task_opt
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed
from weightlab.threads import intra_op_threads
from weightlab.train import probes as P
from weightlab.train.config import OptimConfig, TrainConfig

QUOTE = (
    "the key determinants of grokking are the rate of feature learning -- which can be "
    "controlled precisely by parameters that scale the network output -- and the alignment "
    "of the initial features with the target function y(x)"
)
QUOTE_LAZY = "the network begins training in the lazy regime so does not learn features immediately"
# Fixed claim thresholds, not options.
SHARE = 0.10  # a loss "reaches" when loss / Var(y) <= SHARE (R² >= 0.9)
MAX_RATIO = 0.10  # claim 2: delay at the smallest α <= 10% of the largest α's
MIN_ALPHAS = 3  # claim 1 needs at least 3 α values (the issue: >= 3)
LAYERS = ("layers.0.weight", "layers.1.weight")
ACTIVATIONS = ("relu", "tanh", "gelu", "sin")


def parse_alphas(text: str) -> list[float]:
    """Distinct α > 0, sorted; a one-line :class:`ConfigError` otherwise."""
    try:
        vals = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"--alphas must be comma-separated numbers like 0.5,1,2; got {text!r}"
        ) from None
    if (
        not vals
        or any(not (math.isfinite(v) and v > 0) for v in vals)
        or len(set(vals)) != len(vals)
    ):
        raise ConfigError(f"--alphas must list distinct finite numbers > 0; got {text!r}")
    return sorted(vals)


@dataclass(frozen=True)
class GrokkingConfig(RecipeConfig):
    seeds: int = opt(3, "independent seeds (error bars are over seeds)", min=1, max=1000)
    data: str = opt("teacher_poly", "task: the monomial teacher (or regression FILE.npz)")
    d: int = task_opt("teacher_poly", "d")
    monomial: str = task_opt("teacher_poly", "monomial")
    n_train: int = opt(1000, "training examples (full batch)", min=2, max=100_000)
    n_val: int = opt(100, "validation examples (evaluated, not used by the claims)", min=1)
    n_test: int = opt(1000, "test examples (the test loss of the delay)", min=2, max=100_000)
    noise: float = task_opt("teacher_poly", "noise")
    width: int = opt(32, "hidden width of the 2-layer MLP", min=1, max=8192)
    activation: str = opt("relu", "hidden activation", choices=ACTIVATIONS)
    alphas: str = opt("0.5,1,2,4,8", "output scales α (f = α (f_θ − f_θ0)), comma-separated")
    lr0: float = opt(0.2, "η₀: every α trains with lr η₀ / α² (stable at the smallest α)", gt=0)
    steps: int = opt(3000, "full-batch gradient steps (the budget B; censoring point)", min=1)
    eval_every: int = opt(5, "steps between train/test loss measurements", min=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_alphas(self.alphas)

    @property
    def alpha_values(self) -> list[float]:
        return parse_alphas(self.alphas)


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"members": list}, "the metrics")
    expect_list_of(
        metrics["members"],
        {
            "alpha": (int, float),
            "seed": int,
            "alignment": (int, float),
            "train_steps": list,
            "train_curve": list,
            "test_steps": list,
            "test_curve": list,
            "t_train": (int, type(None)),
            "t_test": (int, type(None)),
            "rel_change": dict,
            "diverged": bool,
        },
        "members",
    )


def first_reach(steps: list[int], values: list[float], goal: float) -> int | None:
    """The first step whose value is <= ``goal`` (``None`` if none)."""
    return next((s for s, v in zip(steps, values, strict=True) if v <= goal), None)


def member_delay(t_train: int | None, t_test: int | None, budget: int) -> tuple[float | None, bool]:
    """``(t_test − t_train, censored)``; an unreached test threshold counts as ``budget``
    (censored, the delay a lower bound); ``None`` when the train threshold was never met."""
    if t_train is None:
        return None, t_test is None
    if t_test is None:
        return float(budget - t_train), True
    return float(t_test - t_train), False


def alpha_label(a: float) -> str:
    return f"{a:g}"


class GrokkingLazyRich(Recipe):
    name = "grokking-lazy-rich"
    family = "init"
    row = 39
    paper = (
        "Kumar, Bordelon, Gershman & Pehlevan 2024, Grokking as the Transition from Lazy to "
        "Rich Training Dynamics (ICLR 2024, arXiv:2310.06110)"
    )
    claim = (
        "the delay between train and test loss reaching a threshold grows with the output "
        "scale α (lazier); the richest α shows (almost) no delay"
    )
    Config = GrokkingConfig
    tasks = ("teacher_poly",)
    kinds = ("regression",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "d": 6,
        "n_train": 60,
        "n_val": 10,
        "n_test": 60,
        "width": 8,
        "alphas": "0.5,2,8",
        "steps": 60,
        "eval_every": 5,
    }
    broken: ClassVar[dict] = {"lr0": 1e-7, "steps": 5, "eval_every": 1}
    # measured: CPU time of one in-process smoke run, one thread (2 cores shared by 3 jobs)
    smoke_seconds = 3.4

    def task_params(self, cfg: GrokkingConfig) -> dict:
        if is_user_data(cfg.data):
            return {}
        return {
            "d": cfg.d,
            "monomial": cfg.monomial,
            "n_train": cfg.n_train,
            "n_val": cfg.n_val,
            "n_test": cfg.n_test,
            "noise": cfg.noise,
        }

    def validate(self, cfg: GrokkingConfig, data_sizes: dict[str, int]) -> None:
        if cfg.eval_every > cfg.steps:
            raise ConfigError(
                f"--eval-every {cfg.eval_every} exceeds --steps {cfg.steps}; lower it"
            )

    # -- training --------------------------------------------------------------------
    def run(self, cfg: GrokkingConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec, Population

        data = self.load_data(cfg)
        if tuple(data.output_shape) != (1,):
            raise ConfigError(
                f"--data {cfg.data} has outputs of shape {tuple(data.output_shape)}; this recipe "
                "needs one scalar target per example (n, 1)"
            )
        d_in = int(data.train.x[0].numel())
        var_train = float(data.train.y.double().var(unbiased=False))
        var_test = float(data.test.y.double().var(unbiased=False))
        n = len(data.train)
        alphas = cfg.alpha_values
        seeds = [derive_seed(self.name, "model", s) for s in range(cfg.seeds)]

        def scaled(seed: int, a: float = 1.0):
            net = build(MLP, [d_in, cfg.width, 1], seed=seed, activation=cfg.activation)
            return output_scale(net, a)

        def compute():
            x, y = data.train.x.double(), data.train.y.double()
            align = {s: initial_alignment(scaled(s).double(), x, y) for s in seeds}
            # α is a buffer of the output scale: every (α, seed) member, each with its own
            # α (through init_state) and lr η₀/α², trains in one population
            grid = [(a, i, s) for a in alphas for i, s in enumerate(seeds)]
            specs = [
                MemberSpec(
                    seed=s,
                    init_state=take_snapshot(scaled(s, a)),
                    optim=OptimConfig("sgd", lr=default_lr(cfg.lr0, a)),
                )
                for a, _, s in grid
            ]
            train_cfg = TrainConfig(cfg.steps, n, cfg.eval_every, specs[0].optim, loss="mse")
            pop = Population(scaled, specs, device=cfg.device)
            results = pop.fit(
                data, train_cfg, probes=[P.train_loss(cfg.eval_every)], progress=progress
            )
            y0 = float((data.test.y.double() ** 2).mean())  # f = 0 at init
            out = []
            for k, ((a, i, s), res) in enumerate(zip(grid, results, strict=True)):
                rows = [p for p in res.probes if "train_loss" in p]
                tr_steps = [int(p["step"]) for p in rows]
                tr = [float(p["train_loss"]) / var_train for p in rows]
                te_steps = [0] + [int(h.step) for h in res.history]
                te = [y0 / var_test] + [float(h.test_loss) / var_test for h in res.history]
                state = pop.state(k)
                rel = {}
                for name in LAYERS:
                    w, w0 = state[f"model.{name}"].double(), state[f"initial.{name}"].double()
                    rel[name] = float((w - w0).norm() / w0.norm())
                out.append(
                    {
                        "alpha": a,
                        "seed": i,
                        "alignment": align[s],
                        "train_steps": tr_steps,
                        "train_curve": tr,
                        "test_steps": te_steps,
                        "test_curve": te,
                        "t_train": first_reach(tr_steps, tr, SHARE),
                        "t_test": first_reach(te_steps, te, SHARE),
                        "rel_change": rel,
                        "diverged": bool(res.diverged),
                    }
                )
            return {"members": out}, {}

        with intra_op_threads(1):  # tiny model: splitting each op over threads only costs
            metrics, _ = rd.unit("population", compute, check=_check_unit)
        records = metrics["members"]
        return self.summarize(cfg, records, var_train, var_test)

    # -- summary and claims ----------------------------------------------------------
    @staticmethod
    def member_name(m: dict) -> str:
        return f"α={alpha_label(m['alpha'])} seed {m['seed']}"

    def summarize(
        self, cfg: GrokkingConfig, records: list[dict], var_train: float, var_test: float
    ) -> dict:
        budget = cfg.steps
        rows = []
        for a in cfg.alpha_values:
            ms = sorted((m for m in records if m["alpha"] == a), key=lambda m: m["seed"])
            delays, cens = [], []
            for m in ms:
                dl, c = member_delay(m["t_train"], m["t_test"], budget)
                delays.append(dl)
                cens.append(c)
            ok = [
                dl for dl, m in zip(delays, ms, strict=True) if dl is not None and not m["diverged"]
            ]
            row = {
                "alpha": a,
                "lr": default_lr(cfg.lr0, a),
                "seeds": [m["seed"] for m in ms],
                "delays": delays,
                "censored": cens,
                "n_censored": sum(cens),
                "all_censored": bool(ms) and all(cens),
                "t_train": [m["t_train"] for m in ms],
                "t_test": [m["t_test"] for m in ms],
                "not_fit": [self.member_name(m) for m in ms if m["t_train"] is None],
                "diverged": [self.member_name(m) for m in ms if m["diverged"]],
                "alignment": [m["alignment"] for m in ms],
                "final_train": mean_std([m["train_curve"][-1] for m in ms])[0],
                "final_test": mean_std([m["test_curve"][-1] for m in ms])[0],
                "min_test": mean_std([min(m["test_curve"]) for m in ms])[0],
            }
            row["delay_mean"], row["delay_std"] = (
                mean_std(ok) if len(ok) == len(ms) else (None, None)
            )
            for k in LAYERS:
                row[f"rel_{k}_mean"], row[f"rel_{k}_std"] = mean_std(
                    [m["rel_change"][k] for m in ms]
                )
            # mean curves over seeds, for the figure (steps identical across seeds)
            for kind in ("train", "test"):
                curves = [m[f"{kind}_curve"] for m in ms if not m["diverged"]]
                steps = ms[0][f"{kind}_steps"] if ms else []
                if curves and all(len(c) == len(steps) for c in curves):
                    row[f"{kind}_steps"] = steps
                    row[f"{kind}_mean_curve"] = [sum(v) / len(v) for v in zip(*curves, strict=True)]
            rows.append(row)
        claims = [c.to_dict() for c in self.check_claims(rows)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "claims": claims,
            "budget": budget,
            "share": SHARE,
            "var_train": var_train,
            "var_test": var_test,
            "members": len(records),
            "diverged_members": [self.member_name(m) for m in records if m["diverged"]],
            "measure": f"delay = t_test − t_train, t = first step with loss / Var(y) <= {SHARE:g}; "
            f"a test loss that never gets there counts as t_test = B = {budget} (censored)",
        }

    @staticmethod
    def check_claims(rows: list[dict]) -> list[ClaimResult]:
        rows = sorted(rows, key=lambda r: r["alpha"])

        def pre(rs: list[dict], need: int) -> list[str | None]:
            out: list[str | None] = []
            if len(rs) < need:
                out.append(f"the run has {len(rs)} α value(s), fewer than {need}")
            for r in rs:
                if r["not_fit"]:
                    out.append(
                        f"{len(r['not_fit'])} member(s) at α={alpha_label(r['alpha'])} never "
                        f"reached train loss <= {SHARE:g} Var(y) (no fit): "
                        + ", ".join(r["not_fit"][:3])
                    )
            out.append(no_divergence([n for r in rs for n in r["diverged"]]))
            return out

        def fmt(r: dict) -> str:
            c = f" ({r['n_censored']}/{len(r['delays'])} censored)" if r["n_censored"] else ""
            return f"α={alpha_label(r['alpha'])} {_num(r['delay_mean']):.0f}{c}"

        def check_1():
            pairs, rises, unresolved, falls = [], 0, [], []
            for lo, hi in zip(rows[:-1], rows[1:], strict=True):
                if lo["all_censored"] and hi["all_censored"]:
                    verdict = "unresolved (both censored)"
                    unresolved.append(f"{alpha_label(lo['alpha'])}-{alpha_label(hi['alpha'])}")
                elif _num(hi["delay_mean"]) > _num(lo["delay_mean"]):
                    verdict = "rises"
                    rises += 1
                else:
                    verdict = "does not rise"
                    falls.append(f"{alpha_label(lo['alpha'])}->{alpha_label(hi['alpha'])}")
                pairs.append({"from": lo["alpha"], "to": hi["alpha"], "verdict": verdict})
            held = rises == len(pairs) and rises >= 1
            detail = "mean delay (steps): " + ", ".join(fmt(r) for r in rows)
            detail += f"; {rises} consecutive pair(s) rise"
            if unresolved:
                detail += (
                    f"; {len(unresolved)} unresolved because every member of both α is censored at "
                    f"the budget ({', '.join(unresolved)}: no rise shown)"
                )
            if falls:
                detail += f"; no rise at {', '.join(falls)}"
            if rises == 0 and not falls:
                detail += "; no pair rises"
            ev = {
                "alphas": [r["alpha"] for r in rows],
                "delay_means": [r["delay_mean"] for r in rows],
                "n_censored": [r["n_censored"] for r in rows],
                "pairs": pairs,
            }
            return held, detail, ev

        def check_2():
            lo, hi = rows[0], rows[-1]
            dl, dh = _num(lo["delay_mean"]), _num(hi["delay_mean"])
            ratio = dl / dh if dh > 0 else math.inf
            held = (not lo["n_censored"]) and dh > 0 and dl <= MAX_RATIO * dh
            detail = (
                f"mean delay {dl:.0f} steps at α={alpha_label(lo['alpha'])} vs {dh:.0f} at "
                f"α={alpha_label(hi['alpha'])}: ratio {ratio:.3f}, needed <= {MAX_RATIO:g}"
            )
            if hi["n_censored"]:
                detail += (
                    f" ({hi['n_censored']} member(s) at the largest α censored: its delay is a "
                    "lower bound, so the ratio is an upper bound)"
                )
            if lo["n_censored"]:
                detail += f"; {lo['n_censored']} member(s) at the smallest α censored: cannot pass"
            ev = {"delay_small": dl, "delay_large": dh, "ratio": ratio, "max_ratio": MAX_RATIO}
            return held, detail, ev

        ends = rows[:1] + rows[-1:] if len(rows) >= 2 else rows
        return [
            judge(
                "1",
                QUOTE,
                f"the mean train-to-test delay (loss <= {SHARE:g} Var(y)) rises over consecutive "
                "α of the grid (a pair censored at both α shows no rise)",
                pre(rows, MIN_ALPHAS),
                check_1,
            ),
            judge(
                "2",
                QUOTE_LAZY,
                f"the mean delay at the smallest α is <= {MAX_RATIO:g} x that at the largest α",
                pre(ends, 2),
                check_2,
            ),
        ]

    # -- report ----------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        header = [
            "α",
            "lr",
            "t_train",
            "t_test",
            "delay",
            "censored",
            "min test L/Var",
            *[f"ΔW/W0 {k}" for k in LAYERS],
        ]
        rows = []
        for r in summary["rows"]:
            rows.append(
                [
                    alpha_label(r["alpha"]),
                    f"{r['lr']:.4g}",
                    ", ".join("—" if t is None else str(t) for t in r["t_train"]),
                    ", ".join(
                        f"≥{summary['budget']}" if t is None else str(t) for t in r["t_test"]
                    ),
                    _pm(r["delay_mean"], r["delay_std"], 0),
                    f"{r['n_censored']}/{len(r['delays'])}",
                    f"{_num(r['min_test']):.3f}",
                    *[_pm(r[f"rel_{k}_mean"], r[f"rel_{k}_std"], 3) for k in LAYERS],
                ]
            )
        align_rows = [
            [alpha_label(r["alpha"]), str(s), f"{v:.4f}"]
            for r in summary["rows"]
            for s, v in zip(r["seeds"], r["alignment"], strict=True)
        ]
        return [
            (
                f"Delay between train and test loss reaching {summary['share']:g} Var(y) "
                f"(per seed; delay mean ± std over seeds; censored at B = {summary['budget']})",
                header,
                rows,
            ),
            (
                "Initial NTK–target alignment yᵀKy / (‖K‖_F ‖y‖²) on the training inputs "
                "(reported, unjudged; α-invariant)",
                ["α", "seed", "alignment"],
                align_rows,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
        cmap = plt.get_cmap("viridis")
        rows = summary["rows"]
        for i, r in enumerate(rows):
            color = cmap(i / max(1, len(rows) - 1))
            lab = f"α={alpha_label(r['alpha'])}"
            if "test_mean_curve" in r:
                xs = [max(s, 1) for s in r["test_steps"]]
                ax.plot(xs, r["test_mean_curve"], "-", color=color, label=f"{lab} test")
            if "train_mean_curve" in r:
                xs = [max(s, 1) for s in r["train_steps"]]
                ax.plot(xs, r["train_mean_curve"], "--", color=color, label=f"{lab} train")
        ax.axhline(summary["share"], color="k", lw=0.8, ls=":", label="threshold")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss / Var(y) (mean over seeds)")
        ax.legend(fontsize=6, ncol=2)
        ax.grid(alpha=0.3, which="both")
        pts = [r for r in rows if math.isfinite(_num(r["delay_mean"]))]
        if pts:
            bx.errorbar(
                [r["alpha"] for r in pts],
                [_num(r["delay_mean"]) for r in pts],
                yerr=[_num(r["delay_std"]) for r in pts],
                fmt="o-",
                capsize=3,
                color="tab:blue",
                label="mean ± std",
            )
            cens = [r for r in pts if r["n_censored"]]
            if cens:
                bx.plot(
                    [r["alpha"] for r in cens],
                    [_num(r["delay_mean"]) for r in cens],
                    "^",
                    ms=9,
                    mfc="none",
                    color="tab:red",
                    label="censored (lower bound)",
                )
            bx.set_xscale("log", base=2)
        else:
            bx.text(
                0.5,
                0.5,
                "no delay measured\n(train threshold never reached)",
                ha="center",
                va="center",
                transform=bx.transAxes,
            )
        bx.axhline(summary["budget"], color="k", lw=0.8, ls=":", label="budget B")
        bx.set_xlabel("output scale α")
        bx.set_ylabel("delay t_test − t_train (steps)")
        bx.grid(alpha=0.3, which="both")
        bx.legend(fontsize=7)
        fig.suptitle("Grokking as lazy -> rich: loss curves and delay vs output scale α")
        png = figure_png(fig)
        return [Figure("delay_vs_alpha.png", "Loss curves per α and delay vs α", png)]
