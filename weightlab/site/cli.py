"""``weightlab site OUT_DIR [--root R] [--metric NAME]``: write the static verdicts site.

User errors raise a one-line :class:`~weightlab.errors.ConfigError` (``weightlab.cli.main``
prints it and exits 2) before anything is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from weightlab.errors import ConfigError


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one-line ConfigErrors."""

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError(f"{message} (see '{self.prog} --help')")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="weightlab site",
        description="Write the static verdicts site (index, one page per run and per sweep).",
    )
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder for the site")
    p.add_argument(
        "--root", type=Path, default=Path("runs"), help="folder of the run directories [runs]"
    )
    p.add_argument(
        "--metric",
        default=None,
        help="metric the sweep plots show [each sweep's first run's first metric]",
    )
    return p


def main(argv: list[str]) -> int:
    from weightlab.site import build_site

    args = parser().parse_args(argv)
    index = build_site(args.out_dir, args.root, metric=args.metric)
    print(f"site: {index}")
    return 0
