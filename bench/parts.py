"""A family benchmark made of parts: ``bench/<family>_<part>.py`` files, each with a
``run(...) -> dict``, run in turn, each part's numbers written to
``bench/results/<family>_<part>.json``."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).parent


def load_part(family: str, part: str) -> ModuleType:
    """Import ``bench/<family>_<part>.py`` by path (bench/ is not a package)."""
    path = HERE / f"{family}_{part}.py"
    spec = importlib.util.spec_from_file_location(f"{family}_{part}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_parts(
    family: str, parts: Sequence[str], argv: list[str], call: Callable[[ModuleType], dict]
) -> None:
    """Run the parts named in ``argv`` (all of ``parts`` when none is), ``call(module)``
    for each; an unknown part name exits with code 2."""
    chosen = [a for a in argv if not a.startswith("-")] or list(parts)
    bad = [p for p in chosen if p not in parts]
    if bad:
        print(f"unknown part(s) {bad}; choose from {', '.join(parts)}", file=sys.stderr)
        raise SystemExit(2)
    for part in chosen:
        print(f"\n=== {family}: {part} ===", flush=True)
        result = call(load_part(family, part))
        out = HERE / "results" / f"{family}_{part}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
