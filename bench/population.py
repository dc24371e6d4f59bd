"""Population engine vs a plain sequential PyTorch loop, on MNIST-1D MLPs trained with Adam.

For each config and population size N it measures, each in its own subprocess (so peak RSS
belongs to that measurement alone):

Both are timed in the same subprocess in alternating rounds and the best round of each
is kept, so both see the same machine load (peak RSS includes the loop's <= 8 small models).

- ``loop``: one ``nn.Module`` + one ``torch.optim.Adam`` per member, stepping each member in
  turn on its batch. For large N only a subset of members (and steps) is timed and the rate
  extrapolated: a loop's cost per member-step does not depend on N (``loop_members_timed``
  says how many were timed).
- ``population``: :class:`weightlab.population.Population`'s engine, training steps only
  (batch gather + forward + backward + optimizer step), same data and batch order.

Also measured in the same run: the machine's fp32 matmul FLOP/s (2048x2048 matmuls), and the
engine's achieved fraction of it, counting ``3 x 2 x B x sum(in*out)`` FLOPs per member-step
(forward, input-gradient and weight-gradient matmuls).

    .venv/bin/python bench/population.py [--quick] [--device cpu] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

CONFIGS = {
    "small": ([40, 100, 100, 10], 32),
    "lottery": ([40, 300, 100, 10], 60),
    "wide": ([40, 256, 256, 10], 128),
}
SIZES = (1, 8, 64, 256)
RESULTS = Path(__file__).parent / "results" / "population.json"


def flops_per_member_step(widths: list[int], batch: int) -> int:
    return 3 * 2 * batch * sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))


def matmul_flops(device: str, size: int = 2048, seconds: float = 1.5) -> float:
    """Best-of fp32 ``size x size`` matmul rate in FLOP/s."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device)
    b = torch.randn(size, size, generator=g).to(device)
    out = torch.empty(size, size, device=device)
    for _ in range(2):
        torch.mm(a, b, out=out)
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _sync(device)
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        best = max(best, 2 * size**3 / (time.perf_counter() - t))
    return best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _data(device: str):
    from weightlab.data import load_dataset

    return load_dataset("mnist1d", device)


def _loop_runner(config: str, n: int, device: str, data):
    """A plain loop over at most 8 members (one ``nn.Module`` + one ``torch.optim.Adam``
    each); its cost per member-step does not depend on N, so larger N is extrapolated."""
    from weightlab.models import MLP, model_factory
    from weightlab.train import batch_indices

    widths, batch = CONFIGS[config]
    x, y = data.train.x, data.train.y
    timed = min(n, 8)
    factory = model_factory(MLP, widths)
    models = [factory(s).to(device) for s in range(timed)]
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
    order = batch_indices(len(data.train), batch, 1, 0).to(device)
    pos = [0]

    def run(k: int) -> None:
        for _ in range(k):
            idx = order[pos[0] % order.shape[0]]
            pos[0] += 1
            for m, o in zip(models, opts, strict=True):
                loss = F.cross_entropy(m(x[idx]), y[idx])
                o.zero_grad(set_to_none=True)
                loss.backward()
                o.step()

    return run, timed


def _population_runner(config: str, n: int, device: str, data):
    """The population engine's training step over all chunks (no evaluation)."""
    from weightlab.models import MLP, model_factory
    from weightlab.population import MemberSpec, Population
    from weightlab.train import OptimConfig, batch_indices

    widths, batch = CONFIGS[config]
    x, y = data.train.x, data.train.y
    pop = Population(model_factory(MLP, widths), [MemberSpec(seed=s) for s in range(n)], device)
    order = batch_indices(len(data.train), batch, 1, 0).to(device)
    optim = OptimConfig("adam", lr=1e-3)
    chunks = pop._chunks(batch)
    engines = [pop._engine(m, [optim] * len(m)) for m in chunks] if len(chunks) == 1 else None
    pos = [0]

    def run(k: int) -> None:
        for members in chunks:  # chunks train one after another, as in Population.fit
            engine = engines[0] if engines else pop._engine(members, [optim] * len(members))
            for s in range(k):
                idx = order[(pos[0] + s) % order.shape[0]]
                engine.train_step(x[idx], y[idx])
        pos[0] += k

    return run, {"chunks": len(chunks), "fast_path": pop._is_fast()}


def _best_rate(run, work: int, steps: int, rounds: int, device: str) -> float:
    best = 0.0
    for _ in range(rounds):
        _sync(device)
        t = time.perf_counter()
        run(steps)
        _sync(device)
        best = max(best, work * steps / (time.perf_counter() - t))
    return best


