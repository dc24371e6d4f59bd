"""``weightlab sweep``: run a grid of a recipe's configs, locally or on Ray, resumably.

weightlab sweep RECIPE --grid KEY=V1,V2 [--grid ...] [--set KEY=V] [--seeds N] [--smoke]
                [--out ROOT] [--dry-run] [--no-batch] [--batch-members N]
                [--executor local|ray] [--address HOST:PORT|auto|local]
                [--cpus-per-task N] [--max-retries N] [--log mlflow|tensorboard]
weightlab sweep FILE.toml [--out ROOT] [--dry-run] [executor flags]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from weightlab.errors import ConfigError
from weightlab.sweep.spec import DEFAULT_BATCH_MEMBERS


def build_parser(prog: str = "weightlab sweep") -> argparse.ArgumentParser:
    from weightlab.cli import _Parser

    p = _Parser(
        prog=prog,
        description="Run a grid of a recipe's configs as ordinary run "
        "directories, batching small runs into shared populations.",
    )
    p.add_argument("target", help="a recipe name, or a sweep file FILE.toml")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a config field and its values (repeatable; the grid is their product)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=V",
        help="a config field fixed for every run (repeatable)",
    )
    p.add_argument("--seeds", type=int, default=None, help="seeds per run")
    p.add_argument("--smoke", action="store_true", help="the recipe's smoke sizes")
    p.add_argument("--dry-run", action="store_true", help="print runs, groups and what exists")
    add_executor_flags(p)
    return p


def add_executor_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``sweep`` and ``reproduce``."""
    p.add_argument("--out", type=Path, default=None, help="root of run directories [runs]")
    p.add_argument("--no-batch", action="store_true", help="run config by config")
    p.add_argument(
        "--batch-members",
        type=int,
        default=None,
        help=f"most members in one batched population [{DEFAULT_BATCH_MEMBERS}]",
    )
    p.add_argument("--executor", choices=("local", "ray"), default=None, help="[local]")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster: HOST:PORT, auto (RAY_ADDRESS, then the current cluster) "
        "or local (a private cluster) [auto]",
    )
    p.add_argument("--cpus-per-task", type=int, default=None, help="Ray: CPUs per task [1]")
    p.add_argument(
        "--max-retries", type=int, default=None, help="Ray: retries of a task whose worker died [3]"
    )
    from weightlab.tracking import add_log_flags

    add_log_flags(p)


def executor_settings(args, base: dict | None = None) -> dict:
    ex = dict(base or {})
    for key in ("executor", "address", "cpus_per_task", "max_retries"):
        v = getattr(args, key)
        if v is not None:
            ex[key] = v
    ex.setdefault("executor", "local")
    if ex["executor"] not in ("local", "ray"):
        raise ConfigError(f"executor must be local or ray, got {ex['executor']!r}")
    for key, lo in (("cpus_per_task", 1), ("max_retries", 0)):
        if key in ex and (
            isinstance(ex[key], bool) or not isinstance(ex[key], int) or ex[key] < lo
        ):
            raise ConfigError(
                f"--{key.replace('_', '-')} must be an integer >= {lo}, got {ex[key]!r}"
            )
    if ex["executor"] == "local":
        extra = sorted(k for k in ("address", "cpus_per_task", "max_retries") if k in ex)
        if extra:
            raise ConfigError(
                f"{', '.join('--' + k.replace('_', '-') for k in extra)} apply to --executor ray only"
            )
    return ex


def main(argv: list[str]) -> int:
    from weightlab.sweep.plan import plan_sweep
    from weightlab.sweep.recorder import RunRecorder
    from weightlab.sweep.spec import spec_from_args, spec_from_toml

    args = build_parser().parse_args(argv)
    toml_out = None
    if args.target.endswith(".toml"):
        if args.grid or args.set or args.seeds is not None or args.smoke:
            raise ConfigError(
                "with a sweep file, put grid, set, seeds and smoke in the file (only --out, "
                "--dry-run and executor flags go on the command line)"
            )
        spec, toml_out = spec_from_toml(Path(args.target))
        ex = executor_settings(args, spec.executor)
        batch = spec.batch and not args.no_batch
        members = args.batch_members if args.batch_members is not None else spec.batch_members
        from dataclasses import replace

        spec = replace(spec, batch=batch, batch_members=members, executor=ex)
    else:
        if not args.grid:
            raise ConfigError(
                f"a sweep needs at least one --grid KEY=V1,V2 (or a sweep file); "
                f"for one config use 'weightlab run {args.target}'"
            )
        spec = spec_from_args(
            args.target,
            args.grid,
            args.set,
            args.seeds,
            args.smoke,
            batch=not args.no_batch,
            batch_members=args.batch_members
            if args.batch_members is not None
            else DEFAULT_BATCH_MEMBERS,
            executor=executor_settings(args),
        )
    root = args.out if args.out is not None else (toml_out or Path("runs"))
    recorder = RunRecorder(root, log=args.log, log_uri=args.mlflow_uri)
    recorder.check()
    ray = spec.executor.get("executor") == "ray"
    if ray:
        from weightlab.sweep.ray_executor import check_ray

        ray_ctx = check_ray(spec.executor)  # extra, address: before anything is written
    plan = plan_sweep(spec, Path(root))
    if args.dry_run:
        print_dry_run(plan)
        return 0
    if ray:  # nodes that cannot see ROOT or run another version: refused before the record
        from weightlab.sweep.ray_executor import check_nodes

        gpu = any(getattr(r.cfg, "device", "cpu") == "cuda" for r in plan.runs)
        try:
            check_nodes(ray_ctx, Path(root), gpu=gpu)
        except BaseException:
            ray_ctx.close()
            raise
    return execute(plan, recorder, ray_ctx if ray else None)


def execute(plan, recorder, ray_ctx=None) -> int:
    """Write the sweep record, run every group, print one line per run; 1 if any failed."""
    from weightlab.runs.files import atomic_write_json
    from weightlab.sweep.local import run_plan_local

    plan.record_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan.record_path, plan.record())
    print(
        f"sweep {plan.spec.id}: {plan.spec.recipe}, {len(plan.runs)} run(s) in "
        f"{len(plan.groups)} group(s) under {plan.root}"
    )
    try:
        if ray_ctx is not None:
            from weightlab.sweep.ray_executor import run_plan_ray

            outcomes = run_plan_ray(plan, recorder, ray_ctx)
        else:
            outcomes = run_plan_local(plan, recorder)
    finally:
        recorder.close()
    failed = [o for o in outcomes if o.status == "failed"]
    print(
        f"sweep {plan.spec.id}: {len(outcomes) - len(failed)} of {len(outcomes)} run(s) "
        f"finished, {len(failed)} failed; record {plan.record_path}"
    )
    return 1 if failed else 0


def print_dry_run(plan) -> None:
    from weightlab.sweep.local import run_done

    spec = plan.spec
    exists = plan.record_path.exists()
    print(
        f"sweep {spec.id}: {spec.recipe}, {len(plan.runs)} run(s) in {len(plan.groups)} "
        f"group(s) under {plan.root} (record {'exists' if exists else 'not yet written'})"
    )
    for gid, idx in plan.groups:
        print(f"  group {gid}: {len(idx)} run(s)")
        for i in idx:
            r = plan.runs[i]
            if run_done(r.path):
                state = "done"
            elif (r.path / "config.json").exists():
                n = len(list((r.path / "units").glob("*.json")))
                state = f"partial ({n} unit(s))"
            else:
                state = "new"
            point = ", ".join(f"{k}={v}" for k, v in r.point.items())
            print(f"    {r.name}  {point}  [{state}]")
