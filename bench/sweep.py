"""Sweep benchmark (issue 24, Performance): the local executor's overhead and what batching
a sweep's small runs into shared populations buys, measured against the same configs run
one by one in the same process.

Rows (each: median and min-max of ``ROUNDS`` interleaved rounds, fresh run roots each time;
the two arms' order alternates from round to round):

- ``overhead``: 8 lottery-ticket smoke configs (2 lr × 2 init × 2 rate) through
  ``weightlab sweep --no-batch`` against the same 8 configs through ``run_recipe`` in a
  loop (must <= 1.2×, goal <= 1.05×);
- ``batching, lottery shape``: ``--hidden 300,100 --epochs 5 --target-density 0.5
  --seeds 1``, lr = 2.5e-4·2^k, k = 0…7: batched against ``--no-batch`` (must >= 1.3×,
  goal >= 1.6×);
- ``batching, small shape``: the same with ``--hidden 100,100 --batch-size 32`` (must >=
  1.4×, goal >= 2×);
- ``no harm``: the lottery row with ``--seeds 3`` (must >= 0.95×).

Each batching row also prints the batched sweep's share of the machine's fp32 matmul peak
(useful matmul FLOPs of every member-step, ``torch.utils.flop_counter``, over its wall time;
peak: best-of 2048² ``torch.mm``, the anchors' definition, by ``bench/growth.py``'s
``peak_flops``; 1024² before 2026-11-27). Run:
``.venv/bin/python bench/sweep.py [--threads 1] [--rows lottery,small] [--rounds 3] [--quick]``; numbers go to
``bench/results/sweep.json`` (one entry per thread count). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from growth import ANCHOR_PEAK_SIZE, peak_flops  # noqa: E402

from weightlab.cli import main as cli  # noqa: E402
from weightlab.recipes import members  # noqa: E402
from weightlab.recipes.runner import make_config, run_recipe  # noqa: E402
from weightlab.runs.files import atomic_write_text  # noqa: E402

ROUNDS = 3
LRS = ",".join(f"{2.5e-4 * 2**k:g}" for k in range(8))
SHAPES = {
    "lottery": ["hidden=300,100", "epochs=5", "target_density=0.5"],
    "small": ["hidden=100,100", "batch_size=32", "epochs=5", "target_density=0.5"],
}


class Counter:
    """Counts member-steps and matmul FLOPs of every population call (wraps the engine)."""

    def __init__(self) -> None:
        self.member_steps = 0
        self.flops = 0.0
        self._real = members.train_members_now
        self._per_step: dict[tuple, float] = {}

    def __enter__(self) -> Counter:
        calls = self._calls = []

        def counted(factory, specs, data, cfg, **kw):
            steps = (len(data.train) // cfg.batch_size) * cfg.epochs
            self.member_steps += len(specs) * steps
            calls.append((factory, specs[0].seed, data, cfg, len(specs) * steps))
            return self._real(factory, specs, data, cfg, **kw)

        members.train_members_now = counted
        return self

    def __exit__(self, *exc) -> None:
        """FLOPs are counted here, after the caller stopped its clock, so no timed sweep
        includes the counter's own forward and backward passes (nor, without the warm-up,
        its first use's ``torch._dynamo`` import, ~3 s here)."""
        members.train_members_now = self._real
        for factory, seed, data, cfg, member_steps in self._calls:
            self.flops += member_steps * self._flops(factory, seed, data, cfg)
        self._calls = []

    def _flops(self, factory, seed, data, cfg) -> float:
        model = factory(seed)
        key = tuple((n, tuple(p.shape)) for n, p in model.named_parameters()) + (cfg.batch_size,)
        if key not in self._per_step:
            x = data.train.x[: cfg.batch_size]
            y = data.train.y[: cfg.batch_size]
            with FlopCounterMode(display=False) as fc:
                torch.nn.functional.cross_entropy(model(x), y).backward()
            self._per_step[key] = float(fc.get_total_flops())
        return self._per_step[key]


def _sweep(args: list[str]) -> tuple[float, Counter]:
    root = Path(tempfile.mkdtemp(prefix="wl-bench-sweep-"))
    try:
        with Counter() as c, contextlib.redirect_stdout(io.StringIO()):
            t0 = time.perf_counter()
            rc = cli(["sweep", "lottery-ticket", *args, "--out", str(root)])
            dt = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit(f"sweep {args} failed with exit code {rc}")
        return dt, c
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run_recipe_loop(configs: list[dict]) -> float:
    root = Path(tempfile.mkdtemp(prefix="wl-bench-loop-"))
    try:
        t0 = time.perf_counter()
        for over in configs:
            cfg = make_config("lottery-ticket", smoke=True, **over)
            run_recipe("lottery-ticket", cfg, root=root)
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _in_turn(r: int, first, second) -> None:
    """Round ``r`` of an A/B pair: ``first`` then ``second`` in even rounds, the other way
    round in odd ones, so neither arm always runs first."""
    for arm in (first, second) if r % 2 == 0 else (second, first):
        arm()


def _stats(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "all": xs}


