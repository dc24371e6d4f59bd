"""``weightlab reproduce (--all | --family F) [--smoke] [executor flags] [--site DIR]``.

Runs every matching recipe at its default size (``--smoke``: smoke size, for tests), each
as an ordinary run directory under ROOT, resuming whatever is finished, then writes the
verdicts site (default ``ROOT/site``). Each recipe is a one-point sweep, so the executors,
the catalog rows and ``--log`` behave as in ``weightlab sweep``. Locally the recipes run
one after another; on Ray every recipe's task is submitted at once
(:func:`~weightlab.sweep.ray_executor.run_plans_ray`), so the cluster runs them side by
side.
"""

from __future__ import annotations

from pathlib import Path

from weightlab.errors import ConfigError


def _parser():
    from weightlab.cli import _Parser
    from weightlab.sweep.cli import add_executor_flags

    p = _Parser(
        prog="weightlab reproduce",
        description="Run every recipe (or one family's) at default size, then write the site.",
    )
    p.add_argument("--all", action="store_true", help="every registered recipe")
    p.add_argument("--family", default=None, help="only this family's recipes")
    p.add_argument("--smoke", action="store_true", help="smoke sizes (no verdicts on the site)")
    p.add_argument("--site", type=Path, default=None, help="site folder [ROOT/site]")
    add_executor_flags(p)
    return p


def selected_recipes(all_: bool, family: str | None) -> list[str]:
    from weightlab.recipes.registry import recipes_by_family

    if all_ and family is not None:
        raise ConfigError("give --all or --family F, not both")
    groups = recipes_by_family(family)  # unknown family: one line listing the families
    return [
        cls.name for classes in groups.values() for cls in sorted(classes, key=lambda c: c.name)
    ]


def main(argv: list[str]) -> int:
    from weightlab.sweep.cli import executor_settings
    from weightlab.sweep.local import run_plan_local
    from weightlab.sweep.plan import plan_sweep
    from weightlab.sweep.recorder import RunRecorder
    from weightlab.sweep.spec import SweepSpec

    args = _parser().parse_args(argv)
    if not args.all and args.family is None:
        names = selected_recipes(True, None)
        raise ConfigError(
            f"reproduce needs --all ({len(names)} recipes: {', '.join(names)}) or --family F"
        )
    names = selected_recipes(args.all, args.family)
    if not names:
        raise ConfigError(f"family {args.family!r} has no recipes yet")
    ex = executor_settings(args)
    root = Path(args.out) if args.out is not None else Path("runs")
    site = args.site if args.site is not None else root / "site"
    from weightlab.site import check_out_dir

    check_out_dir(site, root if root.exists() else None)
    recorder = RunRecorder(root, log=args.log, log_uri=args.mlflow_uri)
    recorder.check()
    ray_ctx = None
    if ex["executor"] == "ray":
        from weightlab.sweep.ray_executor import check_ray

        ray_ctx = check_ray(ex)
    members = args.batch_members if args.batch_members is not None else 24
    plans = [
        plan_sweep(
            SweepSpec(
                n, smoke=args.smoke, batch=not args.no_batch, batch_members=members, executor=ex
            ),
            root,
        )
        for n in names
    ]  # every recipe's config checked before anything runs
    if ray_ctx is not None:  # every node sees ROOT and runs this version: before any run
        from weightlab.sweep.ray_executor import check_nodes

        ray_ctx.keep_open = True  # one connection (one private cluster) for every recipe
        gpu = any(getattr(r.cfg, "device", "cpu") == "cuda" for p in plans for r in p.runs)
        try:
            check_nodes(ray_ctx, root, gpu=gpu)
        except BaseException:
            ray_ctx.close()
            raise
    print(f"reproduce: {len(plans)} recipe(s) under {root}{' (smoke)' if args.smoke else ''}")
    failed = 0
    try:
        if ray_ctx is not None:  # every recipe's task submitted at once: the cluster runs
            from weightlab.sweep.ray_executor import run_plans_ray  # them side by side

            for outcomes in run_plans_ray(plans, recorder, ray_ctx):
                failed += sum(o.status == "failed" for o in outcomes)
        else:
            for k, plan in enumerate(plans, 1):
                outcomes = run_plan_local(plan, recorder, in_sweep=False, first=k, total=len(plans))
                failed += sum(o.status == "failed" for o in outcomes)
    finally:
        recorder.close()
        if ray_ctx is not None:
            ray_ctx.close()
    from weightlab.site import build_site

    index = build_site(site, root, smoke=args.smoke)
    print(
        f"reproduce: {len(plans) - failed} of {len(plans)} finished, {failed} failed; site {index}"
    )
    return 1 if failed else 0
