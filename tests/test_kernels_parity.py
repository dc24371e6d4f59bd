"""Parity of weightlab.kernels.analytic.fc_kernels with neural-tangents' stax (0.6.5, jax
0.4.23): ReLU and erf, depths 1-5, with and without bias, NTK parametrization, float64.

The reference values are a fixture made by hand in the reference environment
(tests/fixtures/kernels/make_stax_reference.py); this test needs no jax.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from weightlab.kernels.analytic import fc_kernels

FIXTURE = Path(__file__).parent / "fixtures" / "kernels" / "stax_reference.json"
RTOL = 1e-5

DOC = json.loads(FIXTURE.read_text())
CASES = DOC["cases"]


def test_fixture_covers_the_issue_grid():
    grid = {(c["activation"], c["depth"], c["b_std"] is not None) for c in CASES}
    assert grid == {(a, d, b) for a in ("relu", "erf") for d in range(1, 6) for b in (0, 1)}
    assert DOC["versions"]["neural_tangents"] == "0.6.5"
    assert DOC["parametrization"] == "ntk" and DOC["dtype"] == "float64"


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c['activation']}-L{c['depth']}-b{c['b_std']}" for c in CASES]
)
def test_fc_kernels_match_stax(case):
    x1 = torch.tensor(DOC["x1"], dtype=torch.float64)
    x2 = torch.tensor(DOC["x2"], dtype=torch.float64)
    kw = {
        "depth": case["depth"],
        "activation": case["activation"],
        "w_std": case["w_std"],
        "b_std": case["b_std"] or 0.0,
    }
    for name, other in (("cross", x2), ("self", None)):
        ours = fc_kernels(x1, other, **kw)
        for kind in ("nngp", "ntk"):
            ref = torch.tensor(case[name][kind], dtype=torch.float64)
            got = getattr(ours, kind)
            rel = ((got - ref).abs() / ref.abs().clamp_min(1e-12 * ref.abs().max())).max()
            assert rel.item() <= RTOL, (name, kind, rel.item())
