"""Recipe ``advani-saxe``: Advani & Saxe (2017/2020), "High-dimensional dynamics of
generalization error in neural networks" (row [#21]).

Linear part (claims a-c): task ``teacher_linear`` per seed (``n = 100`` training examples,
``d`` inputs, noise std ``σ_ε = 0.5``), rescaled to the paper's convention ``x ~ N(0, I/d)``,
``w̄ ~ N(0, I)`` (``σ_w² = 1``): the task draws ``x ~ N(0, I)`` and ``W ~ N(0, 1/d)``, so
``x/√d`` and ``√d W`` give the same targets. Student: ``w ∈ R^d`` (an ``MLP [d, 1]`` whose
bias is frozen at 0), ``w₀ = σ₀ z`` with ``z ~ N(0, I)`` (one draw per seed, shared by the
``σ₀`` arms so they are paired), full-batch gradient descent with step ``η = 0.05`` on
``½ Σ (y − wᵀx)²`` for 4,000 steps in float64; the loop's loss is the mean squared error, so
its learning rate is ``η n / 2``. The test error at each logged step is exact:
``E_g = ‖w − w̄‖²/d + σ_ε²`` (the expected test MSE), from weight snapshots. It is compared
with the analytic curve :func:`weightlab.dynamics.analytic.generalization_curve`.

Every seed has its own teacher and data: one population per ``d`` trains all seeds (and
at ``d = 200`` the ``σ₀`` arms) at once, member ``s`` stepping through its own seed's rows of
the stacked training split (an explicit data order per data seed, ``Population.fit(orders=)``),
so it equals its solo run.

Nonlinear part (claim d), a reduced version: ``teacher_mlp`` with 4 ReLU units, ``d = 10``,
``n = 100``, noise std 0.5; ReLU students ``10-h-1`` (PyTorch's default init),
``h ∈ {2, 5, 10, 20, 50, 200, 1000}``, 6,000 full-batch GD steps, 4 seeds; two arms judged
apart: full training, and random features (first layer frozen, readout from 0). Each
member's step is ``1/λ_max`` of the mean-squared-error Gauss-Newton matrix at its init (half
the gradient-descent stability limit ``2/λ_max``; exactly so for random features, where the
loss is quadratic). Test error: MSE against the clean teacher on 2,000 fresh inputs. One
population (all seeds and both arms) per width.

Claims (thresholds fixed below): (a) the seed-mean overtraining (final − minimum test error
over the logged steps) peaks at ``d ∈ [80, 125]`` and is there ≥ 5× its value at the
smallest and the largest ``d``; (b) the seed-mean test curve is within 10% of ``E_g(t)`` at
every logged step, at ``α = 0.5`` and ``α = 2``; (c) at ``d = 200`` the minimum test error
rises from each ``σ₀`` to the next by more than 1 standard error of the paired difference;
(d) the widest ReLU net's final test error ≤ the best narrower one's + 1 paired SE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.data import load_dataset
from weightlab.data.task import Split, TaskData
from weightlab.data.teacher import mlp_forward
from weightlab.dynamics.analytic import generalization_curve
from weightlab.errors import ConfigError
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP
from weightlab.population.spec import MemberSpec
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import judge, no_divergence
from weightlab.recipes.members import train_members
from weightlab.recipes.options import float_list, int_list
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator
from weightlab.train.config import OptimConfig, ParamGroup, TrainConfig

QUOTE_A = (
    "Overtraining is worst at intermediate network sizes, when the effective number of free "
    "parameters equals the number of samples"
)
QUOTE_B = (
    "Using random matrix theory and exact solutions in linear models, we derive the "
    "generalization error and training error dynamics of learning"
)
QUOTE_C = "low generalization error requires starting with small initial weights"
QUOTE_D = "making networks very large does not harm their generalization performance"
# Fixed claim thresholds (from the issue), not options.
PEAK_RANGE = (80, 125)  # (a) the overtraining peak lies at d in [80, 125] ...
PEAK_RATIO = 5.0  # ... and is >= 5x its value at the smallest and the largest d
CURVE_TOLERANCE = 0.10  # (b) |mean - E_g| / E_g <= 10% at every logged step
CURVE_ALPHAS = (0.5, 2.0)  # ... at these alpha = n/d
SE_STEPS = 1.0  # (c) each sigma0 step raises the minimum test error by > 1 paired SE
WIDE_SE = 1.0  # (d) widest <= best narrower + 1 paired SE
LEARNED_FRACTION = 0.5  # precondition: at the smallest d, final error <= half the start
ARMS = ("full", "random_features")


def log_grid(total: int, count: int) -> list[int]:
    """Step 0 and about ``count`` distinct log-spaced integer steps in ``[1, total]``
    (``total`` always included)."""
    grid = torch.logspace(0, math.log10(total), max(count, 2), dtype=torch.float64)
    return sorted({0, total, *(int(round(float(v))) for v in grid)})


def stacked_rows(parts: list[TaskData], name: str) -> tuple[TaskData, dict[int, torch.Tensor]]:
    """Seed datasets stacked row-wise into one task (train rows of seed ``s`` at
    ``[s n, (s+1) n)``) and, per data seed ``s``, the index range of its rows (for a
    full-batch order ``(T, n)``). Val/test hold one row (the recipe measures test error
    itself, per seed)."""
    n = len(parts[0].train)
    x = torch.cat([p.train.x for p in parts])
    y = torch.cat([p.train.y for p in parts])
    one = Split(x[:1], y[:1])
    data = TaskData(name, Split(x, y), one, one, 0, kind="regression")
    return data, {s: torch.arange(s * n, (s + 1) * n) for s in range(len(parts))}


def full_batch_orders(rows: dict[int, torch.Tensor], steps: int) -> dict[int, torch.Tensor]:
    """Each data seed's own rows, every step (full-batch gradient descent on its data)."""
    return {s: r.unsqueeze(0).expand(steps, -1) for s, r in rows.items()}


