"""GraNd benchmark (issue 20, Performance): per-example gradient norms (Paul et al. 2021,
Sec. 2) of 4,000 MNIST-1D examples (train + validation) under 5 seeds of the MLP
40-300-100-10, cross-entropy, float32, CPU.

- ``loop`` (the baseline the must compares against): one ``torch.autograd.grad`` per
  example and seed, 20,000 backward passes;
- ``vmap``: weightlab's ``grand(method="vmap")``, ``torch.func.vmap(grad(ℓ))`` over
  examples;
- ``closed_form``: weightlab's ``grand(method="closed_form")`` (what ``"auto"`` picks for
  an MLP): one forward and one backward per seed, ``‖δ‖·‖a‖`` per Linear layer;
- ``floor``: one forward and one backward of the mean loss per seed (the batch gradient,
  no per-example norms): the least any per-example method can cost.

No reference library for GraNd is installed (the paper's code is JAX research code), so
the loop is the reference. Every row is the median of ``ROUNDS`` rounds (min-max beside
it; wall clock, and the process's CPU time beside it, since the 2-core machine is
shared); the methods' scores are checked to agree (max relative difference against the
loop, from the last round's outputs).
Must: weightlab's GraNd (``auto`` = closed form here) >= 10x faster than the loop.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from weightlab.data import load_dataset
from weightlab.models import MLP, build
from weightlab.probes.data_scores import grand_scores
from weightlab.progress import progress_bar

ROUNDS = 5
SEEDS = 5
MUST_SPEEDUP = 10.0
WIDTHS = [40, 300, 100, 10]


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_dataset("mnist1d", "cpu")
    return torch.cat([d.train.x, d.val.x]), torch.cat([d.train.y, d.val.y])


def _floor(models, x, y) -> torch.Tensor:
    for m in models:
        loss = torch.nn.functional.cross_entropy(m(x), y)
        torch.autograd.grad(loss, list(m.parameters()))
    return loss.detach()


def run(quiet: bool = False) -> dict:
    x, y = _data()
    models = [build(MLP, WIDTHS, seed=s) for s in range(SEEDS)]
    for m in models:
        m.eval()
    methods = {
        "loop": lambda: grand_scores(models, x, y, "loop"),
        "vmap": lambda: grand_scores(models, x, y, "vmap"),
        "closed_form": lambda: grand_scores(models, x, y, "closed_form"),
        "floor": lambda: _floor(models, x, y),
    }
    for k in ("loop", "vmap", "closed_form"):  # warm-up (vmap's first call traces)
        grand_scores(models, x[:8], y[:8], k)
    _floor(models, x[:8], y[:8])
    times: dict[str, list[float]] = {k: [] for k in methods}
    cpu: dict[str, list[float]] = {k: [] for k in methods}
    out: dict[str, torch.Tensor] = {}
    order = list(methods)
    bar = progress_bar(ROUNDS, "grand bench", "round", not quiet, line_each_update=True)
    for r in range(ROUNDS):
        for k in order if r % 2 == 0 else reversed(order):
            t, c = time.perf_counter(), time.process_time()
            out[k] = methods[k]()
            times[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    ref = out["loop"]
    agree = {
        k: float(((out[k] - ref).abs() / ref.abs().clamp_min(1e-12)).max())
        for k in ("vmap", "closed_form")
    }
    loop = statistics.median(times["loop"])
    rows = [
        {
            "method": k,
            "median_s": statistics.median(v),
            "min_s": min(v),
            "max_s": max(v),
            "speedup_vs_loop": loop / statistics.median(v),
            "cpu_median_s": statistics.median(cpu[k]),
            "cpu_speedup_vs_loop": statistics.median(cpu["loop"]) / statistics.median(cpu[k]),
        }
        for k, v in times.items()
    ]
    by = {r["method"]: r for r in rows}
    result = {
        "setting": f"GraNd of {len(y)} MNIST-1D examples x {SEEDS} seeds, MLP "
        f"{'-'.join(map(str, WIDTHS))}, float32, CPU, {torch.get_num_threads()} threads",
        "rounds": ROUNDS,
        "rows": rows,
        "max_rel_diff_vs_loop": agree,
        "must": {
            "closed_form_vs_loop": by["closed_form"]["speedup_vs_loop"],
            "threshold": MUST_SPEEDUP,
            "met": by["closed_form"]["speedup_vs_loop"] >= MUST_SPEEDUP,
        },
        "vmap_vs_loop": by["vmap"]["speedup_vs_loop"],
        "load_average": os.getloadavg(),
    }
    if not quiet:
        print(result["setting"])
        print(
            f"{'method':<12} {'median s':>10} {'min-max s':>17} {'x loop':>8} "
            f"{'CPU s':>8} {'CPU x loop':>10}"
        )
        for r in rows:
            print(
                f"{r['method']:<12} {r['median_s']:>10.4f} "
                f"{r['min_s']:>8.4f}-{r['max_s']:<8.4f} {r['speedup_vs_loop']:>8.1f} "
                f"{r['cpu_median_s']:>8.4f} {r['cpu_speedup_vs_loop']:>10.1f}"
            )
        print("max relative difference vs the loop:", {k: f"{v:.1e}" for k, v in agree.items()})
        must = result["must"]
        print(
            f"must: closed form >= {MUST_SPEEDUP:g}x the loop: "
            f"{must['closed_form_vs_loop']:.1f}x ({'met' if must['met'] else 'NOT met'}); "
            f"vmap {result['vmap_vs_loop']:.1f}x; load {result['load_average']}"
        )
    return result


if __name__ == "__main__":
    run(quiet=False)