def overhead_row(rounds: int) -> dict:
    configs = [
        {"lr": lr, "init": init, "rate": rate}
        for lr in (1e-3, 2e-3)
        for init in ("glorot_normal", "kaiming_normal")
        for rate in (0.2, 0.5)
    ]
    args = [
        "--grid",
        "lr=1e-3,2e-3",
        "--grid",
        "init=glorot_normal,kaiming_normal",
        "--grid",
        "rate=0.2,0.5",
        "--smoke",
        "--no-batch",
    ]
    sweep, loop = [], []
    for r in range(rounds):
        _in_turn(
            r, lambda: sweep.append(_sweep(args)[0]), lambda: loop.append(_run_recipe_loop(configs))
        )
    ratios = [s / b for s, b in zip(sweep, loop, strict=True)]
    return {
        "row": "overhead (sweep --no-batch / run_recipe loop)",
        "sweep_s": _stats(sweep),
        "loop_s": _stats(loop),
        "ratio": _stats(ratios),
        "must": "<= 1.2",
        "goal": "<= 1.05",
        "met": statistics.median(ratios) <= 1.2,
    }


def batching_row(
    name: str,
    shape: str,
    seeds: int,
    must: float,
    goal: float | None,
    rounds: int,
    peak: float,
    quick: bool,
) -> dict:
    sets = SHAPES[shape] + ([] if not quick else ["epochs=1"])
    sets = [s for s in sets if not (quick and s == "epochs=5")]
    args = ["--grid", f"lr={LRS}", "--seeds", str(seeds)]
    for s in sets:
        args += ["--set", s]
    batched, alone, shares = [], [], []

    def run_batched() -> None:
        dt, c = _sweep(args)
        batched.append(dt)
        shares.append(100 * c.flops / dt / peak)

    for r in range(rounds):
        _in_turn(r, run_batched, lambda: alone.append(_sweep([*args, "--no-batch"])[0]))
    speedups = [a / b for a, b in zip(alone, batched, strict=True)]
    med = statistics.median(speedups)
    return {
        "row": name,
        "batched_s": _stats(batched),
        "no_batch_s": _stats(alone),
        "speedup": _stats(speedups),
        "batched_pct_of_peak": _stats(shares),
        "must": f">= {must}",
        "goal": f">= {goal}" if goal else None,
        "met": med >= must,
    }


ROWS = ("overhead", "lottery", "small", "noharm")


def run(threads: int, rounds: int, quick: bool, rows: tuple[str, ...] = ROWS) -> dict:
    torch.set_num_threads(threads)
    peak = peak_flops(ANCHOR_PEAK_SIZE, seconds=1.5)  # the anchors' definition
    # warm-up: imports, the recipe registry, matplotlib, the task generator (paid once, by
    # neither side)
    _run_recipe_loop([{}])
    _sweep(["--grid", "lr=1e-3", "--smoke"])
    made = {
        "overhead": lambda: overhead_row(rounds),
        "lottery": lambda: batching_row(
            "batching, lottery shape", "lottery", 1, 1.3, 1.6, rounds, peak, quick
        ),
        "small": lambda: batching_row(
            "batching, small shape", "small", 1, 1.4, 2.0, rounds, peak, quick
        ),
        "noharm": lambda: batching_row(
            "no harm (lottery shape, 3 seeds)", "lottery", 3, 0.95, None, rounds, peak, quick
        ),
    }
    return {
        "threads": threads,
        "peak_gflops": peak / 1e9,
        "rounds": rounds,
        "quick": quick,
        "load_avg": os.getloadavg(),
        "rows": [made[r]() for r in rows],
    }


def report(res: dict) -> None:
    print(
        f"{res['threads']} thread(s), matmul peak {res['peak_gflops']:.1f} GFLOP/s, "
        f"{res['rounds']} rounds, load {res['load_avg'][0]:.2f}"
    )
    for r in res["rows"]:
        if "ratio" in r:
            x = r["ratio"]
            print(
                f"  {r['row']:<44} {x['median']:.2f}x [{x['min']:.2f}-{x['max']:.2f}]  "
                f"(sweep {r['sweep_s']['median']:.1f} s, loop {r['loop_s']['median']:.1f} s)  "
                f"must {r['must']}: {'met' if r['met'] else 'NOT met'}"
            )
        else:
            x, p = r["speedup"], r["batched_pct_of_peak"]
            print(
                f"  {r['row']:<44} {x['median']:.2f}x [{x['min']:.2f}-{x['max']:.2f}]  "
                f"(batched {r['batched_s']['median']:.1f} s, alone {r['no_batch_s']['median']:.1f} s, "
                f"batched {p['median']:.1f}% of peak)  must {r['must']}: "
                f"{'met' if r['met'] else 'NOT met'}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads [1]")
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--quick", action="store_true", help="1 epoch per round, 1 round (a check)")
    ap.add_argument(
        "--rows",
        default=",".join(ROWS),
        help=f"comma-separated subset of {','.join(ROWS)} (the results file keeps the others)",
    )
    a = ap.parse_args()
    rows = tuple(r.strip() for r in a.rows.split(",") if r.strip())
    bad = [r for r in rows if r not in ROWS]
    if bad or not rows:
        ap.error(f"unknown rows {bad}; choose from {', '.join(ROWS)}")
    res = run(a.threads, 1 if a.quick else a.rounds, a.quick, rows)
    report(res)
    if not a.quick:  # one entry per thread count, others kept; rows not run keep theirs
        out = Path(__file__).parent / "results" / "sweep.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(out.read_text()) if out.exists() else {}
        old = old if "threads" not in old else {str(old["threads"]): old}
        prev = old.get(str(a.threads))
        if prev is not None and rows != ROWS:
            ran = {r["row"]: r for r in res["rows"]}  # rows keep their places
            kept = [ran.pop(r["row"], r) for r in prev["rows"]]
            res["rows"] = kept + list(ran.values())
            res["rows_run_last"] = list(rows)
        old[str(a.threads)] = res
        atomic_write_text(out, json.dumps(old, indent=2) + "\n")


if __name__ == "__main__":
    main()
