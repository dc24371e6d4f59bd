"""The neural-tangents reference environment (``.nt-env/`` at the repository root, gitignored).

neural-tangents 0.6.5 (its last release, 2023) imports fully only with ``jax==0.4.23``, so it
lives in its own virtual environment, used by the parity fixture script
(``tests/fixtures/kernels/make_stax_reference.py``) and by ``bench/kernels.py`` through a
subprocess. Nothing in the test suite needs it.

    python bench/nt_env.py --create   # python3 -m venv .nt-env + pip install PINS (needs PyPI)
    python bench/nt_env.py --python   # prints the env's interpreter, or exits 1 "not created"
    python bench/nt_env.py --check    # imports jax + neural_tangents in it and prints versions
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = ROOT / ".nt-env"
# jax 0.4.23 was built against numpy 1.x; scipy < 1.13 still has the names it imports.
PINS = (
    "jax==0.4.23",
    "jaxlib==0.4.23",
    "neural-tangents==0.6.5",
    "numpy<2",
    "scipy<1.13",
)
CHECK = (
    "import jax, jaxlib, neural_tangents as nt; from neural_tangents import stax; "
    "print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, "
    "'neural-tangents', nt.__version__)"
)


def interpreter() -> Path | None:
    """The environment's python, or None when it has not been created."""
    py = ENV / "bin" / "python"
    return py if py.is_file() else None


def create() -> Path:
    """Create ``.nt-env`` (if missing) and install :data:`PINS` into it."""
    if interpreter() is None:
        subprocess.run([sys.executable, "-m", "venv", str(ENV)], check=True)
    py = interpreter()
    assert py is not None
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", *PINS], check=True)
    return py


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--create", action="store_true", help="create .nt-env and install PINS")
    group.add_argument("--python", action="store_true", help="print the env's interpreter")
    group.add_argument("--check", action="store_true", help="import neural_tangents in the env")
    args = parser.parse_args(argv)
    if args.create:
        py = create()
        subprocess.run([str(py), "-c", CHECK], check=True)
        print(py)
        return 0
    py = interpreter()
    if py is None:
        print(f"not created: run python bench/nt_env.py --create (makes {ENV})", file=sys.stderr)
        return 1
    if args.check:
        return subprocess.run([str(py), "-c", CHECK]).returncode
    print(py)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
