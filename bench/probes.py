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

import sys

from parts import run_parts

PARTS = ("spectra", "cka", "grand")


def main(argv: list[str]) -> None:
    run_parts("probes", PARTS, argv, lambda mod: mod.run(quiet=False))


if __name__ == "__main__":
    main(sys.argv[1:])
