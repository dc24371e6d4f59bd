"""The scaling-laws recipe: the teacher's subspace, the arc-cosine limit kernel against wide
random features, a smoke run's outputs and determinism, the claims on hand-made fits, bad
input."""

from __future__ import annotations

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.kernels.random_features import RandomFeatureNet
from weightlab.recipes.kernels.scaling_laws import ScalingLaws, Teacher, arccos_kernel
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")
NAME = "scaling-laws"


def test_teacher_inputs_span_the_subspace_and_targets_have_unit_variance():
    cfg = make_config(NAME)
    t = Teacher(cfg, 0, NAME)
    x = t.inputs(500, "probe")
    assert x.shape == (500, 32)
    assert int(torch.linalg.matrix_rank(x)) == 4
    assert float((x * x).sum(1).mean()) == pytest.approx(32.0, rel=0.1)
    y = t(t.inputs(4000, "probe2"))
    assert y.shape == (4000, 1) and float(y.std()) == pytest.approx(1.0, rel=0.05)
    assert torch.equal(Teacher(cfg, 0, NAME)(x), t(x))
    assert not torch.equal(Teacher(cfg, 1, NAME).inputs(5, "a"), t.inputs(5, "a"))


def test_arccos_kernel_is_the_wide_feature_limit():
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    net = RandomFeatureNet(32, 200_000, seed=3)  # W ~ N(0, I/32), b ~ N(0, 1), 1/sqrt(N)
    phi = net.features(x)
    torch.testing.assert_close(phi @ phi.T, arccos_kernel(x, x, 32), rtol=0.02, atol=0.005)


def test_smoke_run_outputs_and_determinism(tmp_path):
    cfg = make_config(NAME, smoke=True)
    run_recipe(NAME, cfg, out=tmp_path / "a")
    run_recipe(NAME, cfg, out=tmp_path / "b")
    a = (tmp_path / "a" / "summary.json").read_bytes()
    assert a == (tmp_path / "b" / "summary.json").read_bytes()
    assert (tmp_path / "a" / "scaling.png").read_bytes().startswith(b"\x89PNG")
    s = read_json(tmp_path / "a" / "summary.json")
    assert set(s["curves"]) == {"res_P", "res_N", "var_N", "var_P"}
    assert [p["x"] for p in s["curves"]["res_P"]] == [8, 16, 32]
    assert len(s["limits"]["var_N"]) == 2 and all(v > 0 for v in s["limits"]["var_P"])
    # more data and more features lower the resolution-limited losses
    for r in ("res_P", "res_N"):
        assert s["curves"][r][-1]["mean"] < s["curves"][r][0]["mean"]
    assert [c["id"] for c in s["claims"]] == ["a", "b"]


def _fits(**exps):
    out = {}
    for r in ("res_P", "res_N", "var_N", "var_P"):
        out[r] = {"exponent": exps.get(r, 1.0), "r2": 0.99, "nonpositive_at": []}
    return out


def test_claims_on_hand_made_fits():
    widest = {"res_P": 0.01, "res_N": 0.01}
    a, b = ScalingLaws.check_claims(
        _fits(var_N=1.15, var_P=0.85, res_P=0.9, res_N=1.05), {}, widest
    )
    assert (a.held, b.held) == (True, True)
    a, b = ScalingLaws.check_claims(_fits(var_N=1.25, res_P=0.7, res_N=1.0), {}, widest)
    assert (a.held, b.held) == (False, False)
    assert "var_N: 1.250" in a.detail and "0.300" in b.detail
    fits = _fits()
    fits["var_N"]["nonpositive_at"] = [2048]
    a, b = ScalingLaws.check_claims(fits, {}, widest)
    assert a.held is None and "noise floor" in a.detail and b.held is True
    a, b = ScalingLaws.check_claims(_fits(), {}, {"res_P": 0.95, "res_N": 0.01})
    assert a.held is None and b.held is None and "did not learn" in a.detail


@pytest.mark.parametrize(
    "override, match",
    [
        ({"intrinsic": 40}, "--intrinsic 40 exceeds --ambient 32"),
        ({"res_samples": "16,32"}, "--res-samples must be at least 3"),
        ({"var_pool": "512,1024,400000"}, "exceeds --var-inf"),
        ({"data": "digits"}, "--data"),
    ],
)
def test_bad_input_is_one_line(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_config(NAME, **override)
    assert "\n" not in str(e.value)
