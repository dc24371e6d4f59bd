"""Sparsity benchmarks: scoring (SNIP, GraSP, SynFlow on MiniLM), structured pruning
(against Torch-Pruning) and CSR inference (against dense), each comparison measured in
one run as medians of interleaved rounds. Sections live in ``bench/sparsity_*.py``;
``python bench/sparsity.py [section ...]`` runs the named ones (default: all)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

SECTIONS = ("scoring", "structured", "csr")


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    wanted = argv or list(SECTIONS)
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        print(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
        return 2
    for name in wanted:
        module = importlib.import_module(f"sparsity_{name}")
        print(f"\n== {name} ==", flush=True)
        module.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
