"""Recipe ``deep-linear``: Saxe, McClelland & Ganguli (2014), "Exact solutions to the
nonlinear dynamics of learning in deep linear neural networks" (row [#13]).

Task ``deep_linear``: a 32 x 32 linear teacher ``W = U diag(5, 3, 2, 1, 0, ...) Vᵀ``, no
noise; the training inputs are whitened exactly (``X ← X Σ̂^{-1/2}``, targets recomputed as
``X W``), the paper's assumption ``Σ11 = I``. Networks are weightlab MLPs with the
``linear`` activation, width 32, biases zero and frozen (``lr_mult = 0``): bias-free deep
linear nets. Full-batch gradient descent. Rates are in the paper's units, ``λ = 1/τ`` for
the loss ``½‖y − ŷ‖²``; weightlab's MSE averages over the ``d_out`` outputs, so the optimizer
gets ``λ · d_out / 2`` (the same trajectory).

(a) Depth 2, decoupled balanced start ``W₂W₁ = 10⁻³ V Uᵀ`` on the teacher's singular vectors
(:func:`weightlab.init.deep_linear.decoupled_balanced_init`), ``λ s₁ = 0.02``. Mode strengths
``a_α = v_αᵀ W_tot u_α`` are read from snapshots and compared with the paper's sigmoid
(:func:`~weightlab.init.deep_linear.mode_strength_sigmoid`). Claims: every mode stays within
``0.05 s_α`` of the sigmoid; modes reach half strength in order of ``s`` (every seed).

(b) Depths ``{2, 4, 8, 16, 32}``, unit-gain init: random orthogonal (gain 1) vs Gaussian
``N(0, 1/n)``, ``λ = η₀ / D`` with ``η₀ = 0.05``. Learning time = updates until the training
loss is below 10% of its start (cap 4000 updates; a member that never gets there is censored
at the cap). Training runs in chunks that stop once every member is below the threshold:
full-batch GD without momentum is memoryless, so a chunked run is the same trajectory as one
long run. Claims: mean time at D = 32 over mean time at D = 2 is ``<= 1.6`` (orthogonal) and
``>= 2`` (Gaussian).

Seeds form one population in (a); in (b) each depth is one population of both inits × seeds
(never padded across depths).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.init.deep_linear import (
    decoupled_balanced_init,
    half_time,
    mode_strength_sigmoid,
    mode_strengths,
)
from weightlab.init.registry import initialize
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import judge, no_divergence
from weightlab.recipes.options import float_list
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields
from weightlab.seeding import derive_seed, generator
from weightlab.train.config import OptimConfig, ParamGroup, TrainConfig

QUOTE_PLATEAU = "long plateaus followed by rapid transitions to lower error solutions"
QUOTE_ORTHO = (
    "a new class of random orthogonal initial conditions on weights that, like unsupervised "
    "pre-training, enjoys depth independent learning times"
)
# Fixed claim thresholds (from the issue), not options.
SIGMOID_TOL = 0.05  # (a) |a - sigmoid| <= 0.05 s for every mode, step and seed
LOSS_FRACTION = 0.10  # (b) learning time: train loss < 10% of its start
ORTHO_MAX_RATIO = 1.6  # (b) time(D=32) / time(D=2) under orthogonal init
GAUSS_MIN_RATIO = 2.0  # (b) ... under Gaussian N(0, 1/n)
A0 = 1e-3  # (a) initial strength of every mode
INITS = ("orthogonal", "gaussian")
SHALLOW, DEEP = 2, 32
CHUNK = 250  # (b) updates per chunk between threshold checks


@dataclass(frozen=True)
class DeepLinearConfig(RecipeConfig):
    seeds: int = opt(5, "number of seeds (error bars are over seeds)", min=1, max=1000)
    data: str = opt("deep_linear", "task: deep_linear (the linear teacher)")
    width: int = opt(32, "input, hidden and output width of the linear nets", min=2, max=512)
    singular_values: str = opt(
        "5,3,2,1", "the teacher's nonzero singular values, decreasing, comma-separated"
    )
    n_train: int = opt(128, "training examples (whitened exactly, so any n >= width)", min=2)
    lr_a: float = opt(
        0.004, "(a) rate λ = 1/τ for ½‖y−ŷ‖² (the issue asks λ·s₁ <= 0.02)", gt=0, max=10
    )
    steps_a: int = opt(2000, "(a) full-batch GD updates", min=1, max=100000)
    every_a: int = opt(20, "(a) updates between mode-strength snapshots", min=1)
    depths: str = opt("2,4,8,16,32", "(b) depths D (numbers of weight matrices)")
    eta0: float = opt(0.05, "(b) rate λ = η₀ / D", gt=0, max=100)
    cap: int = opt(4000, "(b) most updates; a member not below 10% by then is censored", min=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        s = float_list(
            self.singular_values, "singular-values", finite=False, distinct=False, sort=False
        )
        if not s or any(v <= 0 for v in s) or any(b >= a for a, b in zip(s, s[1:], strict=False)):
            raise ConfigError(
                f"--singular-values must be positive and strictly decreasing; got "
                f"{self.singular_values!r}"
            )
        if len(s) > self.width:
            raise ConfigError(f"--singular-values gives {len(s)} values for width {self.width}")
        if self.n_train < self.width:
            raise ConfigError(
                f"--n-train {self.n_train} is below --width {self.width}: the inputs cannot be "
                "whitened; raise --n-train"
            )
        ds = float_list(self.depths, "depths", finite=False, distinct=False, sort=False)
        if not ds or any(d < 1 or d != int(d) for d in ds) or len(set(ds)) != len(ds):
            raise ConfigError(f"--depths must be distinct positive integers; got {self.depths!r}")

    @property
    def s(self) -> list[float]:
        return float_list(
            self.singular_values, "singular-values", finite=False, distinct=False, sort=False
        )

    @property
    def depth_values(self) -> list[int]:
        return sorted(
            int(d)
            for d in float_list(self.depths, "depths", finite=False, distinct=False, sort=False)
        )


def whiten(task: TaskData) -> TaskData:
    """The task with its training inputs whitened exactly (``X Σ̂^{-1/2}``, symmetric) and the
    targets recomputed from the teacher (noise-free), so ``Σ11 = I`` as Saxe et al. assume."""
    x = task.train.x.to(torch.float64)
    cov = x.T @ x / len(x)
    evals, evecs = torch.linalg.eigh(cov)
    if float(evals.min()) <= 1e-10 * float(evals.max()):
        raise ConfigError("the training inputs are rank-deficient; raise --n-train")
    xw = x @ (evecs * evals.rsqrt()) @ evecs.T
    y = xw @ task.info["weight"].to(torch.float64)
    train = Split(xw.to(task.train.x.dtype).contiguous(), y.to(task.train.y.dtype).contiguous())
    return TaskData(task.name, train, task.val, task.test, 0, kind="regression", info=task.info)


def _optim(lam: float, width: int) -> OptimConfig:
    # λ for ½‖e‖² summed over outputs = λ·d_out/2 for the mean MSE; biases frozen at zero
    return OptimConfig("sgd", lr=lam * width / 2, groups=(ParamGroup(("*.bias",), lr_mult=0.0),))


def _state(weights: list[torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    st = {f"layers.{i}.weight": w.to(torch.float32) for i, w in enumerate(weights)}
    st.update({f"layers.{i}.bias": torch.zeros(width) for i in range(len(weights))})
    return st


def learning_time(losses: list[float], fraction: float = LOSS_FRACTION) -> int | None:
    """Updates done before the loss first falls below ``fraction`` of ``losses[0]`` (``losses[t]``
    is the loss after ``t`` updates); ``None`` if it never does."""
    if not losses:
        return None
    target = fraction * losses[0]
    return next((t for t, v in enumerate(losses) if v < target), None)


def half_strength_time(steps: list[int], values: list[float], s: float) -> float | None:
    """First time the strength reaches ``s/2``, linearly interpolated between snapshots."""
    for i in range(1, len(steps)):
        if values[i] >= s / 2 > values[i - 1]:
            f = (s / 2 - values[i - 1]) / (values[i] - values[i - 1])
            return steps[i - 1] + f * (steps[i] - steps[i - 1])
    return float(steps[0]) if values and values[0] >= s / 2 else None


def _finite(x: float | None) -> float | None:
    """``x`` if finite, else ``None`` (JSON has no NaN; a diverged member's losses)."""
    return float(x) if x is not None and math.isfinite(x) else None


def _check_a(m: dict) -> None:
    expect_fields(m, {"steps": list, "seeds": list}, "part (a)")


def _check_b(m: dict) -> None:
    expect_fields(m, {"depth": int, "members": list, "updates": int}, "part (b)")


class DeepLinear(Recipe):
    name = "deep-linear"
    family = "init"
    row = 13
    paper = (
        "Saxe, McClelland & Ganguli 2014, Exact solutions to the nonlinear dynamics of "
        "learning in deep linear neural networks (arXiv:1312.6120)"
    )
    claim = (
        "mode strengths follow the analytic sigmoid, strongest first; orthogonal init learns "
        "in depth-independent time, Gaussian does not"
    )
    Config = DeepLinearConfig
    tasks = ("deep_linear",)
    kinds = ("regression",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "steps_a": 550,
        "every_a": 25,
        "lr_a": 0.01,
        "singular_values": "2,1",
        "n_train": 32,
        "depths": "2,4",
        "cap": 100,
    }
    broken: ClassVar[dict] = {"lr_a": 2.0, "eta0": 50.0}
    smoke_seconds = 2.0

    def task_params(self, cfg: DeepLinearConfig) -> dict:
        return {
            "d_in": cfg.width,
            "d_out": cfg.width,
            "n_train": cfg.n_train,
            "n_val": 16,
            "n_test": 16,
            "noise": 0.0,
            "singular_values": cfg.singular_values,
        }

    def validate(self, cfg: DeepLinearConfig, data_sizes: dict[str, int]) -> None:
        """Part (b) compares the depths 2 and 32."""
        if SHALLOW not in cfg.depth_values or len(cfg.depth_values) < 2:
            raise ConfigError(
                f"--depths must include {SHALLOW} and at least one other depth; got {cfg.depths!r}"
            )

    # -- part (a) --------------------------------------------------------------------
    def _part_a(self, cfg, data, rd, progress):
        from weightlab.population import MemberSpec, Population

        u, v = data.info["U"].double(), data.info["V"].double()
        width = cfg.width
        factory = model_factory(MLP, [width] * 3, activation="linear")
        specs = []
        for s in range(cfg.seeds):
            g = generator(derive_seed(self.name, "a", "R", s))
            w = decoupled_balanced_init(u, v, A0, 2, width, g)
            specs.append(MemberSpec(seed=s, init_state=_state(w, width)))
        steps = list(range(0, cfg.steps_a + 1, cfg.every_a))
        if steps[-1] != cfg.steps_a:
            steps.append(cfg.steps_a)
        tcfg = TrainConfig(cfg.steps_a, len(data.train), cfg.every_a, _optim(cfg.lr_a, width))

        def compute():
            res = Population(factory, specs, device=cfg.device).fit(
                data, tcfg, snapshot_steps=steps, progress=progress
            )
            seeds = []
            for s, r in enumerate(res):
                rows = []
                for t in steps:
                    if t in r.snapshots:
                        snap = r.snapshots[t]
                        ws = [snap["layers.0.weight"], snap["layers.1.weight"]]
                        rows.append(
                            [_finite(x) for x in mode_strengths(ws, u, v)[: len(cfg.s)].tolist()]
                        )
                seeds.append(
                    {
                        "seed": s,
                        "strengths": rows,
                        "diverged": bool(r.diverged),
                        "final_loss": _finite(r.final.train_loss),
                    }
                )
            return {"steps": steps, "seeds": seeds}, {}

        metrics, _ = rd.unit("part-a", compute, check=_check_a)
        return metrics

    # -- part (b) --------------------------------------------------------------------
    def _part_b(self, cfg, data, depth, progress):
        from weightlab.population import MemberSpec, Population

        width = cfg.width
        factory = model_factory(MLP, [width] * (depth + 1), activation="linear")
        specs, meta = [], []
        for init in INITS:
            for s in range(cfg.seeds):
                m = factory(s)
                seed = derive_seed(self.name, "b", init, depth, s)
                if init == "orthogonal":
                    initialize(m, "orthogonal", seed=seed, gain=1.0)
                else:
                    initialize(m, "normal", seed=seed, std=width**-0.5)
                st = {k: t.detach().clone() for k, t in m.state_dict().items()}
                specs.append(MemberSpec(seed=s, init_state=st))
                meta.append((init, s))
        lam = cfg.eta0 / depth
        losses: list[list[float]] = [[] for _ in specs]
        diverged = [False] * len(specs)
        done = 0
        while done < cfg.cap:
            n = min(CHUNK, cfg.cap - done)
            tcfg = TrainConfig(n, len(data.train), 1, _optim(lam, width))
            pop = Population(factory, specs, device=cfg.device)
            res = pop.fit(data, tcfg, progress=False)
            for i, r in enumerate(res):
                losses[i].extend(p.train_loss for p in r.history[: n if not r.diverged else None])
                diverged[i] = diverged[i] or bool(r.diverged)
            done += n
            specs = [
                MemberSpec(seed=sp.seed, init_state=pop.state(i)) for i, sp in enumerate(specs)
            ]
            reached = [
                diverged[i] or learning_time(losses[i]) is not None for i in range(len(specs))
            ]
            if all(reached):
                break
        members = []
        for i, (init, s) in enumerate(meta):
            t = None if diverged[i] else learning_time(losses[i])
            members.append(
                {
                    "init": init,
                    "seed": s,
                    "time": t,
                    "censored": t is None,
                    "diverged": diverged[i],
                    "start_loss": _finite(losses[i][0]) if losses[i] else None,
                    "losses": [_finite(losses[i][k]) for k in range(0, len(losses[i]), 5)],
                }
            )
        return {"depth": depth, "members": members, "updates": done}, {}

    def run(self, cfg: DeepLinearConfig, rd: RunDir, progress: bool = False) -> dict:
        data = whiten(self.load_data(cfg))
        bar = progress_bar(1 + len(cfg.depth_values), self.name, "part", progress)
        a = self._part_a(cfg, data, rd, progress)
        if bar is not None:
            bar.update(1)
        b = []
        for depth in cfg.depth_values:
            m, _ = rd.unit(
                f"b-depth-{depth:03d}",
                lambda depth=depth: self._part_b(cfg, data, depth, progress),
                check=_check_b,
            )
            b.append(m)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return self.summarize(cfg, a, b)

    # -- summary and claims -------------------------------------------------------------
    def summarize(self, cfg: DeepLinearConfig, a: dict, b: list[dict]) -> dict:
        s_vals, lam = cfg.s, cfg.lr_a
        steps = a["steps"]
        analytic = [[float(mode_strength_sigmoid(t * lam, s, A0)) for s in s_vals] for t in steps]
        a_rows = []
        for k, s in enumerate(s_vals):
            errs, halves = [], []
            for sd in a["seeds"]:
                vals = [row[k] for row in sd["strengths"]]
                n = len(vals)
                if any(x is None for x in vals):  # diverged: no reading
                    errs.append(None)
                    halves.append(None)
                    continue
                errs.append(max(abs(x - analytic[j][k]) for j, x in enumerate(vals)) / s)
                halves.append(half_strength_time(steps[:n], vals, s))
            hm = mean_std([h for h in halves if h is not None])
            a_rows.append(
                {
                    "s": s,
                    "max_rel_dev": max((e for e in errs if e is not None), default=None),
                    "max_rel_dev_per_seed": errs,
                    "half_time_analytic": half_time(s, A0, 1 / lam) if s > 2 * A0 else None,
                    "half_time_mean": hm[0],
                    "half_time_std": hm[1],
                    "half_times": halves,
                }
            )
        b_rows = []
        for m in b:
            for init in INITS:
                ms = [x for x in m["members"] if x["init"] == init]
                times = [x["time"] if x["time"] is not None else cfg.cap for x in ms]
                mt, st = mean_std([float(t) for t in times])
                b_rows.append(
                    {
                        "depth": m["depth"],
                        "init": init,
                        "time_mean": mt,
                        "time_std": st,
                        "times": [x["time"] for x in ms],
                        "censored": sum(x["censored"] and not x["diverged"] for x in ms),
                        "diverged": sum(x["diverged"] for x in ms),
                        "lr": cfg.eta0 / m["depth"],
                    }
                )
        curves = {
            f"{m['depth']}-{x['init']}-{x['seed']}": x["losses"] for m in b for x in m["members"]
        }
        claims = [c.to_dict() for c in self.check_claims(cfg, a, a_rows, b_rows)]
        diverged = [f"(a) seed {sd['seed']}" for sd in a["seeds"] if sd["diverged"]] + [
            f"(b) D={m['depth']} {x['init']} seed {x['seed']}"
            for m in b
            for x in m["members"]
            if x["diverged"]
        ]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "members": len(a["seeds"]) + sum(len(m["members"]) for m in b),
            "diverged_members": diverged,
            "part_a": {
                "steps": steps,
                "lr": lam,
                "a0": A0,
                "analytic": analytic,
                "seeds": a["seeds"],
                "rows": a_rows,
            },
            "part_b": {
                "rows": b_rows,
                "cap": cfg.cap,
                "eta0": cfg.eta0,
                "curves_every": 5,
                "curves": curves,
            },
            "claims": claims,
            "units": "rates λ = 1/τ for ½‖y−ŷ‖²; times in full-batch updates",
        }

    @staticmethod
    def check_claims(cfg, a: dict, a_rows: list[dict], b_rows: list[dict]) -> list[ClaimResult]:
        """(a1) every mode within 0.05 s of the sigmoid at every snapshot of every seed;
        (a2) in every seed, half-strength times strictly rise as s falls; (b-ortho) mean
        time at D = 32 / D = 2 <= 1.6; (b-gauss) >= 2. Censored times enter at the cap (a
        lower bound on the ratio when the deep time is censored)."""
        div_a = [f"(a) seed {sd['seed']}" for sd in a["seeds"] if sd["diverged"]]
        weakest = min(cfg.s)
        covered = (
            None
            if weakest <= 2 * A0 or cfg.steps_a >= 1.5 * half_time(weakest, A0, 1 / cfg.lr_a)
            else f"the run ({cfg.steps_a} updates) ends before 1.5x the weakest mode's analytic "
            "half-time; raise --steps-a"
        )
        rate = cfg.lr_a * max(cfg.s)
        small = (
            None
            if rate <= 0.02 + 1e-12
            else f"λ·s₁ = {rate:.3g} > 0.02 (the issue's small-rate condition); lower --lr-a"
        )

        def a1():
            devs = [r["max_rel_dev"] for r in a_rows]
            detail = (
                "largest |a − sigmoid| / s per mode: "
                + ", ".join(f"s={r['s']:g}: {_num(r['max_rel_dev']):.4f}" for r in a_rows)
                + f"; needed <= {SIGMOID_TOL:g}"
            )
            ok = all(d is not None and d <= SIGMOID_TOL for d in devs)
            return ok, detail, {"max_rel_dev": devs}

        def a2():
            order_ok = []
            for i in range(len(a["seeds"])):
                h = [r["half_times"][i] for r in a_rows]
                order_ok.append(
                    all(x is not None for x in h)
                    and all(p < q for p, q in zip(h[:-1], h[1:], strict=False))
                )
            detail = (
                "mean half-strength update by s: "
                + ", ".join(
                    f"s={r['s']:g}: {_pm(r['half_time_mean'], r['half_time_std'], 1)} "
                    f"(analytic {r['half_time_analytic']:.1f})"
                    for r in a_rows
                )
                + f"; in order in {sum(order_ok)}/{len(order_ok)} seeds (needed all)"
            )
            return all(order_ok), detail, {"in_order": order_ok}

        by = {(r["depth"], r["init"]): r for r in b_rows}
        have = (
            None
            if (SHALLOW, "orthogonal") in by and (DEEP, "orthogonal") in by
            else f"the run lacks depth {SHALLOW} or {DEEP}"
        )
        div_b = [
            f"(b) D={r['depth']} {r['init']}"
            for r in b_rows
            if r["diverged"] and r["depth"] in (SHALLOW, DEEP)
        ]

        def shallow_ok(init):
            if have:
                return None
            r = by[(SHALLOW, init)]
            return (
                f"{r['censored']} {init} member(s) at D={SHALLOW} never reached 10% within the cap"
                if r["censored"]
                else None
            )

        def b_check(init, bound, upper):
            def check():
                r2, r32 = by[(SHALLOW, init)], by[(DEEP, init)]
                ratio = r32["time_mean"] / r2["time_mean"]
                cens = r32["censored"] > 0
                ok = ratio <= bound if upper else ratio >= bound
                rel = "<=" if upper else ">="
                detail = (
                    f"{init}: time D={DEEP} {_pm(r32['time_mean'], r32['time_std'], 1)} / "
                    f"D={SHALLOW} {_pm(r2['time_mean'], r2['time_std'], 1)} = {ratio:.2f}"
                    + (f" (a lower bound: {r32['censored']} censored at the cap)" if cens else "")
                    + f"; needed {rel} {bound:g}"
                )
                return ok, detail, {"ratio": ratio, "censored_deep": r32["censored"]}

            return check

        return [
            judge(
                "a-sigmoid",
                QUOTE_PLATEAU,
                f"depth 2, balanced decoupled start a₀ = {A0:g}: every mode strength stays within "
                f"{SIGMOID_TOL:g}·s of the analytic sigmoid",
                [small, no_divergence(div_a)],
                a1,
            ),
            judge(
                "a-order",
                QUOTE_PLATEAU,
                "modes reach half strength in order of their singular value (every seed)",
                [covered, small, no_divergence(div_a)],
                a2,
            ),
            judge(
                "b-orthogonal",
                QUOTE_ORTHO,
                f"orthogonal init: learning time at D={DEEP} over D={SHALLOW} <= {ORTHO_MAX_RATIO:g}",
                [have, no_divergence(div_b), shallow_ok("orthogonal")],
                b_check("orthogonal", ORTHO_MAX_RATIO, True),
            ),
            judge(
                "b-gaussian",
                QUOTE_ORTHO,
                f"Gaussian N(0, 1/n) init: learning time at D={DEEP} over D={SHALLOW} >= "
                f"{GAUSS_MIN_RATIO:g}",
                [have, no_divergence(div_b), shallow_ok("gaussian")],
                b_check("gaussian", GAUSS_MIN_RATIO, False),
            ),
        ]

    # -- report ------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        pa, pb = summary["part_a"], summary["part_b"]
        rows_a = [
            [
                f"{r['s']:g}",
                f"{_num(r['max_rel_dev']):.4f}",
                _pm(r["half_time_mean"], r["half_time_std"], 1),
                "—" if r["half_time_analytic"] is None else f"{r['half_time_analytic']:.1f}",
            ]
            for r in pa["rows"]
        ]
        rows_b = [
            [
                str(r["depth"]),
                r["init"],
                f"{r['lr']:.4g}",
                _pm(r["time_mean"], r["time_std"], 1),
                str(r["censored"]),
                str(r["diverged"]),
            ]
            for r in pb["rows"]
        ]
        return [
            (
                f"(a) depth 2, λ = {pa['lr']:g}, a₀ = {pa['a0']:g}: mode strengths vs the sigmoid "
                "(mean ± std over seeds)",
                ["s", "max |a − sigmoid| / s", "half-strength update", "analytic"],
                rows_a,
            ),
            (
                f"(b) learning time (updates to < 10% of the start loss; cap {pb['cap']}, "
                "censored members enter at the cap)",
                ["depth", "init", "λ", "time", "censored", "diverged"],
                rows_b,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        pa, pb = summary["part_a"], summary["part_b"]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        steps = pa["steps"]
        for k, r in enumerate(pa["rows"]):
            c = colors[k % len(colors)]
            axes[0].plot(steps, [row[k] for row in pa["analytic"]], "--", color=c, lw=1.5)
            for sd in pa["seeds"]:
                vals = [row[k] for row in sd["strengths"]]
                axes[0].plot(steps[: len(vals)], vals, color=c, alpha=0.5, lw=1)
            axes[0].plot([], [], color=c, label=f"s = {r['s']:g}")
        axes[0].plot([], [], "k--", label="analytic sigmoid")
        axes[0].set_xlabel("update")
        axes[0].set_ylabel("mode strength vᵀ W_tot u")
        axes[0].set_title("(a) depth 2, balanced small init")
        axes[0].legend(fontsize=8)
        for init, c in zip(INITS, ("tab:blue", "tab:red"), strict=True):
            rows = sorted((r for r in pb["rows"] if r["init"] == init), key=lambda r: r["depth"])
            axes[1].errorbar(
                [r["depth"] for r in rows],
                [r["time_mean"] for r in rows],
                yerr=[r["time_std"] for r in rows],
                fmt="o-",
                capsize=2,
                color=c,
                label=init,
            )
        axes[1].set_xscale("log", base=2)
        axes[1].set_xlabel("depth D")
        axes[1].set_ylabel("updates to 10% of the start loss")
        axes[1].set_title("(b) unit-gain init, λ = η₀/D")
        axes[1].legend(fontsize=8)
        for ax in axes:
            ax.grid(alpha=0.3)
        png = figure_png(fig)
        return [Figure("deep_linear.png", "Mode strengths and learning time vs depth", png)]


__all__ = ["DeepLinear", "DeepLinearConfig", "half_strength_time", "learning_time", "whiten"]