@torch.no_grad()
def gauss_newton_max(state: dict[str, torch.Tensor], x: torch.Tensor, arm: str) -> float:
    """Largest eigenvalue of the mean-squared-error Gauss-Newton matrix ``(2/n) JᵀJ`` of a
    two-layer ReLU net ``f = a·relu(Wx + b) + c`` at ``state`` (its nonzero spectrum is that
    of ``(2/n) J Jᵀ``, the ``n × n`` tangent kernel): ``J`` holds ``∂f/∂a = relu(z)``,
    ``∂f/∂c = 1`` and, when the first layer trains (``arm = "full"``),
    ``∂f/∂w_j = a_j 1[z_j > 0] x``, ``∂f/∂b_j = a_j 1[z_j > 0]``."""
    x = x.double()
    w, b = state["layers.0.weight"].double(), state["layers.0.bias"].double()
    a = state["layers.1.weight"].double()[0]
    z = x @ w.T + b
    phi = z.relu()
    k = phi @ phi.T + 1.0
    if arm == "full":
        gate = (z > 0).double() * a
        k = k + (gate @ gate.T) * (x @ x.T + 1.0)
    n = x.shape[0]
    return float(torch.linalg.eigvalsh(k)[-1]) * 2.0 / n


@dataclass(frozen=True)
class AdvaniSaxeConfig(RecipeConfig):
    seeds: int = opt(10, "seeds of the linear part (teacher, data and init each)", min=1)
    data: str = opt("teacher_linear", "task: the noisy linear teacher (drawn per seed and d)")
    n: int = opt(100, "training examples n (both parts)", min=2, max=100000)
    dims: str = opt(
        "20,50,67,80,90,100,110,125,150,200,500",
        "input dimensions d of the linear student, comma-separated, increasing",
    )
    noise: float = opt(0.5, "teacher noise std σ_ε (σ_ε² = 0.25; σ_w² = 1)", min=0, max=10)
    eta: float = opt(0.05, "GD step η on ½Σ(y − wᵀx)² (loop lr = η n / 2)", gt=0, max=10)
    steps: int = opt(4000, "full-batch GD steps of the linear part", min=2, max=10_000_000)
    evals: int = opt(120, "log-spaced logged steps (plus step 0)", min=3, max=2000)
    sigma0s: str = opt("0,0.5,1", "initial weight scales σ₀ of claim (c), increasing")
    sigma0_dim: int = opt(200, "the d of claim (c) (one of --dims)", min=1)
    relu_dim: int = opt(10, "input dimension of the nonlinear part (claim d)", min=1, max=10000)
    relu_units: int = opt(4, "ReLU units of the teacher of claim (d)", min=1, max=10000)
    relu_noise: float = opt(0.5, "teacher noise std of claim (d)", min=0, max=10)
    widths: str = opt("2,5,10,20,50,200,1000", "student widths h of claim (d), increasing")
    relu_steps: int = opt(6000, "full-batch GD steps of claim (d)", min=1, max=10_000_000)
    relu_seeds: int = opt(4, "seeds of claim (d)", min=1, max=1000)
    relu_step: float = opt(
        1.0,
        "GD step of claim (d) as a multiple of 1/λ_max at init (2 = stability limit)",
        gt=0,
        max=1000,
    )
    relu_test: int = opt(2000, "clean test inputs per seed of claim (d)", min=1, max=1_000_000)

    def __post_init__(self) -> None:
        super().__post_init__()
        int_list(self.dims, "dims", increasing=True, sort=False)
        int_list(self.widths, "widths", increasing=True, sort=False)
        float_list(self.sigma0s, "sigma0s", ge=0, increasing=True, sort=False)
        if self.sigma0_dim not in self.dim_values:
            raise ConfigError(
                f"--sigma0-dim {self.sigma0_dim} is not one of --dims {self.dims}; add it there"
            )

    @property
    def dim_values(self) -> list[int]:
        return int_list(self.dims, "dims", increasing=True, sort=False)

    @property
    def width_values(self) -> list[int]:
        return int_list(self.widths, "widths", increasing=True, sort=False)

    @property
    def sigma0_values(self) -> list[float]:
        return float_list(self.sigma0s, "sigma0s", ge=0, increasing=True, sort=False)


