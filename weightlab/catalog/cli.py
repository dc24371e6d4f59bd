"""``weightlab runs``: list, show, compare and reindex the catalog of runs.

    weightlab runs list [--recipe R] [--family F] [--held|--not-held] [--status S] [--sweep ID]
    weightlab runs show RUN
    weightlab runs compare A B
    weightlab runs reindex

Every command takes ``--root`` (default ``runs``) and ``--json``. RUN is a run
directory's name, a unique prefix of one, or a path to a run directory. A catalog that is
missing under an existing root is built from its run directories first. User errors
raise :class:`~weightlab.errors.ConfigError` (one line; ``weightlab.cli.main`` prints it
and exits 2) before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from weightlab.catalog import format as fmt
from weightlab.catalog.query import list_runs, resolve
from weightlab.catalog.records import STATUSES
from weightlab.catalog.reindex import reindex
from weightlab.catalog.store import Catalog, catalog_path, open_catalog
from weightlab.errors import ConfigError


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one-line ConfigErrors."""

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError(f"{message} (see '{self.prog} --help')")


def _parser() -> argparse.ArgumentParser:
    # --root/--json before or after the command; SUPPRESS so a subparser does not reset them
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--root",
        type=Path,
        default=argparse.SUPPRESS,
        help="folder of the run directories and catalog.sqlite (default: runs)",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text"
    )
    p = _Parser(
        prog="weightlab runs",
        description="the catalog of runs (ROOT/catalog.sqlite)",
        parents=[common],
    )
    sub = p.add_subparsers(dest="cmd", metavar="{list,show,compare,reindex}", parser_class=_Parser)
    ls = sub.add_parser("list", parents=[common], help="runs with status, verdicts, wall time")
    ls.add_argument("--recipe", help="only this recipe")
    ls.add_argument("--family", help="only this family")
    ls.add_argument("--held", action="store_true", help="only runs whose claims all held")
    ls.add_argument(
        "--not-held", action="store_true", help="only runs with a claim that did not hold"
    )
    ls.add_argument("--status", choices=STATUSES, help="only runs with this status")
    ls.add_argument("--sweep", help="only runs of this sweep id")
    sh = sub.add_parser("show", parents=[common], help="one run: config, environment, claims")
    sh.add_argument("run", help="run name, a unique prefix of one, or a run directory")
    cp = sub.add_parser("compare", parents=[common], help="config, verdict and metric diffs")
    cp.add_argument("a", help="run A (name, prefix or directory)")
    cp.add_argument("b", help="run B (name, prefix or directory)")
    sub.add_parser("reindex", parents=[common], help="rebuild the catalog from run directories")
    return p  # fmt: skip


def _open(root: Path) -> Catalog:
    """The catalog of an existing ``root`` (built from its run directories if missing)."""
    if not root.is_dir():
        raise ConfigError(
            f"run folder {root} does not exist; run a recipe first or pass --root FOLDER"
        )
    if not catalog_path(root).exists():
        reindex(root)
    return open_catalog(root)


def _print(args: argparse.Namespace, data: dict, text: str) -> None:
    try:
        print(json.dumps(data, indent=2) if args.json else text, flush=True)
    except BrokenPipeError:  # `weightlab runs list | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    args.root, args.json = getattr(args, "root", Path("runs")), getattr(args, "json", False)
    if args.cmd is None:
        raise ConfigError(
            "choose a command: list, show, compare or reindex (see 'weightlab runs --help')"
        )
    if args.cmd == "list" and args.held and args.not_held:
        raise ConfigError("--held and --not-held exclude each other; give one")
    root: Path = args.root
    if args.cmd == "reindex":
        if not root.is_dir():
            raise ConfigError(f"run folder {root} does not exist; pass --root FOLDER")
        t0 = time.perf_counter()
        problems = reindex(root)
        seconds = time.perf_counter() - t0
        with open_catalog(root) as cat:
            count = cat.con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        text = [f"reindexed {count} run{'s' if count != 1 else ''} into {catalog_path(root)} "
                f"in {seconds:.1f} s"]  # fmt: skip
        if problems:
            text.append(f"{len(problems)} unreadable run file(s):")
            text += [f"  {p}" for p in problems]
        _print(args, {"runs": count, "seconds": seconds, "problems": problems}, "\n".join(text))
        return 0
    with _open(root) as cat:
        if args.cmd == "list":
            held = True if args.held else False if args.not_held else None
            runs = list_runs(cat.con, recipe=args.recipe, family=args.family, held=held,
                             status=args.status, sweep=args.sweep)  # fmt: skip
            _print(args, fmt.list_json(runs), fmt.list_text(runs, str(catalog_path(root))))
        elif args.cmd == "show":
            run = resolve(cat, args.run)
            _print(args, fmt.show_json(run), fmt.show_text(run))
        else:
            a, b = resolve(cat, args.a), resolve(cat, args.b)
            d = fmt.compare_data(a, b)
            _print(args, d, fmt.compare_text(d))
    return 0
