"""CSR inference benchmark: the lottery MLP (40-300-100-10) at 5% density, dense (the
masked model merged to plain ``nn.Linear``) vs :func:`weightlab.sparsity.export.to_csr`
(CSR weights, ``torch.addmm``), one CPU thread, batch 1, 60 and 1000, all reported.

Timing is paired call by call: each of ``PAIRS[batch]`` iterations runs one dense and
one CSR forward pass (which goes first alternates) under ``torch.inference_mode``, each
timed alone. This machine's speed drifts by up to 2x within seconds (a shared host), so
coarser blocks timed apart gave ratios from 0.38 to 0.58 on the same code; adjacent
calls see the same machine. Reported per format: the median call time and its 10th-90th
percentiles; the ratio is the median of the per-pair ratios (CSR / dense), with its
10th-90th percentiles. No speed-up is claimed at batch 1 (CSR's per-call overhead
dominates). Must: CSR <= 0.5x dense at batch 60 and 1000.
"""

from __future__ import annotations

import statistics
import time

import torch

from weightlab.core import apply_masks
from weightlab.models import build
from weightlab.models.mlp import MLP
from weightlab.seeding import generator
from weightlab.sparsity import keep_counts, random_masks, uniform_densities
from weightlab.sparsity.export import merged_copy, to_csr

WIDTHS = (40, 300, 100, 10)
DENSITY = 0.05
BATCHES = (1, 60, 1000)
PAIRS = {1: 4000, 60: 2000, 1000: 200}
MUST = 0.5  # CSR / dense at batch 60 and 1000


def _paired(dense: torch.nn.Module, csr: torch.nn.Module, x: torch.Tensor, pairs: int):
    """Per-call seconds of ``dense(x)`` and ``csr(x)``, called alternately (first swapped
    each iteration)."""
    clock = time.perf_counter
    td, tc = [], []
    with torch.inference_mode():
        dense(x), csr(x)  # warm
        for k in range(pairs):
            for name in ("dense", "csr") if k % 2 else ("csr", "dense"):
                m, out = (dense, td) if name == "dense" else (csr, tc)
                t0 = clock()
                m(x)
                out.append(clock() - t0)
    return td, tc


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def main() -> None:
    torch.set_num_threads(1)
    model = build(MLP, list(WIDTHS), seed=0).eval()
    shapes = {f"layers.{i}.weight": model.layers[i].weight.shape for i in range(3)}
    keep = keep_counts(shapes, uniform_densities(shapes, DENSITY))
    apply_masks(model, random_masks(shapes, keep=keep, generator=generator(0)))
    dense = merged_copy(model).eval()
    csr = to_csr(model)
    xs = {b: torch.randn(b, WIDTHS[0], generator=generator(b)) for b in BATCHES}
    with torch.inference_mode():
        err = max(float((csr(x) - dense(x)).abs().max()) for x in xs.values())
    print(
        f"lottery MLP {'-'.join(map(str, WIDTHS))} at {DENSITY:.0%} density "
        f"({sum(keep.values()):,} of {sum(s.numel() for s in shapes.values()):,} weights), "
        f"1 thread; max |CSR - dense| output {err:.1e}"
    )
    print(
        f"{'batch':>6} {'dense us, median (p10-p90)':>28} {'CSR us, median (p10-p90)':>26} "
        f"{'CSR/dense, median (p10-p90) of pairs':>38}  must"
    )
    ok = True
    for b in BATCHES:
        td, tc = _paired(dense, csr, xs[b], PAIRS[b])
        ratios = [c / d for c, d in zip(tc, td, strict=True)]
        ratio = statistics.median(ratios)
        must = "reported only" if b == 1 else f"<= {MUST}: {'met' if ratio <= MUST else 'NOT met'}"
        ok &= b == 1 or ratio <= MUST

        def cell(t: list[float], scale: float = 1e6, unit: str = "") -> str:
            return (
                f"{statistics.median(t) * scale:.{3 if unit else 1}f}{unit} "
                f"({_pct(t, 0.1) * scale:.{3 if unit else 1}f}-{_pct(t, 0.9) * scale:.{3 if unit else 1}f})"
            )

        print(f"{b:>6} {cell(td):>28} {cell(tc):>26} {cell(ratios, 1.0, 'x'):>38}  {must}")
    print(
        f"paired calls ({', '.join(f'{PAIRS[b]} at batch {b}' for b in BATCHES)}); must {'met' if ok else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
