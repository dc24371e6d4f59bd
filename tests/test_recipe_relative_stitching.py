"""relative-stitching recipe: the anchor draw, config checks and the claim logic on hand-made
summaries."""

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.probes.relative_stitching import (
    RelativeStitching,
    RelativeStitchingConfig,
    anchor_indices,
)


def test_anchor_indices_fixed_distinct_and_seeded():
    a = anchor_indices(1257, 100, 0)
    assert len(set(a.tolist())) == 100 and int(a.max()) < 1257
    assert torch.equal(a, anchor_indices(1257, 100, 0))
    assert not torch.equal(a, anchor_indices(1257, 100, 1))


def _ms(v):
    return {"mean": v, "std": 0.5}


def _arm(native=97.0, rel=96.0, abs_=12.0, cos_a=0.1, cos_r=0.9, head=96.5, acc=95.0, div=()):
    return {
        "native": _ms(native),
        "relative_stitch": _ms(rel),
        "absolute_stitch": _ms(abs_),
        "relative_native": _ms(head),
        "cos_absolute": _ms(cos_a),
        "cos_relative": _ms(cos_r),
        "min_net_acc": acc,
        "diverged": list(div),
    }


def _summary(default, e2e=None):
    return {"chance_pct": 10.0, "default": default, "end_to_end": e2e, "setup": {"norm": "none"}}


def test_claims_held_failed_not_tested():
    c = RelativeStitching.check_claims(_summary(_arm()))
    assert [x.held for x in c] == [True, True]
    c = RelativeStitching.check_claims(_summary(_arm(cos_a=0.5, rel=93.0)))
    assert [x.held for x in c] == [False, False] and "drop 4.0" in c[1].detail
    # absolute stitching far from chance fails (b) even when relative stitching works
    c = RelativeStitching.check_claims(_summary(_arm(abs_=40.0)))
    assert c[1].held is False and "30.0 pts away" in c[1].detail
    # below chance but within 15 points is "near chance"
    assert RelativeStitching.check_claims(_summary(_arm(abs_=2.0)))[1].held is True
    c = RelativeStitching.check_claims(_summary(_arm(acc=15.0)))
    assert [x.held for x in c] == [None, None]
    c = RelativeStitching.check_claims(_summary(_arm(head=12.0)))
    assert c[0].held is True and c[1].held is None and "relative head" in c[1].detail
    e2e = _arm(rel=60.0)
    c = RelativeStitching.check_claims(_summary(_arm(), e2e))
    assert [x.id for x in c] == ["a", "b", "c", "d"]
    assert [x.held for x in c] == [True, True, True, False]
    c = RelativeStitching.check_claims(_summary(_arm(), _arm(div=["seed 3"])))
    assert c[2].held is None and "end-to-end seed 3" in c[2].detail


def test_config_checks():
    with pytest.raises(ConfigError, match="norm"):
        RelativeStitchingConfig(norm="group")
    with pytest.raises(ConfigError, match="anchors"):
        RelativeStitching().validate(
            RelativeStitchingConfig(anchors=500), {"train": 200, "val": 10, "test": 10}
        )
