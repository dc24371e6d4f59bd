"""Recipe ``oscillation`` (OFQ [#35]): the arms' quantizers, the claim judging on hand-made
numbers (every seed / 4 of 5 seeds, preconditions), the summary's arithmetic, bad input."""

from __future__ import annotations

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.quant.instrument import current_scale
from weightlab.quant.quantizer import quantize
from weightlab.recipes.quant.oscillation import (
    ARMS,
    Oscillation,
    OscillationConfig,
    arm_describe,
    arm_spec,
)


@pytest.mark.parametrize("bits", [2, 3])
def test_arm_quantizers(bits):
    torch.manual_seed(0)
    w = torch.randn(6, 20, generator=torch.Generator().manual_seed(1))
    mean_abs = w.abs().mean(dim=1)
    for arm in ARMS:
        lin = torch.nn.Sequential(torch.nn.Linear(20, 6, bias=False))
        with torch.no_grad():
            lin[0].weight.copy_(w)
        (q,) = quantize(lin, arm_spec(arm, bits)).values()
        scale, zp = current_scale(q, w.reshape(6, 1, 20))
        assert zp is None
        if arm == "lsq":
            assert isinstance(q.scale, torch.nn.Parameter) and q.levels.qmin == -(2 ** (bits - 1))
            assert q.spec.ste == "clipped"
        elif arm == "scale_only":  # StatsQ's scale on LSQ's grid: step 2 mean|W| / 2^(b-1)
            assert torch.allclose(scale.reshape(6), 2 * mean_abs / 2 ** (bits - 1))
            assert q.spec.levels == "uniform_full" and q.spec.ste == "clipped"
        else:  # StatsQ: the range s = 2 mean|W|, mid-rise levels (k + 1/2) s / 2^(b-1)
            assert torch.allclose(scale.reshape(6), 2 * mean_abs)
            assert q.levels.zero_free and q.spec.ste == "identity"
        desc = arm_describe(arm, bits)
        assert desc.count("×") == 3 and "channel" in desc and "STE" in desc
    assert "CGA" in arm_describe("statsq_cga", bits)


def _rows(osc, acc, bits=(2, 3)):
    """Rows as summarize makes them: ``osc[arm][b]`` / ``acc[arm][b]`` lists over seeds."""
    rows = []
    for b in bits:
        for arm in ARMS:
            o, a = osc[arm][b], acc[arm][b]
            rows.append(
                {
                    "arm": arm,
                    "bits": b,
                    "seeds": list(range(len(o))),
                    "osc_values": o,
                    "test_acc_values": a,
                    "test_acc_mean": sum(a) / len(a),
                }
            )
    return rows


def _base(n=5):
    osc = {
        "lsq": {2: [0.004] * n, 3: [0.005] * n},
        "scale_only": {2: [0.003] * n, 3: [0.004] * n},
        "statsq": {2: [0.002] * n, 3: [0.003] * n},
        "statsq_cga": {2: [0.001] * n, 3: [0.002] * n},
    }
    acc = {arm: {2: [50.0] * n, 3: [55.0] * n} for arm in ARMS}
    return osc, acc


def _verdicts(rows, fp32=60.0, diverged=()):
    return {c.id: c for c in Oscillation.check_claims(rows, fp32, 10.0, list(diverged))}


def test_claims_hold_on_clear_numbers():
    osc, acc = _base()
    acc["statsq_cga"][2] = [51.0] * 5
    v = _verdicts(_rows(osc, acc))
    assert [v[k].held for k in "abc"] == [True, True, True]
    assert v["a"].evidence["2bit"]["seeds_higher"] == 5


def test_every_seed_rule_for_oscillation_claims():
    osc, acc = _base()
    osc["scale_only"][3] = [0.004, 0.004, 0.006, 0.001, 0.001]  # mean lower, one seed higher
    osc["statsq"][2] = [0.0041, 0.001, 0.001, 0.001, 0.001]
    v = _verdicts(_rows(osc, acc))
    assert v["a"].held is False and v["a"].evidence["3bit"]["seeds_higher"] == 4
    assert v["a"].evidence["2bit"]["ok"] is True
    assert v["b"].held is False and "4/5" in v["b"].detail


