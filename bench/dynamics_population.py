"""Populations against a plain loop of solo runs (issue 23, Performance, second bullet).

Both sides go through the code path the recipes use,
:func:`weightlab.recipes.members.train_members`: ``engine="population"`` (one vectorized
computation per architecture) against ``engine="loop"`` (each member trained alone by
:func:`weightlab.train.train`). Three configurations from the issue's recipes:

- ``advani-saxe``: 110 linear members ``d → 1`` (``d ∈ {20, …, 500}`` × 10 seeds), ``n = 100``,
  float64, full-batch GD; every seed has its own data (explicit per-seed orders over stacked
  rows, as the recipe trains them); one population per ``d``;
- ``dynamical-decoupling``: 15 members (5 seeds × 3 readout scales) ``50-50-1`` ReLU,
  ``n = 1,000``, full-batch GD (readout lr × 1/m², biases frozen), float32;
- ``grokking-stages``: 15 members (5 seeds × 3 learning rates) ``118-256-59`` ReLU MLP on
  ``a + b mod 59`` (one-hot pairs), ``n = 1,392`` (40% of the 3,481 pairs), full-batch AdamW
  (weight decay 1, β₂ 0.98), float32.

Each side trains ``STEPS[config]`` steps (a fixed slice of the recipes' runs: per-step cost
is constant). Reported per configuration: wall time of each side (median and range over ``ROUNDS``), the
speedup loop / population (must be ≥ 1: the population is never slower), the final weights'
largest difference between the two sides, the useful matmul FLOPs (forward, input- and
weight-gradients: ``Σ_l 2 B n_{l−1} n_l (3 if l > 1 else 2)`` per member-step) and their
share of the machine's matmul peak in the configuration's dtype (fp64 for advani-saxe, fp32
otherwise; best-of 1024² ``torch.mm`` at the same thread count, :func:`bench.growth.peak_flops`
for fp32). Run: ``.venv/bin/python bench/dynamics_population.py [--threads 1]``; numbers go
to ``bench/results/dynamics_population.json``. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

from weightlab.data.task import Split, TaskData
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP
from weightlab.population.spec import MemberSpec
from weightlab.recipes.members import train_members
from weightlab.seeding import generator
from weightlab.train.config import OptimConfig, ParamGroup, TrainConfig

ROUNDS = 3
STEPS = {"advani-saxe": 100, "dynamical-decoupling": 100, "grokking-stages": 30}
DIMS = (20, 50, 67, 80, 90, 100, 110, 125, 150, 200, 500)


def _growth():
    path = Path(__file__).parent / "growth.py"
    spec = importlib.util.spec_from_file_location("bench_growth", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def peak_flops_dtype(dtype: torch.dtype, size: int = 1024, seconds: float = 1.0) -> float:
    """Best-of ``size × size`` matmul rate (FLOP/s) in ``dtype``: :func:`bench.growth.peak_flops`."""
    return _growth().peak_flops(size, seconds, dtype)


def mlp_flops(widths: list[int], batch: int) -> int:
    """Useful matmul FLOPs of one training step of one MLP member."""
    return sum(
        2 * batch * a * b * (3 if i > 0 else 2)
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
    )


# -- configurations: lists of (factory, specs, data, cfg, orders, dtype, flops/step) ----------
def advani_saxe() -> list[tuple]:
    n, seeds, steps = 100, 10, STEPS["advani-saxe"]
    jobs = []
    for d in DIMS:
        g = generator(d)
        x = torch.randn(seeds * n, d, generator=g, dtype=torch.float64) / math.sqrt(d)
        w = torch.randn(seeds, d, generator=g, dtype=torch.float64)
        y = (x.view(seeds, n, d) @ w.unsqueeze(-1)).view(-1, 1)
        y = y + 0.5 * torch.randn(y.shape, generator=g, dtype=torch.float64)
        one = Split(x[:1], y[:1])
        data = TaskData("teacher_linear", Split(x, y), one, one, 0, kind="regression")
        orders = {s: torch.arange(s * n, (s + 1) * n).expand(steps, n) for s in range(seeds)}
        zero = {"layers.0.weight": torch.zeros(1, d), "layers.0.bias": torch.zeros(1)}
        specs = [MemberSpec(seed=s, data_seed=s, init_state=zero) for s in range(seeds)]
        optim = OptimConfig("sgd", lr=2.5, groups=(ParamGroup(("layers.0.bias",), lr_mult=0.0),))
        cfg = TrainConfig(steps, n, steps, optim, loss="mse")
        factory = model_factory(MLP, [d, 1], activation="linear")
        jobs.append(
            (factory, specs, data, cfg, orders, torch.float64, seeds * mlp_flops([d, 1], n))
        )
    return jobs


def dynamical_decoupling() -> list[tuple]:
    d, m, n, steps = 50, 50, 1000, STEPS["dynamical-decoupling"]
    g = generator(1)
    x = torch.randn(n, d, generator=g)
    w_star = torch.randn(d, generator=g)
    w_star /= w_star.norm()
    y = torch.relu(x @ w_star) - 1 / math.sqrt(2 * math.pi) + 0.5 * torch.randn(n, generator=g)
    data = TaskData(
        "teacher_relu",
        Split(x, y[:, None]),
        Split(x[:1], y[:1, None]),
        Split(x[:1], y[:1, None]),
        0,
        kind="regression",
    )
    specs = []
    for seed in range(5):
        gs = generator(100 + seed)
        w0, z = torch.randn(m, d, generator=gs) / math.sqrt(d), torch.randn(1, m, generator=gs)
        for s in (0.01, 1.0, 4.0):
            state = {
                "layers.0.weight": w0,
                "layers.0.bias": torch.zeros(m),
                "layers.1.weight": s * z / m,
                "layers.1.bias": torch.zeros(1),
            }
            specs.append(MemberSpec(seed=seed, init_state=state))
    optim = OptimConfig(
        "sgd",
        lr=0.05 * m,
        groups=(
            ParamGroup(("*.bias",), lr_mult=0.0),
            ParamGroup(("layers.1.weight",), lr_mult=1 / m**2),
        ),
    )
    cfg = TrainConfig(steps, n, steps, optim, loss="mse")
    factory = model_factory(MLP, [d, m, 1])
    return [(factory, specs, data, cfg, None, torch.float32, 15 * mlp_flops([d, m, 1], n))]


def grokking_stages() -> list[tuple]:
    p, steps = 59, STEPS["grokking-stages"]
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    x = torch.cat([torch.nn.functional.one_hot(a, p), torch.nn.functional.one_hot(b, p)], 1).float()
    y = (a + b) % p
    perm = torch.randperm(p * p, generator=generator(2))
    n = int(0.4 * p * p)
    tr, te = perm[:n], perm[n:]
    data = TaskData(
        "modular", Split(x[tr], y[tr]), Split(x[te[:1]], y[te[:1]]), Split(x[te[:1]], y[te[:1]]), p
    )
    specs = [
        MemberSpec(seed=s, optim=OptimConfig("adamw", lr=lr, weight_decay=1.0, betas=(0.9, 0.98)))
        for s in range(5)
        for lr in (1e-2, 3e-3, 1e-3)
    ]
    cfg = TrainConfig(
        steps, n, steps, OptimConfig("adamw", lr=1e-2, weight_decay=1.0, betas=(0.9, 0.98))
    )
    factory = model_factory(MLP, [2 * p, 256, p])
    return [(factory, specs, data, cfg, None, torch.float32, 15 * mlp_flops([2 * p, 256, p], n))]


CONFIGS = {
    "advani-saxe": advani_saxe,
    "dynamical-decoupling": dynamical_decoupling,
    "grokking-stages": grokking_stages,
}


def _side(jobs: list[tuple], engine: str) -> tuple[float, float, float, list[dict]]:
    """``(median, min, max)`` seconds over ``ROUNDS`` runs, and the final weights."""
    times, finals = [], None
    for _ in range(ROUNDS):
        t = time.perf_counter()
        out = []
        for factory, specs, data, cfg, orders, dtype, _ in jobs:
            out += train_members(
                factory, specs, data, cfg, engine=engine, orders=orders, dtype=dtype
            )[1]
        times.append(time.perf_counter() - t)
        finals = out
    return statistics.median(times), min(times), max(times), finals


def run(threads: list[int] | None = None, quiet: bool = False) -> dict:
    threads = threads or [torch.get_num_threads()]
    result = {
        "setup": "train_members engine='population' vs engine='loop'; "
        + ", ".join(f"{k} {v} steps" for k, v in STEPS.items()),
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "runs": [],
    }
    before = torch.get_num_threads()
    try:
        for th in threads:
            torch.set_num_threads(th)
            peaks = {dt: peak_flops_dtype(dt) for dt in (torch.float32, torch.float64)}
            rows = []
            for name, make in CONFIGS.items():
                jobs = make()
                members = sum(len(j[1]) for j in jobs)
                steps = STEPS[name]
                flops = steps * sum(j[6] for j in jobs)
                dtype = jobs[0][5]
                t_pop, lo_pop, hi_pop, f_pop = _side(jobs, "population")
                t_loop, lo_loop, hi_loop, f_loop = _side(jobs, "loop")
                diff = max(
                    float((a[k].double() - b[k].double()).abs().max())
                    for a, b in zip(f_pop, f_loop, strict=True)
                    for k in a
                )
                row = {
                    "config": name,
                    "members": members,
                    "steps": steps,
                    "dtype": str(dtype).removeprefix("torch."),
                    "population_s": t_pop,
                    "population_min_max_s": [lo_pop, hi_pop],
                    "loop_s": t_loop,
                    "loop_min_max_s": [lo_loop, hi_loop],
                    "speedup": t_loop / t_pop,
                    "max_abs_weight_diff": diff,
                    "matmul_flops": flops,
                    "population_pct_of_peak": 100 * flops / t_pop / peaks[dtype],
                    "loop_pct_of_peak": 100 * flops / t_loop / peaks[dtype],
                    "never_slower": t_pop <= t_loop,
                }
                rows.append(row)
                if not quiet:
                    print(
                        f"[{th} thread(s)] {name}: {members} members × {steps} steps "
                        f"({row['dtype']}): population {t_pop:.2f} s [{lo_pop:.2f}-{hi_pop:.2f}], "
                        f"loop {t_loop:.2f} s [{lo_loop:.2f}-{hi_loop:.2f}] (median [min-max]), "
                        f"speedup {row['speedup']:.2f}× (must ≥ 1), "
                        f"{row['population_pct_of_peak']:.2f}% vs {row['loop_pct_of_peak']:.2f}% "
                        f"of the {row['dtype']} peak; max |Δw| {diff:.1e}",
                        flush=True,
                    )
            result["runs"].append(
                {
                    "threads": th,
                    "peak_gflops": {
                        str(k).removeprefix("torch."): v / 1e9 for k, v in peaks.items()
                    },
                    "rows": rows,
                }
            )
    finally:
        torch.set_num_threads(before)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="", help="comma-separated thread counts")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",") if t] or None
    result = run(threads)
    out = Path(__file__).parent / "results" / "dynamics_population.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