def _check_linear(metrics: dict) -> None:
    expect_fields(metrics, {"d": int, "steps": list, "members": list}, "the metrics")
    expect_list_of(
        metrics["members"],
        {"seed": int, "sigma0": (int, float), "diverged": bool, "test_err": list},
        "members",
    )


def _check_relu(metrics: dict) -> None:
    expect_fields(metrics, {"width": int, "members": list}, "the metrics")
    expect_list_of(
        metrics["members"],
        {
            "seed": int,
            "arm": str,
            "lr": (int, float),
            "diverged": bool,
            "final_test": (int, float, type(None)),
            "final_train": (int, float, type(None)),
        },
        "members",
    )


def _json(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


class AdvaniSaxe(Recipe):
    name = "advani-saxe"
    family = "dynamics"
    row = 21
    paper = (
        "Advani & Saxe 2017, High-dimensional dynamics of generalization error in neural "
        "networks (arXiv:1710.03667)"
    )
    claim = (
        "overtraining peaks where d = n; the test curve follows the random-matrix theory; "
        "large initial weights hurt; very wide nets do not generalize worse"
    )
    Config = AdvaniSaxeConfig
    tasks = ("teacher_linear",)
    kinds = ("regression",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "dims": "50,100,200",
        "steps": 200,
        "evals": 30,
        "widths": "2,20",
        "relu_steps": 100,
        "relu_seeds": 2,
        "relu_test": 200,
    }
    broken: ClassVar[dict] = {"eta": 5.0, "relu_step": 50.0}
    # measured in-process, one thread, CPU time (the 2 cores shared by ~8 jobs): 4.7 s for
    # the first run of a process (imports, matplotlib), 2.0 s after
    smoke_seconds = 2.0

    # -- linear part --------------------------------------------------------------------
    def _linear_seed(self, cfg: AdvaniSaxeConfig, d: int, s: int):
        """Seed ``s``'s task at ``d`` in the paper's scaling and its teacher ``w̄`` (float64)."""
        task = load_dataset(
            "teacher_linear",
            "cpu",
            n_train=cfg.n,
            n_val=1,
            n_test=1,
            d_in=d,
            d_out=1,
            noise=cfg.noise,
            seed=derive_seed(self.name, "teacher", s) % (2**31),
        )
        scale = math.sqrt(d)
        x = task.train.x.double() / scale
        y = task.train.y.double()
        wbar = task.info["weight"].double()[:, 0] * scale
        one = Split(x[:1], y[:1])
        return TaskData("teacher_linear", Split(x, y), one, one, 0, kind="regression"), wbar

    def _linear_unit(self, cfg: AdvaniSaxeConfig, d: int, progress: bool):
        parts, teachers = zip(
            *(self._linear_seed(cfg, d, s) for s in range(cfg.seeds)), strict=True
        )
        data, rows = stacked_rows(list(parts), "teacher_linear")
        sigma0s = cfg.sigma0_values if d == cfg.sigma0_dim else [0.0]
        factory = model_factory(MLP, [d, 1], activation="linear")
        specs, meta = [], []
        for s in range(cfg.seeds):
            z = torch.randn(
                d, generator=generator(derive_seed(self.name, "w0", s, d)), dtype=torch.float64
            )
            for s0 in sigma0s:
                state = {
                    "layers.0.weight": (s0 * z).unsqueeze(0),
                    "layers.0.bias": torch.zeros(1, dtype=torch.float64),
                }
                specs.append(
                    MemberSpec(
                        seed=derive_seed(self.name, "member", s, d), data_seed=s, init_state=state
                    )
                )
                meta.append((s, s0))
        optim = OptimConfig(
            "sgd", lr=cfg.eta * cfg.n / 2, groups=(ParamGroup(("layers.0.bias",), lr_mult=0.0),)
        )
        train_cfg = TrainConfig(cfg.steps, cfg.n, cfg.steps, optim, loss="mse")
        logged = log_grid(cfg.steps, cfg.evals)
        results, _ = train_members(
            factory,
            specs,
            data,
            train_cfg,
            engine="population",
            device=cfg.device,
            snapshot_steps=logged,
            orders=full_batch_orders(rows, cfg.steps),
            progress=progress,
            dtype=torch.float64,
        )
        members = []
        wbar = torch.stack(teachers)
        for (s, s0), r in zip(meta, results, strict=True):
            ws = torch.stack(
                [r.snapshots[t]["layers.0.weight"][0].double() for t in logged if t in r.snapshots]
            )
            err = (ws - wbar[s]).square().sum(1) / d + cfg.noise**2
            err_list = [_json(float(v)) for v in err]
            err_list += [None] * (len(logged) - len(err_list))
            members.append(
                {
                    "seed": s,
                    "sigma0": s0,
                    "diverged": bool(r.diverged) or None in err_list,
                    "test_err": err_list,
                }
            )
        return {"d": d, "steps": logged, "members": members}, {}

    # -- nonlinear part ------------------------------------------------------------------
    def _relu_seed(self, cfg: AdvaniSaxeConfig, s: int):
        task = load_dataset(
            "teacher_mlp",
            "cpu",
            n_train=cfg.n,
            n_val=1,
            n_test=cfg.relu_test,
            d_in=cfg.relu_dim,
            d_out=1,
            widths=[cfg.relu_units],
            noise=cfg.relu_noise,
            seed=derive_seed(self.name, "relu-teacher", s) % (2**31),
        )
        clean = mlp_forward(task.test.x, task.info["weights"])
        return task, Split(task.test.x, clean)

    def _relu_unit(self, cfg: AdvaniSaxeConfig, h: int, progress: bool):
        tasks = [self._relu_seed(cfg, s) for s in range(cfg.relu_seeds)]
        data, rows = stacked_rows([t for t, _ in tasks], "teacher_mlp")
        factory = model_factory(MLP, [cfg.relu_dim, h, 1])
        specs, meta = [], []
        for s in range(cfg.relu_seeds):
            seed = derive_seed(self.name, "relu-init", s, h)
            state = {k: v.detach().clone() for k, v in factory(seed).state_dict().items()}
            x = tasks[s][0].train.x
            for arm in ARMS:
                st = dict(state)
                groups = (ParamGroup(("layers.0.*",), lr_mult=0.0),) if arm != "full" else ()
                if arm != "full":
                    st["layers.1.weight"] = torch.zeros_like(st["layers.1.weight"])
                    st["layers.1.bias"] = torch.zeros_like(st["layers.1.bias"])
                lr = cfg.relu_step / gauss_newton_max(st, x, arm)
                specs.append(
                    MemberSpec(
                        seed=seed,
                        data_seed=s,
                        init_state=st,
                        optim=OptimConfig("sgd", lr=lr, groups=groups),
                    )
                )
                meta.append((s, arm, lr))
        train_cfg = TrainConfig(
            cfg.relu_steps, cfg.n, cfg.relu_steps, OptimConfig("sgd", lr=0.1), loss="mse"
        )
        results, finals = train_members(
            factory,
            specs,
            data,
            train_cfg,
            engine="population",
            device=cfg.device,
            orders=full_batch_orders(rows, cfg.relu_steps),
            progress=progress,
        )
        members = []
        for (s, arm, lr), r, fin in zip(meta, results, finals, strict=True):
            model = factory(0)
            model.load_state_dict(fin)
            with torch.no_grad():
                test = float((model(tasks[s][1].x) - tasks[s][1].y).square().mean())
                tr = tasks[s][0].train
                train = float((model(tr.x) - tr.y).square().mean())
            members.append(
                {
                    "seed": s,
                    "arm": arm,
                    "lr": lr,
                    "diverged": bool(r.diverged) or not math.isfinite(test),
                    "final_test": _json(test),
                    "final_train": _json(train),
                }
            )
        return {"width": h, "members": members}, {}

    def run(self, cfg: AdvaniSaxeConfig, rd: RunDir, progress: bool = False) -> dict:
        dims, widths = cfg.dim_values, cfg.width_values
        bar = progress_bar(
            len(dims) + len(widths), self.name, "unit", progress, line_each_update=True
        )
        linear, relu = [], []
        for d in dims:
            m, _ = rd.unit(
                f"linear-d{d:05d}",
                lambda d=d: self._linear_unit(cfg, d, False),
                check=_check_linear,
            )
            linear.append(m)
            if bar is not None:
                bar.update(1)
        for h in widths:
            m, _ = rd.unit(
                f"relu-h{h:05d}", lambda h=h: self._relu_unit(cfg, h, False), check=_check_relu
            )
            relu.append(m)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return self.summarize(cfg, linear, relu)

    # -- summary and claims -------------------------------------------------------------
    def summarize(self, cfg: AdvaniSaxeConfig, linear: list[dict], relu: list[dict]) -> dict:
        rows = []
        for u in linear:
            d, steps = u["d"], u["steps"]
            for s0 in sorted({m["sigma0"] for m in u["members"]}):
                ms = [m for m in u["members"] if m["sigma0"] == s0]
                kept = [m for m in ms if not m["diverged"]]
                row = {
                    "d": d,
                    "alpha": cfg.n / d,
                    "sigma0": s0,
                    "steps": steps,
                    "n": len(kept),
                    "diverged": [f"d={d} σ0={s0:g} seed {m['seed']}" for m in ms if m["diverged"]],
                }
                if kept:
                    curves = [m["test_err"] for m in kept]
                    row["mean_curve"] = [mean_std(c)[0] for c in zip(*curves, strict=True)]
                    ot = [c[-1] - min(c) for c in curves]
                    mins = [min(c) for c in curves]
                    row["overtraining_values"] = ot
                    row["min_values"] = mins
                    row["seeds"] = [m["seed"] for m in kept]
                    row["overtraining_mean"], row["overtraining_std"] = mean_std(ot)
                    row["min_mean"], row["min_std"] = mean_std(mins)
                    row["final_mean"], row["final_std"] = mean_std([c[-1] for c in curves])
                    row["start_mean"] = row["mean_curve"][0]
                    theory = generalization_curve(
                        cfg.n / d, steps, cfg.eta, 1.0, cfg.noise**2, s0**2
                    )
                    row["theory_curve"] = theory.tolist()
                    rel = [
                        abs(a - b) / b
                        for a, b in zip(row["mean_curve"], row["theory_curve"], strict=True)
                    ]
                    row["max_rel_dev"] = max(rel)
                    row["max_rel_dev_step"] = steps[rel.index(max(rel))]
                    row["theory_overtraining"] = float(theory[-1] - theory.min())
                rows.append(row)
        relu_rows = []
        for u in relu:
            for arm in ARMS:
                ms = [m for m in u["members"] if m["arm"] == arm]
                kept = [m for m in ms if not m["diverged"]]
                tm, ts = mean_std([m["final_test"] for m in kept])
                relu_rows.append(
                    {
                        "width": u["width"],
                        "arm": arm,
                        "n": len(kept),
                        "test_values": {m["seed"]: m["final_test"] for m in kept},
                        "test_mean": _json(tm),
                        "test_std": _json(ts),
                        "train_mean": _json(mean_std([m["final_train"] for m in kept])[0]),
                        "lr_mean": mean_std([m["lr"] for m in ms])[0],
                        "diverged": [
                            f"{arm} h={u['width']} seed {m['seed']}" for m in ms if m["diverged"]
                        ],
                    }
                )
        claims = [c.to_dict() for c in self.check_claims(cfg, rows, relu_rows)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "relu_rows": relu_rows,
            "sigma0_dim": cfg.sigma0_dim,
            "claims": claims,
            "members": sum(len(u["members"]) for u in (*linear, *relu)),
            "diverged_members": [x for r in (*rows, *relu_rows) for x in r["diverged"]],
            "test_error": (
                "linear: exact expected test MSE ‖w − w̄‖²/d + σ_ε² at each logged step; "
                "ReLU: MSE against the clean teacher on fresh test inputs"
            ),
            "reduced_version": (
                "claim (d) is a reduced version (d = 10, n = 100, widths to 1000, "
                f"{cfg.relu_steps} steps, {cfg.relu_seeds} seeds)"
            ),
        }

    @staticmethod
    def check_claims(
        cfg: AdvaniSaxeConfig, rows: list[dict], relu_rows: list[dict]
    ) -> list[ClaimResult]:
        base = sorted((r for r in rows if r["sigma0"] == 0.0), key=lambda r: r["d"])
        excluded = [x for r in base for x in r["diverged"]]
        learned = None
        if base and base[0].get("final_mean") is not None:
            r0 = base[0]
            if not r0["final_mean"] <= LEARNED_FRACTION * r0["start_mean"]:
                learned = (
                    f"GD did not learn at d={r0['d']} (final test error {r0['final_mean']:.3f} > "
                    f"{LEARNED_FRACTION:g} × its start {r0['start_mean']:.3f})"
                )
        else:
            learned = "no σ0 = 0 row to check learning on"
        empty = [f"d={r['d']}" for r in base if not r["n"]]
        empty_reason = f"no member left at {', '.join(empty)}" if empty else None

        def check_a():
            peak = max(base, key=lambda r: r["overtraining_mean"])
            lo, hi = base[0], base[-1]
            ratio_lo = peak["overtraining_mean"] / max(lo["overtraining_mean"], 1e-300)
            ratio_hi = peak["overtraining_mean"] / max(hi["overtraining_mean"], 1e-300)
            ok = (
                PEAK_RANGE[0] <= peak["d"] <= PEAK_RANGE[1]
                and ratio_lo >= PEAK_RATIO
                and ratio_hi >= PEAK_RATIO
            )
            seed_peaks = {}
            for s in base[0].get("seeds", []):
                vals = [
                    (r["overtraining_values"][r["seeds"].index(s)], r["d"])
                    for r in base
                    if s in r.get("seeds", [])
                ]
                seed_peaks[s] = max(vals)[1]
            detail = (
                f"seed-mean overtraining peaks at d={peak['d']} ({peak['overtraining_mean']:.3f}); "
                f"{lo['overtraining_mean']:.3f} at d={lo['d']} ({ratio_lo:.1f}×), "
                f"{hi['overtraining_mean']:.3f} at d={hi['d']} ({ratio_hi:.1f}×); needed the peak "
                f"in [{PEAK_RANGE[0]}, {PEAK_RANGE[1]}] and ≥ {PEAK_RATIO:g}× both ends; seeds "
                f"peak at d = {sorted(set(seed_peaks.values()))}"
            )
            ev = {
                "peak_d": peak["d"],
                "overtraining": {r["d"]: r["overtraining_mean"] for r in base},
                "ratio_low": ratio_lo,
                "ratio_high": ratio_hi,
                "seed_peaks": seed_peaks,
            }
            return ok, detail, ev

        at_alpha = {
            a: next((r for r in base if abs(r["alpha"] - a) < 1e-9), None) for a in CURVE_ALPHAS
        }
        missing = [f"α={a:g}" for a, r in at_alpha.items() if r is None]
        no_alpha = f"--dims has no d with {', '.join(missing)} (n/d)" if missing else None

        def check_b():
            parts, ev, ok = [], {}, True
            for a, r in at_alpha.items():
                ok = ok and r["max_rel_dev"] <= CURVE_TOLERANCE
                parts.append(
                    f"α={a:g} (d={r['d']}): largest deviation {100 * r['max_rel_dev']:.1f}% at "
                    f"step {r['max_rel_dev_step']}"
                )
                ev[f"alpha={a:g}"] = {
                    "d": r["d"],
                    "max_rel_dev": r["max_rel_dev"],
                    "step": r["max_rel_dev_step"],
                }
            return (
                ok,
                "; ".join(parts) + f"; needed ≤ {100 * CURVE_TOLERANCE:g}% at every logged step",
                ev,
            )

        s0rows = sorted((r for r in rows if r["d"] == cfg.sigma0_dim), key=lambda r: r["sigma0"])
        s0_excl = [x for r in s0rows for x in r["diverged"]]
        few_s0 = None if len(s0rows) >= 2 else "fewer than two σ0 values"
        few_seeds = None if cfg.seeds >= 2 else "one seed has no standard error"

        def check_c():
            parts, ok, steps_ev = [], True, []
            for a, b in zip(s0rows[:-1], s0rows[1:], strict=True):
                common = sorted(set(a["seeds"]) & set(b["seeds"]))
                va = [a["min_values"][a["seeds"].index(s)] for s in common]
                vb = [b["min_values"][b["seeds"].index(s)] for s in common]
                diffs = [y - x for x, y in zip(va, vb, strict=True)]
                m, sd = mean_std(diffs)
                se = sd / math.sqrt(len(diffs))
                step_ok = m > SE_STEPS * se
                ok = ok and step_ok
                parts.append(f"σ0 {a['sigma0']:g}→{b['sigma0']:g}: {m:+.3f} (SE {se:.3f})")
                steps_ev.append(
                    {"from": a["sigma0"], "to": b["sigma0"], "rise": m, "se": se, "ok": step_ok}
                )
            mins = ", ".join(f"{r['min_mean']:.3f}" for r in s0rows)
            detail = (
                f"minimum test error at d={cfg.sigma0_dim} for σ0 = "
                f"{', '.join(format(r['sigma0'], 'g') for r in s0rows)}: {mins}; "
                + "; ".join(parts)
                + f"; needed every rise > {SE_STEPS:g} SE of the paired difference"
            )
            return (
                ok,
                detail,
                {"steps": steps_ev, "minimum": {r["sigma0"]: r["min_mean"] for r in s0rows}},
            )

        relu_excl = {
            arm: [x for r in relu_rows if r["arm"] == arm for x in r["diverged"]] for arm in ARMS
        }
        few_w = None if len({r["width"] for r in relu_rows}) >= 2 else "fewer than two widths"
        few_relu = None if cfg.relu_seeds >= 2 else "one seed has no standard error"

        def check_d(arm: str):
            def check():
                rs = sorted((r for r in relu_rows if r["arm"] == arm), key=lambda r: r["width"])
                wide = rs[-1]
                best = min(rs[:-1], key=lambda r: r["test_mean"])
                common = sorted(set(wide["test_values"]) & set(best["test_values"]))
                diffs = [wide["test_values"][s] - best["test_values"][s] for s in common]
                diff, sd = mean_std(diffs)
                se = sd / math.sqrt(len(common))
                ok = wide["test_mean"] <= best["test_mean"] + WIDE_SE * se
                detail = (
                    f"{arm.replace('_', ' ')}: widest h={wide['width']} final test error "
                    f"{wide['test_mean']:.3f} vs best narrower h={best['width']} "
                    f"{best['test_mean']:.3f} (paired difference {diff:+.3f}, SE {se:.3f}); "
                    f"needed widest ≤ best narrower + {WIDE_SE:g} SE"
                )
                ev = {
                    "widest": wide["width"],
                    "widest_test": wide["test_mean"],
                    "best_narrower": best["width"],
                    "best_test": best["test_mean"],
                    "se": se,
                    "by_width": {r["width"]: r["test_mean"] for r in rs},
                }
                return ok, detail, ev

            return check

        return [
            judge(
                "a",
                QUOTE_A,
                f"the seed-mean overtraining (final − minimum test error) peaks at d ∈ "
                f"[{PEAK_RANGE[0]}, {PEAK_RANGE[1]}] (n = {cfg.n}) and is ≥ {PEAK_RATIO:g}× its "
                "value at the smallest and the largest d",
                [learned, empty_reason, no_divergence(excluded)],
                check_a,
            ),
            judge(
                "b",
                QUOTE_B,
                f"the seed-mean test curve lies within {100 * CURVE_TOLERANCE:g}% of the analytic "
                f"E_g(t) at every logged step, at α = {' and '.join(f'{a:g}' for a in CURVE_ALPHAS)}",
                [no_alpha, learned, empty_reason, no_divergence(excluded)],
                check_b,
            ),
            judge(
                "c",
                QUOTE_C,
                f"at d = {cfg.sigma0_dim} the minimum test error rises with each step of σ0 "
                f"by more than {SE_STEPS:g} SE of the paired difference",
                [few_s0, few_seeds, learned, no_divergence(s0_excl)],
                check_c,
            ),
            *(
                judge(
                    f"d-{arm.replace('_', '-')}",
                    QUOTE_D,
                    f"{arm.replace('_', ' ')} ReLU students: the widest net's final test error is "
                    f"≤ the best narrower one's + {WIDE_SE:g} paired SE",
                    [few_w, few_relu, no_divergence(relu_excl[arm])],
                    check_d(arm),
                )
                for arm in ARMS
            ),
        ]

    # -- report ------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        lin = [
            [
                str(r["d"]),
                f"{r['alpha']:.2f}",
                f"{r['sigma0']:g}",
                _pm(r.get("min_mean"), r.get("min_std"), 3),
                _pm(r.get("final_mean"), r.get("final_std"), 3),
                _pm(r.get("overtraining_mean"), r.get("overtraining_std"), 3),
                f"{r.get('theory_overtraining', math.nan):.3f}",
                f"{100 * r.get('max_rel_dev', math.nan):.1f}%",
                str(r["n"]),
            ]
            for r in summary["rows"]
        ]
        relu = [
            [
                str(r["width"]),
                r["arm"].replace("_", " "),
                _pm(r["test_mean"], r["test_std"], 3),
                f"{r['train_mean']:.3f}" if r["train_mean"] is not None else "n/a",
                f"{r['lr_mean']:.3g}",
                str(r["n"]),
            ]
            for r in summary["relu_rows"]
        ]
        return [
            (
                "Linear student (mean ± std over seeds; test error = ‖w − w̄‖²/d + σ_ε²)",
                [
                    "d",
                    "α",
                    "σ0",
                    "min test",
                    "final test",
                    "overtraining",
                    "theory OT",
                    "max |dev| vs E_g",
                    "n",
                ],
                lin,
            ),
            (
                f"ReLU students, final test MSE vs the clean teacher — {summary['reduced_version']}",
                ["width h", "arm", "test", "train", "GD step (mean)", "n"],
                relu,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker

        rows = summary["rows"]
        base = sorted((r for r in rows if r["sigma0"] == 0.0 and r["n"]), key=lambda r: r["d"])
        fig, grid = plt.subplots(2, 2, figsize=(11, 8))
        axes = grid.ravel()
        ax = axes[0]
        for a, color in zip(CURVE_ALPHAS, ("tab:blue", "tab:red"), strict=True):
            r = next((r for r in base if abs(r["alpha"] - a) < 1e-9), None)
            if r is None:
                continue
            t = [s if s > 0 else 0.5 for s in r["steps"]]
            ax.plot(
                t,
                r["mean_curve"],
                "o",
                ms=2.5,
                color=color,
                label=f"simulated α={a:g} (d={r['d']})",
            )
            ax.plot(t, r["theory_curve"], "-", color=color, lw=1, label=f"E_g(t), α={a:g}")
        ax.set_xscale("log")
        ax.set_xlabel("GD step (step 0 drawn at 0.5)")
        ax.set_ylabel("test error")
        ax.set_title("(b) seed-mean curves vs theory")
        ax = axes[1]
        ax.errorbar(
            [r["d"] for r in base],
            [r["overtraining_mean"] for r in base],
            yerr=[r["overtraining_std"] for r in base],
            fmt="o-",
            ms=3,
            capsize=2,
            label="simulated",
        )
        ax.plot(
            [r["d"] for r in base],
            [r["theory_overtraining"] for r in base],
            "k--",
            lw=1,
            label="theory",
        )
        ax.axvline(base[0]["d"] * base[0]["alpha"] if base else 100, color="gray", lw=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ticks = [r["d"] for r in base][::2]
        ax.set_xticks(ticks + ([base[-1]["d"]] if base and base[-1]["d"] not in ticks else []))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("input dimension d (n fixed; line: d = n)")
        ax.set_ylabel("overtraining = final − min test error")
        ax.set_title("(a) overtraining vs d")
        ax = axes[2]
        dim = summary["sigma0_dim"]
        for r in sorted((r for r in rows if r["d"] == dim and r["n"]), key=lambda r: r["sigma0"]):
            t = [s if s > 0 else 0.5 for s in r["steps"]]
            ax.plot(t, r["mean_curve"], "o", ms=2, label=f"σ0={r['sigma0']:g} (d={r['d']})")
            ax.plot(t, r["theory_curve"], "-", lw=1, color=ax.lines[-1].get_color())
        ax.set_xscale("log")
        ax.set_xlabel("GD step")
        ax.set_ylabel("test error")
        ax.set_title("(c) initial weight scale")
        ax = axes[3]
        for arm, color in zip(ARMS, ("tab:green", "tab:purple"), strict=True):
            rs = sorted(
                (r for r in summary["relu_rows"] if r["arm"] == arm and r["n"]),
                key=lambda r: r["width"],
            )
            ax.errorbar(
                [r["width"] for r in rs],
                [r["test_mean"] for r in rs],
                yerr=[r["test_std"] or 0.0 for r in rs],
                fmt="o-",
                ms=3,
                capsize=2,
                color=color,
                label=arm.replace("_", " "),
            )
        ax.set_xscale("log")
        ax.set_xlabel("hidden width h")
        ax.set_ylabel("final test MSE (clean teacher)")
        ax.set_title("(d) ReLU students vs width")
        for ax in axes:
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
        fig.suptitle("Advani & Saxe: generalization dynamics of linear and ReLU students")
        return [
            Figure(
                "advani_saxe.png", "Learning curves, overtraining, σ0 and width", figure_png(fig)
            )
        ]