def test_four_of_five_seeds_rule_for_accuracy():
    osc, acc = _base()
    acc["statsq_cga"][2] = [51.0, 51.0, 51.0, 51.0, 49.0]  # mean higher, 4 of 5 seeds
    assert _verdicts(_rows(osc, acc))["c"].held is True
    acc["statsq_cga"][2] = [53.0, 53.0, 50.0, 49.0, 49.0]  # mean higher, 3 of 5 seeds
    assert _verdicts(_rows(osc, acc))["c"].held is False
    acc["statsq_cga"][2] = [50.0, 50.0, 50.0, 50.0, 45.0]  # 4 of 5 ties, mean lower
    assert _verdicts(_rows(osc, acc))["c"].held is False


def test_preconditions_give_not_tested():
    osc, acc = _base()
    v = _verdicts(_rows(osc, acc), fp32=15.0)  # FP32 less than 10 pts above chance (10%)
    assert all(c.held is None for c in v.values())
    v = _verdicts(_rows(osc, acc), diverged=["LSQ 2-bit seed 1"])
    assert all(c.held is None for c in v.values())
    acc["lsq"][2] = [12.0] * 5  # LSQ 2-bit at chance: (c) not tested, (a)/(b) judged
    v = _verdicts(_rows(osc, acc))
    assert v["c"].held is None and v["a"].held is True
    v = _verdicts(_rows(osc, acc, bits=(3,)))
    assert v["c"].held is None and "no 2-bit" in v["c"].detail


def test_summary_arithmetic():
    recs = []
    for arm in ARMS:
        for s in range(2):
            recs.append(
                {
                    "arm": arm,
                    "bits": 2,
                    "seed": s,
                    "spec": arm_describe(arm, 2),
                    "diverged": False,
                    "test_acc": 50.0 + s,
                    "osc_late": {"statsq": 0.004, "statsq_cga": 0.001}.get(arm, 0.002) * (1 + s),
                    "osc_late_layers": {"layers.0.weight": 0.001},
                    "osc_counts": {"overall": 10},
                    "osc_epochs": [0.001, 0.002],
                    "seconds": 1.0,
                    **({"cga_frozen_share": 0.99} if arm == "statsq_cga" else {}),
                }
            )
    fp32 = [
        {"seed": 0, "diverged": False, "test_acc": 60.0},
        {"seed": 1, "diverged": False, "test_acc": 62.0},
    ]
    cfg = OscillationConfig(seeds=2, bits="2")
    summary = Oscillation().summarize(cfg, fp32, recs, 10.0)
    by = {r["arm"]: r for r in summary["rows"]}
    assert by["lsq"]["lost_to_fp32_mean"] == pytest.approx(10.5)
    assert by["lsq"]["osc_values"] == pytest.approx([0.002, 0.004])
    assert by["statsq_cga"]["cga_frozen_share"] == pytest.approx(0.99)
    (drop,) = summary["cga_drop"]
    assert drop["drop_values"] == pytest.approx([0.003, 0.006])
    assert drop["relative_drop_mean"] == pytest.approx(0.75)
    assert summary["fp32"]["test_acc_mean"] == pytest.approx(61.0)
    assert summary["members"] == 10 and summary["diverged_members"] == []
    assert "batch 500" in summary["reduced_version"]
    assert len(Oscillation().tables(summary)) == 4


@pytest.mark.parametrize("bits", ["2,x", "1", "9", "2,2", ""])
def test_bad_bits_are_one_line_errors(bits):
    with pytest.raises(ConfigError, match="--bits"):
        OscillationConfig(bits=bits)


def test_batch_larger_than_the_data_is_refused():
    with pytest.raises(ConfigError, match="--batch-size"):
        Oscillation().validate(OscillationConfig(batch_size=5000), {"train": 3500})
