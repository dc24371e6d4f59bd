"""Benchmark: the lottery-ticket recipe vs the same work as a plain sequential PyTorch loop.

Runs ``weightlab run lottery-ticket`` twice in this process with the same config, once
with the population engine (each round's seeds x arms trained as one vectorized
computation) and once with ``--engine loop`` (every member trained in turn by an
ordinary ``nn.Module`` + ``torch.optim`` loop), each into a fresh temporary run
directory, and prints both wall times, their ratio and each run's claim verdicts.
Results go to ``bench/results/lottery_ticket.json``.

    python bench/lottery_ticket.py                 # default recipe config (3 seeds)
    python bench/lottery_ticket.py --seeds 2 --quick
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs.files import atomic_write_json


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=None, help="seeds (default: the recipe's, 3)")
    ap.add_argument("--data", default="mnist1d")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="the recipe's --smoke sizes")
    ap.add_argument("--skip-loop", action="store_true", help="time the population engine only")
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "lottery_ticket.json"
    )
    args = ap.parse_args()
    overrides = {"data": args.data, "device": args.device}
    if args.seeds is not None:
        overrides["seeds"] = args.seeds
    engines = ["population"] if args.skip_loop else ["population", "loop"]
    rows = []
    for engine in engines:
        cfg = make_config("lottery-ticket", smoke=args.quick, engine=engine, **overrides)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            _, summary = run_recipe("lottery-ticket", cfg, out=Path(tmp) / "run", progress=False)
            wall = time.perf_counter() - t0
        verdicts = {c["id"]: c["verdict"] for c in summary["claims"]}
        rows.append({"engine": engine, "wall_s": wall, "claims": verdicts, "config": asdict(cfg)})
        print(f"{engine:>10}: {wall:8.1f} s   claims: {verdicts}", flush=True)
    result = {
        "benchmark": "lottery_ticket",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "rows": rows,
    }
    if len(rows) == 2:
        result["speedup_vs_loop"] = rows[1]["wall_s"] / rows[0]["wall_s"]
        print(
            f"population engine is {result['speedup_vs_loop']:.2f}x faster than the plain loop (same run)"
        )
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    print(json.dumps({r["engine"]: round(r["wall_s"], 1) for r in rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