def worker(config: str, n: int, quick: bool, device: str) -> dict:
    """Loop and population timed in alternating rounds (best round of each), so both see
    the same machine load; the machine this was written on is shared with other jobs."""
    data = _data(device)
    loop, timed = _loop_runner(config, n, device, data)
    pop, info = _population_runner(config, n, device, data)
    loop(2)
    pop(2)
    rounds = 2 if quick else 5
    loop_steps = 3 if quick else 10
    pop_steps = _pop_steps(config, n, quick)
    lr, pr = 0.0, 0.0
    for _ in range(rounds):
        lr = max(lr, _best_rate(loop, timed, loop_steps, 1, device))
        pr = max(pr, _best_rate(pop, n, pop_steps, 1, device))
    return {
        "loop_rate": lr,
        "pop_rate": pr,
        "timed_members": timed,
        "loop_steps_timed": loop_steps * rounds,
        "pop_steps_timed": pop_steps * rounds,
        **info,
    }


def _pop_steps(config: str, n: int, quick: bool) -> int:
    work = n * flops_per_member_step(*CONFIGS[config])
    budget = 1e9 if quick else 4e9  # FLOPs of training per timed round
    return int(max(2, min(100, budget // work)))


def _spawn(args: list[str], threads: int | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", *args]
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _atomic_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _measure_all(a, sizes: list[int], threads_arg: int | None) -> list[dict]:
    if threads_arg:
        torch.set_num_threads(threads_arg)
    peak = matmul_flops(a.device)  # measured with the same thread count as the workers
    threads = threads_arg or torch.get_num_threads()
    print(f"device {a.device}, {threads} threads, fp32 2048^2 matmul: {peak / 1e9:.1f} GFLOP/s")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    rows = []
    head = f"{'config':8} {'N':>4} {'loop ms/s':>10} {'pop ms/s':>10} {'speedup':>8} {'matmul%':>8} {'RSS MiB':>8}"
    print(head)
    for config in a.configs.split(","):
        widths, batch = CONFIGS[config]
        for n in sizes:
            r = _spawn([config, str(n), "1" if a.quick else "0", a.device], threads_arg)
            frac = r["pop_rate"] * flops_per_member_step(widths, batch) / peak
            row = {
                "config": config,
                "widths": widths,
                "batch_size": batch,
                "n": n,
                "loop_member_steps_per_s": r["loop_rate"],
                "loop_members_timed": r["timed_members"],
                "loop_steps_timed": r["loop_steps_timed"],
                "population_member_steps_per_s": r["pop_rate"],
                "population_steps_timed": r["pop_steps_timed"],
                "speedup_vs_loop": r["pop_rate"] / r["loop_rate"],
                "matmul_fraction": frac,
                "matmul_peak_flops": peak,
                "peak_rss_mib": r["peak_rss_mib"],
                "chunks": r["chunks"],
                "fast_path": r["fast_path"],
                "device": a.device,
                "threads": threads,
                "load_average": os.getloadavg()[0],
            }
            rows.append(row)
            print(
                f"{config:8} {n:>4} {r['loop_rate']:>10.0f} {r['pop_rate']:>10.0f} "
                f"{row['speedup_vs_loop']:>7.1f}x {100 * frac:>7.1f}% {r['peak_rss_mib']:>8.0f}",
                flush=True,
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="few steps, sizes 1 and 64 only")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--threads", default=None, help="torch.set_num_threads; a comma list measures each"
    )
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--sizes", default=None)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--worker", nargs=4, metavar=("CONFIG", "N", "QUICK", "DEVICE"))
    a = p.parse_args()
    thread_list = [int(t) for t in a.threads.split(",")] if a.threads else [None]
    if a.worker:
        if thread_list[0]:
            torch.set_num_threads(thread_list[0])
        config, n, quick, device = a.worker
        res = worker(config, int(n), quick == "1", device)
        res["peak_rss_mib"] = _peak_rss_mib()
        print(json.dumps(res))
        return
    sizes = [int(s) for s in a.sizes.split(",")] if a.sizes else ([1, 64] if a.quick else SIZES)
    rows = []
    for t in thread_list:
        rows += _measure_all(a, sizes, t)
    print("loop rates time at most 8 members (loop_members_timed) and extrapolate per member-step")
    _atomic_json(Path(a.out), rows)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
