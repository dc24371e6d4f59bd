"""weightlab.malloc: glibc keeps freed tensor memory for reuse (fewer page faults)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import weightlab  # noqa: F401 - the import applies the settings
from weightlab import malloc

glibc = pytest.mark.skipif(malloc._glibc() is None, reason="needs Linux with glibc")

# the continual recipe's hypernetwork, forward and backward by the autograd path: its
# (N·K, 300) intermediates are freed and allocated again every step
FAULTS = """
import resource, torch
from weightlab.hyper.continual import ChunkedMLPHypernet
from weightlab.malloc import malloc_tuned
torch.set_num_threads(1)
hnet = ChunkedMLPHypernet(8450, num_conds=64, seed=1)
z = torch.randn(64, 32, generator=torch.Generator().manual_seed(2))
def step():
    hnet.forward_autograd(z).square().sum().backward()
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    step()
print(int(malloc_tuned()), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 30)
"""


def _run(code: str, **env: str) -> str:
    full = {**os.environ, **env}
    if "WEIGHTLAB_MALLOC" not in env:
        full.pop("WEIGHTLAB_MALLOC", None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@glibc
def test_import_tunes_malloc_and_settings_are_accepted() -> None:
    opted_out = os.environ.get("WEIGHTLAB_MALLOC", "").strip().lower() == "system"
    assert malloc.malloc_tuned() == (not opted_out)
    assert malloc.tune_malloc() is True  # glibc accepts both values
    assert malloc.malloc_tuned()


@glibc
def test_tuned_process_page_faults_less_and_env_opts_out() -> None:
    tuned, system = (_run(FAULTS).split(), _run(FAULTS, WEIGHTLAB_MALLOC=" System ").split())
    assert (tuned[0], system[0]) == ("1", "0")  # WEIGHTLAB_MALLOC=system keeps the defaults
    per_step_tuned, per_step_system = float(tuned[1]), float(system[1])
    # measured here: 0-84 faults per step tuned against 311-547 with glibc's defaults
    assert per_step_system > 100, f"glibc defaults faulted only {per_step_system}/step"
    assert per_step_tuned < 0.5 * per_step_system, (per_step_tuned, per_step_system)


def test_other_platforms_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(malloc.sys, "platform", "darwin")
    assert malloc._glibc() is None
    assert malloc.tune_malloc() is False
