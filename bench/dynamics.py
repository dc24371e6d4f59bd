"""Training-dynamics benchmarks (issue 23, Performance), each part measured against its
plain baseline in the same run:

- ``bench/dynamics_hebbian.py``: dense Hebbian memories, N = 1,000, 64 trials: the
  vectorized synchronous sweep vs a per-spin Python loop of the same update (P = 2 and 4),
  its share of the run's matmul peak; asynchronous, trials batched vs one at a time;
- ``bench/dynamics_population.py``: populations against a plain loop of solo runs for
  advani-saxe (110 linear members), dynamical-decoupling and grokking-stages (15 each).

Run: ``.venv/bin/python bench/dynamics.py [hebbian|population ...]`` (all parts by
default, each at 1 and 2 threads); each part's numbers go to ``bench/results/dynamics_<part>.json`` (each part also
runs alone as a script).
Run it on an otherwise idle machine: the parts time themselves, and other load inflates
every side.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

PARTS = ("hebbian", "population")


def _load(part: str):
    path = Path(__file__).parent / f"dynamics_{part}.py"
    spec = importlib.util.spec_from_file_location(f"dynamics_{part}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str]) -> None:
    parts = [a for a in argv if not a.startswith("-")] or list(PARTS)
    bad = [p for p in parts if p not in PARTS]
    if bad:
        print(f"unknown part(s) {bad}; choose from {', '.join(PARTS)}", file=sys.stderr)
        raise SystemExit(2)
    for part in parts:
        print(f"\n=== dynamics: {part} ===", flush=True)
        result = _load(part).run([1, 2], quiet=False)
        out = Path(__file__).parent / "results" / f"dynamics_{part}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
