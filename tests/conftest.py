"""Shared test setup.

- Every test (and every subprocess a test starts) sees ``WEIGHTLAB_CACHE`` pointing at one
  session-wide temporary directory, so MNIST-1D is generated once per session, and
  ``HF_HUB_OFFLINE=1``.
- ``run_cli`` runs ``python -m weightlab ...`` in a subprocess (cwd = the test's tmp_path);
  ``cli`` calls ``weightlab.cli.main`` in-process (same cwd).
- ``smoke_run`` is one finished ``weightlab run lottery-ticket --smoke`` directory, made once
  per session and shared read-only; tests that modify a run copy it first (``copy_run``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SMOKE_ARGS = ("run", "lottery-ticket", "--smoke", "--quiet")


@dataclass(frozen=True)
class CLIResult:
    rc: int
    stdout: str
    stderr: str


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: the test session's environment, one BLAS/OpenMP
    thread (the 2 CPU cores are shared; oversubscribed OpenMP spins make runs many times
    slower), and ``extra``."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["HF_HUB_OFFLINE"] = "1"
    env.update(extra)
    return env


def unit_mtimes(run: Path) -> dict[str, int]:
    """``{file name: mtime_ns}`` of a run directory's ``units/`` (unchanged = not recomputed)."""
    return {p.name: p.stat().st_mtime_ns for p in sorted((run / "units").iterdir())}


def temp_files(path: Path) -> list[Path]:
    """Temporary ``*.tmp`` files left anywhere under ``path`` (atomic writes leave none)."""
    return [p for p in path.rglob("*") if p.name.endswith(".tmp")]


def cli_command(*args: str | os.PathLike) -> list[str]:
    return [sys.executable, "-m", "weightlab", *map(str, args)]


def run_cli_in(cwd: Path, *args: str | os.PathLike, timeout: float = 300, **env) -> CLIResult:
    """Run ``python -m weightlab *args`` in ``cwd``; return its exit code and output."""
    p = subprocess.run(
        cli_command(*args),
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CLIResult(p.returncode, p.stdout, p.stderr)


@pytest.fixture(scope="session", autouse=True)
def weightlab_cache(tmp_path_factory) -> Path:
    """A session-wide ``WEIGHTLAB_CACHE`` (and ``HF_HUB_OFFLINE=1``) for all tests."""
    cache = tmp_path_factory.mktemp("weightlab-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WEIGHTLAB_CACHE", str(cache))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield cache


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-model tests: they run fastest that way, and
    far more predictably when the 2 cores are shared (OpenMP spin-waits otherwise).
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mnist1d_slice(weightlab_cache):
    """MNIST-1D cut to 320 train / 100 val / 100 test examples (100 steps at batch 32 over
    10 epochs): the data of the population-vs-loop equivalence tests."""
    from weightlab.data import Split, TaskData, load_dataset

    full = load_dataset("mnist1d")
    return TaskData(
        "mnist1d-slice",
        Split(full.train.x[:320], full.train.y[:320]),
        Split(full.val.x[:100], full.val.y[:100]),
        Split(full.test.x[:100], full.test.y[:100]),
        10,
    )


@pytest.fixture
def run_cli(tmp_path):
    """``run_cli(*args, cwd=tmp_path, timeout=300, **env) -> CLIResult``."""

    def run(*args, cwd: Path | None = None, timeout: float = 300, **env) -> CLIResult:
        return run_cli_in(cwd or tmp_path, *args, timeout=timeout, **env)

    return run


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys, one_thread):
    """``cli(*args) -> (rc, stdout, stderr)``: ``weightlab.cli.main`` in-process, cwd =
    tmp_path, one intra-op thread."""
    from weightlab.cli import main

    monkeypatch.chdir(tmp_path)

    def call(*args):
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err

    return call


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, weightlab_cache) -> Path:
    """A finished smoke run of lottery-ticket (population engine). Do not modify it."""
    root = tmp_path_factory.mktemp("smoke-run")
    out = root / "run"
    res = run_cli_in(root, *SMOKE_ARGS, "--out", out)
    assert res.rc == 0, res.stderr
    return out


@pytest.fixture
def copy_run(tmp_path, smoke_run):
    """``copy_run(name="run") -> Path``: a private, modifiable copy of the smoke run."""

    def copy(name: str = "run") -> Path:
        dst = tmp_path / name
        shutil.copytree(smoke_run, dst)
        return dst

    return copy


@pytest.fixture(autouse=True)
def _autograd_left_enabled():
    """Every test must leave autograd enabled (a leaked ``no_grad`` breaks later tests)."""
    yield
    import torch

    assert torch.is_grad_enabled(), "this test left autograd disabled"
