"""Growth and hypernetworks benchmark (issue 22, Performance): one generator call for 64
targets against 64 per-target calls.

Rows (forward + backward each, float32, CPU):

- ``population``: the continual recipe's MLP hypernetwork (29 chunks of 300, embeddings of
  32, hidden 64-64) generates 64 targets 64-64-64-2 in ONE call
  (:func:`weightlab.hyper.generated.generate_population`; the hypernetwork and the MLP
  targets by the fused functions of :mod:`weightlab.hyper.fused`: split first layer, output
  scale inside the last matmul, hand-written backward, ``baddbmm`` targets), the 64
  targets run on a batch of 32 random inputs, one cross-entropy, one backward;
- ``population_autograd``: the same in one call by the plain autograd path (the
  concatenated ``[c_k, z_n]`` chunks, ``ChunkedHypernet.forward_autograd``, and
  ``vmap(functional_call)`` targets: the implementation before the fused functions);
- ``loop``: the same modules in plain torch, 64 times: one generator call
  (``forward_autograd``), one target forward (``F.linear``), one backward per target;
- ``generator`` / ``generator_autograd`` / ``generator_loop``: the generator alone,
  ``G(Z)`` for 64 conditions (fused; autograd path) vs 64 autograd calls ``G(z_n)``
  (loss = sum of squares of the outputs);
- ``hypnettorch``: hypnettorch 0.0.4's ``ChunkedHMLP(..., num_cond_embs=64)`` batched
  ``forward(cond_id=range(64))`` with the same weights, same loss (skipped if not installed).

Each row reports the median of ``ROUNDS`` timings (each ``REPS`` repetitions), its matmul
FLOPs as executed (``torch.utils.flop_counter``; the fused path's split first layer does
45 MFLOP less than the autograd path for the same result) and the share of the machine's
measured fp32 matmul peak (best-of 1024×1024 ``torch.mm`` rate at the same thread count). Ratios are printed
against the loop. Run: ``.venv/bin/python bench/growth.py [--threads 1,2]``; numbers go to
``bench/results/growth.json``. Run it on an idle machine: other load inflates every side
(the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch.func import functional_call, vmap
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from weightlab.hyper.continual import ChunkedMLPHypernet
from weightlab.hyper.generated import (
    generate_population,
    generated_params,
    parameter_shapes,
    split_flat,
)
from weightlab.models.factory import build
from weightlab.models.mlp import MLP
from weightlab.seeding import generator

N_TARGETS = 64
BATCH = 32
ROUNDS = 7
REPS = 5
WIDTHS = [64, 64, 64, 2]


def peak_flops(size: int = 1024, seconds: float = 1.0, dtype: torch.dtype = torch.float32) -> float:
    """Best-of ``size × size`` matmul rate (FLOP/s) in ``dtype`` at the current thread count."""
    g = generator(0)
    a = torch.randn(size, size, generator=g, dtype=dtype)
    b = torch.randn(size, size, generator=g, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype)
    torch.mm(a, b, out=out)
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        best = max(best, 2 * size**3 / (time.perf_counter() - t))
    return best


class Setup:
    """The generator, its 64 conditions, the target and one batch."""

    def __init__(self) -> None:
        self.target = build(MLP, WIDTHS, seed=0)
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.shapes = parameter_shapes(self.target)
        total = sum(s.numel() for s in self.shapes.values())
        self.hnet = ChunkedMLPHypernet(total, num_conds=N_TARGETS, seed=1)
        g = generator(2)
        self.z = torch.randn(N_TARGETS, 32, generator=g)
        self.x = torch.randn(BATCH, WIDTHS[0], generator=g)
        self.y = torch.randint(0, 2, (BATCH,), generator=g)

    def population(self) -> None:
        out = generate_population(self.hnet, self.target, self.z, self.x)  # (N, B, 2)
        F.cross_entropy(out.reshape(-1, 2), self.y.repeat(N_TARGETS), reduction="sum").backward()

    def population_autograd(self) -> None:
        params = generated_params(
            None, self.target, self.z, outputs=self.hnet.forward_autograd(self.z)
        )
        out = vmap(lambda p: functional_call(self.target, p, (self.x,)))(params)
        F.cross_entropy(out.reshape(-1, 2), self.y.repeat(N_TARGETS), reduction="sum").backward()

    def loop(self) -> None:
        for n in range(N_TARGETS):
            w = split_flat(self.hnet.forward_autograd(self.z[n]), self.shapes)
            h = F.relu(F.linear(self.x, w["layers.0.weight"], w["layers.0.bias"]))
            h = F.relu(F.linear(h, w["layers.1.weight"], w["layers.1.bias"]))
            out = F.linear(h, w["layers.2.weight"], w["layers.2.bias"])
            F.cross_entropy(out, self.y, reduction="sum").backward()

    def generator(self) -> None:
        self.hnet(self.z).square().sum().backward()

    def generator_autograd(self) -> None:
        self.hnet.forward_autograd(self.z).square().sum().backward()

    def generator_loop(self) -> None:
        for n in range(N_TARGETS):
            self.hnet.forward_autograd(self.z[n]).square().sum().backward()


def hypnettorch_row(setup: Setup):
    """hypnettorch's batched forward with our generator's weights, or None."""
    try:
        from hypnettorch.hnets import ChunkedHMLP
    except ImportError:
        return None
    shapes = [list(s) for s in setup.shapes.values()]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        theirs = ChunkedHMLP(
            shapes,
            chunk_size=300,
            chunk_emb_size=32,
            cond_in_size=32,
            layers=(64, 64),
            num_cond_embs=N_TARGETS,
            verbose=False,
        )
    ip = theirs.internal_params
    with torch.no_grad():
        for t in range(N_TARGETS):
            ip[t].copy_(setup.z[t])
        for i, layer in enumerate(setup.hnet.layers):
            ip[N_TARGETS + 2 * i].copy_(layer.weight)
            ip[N_TARGETS + 2 * i + 1].copy_(layer.bias)
        ip[-1].copy_(setup.hnet.chunk_embs)
    ids = list(range(N_TARGETS))
    with torch.no_grad():
        want = setup.hnet(setup.z) / setup.hnet.scale
        diff = float((theirs.forward(cond_id=ids, ret_format="flattened") - want).abs().max())

    def run() -> None:
        theirs.forward(cond_id=ids, ret_format="flattened").square().sum().backward()

    return run, diff


def _time(fn) -> tuple[float, float, float]:
    fn()
    times = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        for _ in range(REPS):
            fn()
        times.append((time.perf_counter() - t) / REPS)
    return statistics.median(times), min(times), max(times)


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def run(threads: list[int], quiet: bool = False, save=None) -> dict:
    setup = Setup()
    rows_fns = {
        "population": setup.population,
        "population_autograd": setup.population_autograd,
        "loop": setup.loop,
        "generator": setup.generator,
        "generator_autograd": setup.generator_autograd,
        "generator_loop": setup.generator_loop,
    }
    hyp = hypnettorch_row(setup)
    if hyp is not None:
        rows_fns["hypnettorch"] = hyp[0]
    flops = {k: _flops(f) for k, f in rows_fns.items()}
    result = {
        "setup": (
            f"{N_TARGETS} targets {'-'.join(map(str, WIDTHS))}, batch {BATCH}, MLP hypernetwork "
            "29 chunks × 300, embeddings 32, hidden 64-64; forward + backward, float32, CPU"
        ),
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "hypnettorch_max_abs_diff": None if hyp is None else hyp[1],
        "runs": [],
    }
    before = torch.get_num_threads()
    try:
        for th in threads:
            torch.set_num_threads(th)
            peak = peak_flops()
            rows = []
            for name, fn in rows_fns.items():
                med, lo, hi = _time(fn)
                rows.append(
                    {
                        "row": name,
                        "median_ms": 1e3 * med,
                        "min_ms": 1e3 * lo,
                        "max_ms": 1e3 * hi,
                        "matmul_flops": flops[name],
                        "pct_of_peak": 100 * flops[name] / med / peak,
                    }
                )
            by = {r["row"]: r for r in rows}
            ratios = {
                "population_vs_loop": by["loop"]["median_ms"] / by["population"]["median_ms"],
                "generator_vs_loop": by["generator_loop"]["median_ms"]
                / by["generator"]["median_ms"],
                "population_vs_autograd": by["population_autograd"]["median_ms"]
                / by["population"]["median_ms"],
                "generator_vs_autograd": by["generator_autograd"]["median_ms"]
                / by["generator"]["median_ms"],
            }
            if "hypnettorch" in by:
                ratios["hypnettorch_vs_generator"] = (
                    by["hypnettorch"]["median_ms"] / by["generator"]["median_ms"]
                )
            result["runs"].append(
                {"threads": th, "peak_gflops": peak / 1e9, "rows": rows, "ratios": ratios}
            )
            if not quiet:
                print(f"\n{th} thread(s), matmul peak {peak / 1e9:.1f} GFLOP/s")
                print(f"{'row':<20}{'median ms':>10}{'min-max ms':>16}{'MFLOP':>9}{'% peak':>8}")
                for r in rows:
                    print(
                        f"{r['row']:<20}{r['median_ms']:>10.2f}"
                        f"{r['min_ms']:>8.2f}-{r['max_ms']:<7.2f}"
                        f"{r['matmul_flops'] / 1e6:>9.1f}{r['pct_of_peak']:>8.1f}"
                    )
                print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
            if save is not None:  # after each thread count, so a cut run keeps its rows
                save(result)
    finally:
        torch.set_num_threads(before)
    if not quiet:
        print(
            f"\nload average {result['load_average']}, hypnettorch max |diff| "
            f"{result['hypnettorch_max_abs_diff']}"
        )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    out = Path(__file__).parent / "results" / "growth.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    run(threads, save=lambda r: out.write_text(json.dumps(r, indent=2) + "\n"))


if __name__ == "__main__":
    main()
