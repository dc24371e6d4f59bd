"""The ``weightlab`` command line.

    weightlab recipes [--family F]
    weightlab run RECIPE [--seeds N] [--data NAME] [--device cpu|cuda] [--out DIR] [--root ROOT]
                         [--smoke] [--quiet] [--log mlflow|tensorboard] [recipe flags]
    weightlab sweep RECIPE --grid KEY=V1,V2 [...] | FILE.toml   (weightlab sweep --help)
    weightlab reproduce (--all | --family F) [--smoke]
    weightlab runs list|show|compare|reindex [--root ROOT] [--json]
    weightlab site OUT_DIR [--root ROOT]
    weightlab report RUN_DIR
    weightlab quant pack IN.safetensors OUT.safetensors --bits B [--levels L] [--scale S]
                         [--granularity tensor|channel|K] [--exponent A]
    weightlab quant inspect FILE

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
    import time

    from weightlab.recipes.registry import get_recipe
    from weightlab.recipes.runner import make_config, run_recipe
    from weightlab.report.render import diverged_line
    from weightlab.sweep.recorder import RunRecorder
    from weightlab.tracking import add_log_flags

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
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("runs"),
        help="root of run directories and of the catalog ROOT/catalog.sqlite [runs]",
    )
    add_log_flags(parser)
    _add_config_flags(parser, recipe.Config)
    args = parser.parse_args(argv[1:])
    overrides = {
        f.name: getattr(args, f.name)
        for f in fields(recipe.Config)
        if getattr(args, f.name) is not None
    }
    cfg = make_config(recipe.name, smoke=args.smoke, **overrides)
    recorder = RunRecorder(args.root, log=args.log, log_uri=args.mlflow_uri)
    recorder.check()
    opened: list[Path] = []

    def on_open(rd) -> None:
        opened.append(rd.path)
        recorder.started(rd.path)

    t0 = time.perf_counter()
    try:
        path, summary = run_recipe(
            recipe.name,
            cfg,
            out=args.out,
            root=args.root,
            progress=not args.quiet,
            on_open=on_open,
        )
    except KeyboardInterrupt:
        if opened:
            recorder.finished(opened[0], "incomplete", wall_s=time.perf_counter() - t0)
        raise
    except Exception as e:
        if opened:
            recorder.finished(opened[0], "failed", error=f"{e}", wall_s=time.perf_counter() - t0)
        raise
    finally:
        if not opened:
            recorder.close()
    recorder.finished(path, "done", wall_s=time.perf_counter() - t0)
    recorder.close()
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


def _granularity(text: str):
    if text in ("tensor", "channel"):
        return text
    try:
        k = int(text)
    except ValueError:
        raise WeightlabError(
            f"--granularity must be 'tensor', 'channel' or a group size, got {text!r}"
        ) from None
    if k < 1:
        raise WeightlabError(f"--granularity group size must be a positive integer, got {k}")
    return k


def _cmd_quant(args) -> int:
    """``quant pack``: quantize every 2-D float tensor of a plain safetensors state dict
    and write ONE packed file; ``quant inspect``: size report of a packed file, after
    checking that every tensor decodes."""
    from weightlab.errors import ConfigError, RunFileError
    from weightlab.quant.export import file_size_report, load_packed, save_packed_state_dict
    from weightlab.quant.levels import MAX_BITS, check_exponent
    from weightlab.quant.quantizer import QuantSpec
    from weightlab.runs.files import load_tensors

    if args.action == "inspect":
        report = file_size_report(args.file)
        decoded = load_packed(args.file)
        print(report.format())
        n = len(report.rows) - sum(not r.quantized for r in report.rows)
        print(f"{args.file}: loads ({len(decoded)} tensors, {n} quantized, all decoded)")
        return 0
    if not 1 <= args.bits <= MAX_BITS:
        raise ConfigError(f"--bits must be from 1 to {MAX_BITS}, got {args.bits}")
    exponent = 1.0
    if args.exponent is not None:
        exponent = check_exponent(args.exponent)
        if args.levels != "power":
            raise ConfigError("--exponent applies to --levels power only; drop it or use power")
    spec = QuantSpec(
        bits=args.bits,
        levels=args.levels,
        scale=args.scale,
        granularity=_granularity(args.granularity),
        exponent=exponent,
    )
    src, out = Path(args.input), Path(args.output)
    if not src.is_file():
        raise RunFileError(f"input file {src} does not exist; pass a safetensors state dict")
    if src.resolve() == out.resolve():
        raise ConfigError("OUT must differ from IN; the packed file would overwrite its source")
    state = load_tensors(src)
    save_packed_state_dict(state, spec, out)
    print(file_size_report(out).format())
    print(f"wrote {out}")
    return 0


def _add_quant_parser(sub) -> None:
    from weightlab.quant.levels import LEVEL_SETS
    from weightlab.quant.scales import ESTIMATORS

    q = sub.add_parser("quant", help="pack a state dict's weights into a quantized file")
    qsub = q.add_subparsers(dest="action", metavar="{pack,inspect}", required=True)
    p = qsub.add_parser("pack", help="quantize every 2-D float tensor and write a packed file")
    p.add_argument("input", help="a safetensors state dict (e.g. a run's weights file)")
    p.add_argument("output", help="the packed safetensors file to write")
    p.add_argument("--bits", type=int, required=True, help="bits per weight, 1-16")
    p.add_argument("--levels", default="uniform", choices=LEVEL_SETS, help="level set")
    p.add_argument("--scale", default="minmax", choices=ESTIMATORS, help="scale estimator")
    p.add_argument(
        "--granularity", default="channel", help="tensor, channel or a group size K [channel]"
    )
    p.add_argument("--exponent", type=float, default=None, help="power levels' a, in (0, 1]")
    i = qsub.add_parser("inspect", help="print a packed file's size report; check it loads")
    i.add_argument("file", help="a packed safetensors file")


# subcommands with their own parsers: name -> (module with main(argv), help)
_SUBCOMMANDS = {
    "sweep": (
        "weightlab.sweep.cli",
        "run a grid of configs: weightlab sweep RECIPE --grid K=V1,V2",
    ),
    "reproduce": (
        "weightlab.sweep.reproduce",
        "run every recipe (--all or --family F), then the site",
    ),
    "runs": ("weightlab.catalog.cli", "the catalog of runs: list, show, compare, reindex"),
    "site": ("weightlab.site.cli", "write the static verdicts site: weightlab site OUT_DIR"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        if argv and argv[0] == "run":
            return _cmd_run(argv[1:])
        if argv and argv[0] in _SUBCOMMANDS:
            import importlib

            module = importlib.import_module(_SUBCOMMANDS[argv[0]][0])
            return module.main(argv[1:])
        parser = _Parser(
            prog="weightlab", description="weightlab: the science and engineering of layer weights"
        )
        sub = parser.add_subparsers(
            dest="command", metavar="{recipes,run,sweep,reproduce,runs,site,report,quant}"
        )
        lst = sub.add_parser("recipes", help="list recipes by family: name, row, paper, claim")
        lst.add_argument("--family", default=None, help="only this family")
        sub.add_parser("run", help="run (or resume) a recipe: weightlab run RECIPE --help")
        for name, (_, help_) in _SUBCOMMANDS.items():
            sub.add_parser(name, help=help_, add_help=False)
        rep = sub.add_parser("report", help="render a run's report again")
        rep.add_argument("run_dir", help="a run directory")
        _add_quant_parser(sub)
        for p in sub.choices.values():
            p.error = parser.error  # type: ignore[method-assign]
        args = parser.parse_args(argv)
        if args.command == "recipes":
            return _cmd_recipes(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "quant":
            return _cmd_quant(args)
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
