"""Recipe ``nupes`` (row [#83]): config checks (the data-driven variant without calibration
data is one line, exit code 2, nothing written), the claim's logic on hand-made rows, and
a smoke run's content (per-layer exponents, the search never losing on weight MSE)."""

from __future__ import annotations

import json

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.quant.nupes import ARMS, Nupes, NupesConfig, describe_arm
from weightlab.recipes.runner import make_config
from weightlab.runs.rundir import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")


def test_data_driven_without_calibration_samples_is_one_line():
    with pytest.raises(ConfigError) as e:
        NupesConfig(calib_samples=0)
    msg = str(e.value)
    assert msg.startswith("data-driven NUPES needs calibration data; ") and "\n" not in msg
    cfg = NupesConfig(calib_samples=0, data_driven=False)  # the data-free arms need none
    assert cfg.arms == ("uniform", "power")


def test_cli_exit_code_2_and_nothing_written(cli, tmp_path):
    rc, out, err = cli("run", "nupes", "--calib-samples", "0", "--out", tmp_path / "run")
    assert rc == 2
    assert "data-driven NUPES needs calibration data" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bits", ["3,x", "1,3", "3,9", "3,3", ""])
def test_bad_bits(bits):
    with pytest.raises(ConfigError, match="--bits"):
        NupesConfig(bits=bits)


def test_every_arm_names_four_factors():
    assert describe_arm("uniform", 3) == "uniform3 × mse × nearest × channel"
    assert describe_arm("power", 3).startswith("power3(a per layer by weight MSE) × mse")
    assert "output error" in describe_arm("power-data", 4)
    for arm in ARMS:
        assert describe_arm(arm, 4).count(" × ") == 3


def _rows(mlp_power, mlp_uniform, cos_power, cos_uniform, bits=3):
    def row(model, arm, vals):
        return {
            "model": model,
            "bits": bits,
            "arm": arm,
            "metric_mean": sum(vals) / len(vals),
            "metric_values": vals,
        }

    return [
        row("mlp", "power", mlp_power),
        row("mlp", "uniform", mlp_uniform),
        row("minilm", "power", [cos_power]),
        row("minilm", "uniform", [cos_uniform]),
    ]


MLP = [{"seed": s, "diverged": False} for s in range(3)]


@pytest.mark.parametrize(
    "rows, verdict",
    [
        (_rows([50, 52, 49], [48, 51, 47], 0.95, 0.93), "held"),
        (_rows([50, 52, 49], [48, 53, 47], 0.95, 0.93), "did not hold"),  # one seed loses
        (_rows([50, 52, 49], [48, 51, 47], 0.92, 0.93), "did not hold"),  # MiniLM loses
        (_rows([50, 52, 49], [50, 51, 47], 0.95, 0.93), "did not hold"),  # a tie is no win
    ],
)
def test_claim_logic(rows, verdict):
    [c] = Nupes.check_claims(NupesConfig(), rows, 60.0, 10.0, MLP)
    assert c.verdict == verdict, c.detail


def test_claim_not_tested_without_3_bits_or_a_learned_baseline():
    rows = _rows([50, 52, 49], [48, 51, 47], 0.95, 0.93)
    [c] = Nupes.check_claims(NupesConfig(bits="4"), rows, 60.0, 10.0, MLP)
    assert c.verdict == "not tested" and "3-bit" in c.detail
    [c] = Nupes.check_claims(NupesConfig(), rows, 15.0, 10.0, MLP)
    assert c.verdict == "not tested" and "did not learn" in c.detail
    diverged = [{"seed": 0, "diverged": True}, *MLP[1:]]
    [c] = Nupes.check_claims(NupesConfig(), rows, 60.0, 10.0, diverged)
    assert c.verdict == "not tested" and "diverged" in c.detail


def test_small_run_reports_exponents_and_weight_mse(tmp_path):
    """The recipe's run (no report rendering; the conformance test renders the smoke run)."""
    cfg = make_config("nupes", smoke=True, seeds=1, epochs=1, sentences=16, calib_samples=16)
    rd = RunDir(tmp_path / "run", "nupes", cfg).open()
    summary = Nupes().run(cfg, rd)
    rows = {(r["model"], r["bits"], r["arm"]): r for r in summary["rows"]}
    assert set(rows) == {(m, 3, a) for m in ("mlp", "minilm") for a in ARMS}
    for model in ("mlp", "minilm"):
        # a = 1 (uniform) is among the candidates: the searched arm cannot lose on weight MSE
        assert (
            rows[(model, 3, "power")]["weight_mse_mean"]
            <= 1.001 * (rows[(model, 3, "uniform")]["weight_mse_mean"])
        )
    mlp_exps = rows[("mlp", 3, "power")]["exponents"]
    assert set(mlp_exps) == {"layers.0.weight", "layers.1.weight", "layers.2.weight"}
    assert all(len(v) == cfg.seeds for v in mlp_exps.values())
    assert sum(rows[("minilm", 3, "power-data")]["exponent_counts"].values()) == 36
    curves = [c for c in summary["curves"] if c["model"] == "minilm"]
    assert len(curves) == 36 and all(len(c["errors"]) == 15 for c in curves)
    assert [c["id"] for c in summary["claims"]] == ["a"]
    assert json.loads(json.dumps(summary)) == summary
