"""The cnn-kernels recipe [#64]: inputs and teachers, a smoke run's outputs and determinism,
the claim logic on hand-made rows (held, did not hold, not tested), bad input."""

from __future__ import annotations

import math

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.kernels.cnn_kernels import CNNKernels, circle_pairs, teacher_targets
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")
NAME = "cnn-kernels"


def test_inputs_are_circle_pairs_and_targets_standardized():
    g = torch.Generator().manual_seed(0)
    x = circle_pairs(500, g)
    assert x.shape == (500, 16) and x.dtype == torch.float64
    torch.testing.assert_close(x.reshape(500, 8, 2).norm(dim=2), torch.ones(500, 8, dtype=x.dtype))
    ys = teacher_targets(x, 16, g)
    for y in ys.values():
        assert abs(float(y.mean())) < 1e-12 and float(y.std(unbiased=False)) == pytest.approx(1)
    # (a) is a sum of one function of each pair: permuting the pairs leaves it unchanged,
    # while (b) (a net of all inputs) changes.
    perm = x.reshape(500, 8, 2)[:, torch.randperm(8, generator=g)].reshape(500, 16)
    g2 = torch.Generator().manual_seed(0)
    circle_pairs(500, g2)
    ys_perm = teacher_targets(perm, 16, g2)
    # standardization uses the sample's moments, which the pair permutation does not change
    torch.testing.assert_close(ys_perm["local"], ys["local"])
    assert (ys_perm["global"] - ys["global"]).abs().max() > 0.1


def test_smoke_run_outputs_and_determinism(tmp_path):
    cfg = make_config(NAME, smoke=True)
    run_recipe(NAME, cfg, out=tmp_path / "a")
    run_recipe(NAME, cfg, out=tmp_path / "b")
    a, b = tmp_path / "a" / "summary.json", tmp_path / "b" / "summary.json"
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a" / "mse_vs_n.png").read_bytes().startswith(b"\x89PNG")
    s = read_json(a)
    assert [(r["target"], r["n"]) for r in s["rows"]] == [
        (t, n) for t in ("local", "global") for n in (32, 64, 128)
    ]
    for r in s["rows"]:
        assert 0 < r["mse_mean"] < 2 and math.isfinite(r["mse_mean"])
    assert s["exponents"]["local"]["mean"] > 0  # error falls with n
    assert s["claims"][0]["id"] == "a"


def _rows(mse: dict[str, list[float]], ns=(64, 128, 256)) -> list[dict]:
    return [
        {"target": t, "n": n, "mse_mean": v, "mse_std": 0.0}
        for t, vals in mse.items()
        for n, v in zip(ns, vals, strict=True)
    ]


def _ex(a: float, b: float) -> dict:
    return {
        t: {"mean": v, "std": 0.0, "values": [v], "r2_min": 0.99}
        for t, v in (("local", a), ("global", b))
    }


def test_claim_logic_on_hand_made_rows():
    rows = _rows({"local": [0.5, 0.2, 0.08], "global": [0.9, 0.7, 0.55]})
    (c,) = CNNKernels.check_claims(rows, _ex(1.3, 0.35))
    assert c.held is True and "gap 0.950" in c.detail
    (c,) = CNNKernels.check_claims(rows, _ex(0.5, 0.35))
    assert c.held is False
    flat = _rows({"local": [0.5, 0.2, 0.08], "global": [1.0, 1.1, 1.2]})
    (c,) = CNNKernels.check_claims(flat, _ex(1.3, -0.1))
    assert c.held is None and "global target was not learned" in c.detail


@pytest.mark.parametrize(
    "override, match",
    [
        ({"n_values": "64"}, "--n-values must be at least 2"),
        ({"n_values": "a,b"}, "--n-values must be comma-separated"),
        ({"n_test": 0}, "--n-test"),
        ({"data": "digits"}, "--data"),
    ],
)
def test_bad_input_is_one_line(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_config(NAME, **override)
    assert "\n" not in str(e.value)
