"""The ``weightlab`` command line.

    weightlab recipes [--family F]
    weightlab run RECIPE [--seeds N] [--data NAME] [--device cpu|cuda] [--out DIR] [--smoke] [--quiet] [recipe flags]
    weightlab report RUN_DIR

Recipe flags are generated from the recipe's config dataclass. User errors print one
line and exit with code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from weightlab.errors import WeightlabError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage + message."""

    def error(self, message: str):  # type: ignore[override]
        raise WeightlabError(f"{message} (see '{self.prog} --help')")


def _add_config_flags(parser: argparse.ArgumentParser, config_cls: type) -> None:
    for f in fields(config_cls):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        if isinstance(default, bool):
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_
            )
            continue
        kind = type(default)
        meta = f.metadata
        extra = f" (one of: {', '.join(map(str, meta['choices']))})" if "choices" in meta else ""
        parser.add_argument(
            flag,
            dest=f.name,
            type=_typed(kind, flag),
            default=None,
            metavar=kind.__name__.upper(),
            help=f"{help_}{extra} [default: {default}]",
        )


def _typed(kind: type, flag: str):
    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} expects {kind.__name__}, got {text!r}"
            ) from None

    convert.__name__ = kind.__name__
    return convert


def _cmd_recipes(args) -> int:
    """Recipes by family: ``name  [#row]  paper`` then ``claim: ...`` under it."""
    from weightlab.recipes.registry import all_recipes, recipes_by_family

    groups = recipes_by_family(args.family)
    width = max((len(n) for n in all_recipes()), default=0)
    for family, classes in groups.items():
        if not classes and args.family is None:
            continue
        print(f"{family}:")
        if not classes:
            print("  (no recipes yet)")
        for cls in classes:
            tag = f"[#{cls.row}]"
            print(f"  {cls.name:<{width}}  {tag:<6} {cls.paper}")
            print(f"  {'':<{width}}  {'':<6} claim: {cls.claim}")
    return 0


def _cmd_run(argv: list[str]) -> int:
    from weightlab.recipes.registry import get_recipe
    from weightlab.recipes.runner import make_config, run_recipe
    from weightlab.report.render import diverged_line

    if not argv or argv[0].startswith("-"):
        if argv and argv[0] in ("-h", "--help"):
            print(
                "usage: weightlab run RECIPE [options]   ('weightlab recipes' lists them; 'weightlab run RECIPE --help' shows options)"
            )
            return 0
        raise WeightlabError("missing recipe name: weightlab run RECIPE (see 'weightlab recipes')")
    recipe = get_recipe(argv[0])
    tasks = ", ".join(recipe.tasks)
    parser = _Parser(
        prog=f"weightlab run {recipe.name}",
        description=f"{recipe.paper}. {recipe.claim}. Tasks (--data): {tasks}; "
        f"or user data FILE.npz / idx:DIR holding {' or '.join(recipe.kinds)} data.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run directory (default: runs/<recipe>-<config hash>)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes for a quick check (own run directory)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_config_flags(parser, recipe.Config)
    args = parser.parse_args(argv[1:])
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(recipe.Config)
        if getattr(args, f.name) is not None
    }
    cfg = make_config(recipe.name, smoke=args.smoke, **overrides)
    path, summary = run_recipe(recipe.name, cfg, out=args.out, progress=not args.quiet)
    for title, header, rows in recipe.tables(summary):
        print(f"\n{title}")
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print("\nClaims:")
    for c in summary["claims"]:
        print(f"  ({c['id']}) {c['verdict'].upper()}: {c['statement']}\n      {c['detail']}")
    print(f"\nRun directory: {path}\nReport: {path / 'report.html'}")
    print(diverged_line(summary, limit=6))  # the report lists them all
    return 0


def _cmd_report(args) -> int:
    from weightlab.report.render import render_report

    for p in render_report(Path(args.run_dir)):
        print(p)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        if argv and argv[0] == "run":
            return _cmd_run(argv[1:])
        parser = _Parser(
            prog="weightlab", description="weightlab: the science and engineering of layer weights"
        )
        sub = parser.add_subparsers(dest="command", metavar="{recipes,run,report}")
        lst = sub.add_parser("recipes", help="list recipes by family: name, row, paper, claim")
        lst.add_argument("--family", default=None, help="only this family")
        sub.add_parser("run", help="run (or resume) a recipe: weightlab run RECIPE --help")
        rep = sub.add_parser("report", help="render a run's report again")
        rep.add_argument("run_dir", help="a run directory")
        for p in sub.choices.values():
            p.error = parser.error  # type: ignore[method-assign]
        args = parser.parse_args(argv)
        if args.command == "recipes":
            return _cmd_recipes(args)
        if args.command == "report":
            return _cmd_report(args)
        parser.print_help()
        return EXIT_USAGE
    except WeightlabError as e:
        print(f"weightlab: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("weightlab: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
