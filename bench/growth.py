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
- ``population_bare``: the ``population`` row's arithmetic as bare torch ops (no autograd,
  buffers allocated once, gradients checked equal to the fused path's to 1e-4 relative): a
  reference for what any Python-level path reaches on the machine, not a weightlab path;
- ``hypnettorch``: hypnettorch 0.0.4's ``ChunkedHMLP(..., num_cond_embs=64)`` batched
  ``forward(cond_id=range(64))`` with the same weights, same loss (skipped if not installed).

Each row reports the median of ``ROUNDS`` timings (each ``REPS`` repetitions; the rounds
interleave the rows and the peak samples, so a drifting host moves them alike), its matmul
FLOPs as executed (``torch.utils.flop_counter``; the fused path's split first layer does
45 MFLOP less than the autograd path for the same result) and its share of the machine's
fp32 matmul peak at the same thread count. The peak is the project's anchor definition
(best-of 2048×2048 ``torch.mm``, as in ``bench/population.py``); the share of the
best-of 1024×1024 rate (this bench's peak before 2026-11-27) is printed beside it
(``pct_of_peak_1024``; with interleaved best-of samples the two peaks agreed within
1–12% here; the 1024² rate was higher in four of five). Ratios are printed against the loop. Run:
``.venv/bin/python bench/growth.py [--threads 1,2]``; numbers go to
``bench/results/growth.json`` (a run replaces its thread counts' entries and keeps the
others). Run it on an idle machine: other load inflates every side
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
from weightlab.runs.files import atomic_write_text
from weightlab.seeding import generator

N_TARGETS = 64
BATCH = 32
ROUNDS = 7
REPS = 5
WIDTHS = [64, 64, 64, 2]
ANCHOR_PEAK_SIZE = 2048  # the physical limit as the project's anchors define it
PEAK_SECONDS = {2048: 0.4, 1024: 0.2}  # per round; the peak is the best over all rounds


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
        self.y_all = self.y.repeat(N_TARGETS)  # the population's labels, built once

    def population(self) -> None:
        out = generate_population(self.hnet, self.target, self.z, self.x)  # (N, B, 2)
        F.cross_entropy(out.reshape(-1, 2), self.y_all, reduction="sum").backward()

    def population_autograd(self) -> None:
        params = generated_params(
            None, self.target, self.z, outputs=self.hnet.forward_autograd(self.z)
        )
        out = vmap(lambda p: functional_call(self.target, p, (self.x,)))(params)
        F.cross_entropy(out.reshape(-1, 2), self.y_all, reduction="sum").backward()

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


class BarePopulation:
    """The ``population`` row's arithmetic as bare torch ops: no autograd, the large
    buffers allocated once and reused (``out=``), the generator's gradients written into
    buffers of their own (:func:`check_bare` checks them against the fused path's ``.grad``).
    A reference for what any Python-level path can reach on this machine, not a weightlab
    code path."""

    def __init__(self, setup: Setup) -> None:
        h = setup.hnet
        self.setup = setup
        self.ws = [layer.weight.detach() for layer in h.layers]
        self.bs = [layer.bias.detach() for layer in h.layers]
        self.ce = h.chunk_embs.detach()
        self.scale = h.scale
        self.z = setup.z
        self.c = self.ce.shape[1]
        n, k = self.z.shape[0], self.ce.shape[0]
        hid, chunk = self.ws[1].shape[0], self.ws[-1].shape[0]
        self.dims = [(WIDTHS[i + 1], WIDTHS[i]) for i in range(len(WIDTHS) - 1)]
        self.p = sum(a * (b + 1) for a, b in self.dims)
        self.n, self.k, self.chunk = n, k, chunk
        e = torch.empty
        self.h1, self.h2 = e(n * k, self.ws[0].shape[0]), e(n * k, hid)
        self.out = e(n * k, chunk)
        self.gout = e(n, k * chunk)
        self.gh2, self.gh1 = e(n * k, hid), e(n * k, self.ws[0].shape[0])
        self.t = [e(n, BATCH, a) for a, _ in self.dims]
        self.gt = [e(n, BATCH, a) for a, _ in self.dims]
        self.onehot = F.one_hot(setup.y, WIDTHS[-1]).to(torch.float32)
        self.grads = [torch.zeros_like(p) for p in (*self.ws, *self.bs, self.ce)]

    def run(self) -> None:
        ws, bs, n, k, s, c = self.ws, self.bs, self.n, self.k, self.scale, self.c
        x = self.setup.x
        # generator forward: split first layer, then two matmuls
        a = torch.mm(self.ce, ws[0][:, :c].T)  # (K, H)
        b = torch.addmm(bs[0], self.z, ws[0][:, c:].T)  # (N, H)
        h1 = self.h1.view(n, k, -1)
        torch.add(a.unsqueeze(0), b.unsqueeze(1), out=h1).relu_()
        torch.addmm(bs[1], self.h1, ws[1].T, out=self.h2).relu_()
        torch.addmm(bs[2], self.h2, ws[2].T, beta=s, alpha=s, out=self.out)
        flat = self.out.view(n, k * self.chunk)[:, : self.p]
        # targets forward
        hs, o = [x.expand(n, -1, -1)], 0
        views = []
        for i, (fo, fi) in enumerate(self.dims):
            w = flat[:, o : o + fo * fi].view(n, fo, fi)
            bias = flat[:, o + fo * fi : o + fo * (fi + 1)]
            views.append((o, w))
            o += fo * (fi + 1)
            torch.baddbmm(bias.unsqueeze(1), hs[-1], w.mT, out=self.t[i])
            if i < len(self.dims) - 1:
                hs.append(self.t[i].relu_())
        # cross-entropy (sum) gradient: softmax - onehot
        g = torch.softmax(self.t[-1], -1, out=self.gt[-1]).sub_(self.onehot)
        gflat = self.gout.view(n, k * self.chunk)
        gflat[:, self.p :].zero_()
        for i in range(len(self.dims) - 1, -1, -1):
            (o, w), (fo, fi) = views[i], self.dims[i]
            torch.sum(g, 1, out=gflat[:, o + fo * fi : o + fo * (fi + 1)])
            gflat[:, o : o + fo * fi].view(n, fo, fi).copy_(torch.bmm(g.mT, hs[i]))
            if i > 0:
                gi = torch.bmm(g, w, out=self.gt[i - 1])
                g = torch.ops.aten.threshold_backward.grad_input(gi, hs[i], 0.0, grad_input=gi)
        # generator backward
        gW, gb = self.grads[:3], self.grads[3:6]
        go = self.gout.view(n * k, self.chunk)
        torch.mm(go.T, self.h2, out=gW[2]).mul_(s)
        torch.sum(go, 0, out=gb[2]).mul_(s)
        torch.mm(go, ws[2], out=self.gh2).mul_(s)
        torch.ops.aten.threshold_backward.grad_input(self.gh2, self.h2, 0.0, grad_input=self.gh2)
        torch.mm(self.gh2.T, self.h1, out=gW[1])
        torch.sum(self.gh2, 0, out=gb[1])
        torch.mm(self.gh2, ws[1], out=self.gh1)
        torch.ops.aten.threshold_backward.grad_input(self.gh1, self.h1, 0.0, grad_input=self.gh1)
        gpre = self.gh1.view(n, k, -1)
        g_chunk, g_cond = gpre.sum(0), gpre.sum(1)  # (K, H), (N, H)
        torch.mm(g_chunk.T, self.ce, out=gW[0][:, :c])
        torch.mm(g_cond.T, self.z, out=gW[0][:, c:])
        torch.sum(g_cond, 0, out=gb[0])
        torch.mm(g_chunk, ws[0][:, :c], out=self.grads[6])


def check_bare(setup: Setup, bare: BarePopulation) -> float:
    """Largest relative difference between the bare row's gradients and the fused path's
    (``population``): the two rows compute the same thing."""
    params = [*(m.weight for m in setup.hnet.layers), *(m.bias for m in setup.hnet.layers)]
    params.append(setup.hnet.chunk_embs)
    for p in params:
        p.grad = None
    setup.population()
    bare.run()
    worst = 0.0
    for p, g in zip(params, bare.grads, strict=True):
        worst = max(worst, float((p.grad - g).abs().max() / p.grad.abs().max()))
    for p in params:
        p.grad = None
    return worst


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


def _time_interleaved(fns: dict, peak_sizes: tuple[int, ...]) -> tuple[dict, dict]:
    """Each row's ``ROUNDS`` timings (mean of ``REPS`` calls each) and the peaks, taken in
    interleaved rounds: round r times every row once and samples every peak once, so a
    host that drifts between rounds moves all rows alike. Returns ``{row: (median, min,
    max)}`` in seconds and ``{size: best rate}`` in FLOP/s (best of the rounds' samples)."""
    for fn in fns.values():
        fn()  # warm-up: first-call allocations and imports outside the timings
    times: dict = {name: [] for name in fns}
    peaks: dict = {size: 0.0 for size in peak_sizes}
    for _ in range(ROUNDS):
        for size in peak_sizes:
            peaks[size] = max(peaks[size], peak_flops(size, seconds=PEAK_SECONDS[size]))
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(REPS):
                fn()
            times[name].append((time.perf_counter() - t) / REPS)
    stats = {k: (statistics.median(v), min(v), max(v)) for k, v in times.items()}
    return stats, peaks


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
    bare = BarePopulation(setup)
    bare_diff = check_bare(setup, bare)
    if bare_diff > 1e-4:
        raise SystemExit(f"population_bare differs from population by {bare_diff:.2e}")
    rows_fns["population_bare"] = bare.run
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
        "population_bare_max_rel_diff": bare_diff,
        "runs": [],
    }
    before = torch.get_num_threads()
    try:
        for th in threads:
            torch.set_num_threads(th)
            stats, peaks = _time_interleaved(rows_fns, (ANCHOR_PEAK_SIZE, 1024))
            peak, peak_1024 = peaks[ANCHOR_PEAK_SIZE], peaks[1024]
            rows = []
            for name in rows_fns:
                med, lo, hi = stats[name]
                rows.append(
                    {
                        "row": name,
                        "median_ms": 1e3 * med,
                        "min_ms": 1e3 * lo,
                        "max_ms": 1e3 * hi,
                        "matmul_flops": flops[name],
                        "pct_of_peak": 100 * flops[name] / med / peak,
                        "pct_of_peak_1024": 100 * flops[name] / med / peak_1024,
                    }
                )
            by = {r["row"]: r for r in rows}
            ratios = {
                "population_vs_loop": by["loop"]["median_ms"] / by["population"]["median_ms"],
                "generator_vs_loop": by["generator_loop"]["median_ms"]
                / by["generator"]["median_ms"],
                "population_vs_autograd": by["population_autograd"]["median_ms"]
                / by["population"]["median_ms"],
                "population_vs_bare": by["population_bare"]["median_ms"]
                / by["population"]["median_ms"],
                "generator_vs_autograd": by["generator_autograd"]["median_ms"]
                / by["generator"]["median_ms"],
            }
            if "hypnettorch" in by:
                ratios["hypnettorch_vs_generator"] = (
                    by["hypnettorch"]["median_ms"] / by["generator"]["median_ms"]
                )
            result["runs"].append(
                {
                    "threads": th,
                    "peak_gflops": peak / 1e9,
                    "peak_size": ANCHOR_PEAK_SIZE,
                    "peak_1024_gflops": peak_1024 / 1e9,
                    "rows": rows,
                    "ratios": ratios,
                }
            )
            if not quiet:
                print(
                    f"\n{th} thread(s), matmul peak {peak / 1e9:.1f} GFLOP/s "
                    f"({ANCHOR_PEAK_SIZE}²; 1024²: {peak_1024 / 1e9:.1f})"
                )
                print(
                    f"{'row':<20}{'median ms':>10}{'min-max ms':>16}{'MFLOP':>9}"
                    f"{'% peak':>8}{'% 1024²':>9}"
                )
                for r in rows:
                    print(
                        f"{r['row']:<20}{r['median_ms']:>10.2f}"
                        f"{r['min_ms']:>8.2f}-{r['max_ms']:<7.2f}"
                        f"{r['matmul_flops'] / 1e6:>9.1f}{r['pct_of_peak']:>8.1f}"
                        f"{r['pct_of_peak_1024']:>9.1f}"
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
    kept = json.loads(out.read_text()).get("runs", []) if out.exists() else []
    kept = [r for r in kept if r.get("threads") not in threads]

    def save(result: dict) -> None:
        """This run's thread counts replace theirs; the file keeps the others (each entry
        carries its own peak; the header's load average is this run's)."""
        merged = dict(result, runs=sorted(kept + result["runs"], key=lambda r: r["threads"]))
        atomic_write_text(out, json.dumps(merged, indent=2) + "\n")

    run(threads, save=save)


if __name__ == "__main__":
    main()
