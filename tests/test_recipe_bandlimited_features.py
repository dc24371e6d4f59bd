"""The bandlimited-features recipe: the sine task, a smoke run's outputs and determinism,
the claim logic on hand-made rows (held, did not hold, not tested), bad input."""

from __future__ import annotations

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.kernels.bandlimited_features import BandlimitedFeatures, sine_task
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")
NAME = "bandlimited-features"


def test_sine_task_grid_and_targets():
    t = sine_task(50.0, 2000)
    assert t.train.x.shape == (2000, 1) and t.train.x.dtype == torch.float64
    assert t.train.x[0, 0] == -1.0 and t.train.x[-1, 0] == 1.0
    torch.testing.assert_close(t.train.y, torch.sin(50.0 * t.train.x))
    assert len(t.val) + len(t.test) == 1999
    assert float(t.train.y.var()) == pytest.approx(0.5, abs=0.01)


def test_smoke_run_outputs_and_determinism(tmp_path):
    cfg = make_config(NAME, smoke=True, seeds=1)
    _, s = run_recipe(NAME, cfg, out=tmp_path / "a")
    run_recipe(NAME, cfg, out=tmp_path / "b")
    a, b = (tmp_path / "a" / "summary.json"), (tmp_path / "b" / "summary.json")
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a" / "mse_vs_width.png").read_bytes().startswith(b"\x89PNG")
    s = read_json(a)
    assert [(r["ratio"], r["width"]) for r in s["rows"]] == [
        (r, w) for r in (0.04, 0.2, 1.0, 2.0) for w in (20, 100, 400)
    ]
    assert {c["verdict"] for c in s["claims"]} == {"not tested"}  # no widths 1000 / 8000
    by = {(r["ratio"], r["width"]): r["train_mse_mean"] for r in s["rows"]}
    assert by[(0.04, 400)] > 0.9 * s["var_y"]  # bounded far below omega: nothing fits
    assert by[(1.0, 400)] < 1e-2 * s["var_y"]  # B = omega resolves the frequency


def _rows(values: dict[tuple[float, int], float]) -> list[dict]:
    return [
        {"ratio": r, "bound": 50 * r, "width": w, "train_mse_mean": v, "train_mse_std": 0.0}
        for (r, w), v in values.items()
    ]


def test_claim_logic_on_hand_made_rows():
    good = {(0.04, 1000): 0.48, (0.04, 8000): 0.47, (1.0, 1000): 1e-6, (1.0, 8000): 5e-8}
    good |= {(2.0, 1000): 1e-5, (2.0, 8000): 1e-7}
    a, b = BandlimitedFeatures.check_claims(_rows(good), 50.0, 0.5)
    assert (a.held, b.held) == (True, True)
    bad = good | {(0.04, 8000): 0.40, (2.0, 8000): 2e-6}  # 17% drop; only 5x fall
    a, b = BandlimitedFeatures.check_claims(_rows(bad), 50.0, 0.5)
    assert (a.held, b.held) == (False, False)
    assert "16.7%" in a.detail and "(5x)" in b.detail
    low = good | {(0.04, 1000): 0.2, (0.04, 8000): 0.2}  # flat but below 0.5 Var(y)
    assert BandlimitedFeatures.check_claims(_rows(low), 50.0, 0.5)[0].held is False
    partial = {k: v for k, v in good.items() if k[1] != 8000}
    a, b = BandlimitedFeatures.check_claims(_rows(partial), 50.0, 0.5)
    assert a.held is None and b.held is None and "8000" in a.detail


@pytest.mark.parametrize(
    "override, match",
    [
        ({"widths": "0,10"}, "--widths must be distinct positive"),
        ({"widths": "a"}, "--widths must be comma-separated"),
        ({"bounds": "1,-2"}, "--bounds must be distinct positive"),
        ({"data": "digits"}, "--data"),
        ({"omega": 0.0}, "--omega"),
    ],
)
def test_bad_input_is_one_line(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_config(NAME, **override)
    assert "\n" not in str(e.value)
