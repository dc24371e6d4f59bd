"""The measurement behind docs/scaling.md: 200 zoo-shaped members (MLP 40-100-100-10 on
MNIST-1D, SGD lr 0.1, batch 32, one epoch) on a private local Ray cluster of 2 CPUs, three
ways, interleaved, median and min-max of ``ROUNDS`` rounds:

- ``8 tasks of 25``: 8 Ray tasks (1 CPU each), each building its own data and training its
  25 members as one population (what a sweep's batch groups do);
- ``200 tasks of 1``: one task per member;
- ``one population``: the 200 members as one population in the driver (1 thread).

Each task builds its data locally (never through Ray's object store) and returns only
numbers. Also printed: member-steps/s of each way, the cost of an empty task (worker start
included on first use). Run: ``.venv/bin/python bench/sweep_ray.py``; numbers go to
``bench/results/sweep_ray.json``. Needs the ``ray`` extra.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

ROUNDS = 3
MEMBERS = 200
WIDTHS = [40, 100, 100, 10]
EPOCHS = 1
BATCH = 32


def train_members_block(seeds: list[int]) -> int:
    """Train ``seeds`` as one population on freshly built data; return member-steps."""
    import torch

    from weightlab.data import load_dataset
    from weightlab.models import MLP, model_factory
    from weightlab.population import MemberSpec, Population
    from weightlab.train import OptimConfig, TrainConfig

    torch.set_num_threads(1)
    data = load_dataset("mnist1d", "cpu")
    pop = Population(model_factory(MLP, WIDTHS), [MemberSpec(seed=s) for s in seeds])
    pop.fit(data, TrainConfig(EPOCHS, BATCH, 0, OptimConfig("sgd", lr=0.1)))
    return len(seeds) * (len(data.train) // BATCH) * EPOCHS


def main() -> None:
    import ray

    t0 = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
    )
    start_s = time.perf_counter() - t0
    remote = ray.remote(num_cpus=1, max_retries=0)(train_members_block)
    empty = ray.remote(num_cpus=1)(lambda: 0)
    t0 = time.perf_counter()
    ray.get([empty.remote() for _ in range(2)])
    first_empty_s = time.perf_counter() - t0
    seeds = list(range(MEMBERS))
    ways = {
        "8 tasks of 25": lambda: sum(
            ray.get([remote.remote(seeds[i : i + 25]) for i in range(0, MEMBERS, 25)])
        ),
        "200 tasks of 1": lambda: sum(ray.get([remote.remote([s]) for s in seeds])),
        "one population": lambda: train_members_block(seeds),
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    steps: dict[str, int] = {}
    for _ in range(ROUNDS):
        for k, fn in ways.items():
            t0 = time.perf_counter()
            steps[k] = fn()
            times[k].append(time.perf_counter() - t0)
    ray.shutdown()
    res = {
        "cluster_start_s": start_s,
        "first_two_empty_tasks_s": first_empty_s,
        "members": MEMBERS,
        "widths": WIDTHS,
        "epochs": EPOCHS,
        "load_avg": os.getloadavg(),
        "rows": {
            k: {
                "median_s": statistics.median(v),
                "min_s": min(v),
                "max_s": max(v),
                "member_steps": steps[k],
                "member_steps_per_s": steps[k] / statistics.median(v),
            }
            for k, v in times.items()
        },
    }
    print(
        f"local Ray cluster (2 CPUs): start {start_s:.1f} s, first 2 empty tasks {first_empty_s:.1f} s, load {res['load_avg'][0]:.2f}"
    )
    for k, r in res["rows"].items():
        print(
            f"  {k:<16} {r['median_s']:6.2f} s [{r['min_s']:.2f}-{r['max_s']:.2f}]  {r['member_steps_per_s']:8.0f} member-steps/s"
        )
    out = Path(__file__).parent / "results" / "sweep_ray.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
