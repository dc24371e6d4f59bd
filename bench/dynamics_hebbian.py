"""Dense Hebbian dynamics benchmark (issue 23, Performance, first bullet).

N = 1,000 spins, 64 trials (each a stored pattern with 10% of its spins flipped), ±1
patterns, float64 (:mod:`weightlab.dynamics.hebbian`: exact integer arithmetic), at
P = 2 (K = 100) and P = 4 (K = 2,000). Rows per P:

- ``sync``: one vectorized synchronous sweep (:meth:`DenseHebbian.sync_step`: the binomial
  expansion, ±1 patterns grouped to 2 matmuls, ``s = σuᵀ`` and ``(Σ_odd c_k s^{P-k}) @ u``);
- ``sync_loop``: the same update as a per-spin Python loop: for each spin ``i``, the 64
  trials' exact ``Σ_μ [(s_μ - 2u_μiσ_i)^P - s_μ^P]`` from the sweep's fields, then all
  flips at once; the two sweeps' states must be identical;
- ``async``: one asynchronous sweep, trials batched (:meth:`DenseHebbian.run_async`,
  ``max_sweeps=1``);
- ``async_one``: the same sweep one trial at a time (64 calls); states identical.

Must (issue 23): ``sync_loop / sync ≥ 50×`` and the P = 4 ``sync`` row ≥ 25% of the same
run's fp32 matmul peak (goal 50%); async ratios are reported. FLOPs: the matmuls
``torch.utils.flop_counter`` counts in the row (``sync`` at P = 4: 2 matmuls, 0.51 GFLOP;
the issue's nominal P matmuls, 1.02 GFLOP, are printed beside it). The peak is
``bench/growth.py``'s ``peak_flops`` (best-of 1024² fp32 ``torch.mm``, same thread count),
so a float64 row can reach at most about half of it on CPUs whose fp64 rate is half their
fp32 rate. Run: ``.venv/bin/python bench/dynamics_hebbian.py [--threads 1,2]``; writes
``bench/results/dynamics_hebbian.json``. Run it on an idle machine (the load average is
recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from growth import peak_flops  # noqa: E402

from weightlab.dynamics.hebbian import DenseHebbian, corrupt, random_patterns  # noqa: E402
from weightlab.seeding import generator  # noqa: E402

N = 1000
TRIALS = 64
CASES = ((2, 100), (4, 2000))  # (P, K)
ROUNDS = 5
SYNC_ROUNDS = 50  # the sweep takes ~1-20 ms: a median over many calls


def setup(p: int, k: int) -> tuple[DenseHebbian, torch.Tensor]:
    g = generator(p * 1000 + k)
    xi = random_patterns(k, N, g)
    target = torch.randint(0, k, (TRIALS,), generator=g)
    return DenseHebbian(xi, p), corrupt(xi[target], 0.1, g)


def sync_loop(net: DenseHebbian, sigma: torch.Tensor) -> torch.Tensor:
    """One synchronous sweep, spin by spin (the reference loop)."""
    s = net.fields(sigma)
    flips = torch.zeros_like(sigma, dtype=torch.bool)
    for i in range(net.N):
        a = 2.0 * net.u[:, i] * sigma[:, i : i + 1]
        flips[:, i] = ((s - a) ** net.P - s**net.P).sum(-1) > 0
    return torch.where(flips, -sigma, sigma)


def async_one(net: DenseHebbian, sigma: torch.Tensor) -> torch.Tensor:
    return torch.cat([net.run_async(sigma[b : b + 1], 1).sigma for b in range(len(sigma))])


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def run(threads: list[int], quiet: bool = False, save=None) -> dict:
    result = {
        "setup": (
            f"N = {N}, {TRIALS} trials (10% flipped starts), ±1 patterns, float64, CPU; "
            "(P, K) = " + ", ".join(f"({p}, {k})" for p, k in CASES)
        ),
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "runs": [],
    }
    before = torch.get_num_threads()
    try:
        for th in threads:
            torch.set_num_threads(th)
            peak = peak_flops()
            cases = []
            for p, k in CASES:
                net, sigma = setup(p, k)
                fns = {
                    "sync": lambda net=net, sigma=sigma: net.sync_step(sigma),
                    "sync_loop": lambda net=net, sigma=sigma: sync_loop(net, sigma),
                    "async": lambda net=net, sigma=sigma: net.run_async(sigma, 1).sigma,
                    "async_one": lambda net=net, sigma=sigma: async_one(net, sigma),
                }
                rows, outs = {}, {}
                for name, fn in fns.items():
                    # the loops run once (seconds each); that run's states are compared
                    rounds = {"sync": SYNC_ROUNDS, "async": ROUNDS}.get(name, 1)
                    if name == "sync":
                        fn()  # warm-up: the first call pays thread-pool start-up
                    times = []
                    for _ in range(rounds):
                        t0 = time.perf_counter()
                        outs[name] = fn()
                        times.append(time.perf_counter() - t0)
                    med = statistics.median(times)
                    fl = _flops(fn) if name in ("sync", "async") else None
                    rows[name] = {
                        "median_ms": 1e3 * med,
                        "min_ms": 1e3 * min(times),
                        "max_ms": 1e3 * max(times),
                        "rounds": rounds,
                        "matmul_flops": fl,
                        "pct_of_peak": None if fl is None else 100 * fl / med / peak,
                    }
                same_sync = torch.equal(outs["sync"], outs["sync_loop"])
                same_async = torch.equal(outs["async"], outs["async_one"])
                nominal = p * 2 * TRIALS * k * N
                case = {
                    "P": p,
                    "K": k,
                    "rows": rows,
                    "nominal_flops": nominal,
                    "nominal_pct_of_peak": 100 * nominal / (rows["sync"]["median_ms"] / 1e3) / peak,
                    "sync_states_identical": same_sync,
                    "async_states_identical": same_async,
                    "sync_speedup": rows["sync_loop"]["median_ms"] / rows["sync"]["median_ms"],
                    "async_speedup": rows["async_one"]["median_ms"] / rows["async"]["median_ms"],
                }
                cases.append(case)
                if not quiet:
                    print(
                        f"\n{th} thread(s), P = {p}, K = {k}, fp32 mm peak {peak / 1e9:.1f} GFLOP/s"
                    )
                    for name, r in rows.items():
                        fl = r["matmul_flops"]
                        share = (
                            ""
                            if fl is None
                            else (f"{fl / 1e9:>8.3f} GFLOP{r['pct_of_peak']:>7.1f}% peak")
                        )
                        print(
                            f"  {name:<10}{r['median_ms']:>10.2f} ms"
                            f"  ({r['min_ms']:.2f}-{r['max_ms']:.2f}){share}"
                        )
                    print(
                        f"  sync {case['sync_speedup']:.0f}x the per-spin loop (states identical: "
                        f"{same_sync}); async batched {case['async_speedup']:.1f}x one at a time "
                        f"(identical: {same_async}); nominal {nominal / 1e9:.2f} GFLOP = "
                        f"{case['nominal_pct_of_peak']:.1f}% of peak"
                    )
            result["runs"].append({"threads": th, "peak_gflops": peak / 1e9, "cases": cases})
            if save is not None:
                save(result)
    finally:
        torch.set_num_threads(before)
    if not quiet:
        print(f"\nload average {result['load_average']}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    out = Path(__file__).parent / "results" / "dynamics_hebbian.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    run(threads, save=lambda r: out.write_text(json.dumps(r, indent=2) + "\n"))


if __name__ == "__main__":
    main()
