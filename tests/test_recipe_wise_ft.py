"""wise-ft recipe: the multi-colour digits task and the claim logic on hand-made summaries."""

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.adapters.wise_ft import WiseFT, WiseFTConfig, multi_colour_digits


def _colour_index(split, palette):
    # the tint of each example: ratio of channel sums equals the palette row's ratios
    x = split.x.view(len(split), 3, 64).sum(-1)
    x = x / x.sum(-1, keepdim=True)
    p = palette / palette.sum(-1, keepdim=True)
    return torch.cdist(x, p).argmin(-1)


def test_multi_colour_digits_correlations_and_determinism():
    d = multi_colour_digits(0, 300, 900, 300, 0.9, 10)
    assert d.pretrain.x.shape == (300, 192) and len(d.test_ood) == 1797 - 1500
    ft = (_colour_index(d.finetune, d.palette) == d.finetune.y).float().mean()
    ood = (_colour_index(d.test_ood, d.palette) == d.test_ood.y).float().mean()
    pre = (_colour_index(d.pretrain, d.palette) == d.pretrain.y).float().mean()
    assert 0.88 < ft < 0.95  # 0.9 + 0.1 / 10
    assert ood < 0.2 and pre < 0.2  # uniform colours: about 1/10
    again = multi_colour_digits(0, 300, 900, 300, 0.9, 10)
    assert torch.equal(d.finetune.x, again.finetune.x)
    assert torch.equal(d.val_ood.y, d.val_id.y)
    with pytest.raises(ConfigError, match="OOD test split"):
        multi_colour_digits(0, 900, 900, 300, 0.9, 10)


def _summary(pre, ft, chosen, alphas, corrected=10, uniform=5.0, id_acc=95.0):
    ms = lambda v: {"mean": v, "std": 1.0}  # noqa: E731
    return {
        "pre": ms(pre),
        "ft": ms(ft),
        "chosen": ms(chosen),
        "id_acc_ft": ms(id_acc),
        "corrected": ms(corrected),
        "both_wrong": ms(50.0),
        "uniform_expected": ms(uniform),
        "chance_pct": 11.0,
        "diverged_members": [],
        "per_seed": [{"seed": i, "alpha": a} for i, a in enumerate(alphas)],
    }


def test_claims_held_failed_not_tested():
    c = WiseFT.check_claims(_summary(88.0, 89.0, 91.0, [0.5, 0.6, 0.5]))
    assert [x.held for x in c] == [True, True]
    c = WiseFT.check_claims(_summary(88.0, 89.0, 89.5, [0.5, 0.6, 0.5], corrected=3))
    assert [x.held for x in c] == [False, False]
    c = WiseFT.check_claims(_summary(88.0, 89.0, 91.0, [1.0, 0.6, 0.5]))
    assert c[0].held is None and "endpoint" in c[0].detail and c[1].held is True
    c = WiseFT.check_claims(_summary(15.0, 89.0, 91.0, [0.5, 0.5, 0.5]))
    assert c[0].held is None and c[1].held is None
    c = WiseFT.check_claims(_summary(88.0, 89.0, 91.0, [0.5] * 3, id_acc=80.0))
    assert c[0].held is None and "colour" in c[0].detail


def test_config_checks():
    with pytest.raises(ConfigError, match="correlation"):
        WiseFTConfig(correlation=1.5)
