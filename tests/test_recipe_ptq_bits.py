"""Recipe ``ptq-bits`` (row [#94]): its helpers (sizes, weight error, merged PTQ copies,
QAT's final recalibration, the held-out cosine), config checks and the claim logic on
hand-made numbers. The smoke run itself is in tests/test_conformance.py."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.models import build
from weightlab.models.mlp import MLP
from weightlab.quant.quantizer import QuantSpec, quantize, quantizers
from weightlab.recipes.quant.ptq_bits import (
    ENCODER_INPUT_DIMS,
    PtqBits,
    PtqBitsConfig,
    finish_qat,
    parse_bits,
    ptq_spec,
    qat_spec,
    quantize_merged,
    quantized_size,
    relative_weight_error,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- helpers ----------------------------------------------------------------------------
def test_quantized_size_by_hand():
    """One 4x8 weight (no bias) at 4 bits: 32 weights x 4 bits = 16 bytes + FP32 scales."""
    lin = torch.nn.Linear(8, 4, bias=False)
    for g, scale_bytes in (("tensor", 4), ("channel", 16), (2, 64)):
        m = copy.deepcopy(lin)
        quantize(m, ptq_spec(4, "minmax", g, 99.9))
        t = quantized_size(m)
        assert t["fp32_bytes"] == 128 and t["bytes"] == 16 + scale_bytes
        assert t["ratio"] == pytest.approx(128 / (16 + scale_bytes))
        assert t["ratio_weights"] == 8  # 32 / bits
        assert t["model_bytes"] == t["bytes"]  # nothing else in the model
    # bytes follow 32/bits on the weights alone; a bias stays FP32 in the whole model
    for b in (8, 6, 4, 3, 2):
        m = torch.nn.Linear(256, 256)
        quantize(m, ptq_spec(b, "minmax", "tensor", 99.9))
        t = quantized_size(m)
        assert t["ratio_weights"] == pytest.approx(32 / b)
        assert t["model_bytes"] == t["bytes"] + 4 * 256


def test_relative_weight_error_by_hand():
    a = torch.nn.Linear(2, 2, bias=False)
    b = copy.deepcopy(a)
    with torch.no_grad():
        a.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 2.0]]))
        b.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 2.0]]))
    assert relative_weight_error(a, b, ["weight"]) == pytest.approx(1 / 9)


def test_quantize_merged_bakes_the_fake_quantized_weights_into_a_copy():
    model = build(MLP, (40, 16, 10), seed=0).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec = ptq_spec(4, "mse", 8, 99.9)
    q, names, size = quantize_merged(model, spec, seed=0)
    assert names == ["layers.0.weight", "layers.1.weight"]
    assert size["ratio_weights"] == 8 and size["fp32_bytes"] == 4 * (40 * 16 + 16 * 10)
    assert not quantizers(q) and set(q.state_dict()) == set(before)  # plain module
    for k, v in model.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k])
    ref = copy.deepcopy(model)
    quantize(ref, spec, seed=0)
    x = torch.randn(5, 40)
    assert torch.equal(q(x), ref(x))  # merged == fake-quantized forward
    # 4-bit symmetric narrow grid: every group of 8 holds at most 15 distinct values
    w = q.layers[0].weight.reshape(16, 5, 8)
    assert all(len(torch.unique(g)) <= 15 for g in w.reshape(-1, 8))


def test_finish_qat_is_the_ptq_of_the_final_weights():
    """QAT with update='step' then finish_qat gives exactly 4-bit per-channel min-max
    PTQ of its final float weights."""
    model = build(MLP, (40, 16, 10), seed=1)
    qs = quantize(model, qat_spec(), seed=0)
    model.train()
    model(torch.randn(4, 40))  # the observer sees these weights
    with torch.no_grad():  # an optimizer step grows the weights past the observed range
        for q_name in qs:
            mod = model.get_submodule(q_name.rpartition(".")[0])
            mod.parametrizations.weight.original.mul_(1.5)
    floats = {
        n: model.get_submodule(n.rpartition(".")[0]).parametrizations.weight.original.clone()
        for n in qs
    }
    done = finish_qat(model, qs)
    plain = build(MLP, (40, 16, 10), seed=1)
    plain.load_state_dict({**plain.state_dict(), **floats})
    ref, _, _ = quantize_merged(plain, ptq_spec(4, "minmax", "channel", 99.9))
    for n in qs:
        assert torch.equal(done.get_parameter(n), ref.get_parameter(n))


def test_specs_name_all_four_factors():
    assert ptq_spec(3, "percentile", 8, 99.9).describe() == (
        "uniform3 × percentile × nearest × group8"
    )
    q = qat_spec()
    assert q.describe() == "uniform4 × minmax × nearest × channel" and q.update == "step"
    assert isinstance(q, QuantSpec) and q.levels == "uniform"


def test_heldout_cosine_of_the_fp32_encoder_is_one():
    """Sorting by length and trimming the padding keep the FP32 embeddings (tiny BERT)."""
    from weightlab.models.minilm import encoder_linears
    from weightlab.recipes.quant.common import sentence_encoder
    from weightlab.recipes.quant.ptq_bits import HeldOut

    data = PtqBits._heldout(PtqBitsConfig(encoder="tiny", n_heldout=40))
    held = HeldOut(data.test)
    enc = sentence_encoder("tiny")
    enc.trim_padding = True
    assert held.cosine(enc) == pytest.approx(1.0, abs=1e-6)
    q, names, _ = quantize_merged(enc, ptq_spec(2, "minmax", "tensor", 99.9), encoder_linears())
    assert len(names) == 36 and held.cosine(q) < 1.0


def test_encoder_input_dims_match_the_models():
    from weightlab.models.minilm import encoder_linears, minilm_path, tiny_bert

    dims = {m.in_features for m, _ in encoder_linears()(tiny_bert(0)).values()}
    assert dims == set(ENCODER_INPUT_DIMS["tiny"])
    cfg = json.loads((minilm_path() / "config.json").read_text())
    assert {cfg["hidden_size"], cfg["intermediate_size"]} == set(ENCODER_INPUT_DIMS["minilm"])


# -- config ------------------------------------------------------------------------------
def test_bits_are_parsed_and_checked():
    assert parse_bits("2, 8,4") == (8, 4, 2)
    for bad in ("8,x", "1,4", "17", "4,4", ""):
        with pytest.raises(ConfigError, match="^--bits"):
            PtqBitsConfig(bits=bad)


def test_group_sizes_that_do_not_divide_are_refused_before_the_run():
    r = PtqBits()
    sizes = {"train": 4000, "val": 500, "test": 1000}
    with pytest.raises(ConfigError, match="--mlp-group 16 does not divide .* 40, 256"):
        r.validate(PtqBitsConfig(mlp_group=16), sizes)
    with pytest.raises(ConfigError, match="--minilm-group 100 does not divide .* 384, 1536"):
        r.validate(PtqBitsConfig(minilm_group=100), sizes)
    with pytest.raises(ConfigError, match="--minilm-group 64 does not divide the tiny"):
        r.validate(PtqBitsConfig(encoder="tiny"), sizes)


# -- claims on hand-made numbers ---------------------------------------------------------
BITS = (8, 4, 2)
GS = ("tensor", "channel", "group8")


def _arm(bits, scale, g, acc):
    return {
        "bits": bits,
        "scale": scale,
        "granularity": g,
        "test_acc_mean": sum(acc) / len(acc),
        "test_acc_values": list(acc),
        "seeds": list(range(len(acc))),
    }


def _enc(bits, scale, g, cos):
    return {"bits": bits, "scale": scale, "granularity": g, "cosine": cos}


def _numbers(acc_fn, cos_fn):
    arms = [
        _arm(b, s, g, acc_fn(b, s, g))
        for b in BITS
        for s in ("minmax", "percentile", "mse")
        for g in GS
    ]
    enc = [
        _enc(b, s, g, cos_fn(b, s, g))
        for b in BITS
        for s in ("minmax", "percentile", "mse")
        for g in GS
    ]
    return arms, enc


def _good_acc(b, s, g):
    """FP32 60/61/62; int8 within 0.1 pt; at <= 4 bits channel > tensor and mse > minmax."""
    base = [60.0, 61.0, 62.0]
    if b == 8:
        return [a - 0.1 for a in base]
    drop = {4: 5.0, 2: 30.0}[b] - (2.0 if g != "tensor" else 0.0) - (1.0 if s == "mse" else 0.0)
    return [a - drop for a in base]


def _good_cos(b, s, g):
    if b == 8:
        return 0.999
    return {4: 0.95, 2: 0.5}[b] + (0.02 if g != "tensor" else 0.0) + (0.01 if s == "mse" else 0.0)


def _claims(arms, enc, qat_acc=(59.0, 60.0, 61.0), encoder="minilm", diverged=()):
    fp32 = {"test_acc_mean": 61.0, "test_acc_values": [60.0, 61.0, 62.0], "seeds": [0, 1, 2]}
    qat = {
        "test_acc_mean": sum(qat_acc) / 3,
        "test_acc_values": list(qat_acc),
        "seeds": [0, 1, 2],
        "epochs": 10,
    }
    res = PtqBits.check_claims(fp32, arms, qat, enc, 10.0, encoder, list(diverged), BITS)
    return {c.id: c for c in res}


def test_every_claim_holds_on_numbers_that_satisfy_it():
    arms, enc = _numbers(_good_acc, _good_cos)
    c = _claims(arms, enc)
    assert {k: v.verdict for k, v in c.items()} == dict.fromkeys(
        ["a mlp", "a minilm", "b mlp", "b minilm", "c mlp", "c minilm", "d"], "held"
    )
    # (d): PTQ 4-bit per-channel min-max = 61 - 3 = 58; QAT 60 -> (60 - 58) / (61 - 58)
    assert c["d"].evidence["recovery"] == pytest.approx(2 / 3)


def test_qat_recovery_threshold():
    arms, enc = _numbers(_good_acc, _good_cos)
    # PTQ at 4 bits, channel, minmax: 61 - 3 = 58; FP32 61 -> drop 3; 50% is 59.5
    held = _claims(arms, enc, qat_acc=(59.0, 60.0, 61.0))["d"]  # mean 60: 2/3
    assert held.verdict == "held" and held.evidence["recovery"] == pytest.approx(2 / 3)
    miss = _claims(arms, enc, qat_acc=(58.0, 59.0, 60.0))["d"]  # mean 59: 1/3
    assert miss.verdict == "did not hold" and miss.evidence["recovery"] == pytest.approx(1 / 3)


def test_no_drop_to_recover_is_not_tested():
    def acc(b, s, g):
        return [60.0, 61.0, 62.0] if (b, s, g) == (4, "minmax", "channel") else _good_acc(b, s, g)

    arms, enc = _numbers(acc, _good_cos)
    d = _claims(arms, enc)["d"]
    assert d.verdict == "not tested" and "nothing to recover" in d.detail


def test_int8_no_loss_needs_its_positive_control_and_a_tight_ci():
    def noisy(b, s, g):  # int8 paired differences -1, +1, 0: CI far outside ±0.5
        if (b, s, g) == (8, "minmax", "channel"):
            return [59.0, 62.0, 62.0]
        return _good_acc(b, s, g)

    arms, enc = _numbers(noisy, _good_cos)
    assert _claims(arms, enc)["a mlp"].verdict == "did not hold"

    def no_control(b, s, g):  # 2-bit per-tensor min-max loses nothing: control fails
        if (b, s, g) == (2, "minmax", "tensor"):
            return [60.0, 61.0, 62.0]
        return _good_acc(b, s, g)

    arms, enc = _numbers(no_control, _good_cos)
    a = _claims(arms, enc)["a mlp"]
    assert a.verdict == "did not hold" and "failed: the test cannot see a loss" in a.detail

    def cos_control(b, s, g):
        return 0.995 if (b, s, g) == (2, "minmax", "tensor") else _good_cos(b, s, g)

    arms, enc = _numbers(_good_acc, cos_control)
    assert _claims(arms, enc)["a minilm"].verdict == "did not hold"


def test_comparisons_at_chance_are_not_judged():
    def chance_at_2(b, s, g):  # both arms of every 2-bit comparison within 10 pt of chance
        if b == 2:
            return [15.0, 15.0, 15.0] if g == "tensor" else [12.0, 12.0, 12.0]
        return _good_acc(b, s, g)

    arms, enc = _numbers(chance_at_2, _good_cos)
    c = _claims(arms, enc)
    # per channel loses at 2 bits, but both arms are at chance: only 4 bits is judged
    assert c["b mlp"].verdict == "held"
    assert len(c["b mlp"].evidence["skipped"]) == 3
    assert "not judged" in c["b mlp"].detail

    def all_chance(b, s, g):
        return [12.0, 12.0, 12.0] if b <= 4 else _good_acc(b, s, g)

    arms, enc = _numbers(all_chance, _good_cos)
    c = _claims(arms, enc)
    assert c["b mlp"].verdict == "not tested" and c["c mlp"].verdict == "not tested"
    assert c["b mlp"].evidence["not_tested_because"]


def test_one_losing_comparison_fails_the_claim():
    def mse_loses(b, s, g):
        acc = _good_acc(b, s, g)
        if (b, s, g) == (4, "mse", "group8"):
            return [a - 3.0 for a in acc]
        return acc

    arms, enc = _numbers(mse_loses, _good_cos)
    c = _claims(arms, enc)
    assert c["c mlp"].verdict == "did not hold" and "group8 4b -2.00" in c["c mlp"].detail
    assert c["b mlp"].verdict == "held"  # groups of 8 are not in the channel-vs-tensor claim
    assert c["c minilm"].verdict == "held"


def test_minilm_claims_need_minilm_and_mlp_claims_a_learned_baseline():
    arms, enc = _numbers(_good_acc, _good_cos)
    c = _claims(arms, enc, encoder="tiny")
    for k in ("a minilm", "b minilm", "c minilm"):
        assert c[k].verdict == "not tested" and "judged on MiniLM only" in c[k].detail
    c = _claims(arms, enc, diverged=["FP32 seed 1"])
    for k in ("a mlp", "b mlp", "c mlp", "d"):
        assert c[k].verdict == "not tested" and "diverged" in c[k].detail
    fp32 = {"test_acc_mean": 15.0, "test_acc_values": [15.0] * 3, "seeds": [0, 1, 2]}
    qat = {"test_acc_mean": 15.0, "test_acc_values": [15.0] * 3, "seeds": [0, 1, 2], "epochs": 1}
    res = PtqBits.check_claims(fp32, arms, qat, enc, 10.0, "minilm", [], BITS)
    assert {c.id: c.verdict for c in res}["a mlp"] == "not tested"


def test_missing_bit_widths_leave_claims_untested():
    arms, enc = _numbers(_good_acc, _good_cos)
    fp32 = {"test_acc_mean": 61.0, "test_acc_values": [60.0, 61.0, 62.0], "seeds": [0, 1, 2]}
    qat = {"test_acc_mean": 60.0, "test_acc_values": [60.0] * 3, "seeds": [0, 1, 2], "epochs": 10}
    keep = [a for a in arms if a["bits"] == 8]
    res = {c.id: c for c in PtqBits.check_claims(fp32, keep, qat, [], 10.0, "minilm", [], (8,))}
    assert res["a mlp"].verdict == "not tested" and "2-bit" in res["a mlp"].detail
    assert res["b mlp"].verdict == "not tested" and "<= 4" in res["b mlp"].detail
    assert res["d"].verdict == "not tested" and "4-bit" in res["d"].detail
