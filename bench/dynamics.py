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

import sys

from parts import run_parts

PARTS = ("hebbian", "population")


def main(argv: list[str]) -> None:
    run_parts("dynamics", PARTS, argv, lambda mod: mod.run([1, 2], quiet=False))


if __name__ == "__main__":
    main(sys.argv[1:])
