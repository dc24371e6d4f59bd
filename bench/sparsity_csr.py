"""CSR inference benchmark: the lottery MLP (40-300-100-10) at 5% density, dense (the
masked model merged to plain ``nn.Linear``) vs :func:`weightlab.sparsity.export.to_csr`
(CSR weights, ``torch.addmm``), one CPU thread, batch 1, 60 and 1000, all reported.

Each round times every (batch, format) pair once, the order alternating between rounds;
a pair's time is the mean over ``REPS`` forward passes under ``torch.inference_mode``,
the reported figure the median over ``ROUNDS`` rounds. No speed-up is claimed at batch 1
(CSR's per-call overhead dominates). Must: CSR <= 0.5x dense at batch 60 and 1000.
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
ROUNDS = 11
REPS = {1: 400, 60: 500, 1000: 40}
MUST = 0.5  # CSR / dense at batch 60 and 1000


def _time(model: torch.nn.Module, x: torch.Tensor, reps: int) -> float:
    with torch.inference_mode():
        model(x)  # warm
        t0 = time.perf_counter()
        for _ in range(reps):
            model(x)
        return (time.perf_counter() - t0) / reps


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
    times: dict[tuple[int, str], list[float]] = {}
    for r in range(ROUNDS):
        order = [("dense", dense), ("csr", csr)]
        if r % 2:
            order.reverse()
        for b in BATCHES:
            for name, m in order:
                times.setdefault((b, name), []).append(_time(m, xs[b], REPS[b]))
    print(
        f"{'batch':>6} {'dense us, median (min-max)':>28} {'CSR us, median (min-max)':>26} {'CSR/dense':>10}  must"
    )
    ok = True
    for b in BATCHES:
        d = statistics.median(times[(b, "dense")]) * 1e6
        c = statistics.median(times[(b, "csr")]) * 1e6
        ratio = c / d
        must = "reported only" if b == 1 else f"<= {MUST}: {'met' if ratio <= MUST else 'NOT met'}"
        ok &= b == 1 or ratio <= MUST
        dr = f"{d:.1f} ({min(times[(b, 'dense')]) * 1e6:.1f}-{max(times[(b, 'dense')]) * 1e6:.1f})"
        cr = f"{c:.1f} ({min(times[(b, 'csr')]) * 1e6:.1f}-{max(times[(b, 'csr')]) * 1e6:.1f})"
        print(f"{b:>6} {dr:>28} {cr:>26} {ratio:>9.3f}x  {must}")
    print(f"medians of {ROUNDS} interleaved rounds; must {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
