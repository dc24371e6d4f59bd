"""Probes benchmarks (issue 20, Performance), each part measured against its reference
library and its plain floor in the same run:

- ``bench/probes_spectra.py``: ESD α + stable rank of MiniLM's Linears and Embeddings vs
  weightwatcher 0.7.7 ``analyze()`` and batched float64 Gram eigenvalues;
- ``bench/probes_cka.py``: CKA of all pairs of MiniLM's 7 hidden states vs torch-cka end to
  end, and debiased vs plain biased CKA on the same features;
- ``bench/probes_grand.py``: GraNd for 4,000 MNIST-1D examples × 5 seeds vs a per-example
  loop, beside the ``vmap`` path and the MLP closed form.

Run: ``.venv/bin/python bench/probes.py [spectra|cka|grand ...]`` (all parts by default);
each part's numbers go to ``bench/results/probes_<part>.json`` (each part also runs alone
as a script).
Run it on an otherwise idle machine: the parts time themselves, and other load inflates
every side.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

PARTS = ("spectra", "cka", "grand")


def _load(part: str):
    path = Path(__file__).parent / f"probes_{part}.py"
    spec = importlib.util.spec_from_file_location(f"probes_{part}", path)
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
        print(f"\n=== probes: {part} ===", flush=True)
        result = _load(part).run(quiet=False)
        out = Path(__file__).parent / "results" / f"probes_{part}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
