"""Population engine against what a user writes instead, as shares of the machine's matmul peak.

Every row trains the same members on the same batches with four methods, each timed in the
same subprocess in interleaved rounds (so all see the same machine load):

- ``loop``: one ``nn.Module`` + one ``torch.optim`` optimizer per member (PyTorch's default
  implementation), members stepped in turn;
- ``loop-fused``: the same with ``fused=True`` (the strongest plain baseline);
- ``vmap``: the ``torch.func`` ensemble a user writes (``stack_module_state`` +
  ``vmap(functional_call)`` + one fused optimizer over the stacked parameters);
- ``population``: :class:`weightlab.population.Population`'s engine (training steps only:
  batch gather, forward, backward, optimizer update).

Loops are timed on the same ``LOOP_MEMBERS`` members at every N (their cost per
member-step does not depend on N) and reported per member-step. Each method reports the
median rate over rounds and the spread (min-max), and its share of peak: executed matmul
FLOPs (:func:`weightlab.population.useful_matmul_flops`: forward, input-gradient except for
the first layer, weight-gradient; padding never counts) per second over the fp32 2048x2048 ``torch.mm`` rate measured in the same worker,
once per round between the methods (the best of the rounds; a peak taken once at the start
of a run would not see the load the later rows ran under). Ratios use the faster loop.

Rows ``mixed-small`` and ``mixed-lottery`` ("mixed-lr (8 lrs vs 1)", issue 24) time the
population engine alone, as :meth:`Population.fit` builds it (members in config blocks,
:func:`weightlab.population.optim.config_blocks`): N = 64 members with one Adam setting
(lr 1e-3; the lottery shape with random masks at density 0.5 on every weight matrix)
against the same members with 8 learning rates ``2.5e-4 * 2^k`` (k = 0..7), in
blocks (members 8k..8k+7 share lr k) and interleaved (member i has lr i % 8; also, for
reference, without config blocks: one view per member and parameter), at 1 thread
and at the process's thread count, in interleaved rounds (each round alternates the
methods in 40 short slices). Each round's ratio is mixed / single member-steps/s;
reported: median and range over the rounds (3 by default), against must >= 0.9x and goal
>= 0.97x.

    .venv/bin/python bench/population.py [--rows small,lottery] [--rounds 5] [--quick]

The results file keeps the entries of rows not run this time (rows run replace theirs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

RESULTS = Path(__file__).parent / "results" / "population.json"
LOOP_MEMBERS = 8
SWEEP_WIDTHS = (64, 128, 256, 512, 1024)
# mixed-lr rows: 8 learning rates against one (issue 24, Performance)
MIXED_LRS = tuple(2.5e-4 * 2**k for k in range(8))
MIXED_SINGLE_LR = 1e-3
MIXED_MUST, MIXED_GOAL = 0.9, 0.97
MIXED_ROUNDS = 3
MIXED_SECONDS = 2.0  # target time of one method in one round (quick: a fifth)
MIXED_SLICES = 40  # slices per round, the methods interleaved in each
# "interleaved-unsorted": the interleaved members on their own positions (no config_blocks),
# reported for reference (one view per member and parameter), no must/goal
MIXED_ORDERS = ("single", "blocks", "interleaved", "interleaved-unsorted")

# name: (kind, architecture, batch size, members, optimizer setting)
ROWS: dict[str, dict] = {
    "small": {"kind": "mlp", "widths": [40, 100, 100, 10], "batch": 32, "n": 64},
    "lottery": {"kind": "mlp", "widths": [40, 300, 100, 10], "batch": 60, "n": 64},
    "lottery-sched": {
        "kind": "mlp",
        "widths": [40, 300, 100, 10],
        "batch": 60,
        "n": 64,
        "optim": "adamw-cosine-groups",
    },
    "wide": {"kind": "mlp", "widths": [40, 256, 256, 10], "batch": 128, "n": 256},
    "cnn1d": {"kind": "cnn1d", "batch": 60, "n": 64},
    "siren": {"kind": "siren", "widths": [1, 256, 256, 1], "batch": 1024, "n": 16},
    "sweep": {"kind": "sweep", "widths": list(SWEEP_WIDTHS), "batch": 60, "n": 60},
    "mixed-small": {
        "kind": "mixed",
        "title": "mixed-lr (8 lrs vs 1), small shape",
        "widths": [40, 100, 100, 10],
        "batch": 32,
        "n": 64,
    },
    "mixed-lottery": {
        "kind": "mixed",
        "title": "mixed-lr (8 lrs vs 1), lottery shape",
        "widths": [40, 300, 100, 10],
        "batch": 60,
        "n": 64,
        "density": 0.5,  # random masks on every weight matrix, as a pruned lottery round
    },
}


# -- FLOPs and peak ------------------------------------------------------------------------
def peak_flops(device: str, size: int = 2048, seconds: float = 1.5) -> float:
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


# -- the work of one row -------------------------------------------------------------------
class Row:
    """Members, data, loss and optimizer settings of one benchmark row."""

    def __init__(self, name: str, device: str) -> None:
        from weightlab.models import CNN1D, MLP, model_factory
        from weightlab.models.siren import siren_factory

        spec = ROWS[name]
        self.name, self.device, self.spec = name, device, spec
        self.batch, self.n = spec["batch"], spec["n"]
        kind = spec["kind"]
        if kind in ("mlp", "cnn1d", "sweep", "mixed"):
            from weightlab.data import load_dataset

            data = load_dataset("mnist1d", device)
            self.x, self.y = data.train.x, data.train.y
            self.regression = False
        else:  # SIREN: a 1-D signal on 1,024 points, full batch
            g = torch.Generator().manual_seed(0)
            t = torch.linspace(-1, 1, spec["batch"]).unsqueeze(1)
            self.x = t.to(device)
            self.y = (torch.sin(12 * t) + 0.3 * torch.randn(t.shape, generator=g)).to(device)
            self.regression = True
        if kind in ("mlp", "mixed"):
            self.factories = {"": model_factory(MLP, spec["widths"])}
        elif kind == "cnn1d":
            self.factories = {"": model_factory(CNN1D, channels=(32, 32), kernel=5, batchnorm=True)}
        elif kind == "siren":  # weightlab's SIREN (sin(ω0 (Wx + b)), paper init), as users train it
            self.factories = {"": siren_factory(spec["widths"])}
        else:
            self.factories = {f"w{w}": model_factory(MLP, [40, w, w, 10]) for w in spec["widths"]}
        per = self.n // len(self.factories)
        self.members = [(key, s) for key in self.factories for s in range(per)]
        # executed matmul FLOPs per member-step, counted one way for every row
        # (weightlab.population.useful_matmul_flops)
        if kind == "sweep":  # the user's path: Population.sweep, FLOPs from its useful_flops
            from weightlab.population import MemberSpec, Population

            self.sweep = Population.sweep(
                self.factories,
                [(k, MemberSpec(seed=s, optim=self.optim_config())) for k, s in self.members],
                device=device,
            )
            self.flops = self.sweep.useful_flops(self.x, self.batch)
        else:
            from weightlab.population import useful_matmul_flops

            rows = self.x[: self.batch].cpu()
            self.flops = {key: useful_matmul_flops(f(0), rows) for key, f in self.factories.items()}
        self.order = torch.stack(
            [
                torch.randperm(len(self.x), generator=torch.Generator().manual_seed(i))[
                    : self.batch
                ]
                for i in range(64)
            ]
        ).to(device)

    @property
    def flops_per_member_step(self) -> float:
        return sum(self.flops[k] for k, _ in self.members) / len(self.members)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out, y) if self.regression else F.cross_entropy(out, y)

    def optim_config(self):
        from weightlab.train import OptimConfig, ParamGroup, Schedule

        if self.spec.get("optim") == "adamw-cosine-groups":
            return OptimConfig(
                "adamw",
                lr=1e-3,
                weight_decay=0.01,
                groups=(
                    ParamGroup(("layers.2.*",), lr_mult=0.5),
                    ParamGroup(("*.bias",), wd_mult=0),
                ),
                schedule=Schedule("cosine", warmup_steps=10),
            )
        return OptimConfig("adam", lr=1e-3)

    def torch_optimizer(self, named: dict[str, torch.Tensor], fused: bool) -> torch.optim.Optimizer:
        """The plain-PyTorch optimizer (and LR schedule, as ``opt.schedule``) equal to
        :meth:`optim_config`, over ``named`` parameters (plain names; stacked or not)."""
        cfg = self.optim_config()
        kw = {"fused": True} if fused else {}
        if cfg.name == "adam":
            return torch.optim.Adam(list(named.values()), lr=cfg.lr, **kw)
        last = [p for n, p in named.items() if n.startswith("layers.2.")]
        bias = [
            p for n, p in named.items() if n.endswith(".bias") and not n.startswith("layers.2.")
        ]
        rest = [
            p for n, p in named.items() if not n.startswith("layers.2.") and not n.endswith(".bias")
        ]
        groups = [
            {"params": last, "lr": cfg.lr * 0.5},
            {"params": bias, "weight_decay": 0.0},
            {"params": rest},
        ]
        opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **kw)
        total = 10_000
        opt.schedule = torch.optim.lr_scheduler.LambdaLR(  # type: ignore[attr-defined]
            opt, lambda s: cfg.schedule.factor(s % total, total)
        )
        return opt


def loop_runner(row: Row, fused: bool):
    """One module + one optimizer per member, stepped in turn (the user's plain loop)."""
    picked = _loop_members(row)
    models = [row.factories[k](s).to(row.device) for k, s in picked]
    opts = [row.torch_optimizer(dict(m.named_parameters()), fused) for m in models]
    pos = [0]

    def run(k: int) -> None:
        for _ in range(k):
            idx = row.order[pos[0] % row.order.shape[0]]
            pos[0] += 1
            xb, yb = row.x[idx], row.y[idx]
            for m, o in zip(models, opts, strict=True):
                loss = row.loss(m(xb), yb)
                o.zero_grad(set_to_none=True)
                loss.backward()
                o.step()
                if hasattr(o, "schedule"):
                    o.schedule.step()

    flops = sum(row.flops[k] for k, _ in picked) / len(picked)
    return run, len(picked), flops


def _loop_members(row: Row) -> list[tuple[str, int]]:
    """The same members at every N: up to LOOP_MEMBERS, spread over the row's architectures."""
    keys = list(row.factories)
    per = max(1, LOOP_MEMBERS // len(keys))
    return [(k, s) for k in keys for s in range(per)]


def vmap_runner(row: Row):
    """``torch.func`` ensemble per architecture: stacked parameters, one fused optimizer."""
    from torch.func import functional_call, stack_module_state, vmap

    groups = []
    for key, f in row.factories.items():
        models = [f(s).to(row.device) for k, s in row.members if k == key]
        params, buffers = stack_module_state(models)
        base = f(0).to("meta")
        opt = row.torch_optimizer(params, fused=True)

        def member_loss(p, b, xb, yb, base=base):
            return row.loss(functional_call(base, (p, b), (xb,)), yb)

        groups.append((params, buffers, opt, vmap(member_loss, in_dims=(0, 0, None, None))))
    pos = [0]

    def run(k: int) -> None:
        for _ in range(k):
            idx = row.order[pos[0] % row.order.shape[0]]
            pos[0] += 1
            xb, yb = row.x[idx], row.y[idx]
            for params, buffers, opt, fn in groups:
                loss = fn(params, buffers, xb, yb).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if hasattr(opt, "schedule"):
                    opt.schedule.step()

    return run


def population_runner(row: Row):
    """The population engine's training step for every bucket (no evaluation)."""
    from weightlab.population import MemberSpec, Population
    from weightlab.population.loss import EngineLoss
    from weightlab.train.groups import resolve_groups

    optim = row.optim_config()
    kind = "regression" if row.regression else "classification"
    loss = EngineLoss.resolve("auto", kind, tuple(row.y.shape[1:]) if row.regression else ())
    if hasattr(row, "sweep"):
        pops = [b.population for b in row.sweep.buckets]
    else:
        pops = []
        for key, f in row.factories.items():
            specs = [MemberSpec(seed=s, optim=optim) for k, s in row.members if k == key]
            pops.append(Population(f, specs, row.device))
    engines, fast = [], []
    for pop in pops:
        # as Population.fit sets an engine up: measured shapes, resolved groups, run length
        pop._measure(_task(row))
        chunks = pop._chunks(row.batch)
        assert len(chunks) == 1, f"{row.name}: benchmark expects one chunk, got {len(chunks)}"
        mults = {optim: resolve_groups(pop._param_names, optim.groups, pop.template)}
        kw = {"total_steps": 10_000, "multipliers": mults if optim.groups else {}}
        engines.append(pop._engine(chunks[0], [optim] * len(pop.specs), loss, kw))
        fast.append(pop._is_fast())
    row.engine_types = sorted({type(e).__name__ for e in engines})
    if optim.groups:  # the grouped path really runs: one fused call per parameter group
        assert all(len(e.opt._calls) > 1 for e in engines), "groups did not reach the optimizer"
    x_fast = row.x.flatten(1) if row.x.dim() > 2 else row.x
    pos = [0]

    def run(k: int) -> None:
        for _ in range(k):
            idx = row.order[pos[0] % row.order.shape[0]]
            pos[0] += 1
            for e, f in zip(engines, fast, strict=True):
                e.train_step((x_fast if f else row.x)[idx], row.y[idx])

    return run


def _task(row: Row):
    """A TaskData around the row's training inputs (what ``Population._measure`` reads)."""
    from weightlab.data.task import Split, TaskData

    split = Split(row.x, row.y)
    if row.regression:
        return TaskData(row.name, split, split, split, 0, "regression")
    return TaskData(row.name, split, split, split, 10)


def mixed_runner(row: Row, order: str):
    """The population engine's training step for ``row.n`` Adam members: one lr
    (``single``) or :data:`MIXED_LRS` in ``blocks`` or ``interleaved`` member order, the
    engine's positions in config blocks as :meth:`Population.fit` builds them."""
    from weightlab.population import MemberSpec, Population
    from weightlab.population.loss import EngineLoss
    from weightlab.population.optim import config_blocks
    from weightlab.seeding import derive_seed, generator
    from weightlab.train import OptimConfig

    n, k = row.n, len(MIXED_LRS)
    lrs = {
        "single": [MIXED_SINGLE_LR] * n,
        "blocks": [MIXED_LRS[i * k // n] for i in range(n)],
        "interleaved": [MIXED_LRS[i % k] for i in range(n)],
        "interleaved-unsorted": [MIXED_LRS[i % k] for i in range(n)],
    }[order]
    widths, density = row.spec["widths"], row.spec.get("density")
    specs = []
    for i in range(n):
        masks = None
        if density is not None:
            masks = {
                f"layers.{j}.weight": (
                    torch.rand(
                        widths[j + 1], widths[j], generator=generator(derive_seed("mask", i, j))
                    )
                    < density
                ).float()
                for j in range(len(widths) - 1)
            }
        specs.append(MemberSpec(seed=i, optim=OptimConfig("adam", lr=lrs[i]), masks=masks))
    pop = Population(row.factories[""], specs, row.device)
    pop._measure(_task(row))
    chunks = pop._chunks(row.batch)
    assert len(chunks) == 1, f"{row.name}: benchmark expects one chunk, got {len(chunks)}"
    optims = [s.optim for s in specs]
    members = chunks[0]
    if order != "interleaved-unsorted":
        members = [members[p] for p in config_blocks([optims[i] for i in members])]
    loss = EngineLoss.resolve("auto", "classification", ())
    engine = pop._engine(members, [optims[i] for i in members], loss, {"total_steps": 10_000})
    views = sum(len(c.params) for c in engine.opt._calls)
    pos = [0]

    def run(steps: int) -> None:
        for _ in range(steps):
            idx = row.order[pos[0] % row.order.shape[0]]
            pos[0] += 1
            engine.train_step(row.x[idx], row.y[idx])

    return run, views


def mixed_worker(name: str, device: str, rounds: int, quick: bool) -> dict:
    """Member-steps/s of one lr against 8 (both orders), at 1 thread and at the process's
    thread count. A round gives every method about :data:`MIXED_SECONDS`, in
    :data:`MIXED_SLICES` slices: each slice runs every method for a few steps, in an order
    that rotates, so slow drifts of the machine's load hit all methods alike."""
    row = Row(name, device)
    made = {o: mixed_runner(row, o) for o in MIXED_ORDERS}
    runners = {o: r for o, (r, _) in made.items()}
    threads = sorted({1, torch.get_num_threads()})
    target = MIXED_SECONDS / MIXED_SLICES / (5 if quick else 1)
    steps = {}
    for t in threads:  # warm up and size each slice to about `target` seconds per method
        torch.set_num_threads(t)
        for run in runners.values():
            run(3)
        _sync(device)
        start = time.perf_counter()
        runners["single"](5)
        _sync(device)
        steps[t] = max(1, round(target * 5 / (time.perf_counter() - start)))
    rates = {t: {o: [] for o in runners} for t in threads}
    for _ in range(rounds):
        for t in threads:
            torch.set_num_threads(t)
            spent = dict.fromkeys(runners, 0.0)
            for s in range(MIXED_SLICES):
                k = s % len(MIXED_ORDERS)
                for o in MIXED_ORDERS[k:] + MIXED_ORDERS[:k]:
                    _sync(device)
                    start = time.perf_counter()
                    runners[o](steps[t])
                    _sync(device)
                    spent[o] += time.perf_counter() - start
            for o, sec in spent.items():
                rates[t][o].append(row.n * steps[t] * MIXED_SLICES / sec)
    return {
        "rates": {str(t): v for t, v in rates.items()},
        "steps": {str(t): v * MIXED_SLICES for t, v in steps.items()},
        "optimizer_views": {o: v for o, (_, v) in made.items()},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def report_mixed(name: str, r: dict) -> dict:
    """Print a mixed-lr row (ratio median and range per thread count and order, must and
    goal) and return its results entry."""
    spec = ROWS[name]
    entry = {"row": name, **spec, "must": MIXED_MUST, "goal": MIXED_GOAL, "threads": {}}
    entry.update(optimizer_views=r["optimizer_views"], peak_rss_mib=r["peak_rss_mib"])
    for t, rates in r["rates"].items():
        single = rates["single"]
        entry["threads"][t] = {"steps_per_round": r["steps"][t], "single": {"rounds": single}}
        entry["threads"][t]["single"]["median"] = statistics.median(single)
        for o in MIXED_ORDERS[1:]:
            ratios = [m / s for m, s in zip(rates[o], single, strict=True)]
            med = statistics.median(ratios)
            if o == "interleaved-unsorted":  # reference only: what config_blocks avoids
                verdict = "reference (no config blocks)"
            elif med >= MIXED_GOAL:
                verdict = f"goal >= {MIXED_GOAL}x met"
            elif med >= MIXED_MUST:
                verdict = f"must >= {MIXED_MUST}x met, goal >= {MIXED_GOAL}x not"
            else:
                verdict = f"MUST >= {MIXED_MUST}x NOT MET"
            entry["threads"][t][o] = {
                "rounds": rates[o],
                "median": statistics.median(rates[o]),
                "ratios": ratios,
                "ratio_median": med,
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "verdict": verdict,
            }
            print(
                f"{spec['title']:38} N {spec['n']} threads {t}: {o:20} "
                f"{med:.3f}x ({min(ratios):.3f}-{max(ratios):.3f}) of one lr's "
                f"{statistics.median(single):.0f} member-steps/s: {verdict}",
                flush=True,
            )
    views = ", ".join(f"{o} {v}" for o, v in r["optimizer_views"].items())
    print(f"{'':38} optimizer views per step: {views}; load average {os.getloadavg()[0]:.2f}")
    entry["load_average"] = os.getloadavg()[0]
    return entry


# -- measurement ---------------------------------------------------------------------------
def worker(name: str, device: str, rounds: int, quick: bool) -> dict:
    if ROWS[name]["kind"] == "mixed":
        return mixed_worker(name, device, rounds, quick)
    row = Row(name, device)
    loop, timed, loop_flops = loop_runner(row, fused=False)
    loop_f, _, _ = loop_runner(row, fused=True)
    runners = {"loop": loop, "loop-fused": loop_f, "vmap": vmap_runner(row)}
    runners["population"] = population_runner(row)
    work = {"loop": timed, "loop-fused": timed, "vmap": row.n, "population": row.n}
    flops = {"loop": loop_flops, "loop-fused": loop_flops}
    flops.update(vmap=row.flops_per_member_step, population=row.flops_per_member_step)
    budget = 3e8 if quick else 2e9  # matmul FLOPs per timed round and method
    steps = {m: int(max(2, min(200, budget // (work[m] * flops[m])))) for m in runners}
    for run in runners.values():
        run(2)
    rates: dict[str, list[float]] = {m: [] for m in runners}
    peaks: list[float] = []
    for _ in range(rounds):
        # the peak in every round, between the methods, so it sees the same machine load
        peaks.append(peak_flops(device, seconds=0.4))
        for m, run in runners.items():
            _sync(device)
            t = time.perf_counter()
            run(steps[m])
            _sync(device)
            rates[m].append(work[m] * steps[m] / (time.perf_counter() - t))
    return {
        "rates": rates,
        "peaks": peaks,
        "flops_per_member_step": flops,
        "steps": steps,
        "loop_members_timed": timed,
        "population_engines": row.engine_types,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _spawn(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _merge(path: Path, entries: list[dict]) -> list[dict]:
    """The results file's entries with ``entries`` replacing those of the same rows, in
    :data:`ROWS` order (rows not run this time keep their last results)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = []
    by_row = {e["row"]: e for e in old if isinstance(e, dict) and e.get("row") in ROWS}
    by_row.update({e["row"]: e for e in entries})
    return [by_row[r] for r in ROWS if r in by_row]


def _atomic_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)}")
    p.add_argument(
        "--rounds", type=int, default=None, help=f"default 5 ({MIXED_ROUNDS} for mixed rows)"
    )
    p.add_argument("--quick", action="store_true", help="fewer steps per round (smoke check)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--worker", nargs=4, metavar=("ROW", "DEVICE", "ROUNDS", "QUICK"))
    a = p.parse_args()
    if a.worker:
        name, device, rounds, quick = a.worker
        print(json.dumps(worker(name, device, int(rounds), quick == "1")))
        return
    rows = a.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        sys.exit(f"population bench: error: unknown row(s) {unknown}; choose from {list(ROWS)}")
    peak = peak_flops(a.device)
    print(
        f"device {a.device}, {torch.get_num_threads()} threads, fp32 2048^2 mm peak at start "
        f"{peak / 1e9:.1f} GFLOP/s (each row uses its own, measured in its rounds), "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    engine_rows = [r for r in rows if ROWS[r]["kind"] != "mixed"]
    if engine_rows:
        print(
            f"{'row':14} {'N':>4} {'method':11} {'member-steps/s (median, min-max)':>34} "
            f"{'% peak':>7} {'vs loop':>8}"
        )
    out = []
    for name in rows:
        mixed = ROWS[name]["kind"] == "mixed"
        rounds = a.rounds or (MIXED_ROUNDS if mixed else 5)
        r = _spawn([name, a.device, str(rounds), "1" if a.quick else "0"])
        if mixed:
            out.append(report_mixed(name, r))
            continue
        med = {m: statistics.median(v) for m, v in r["rates"].items()}
        peak = max(r["peaks"])  # best mm rate seen while this row ran
        best_loop = max(med["loop"], med["loop-fused"])
        entry = {"row": name, **ROWS[name], "peak_flops": peak, "methods": {}}
        entry["peak_rounds"] = r["peaks"]
        for m, v in r["rates"].items():
            share = med[m] * r["flops_per_member_step"][m] / peak
            entry["methods"][m] = {
                "median": med[m],
                "min": min(v),
                "max": max(v),
                "rounds": v,
                "share_of_peak": share,
                "vs_best_loop": med[m] / best_loop,
            }
            print(
                f"{name:14} {ROWS[name]['n']:>4} {m:11} {med[m]:>12.0f} ({min(v):>8.0f}-{max(v):>8.0f})"
                f"      {100 * share:>6.1f}% {med[m] / best_loop:>7.2f}x",
                flush=True,
            )
        pop = entry["methods"]["population"]
        entry["population_vs_vmap"] = pop["median"] / entry["methods"]["vmap"]["median"]
        entry["loop_members_timed"] = r["loop_members_timed"]
        entry["population_engines"] = r["population_engines"]
        entry["peak_rss_mib"] = r["peak_rss_mib"]
        entry["load_average"] = os.getloadavg()[0]
        print(
            f"{'':14} peak {peak / 1e9:.1f} GFLOP/s (best of rounds), load average "
            f"{os.getloadavg()[0]:.2f}; population / vmap ensemble: "
            f"{entry['population_vs_vmap']:.2f}x "
            f"(engine {', '.join(r['population_engines'])})",
            flush=True,
        )
        out.append(entry)
    if engine_rows:
        print(f"loops time {LOOP_MEMBERS} members at every N; rates are per member-step")
    _atomic_json(Path(a.out), _merge(Path(a.out), out))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
