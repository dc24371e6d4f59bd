"""eva-vs-lora recipe: the control init, EVA reuse, the trimmed token mask, the claims on
hand-made entries, bad configs, and a smoke run end to end with resume."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from weightlab.adapters.eva import EVA
from weightlab.adapters.lora import adapter_modules, add_adapters
from weightlab.errors import ConfigError
from weightlab.models.bert import trimmed_token_mask
from weightlab.recipes.adapters.eva_vs_lora import (
    EVAControl,
    EVAvsLoRA,
    EVAvsLoRAConfig,
    FittedEVA,
    layer_type,
    rank_by_type,
)
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.l0, self.l1 = nn.Linear(12, 16), nn.Linear(16, 6)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            # l0 nearly rank 1: l1's input is nearly 1-D, l0's is isotropic, so EVA's
            # explained-variance redistribution gives the two layers different ranks
            u, v = torch.randn(16, 1, generator=g), torch.randn(1, 12, generator=g)
            self.l0.weight.mul_(0.05).add_(u @ v)

    def forward(self, x):
        return self.l1(torch.tanh(self.l0(x)))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(96, 12, generator=g)


def _fit(rank=3, rho=2.0):
    eva = EVA(_data(), 3, rho=rho, svd="exact")
    net = Net()
    add_adapters(net, ["l0", "l1"], rank=rank, init=eva, seed=5)
    return eva, net


def _lora_a(net):
    return {n: m.lora_A.detach().clone() for n, m in adapter_modules(net).items()}


def test_fitted_eva_reuses_ranks_and_rows_without_forwards():
    eva, net = _fit()
    assert sum(eva.ranks.values()) == 6 and eva.ranks != {"l0": 3, "l1": 3}

    def boom(*a):
        raise AssertionError("a fitted EVA must not run forwards again")

    eva.forward = boom
    other = Net()
    add_adapters(other, ["l0", "l1"], rank=3, init=FittedEVA(eva), seed=9)
    a0, a1 = _lora_a(net), _lora_a(other)
    assert a0.keys() == a1.keys()
    for n in a0:
        torch.testing.assert_close(a0[n], a1[n])
    x = _data()[:4]
    torch.testing.assert_close(other(x), Net()(x))  # B = 0: the function is unchanged


def test_control_has_evas_ranks_and_row_norms_but_random_directions():
    eva, net = _fit()
    ctl, ctl2 = Net(), Net()
    add_adapters(ctl, ["l0", "l1"], rank=3, init=EVAControl(eva), seed=5)
    add_adapters(ctl2, ["l0", "l1"], rank=3, init=EVAControl(eva), seed=5)
    ea, ca = _lora_a(net), _lora_a(ctl)
    for n, mod in adapter_modules(ctl).items():
        assert ca[n].shape == ea[n].shape  # EVA's rank per layer
        assert mod.scaling == adapter_modules(net)[n].scaling == 1.0  # s = alpha / r = 1
        torch.testing.assert_close(ca[n].norm(dim=1), ea[n].norm(dim=1))  # EVA's norms (1)
        torch.testing.assert_close(ca[n].norm(dim=1), torch.ones(len(ca[n])))
        assert (ca[n] @ ea[n].T).abs().max() < 0.95  # not EVA's directions
        assert torch.count_nonzero(mod.lora_B) == 0
        torch.testing.assert_close(ca[n], _lora_a(ctl2)[n])  # drawn from the seed only


def test_control_rescales_to_whitened_row_norms():
    eva = EVA(_data(), 3, rho=1.0, svd="exact", whiten=True)
    net = Net()
    add_adapters(net, ["l0", "l1"], rank=3, init=eva, seed=0)
    ctl = Net()
    add_adapters(ctl, ["l0", "l1"], rank=3, init=EVAControl(eva), seed=0)
    for n, a in _lora_a(net).items():
        torch.testing.assert_close(_lora_a(ctl)[n].norm(dim=1), a.norm(dim=1))
        assert not torch.allclose(a.norm(dim=1), torch.ones(3))


def test_trimmed_mask_keeps_padding_out_of_evas_svd():
    """EVA through the padding-trimming encoder with the trimmed mask equals EVA through
    the untrimmed encoder with the full mask: same ranks, same A."""
    from weightlab.models.bert import SentenceEncoder
    from weightlab.models.minilm import encoder_linears, tiny_bert

    bert = tiny_bert(0, vocab_size=50, hidden=16, layers=1, heads=2, intermediate=32)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 50, (24, 10), generator=g)
    lengths = torch.randint(2, 6, (24,), generator=g)  # at most 5 of 10 positions used
    mask = (torch.arange(10)[None] < lengths[:, None]).long()
    x = torch.stack([ids * mask, mask], 1)
    assert trimmed_token_mask(x).shape == (24, int(lengths.max()))
    out = {}
    for trim, fn in ((True, trimmed_token_mask), (False, lambda b: b[:, 1].bool())):
        body = SentenceEncoder(copy.deepcopy(bert), trim_padding=trim).eval()
        eva = EVA(x, 3, rho=2.0, svd="exact", token_mask=fn)
        add_adapters(body, encoder_linears(), rank=4, init=eva)
        out[trim] = (eva.ranks, _lora_a(body))
    assert out[True][0] == out[False][0]
    for n, a in out[True][1].items():
        torch.testing.assert_close(a, out[False][1][n], atol=1e-5, rtol=1e-4)
    # the untrimmed mask does not fit the trimmed inputs: a one-line error, never padding rows
    body = SentenceEncoder(copy.deepcopy(bert), trim_padding=True).eval()
    eva = EVA(x, 3, rho=2.0, svd="exact", token_mask=lambda b: b[:, 1].bool())
    with pytest.raises(ConfigError, match="token_mask has shape"):
        add_adapters(body, encoder_linears(), rank=4, init=eva)


def test_layer_types_and_rank_sums():
    assert layer_type("encoder.layer.3.attention.self.key") == "key"
    assert layer_type("encoder.layer.0.attention.output.dense") == "attention output"
    assert layer_type("encoder.layer.0.intermediate.dense") == "intermediate"
    assert layer_type("encoder.layer.5.output.dense") == "output"
    assert layer_type("layers.1") == "layers.1"
    ranks = {
        "0": {
            "encoder.layer.0.output.dense": 3,
            "encoder.layer.1.output.dense": 4,
            "encoder.layer.0.attention.self.query": 9,
        },
        "1": {"encoder.layer.0.attention.self.query": 2},
    }
    assert rank_by_type(ranks) == [["query", {"0": 9, "1": 2}], ["output", {"0": 7}]]


def _arm(losses, tests, lr=1e-3, diverged=()):
    from weightlab.recipes.stats import mean_std

    return {
        "lr": lr,
        "mean_loss": losses,
        "test": tests,
        "mean_loss_mean": mean_std(losses)[0],
        "mean_loss_std": mean_std(losses)[1],
        "test_mean": mean_std(tests)[0],
        "test_std": mean_std(tests)[1],
        "diverged": list(diverged),
    }


def _entry(eva_loss, lora_loss, ctl_loss, eva_test, lora_test, metric="r2", b_acc=20.0, div=()):
    ref = (
        {"metric": "r2", "unit": "R² points", "chance_pct": None}
        if metric == "r2"
        else {
            "metric": "acc",
            "unit": "accuracy %",
            "chance_pct": 10.0,
            "a_test_acc": 60.0,
            "b_test_acc_before": b_acc,
        }
    )
    return {
        "arms": {
            "lora": _arm(lora_loss, lora_test),
            "eva": _arm(eva_loss, eva_test, diverged=div),
            "control": _arm(ctl_loss, lora_test),
        },
        "reference": ref,
    }


def test_claims_held():
    t = _entry([0.90, 0.95, 0.92], [1.0, 1.0, 1.0], [0.97, 0.99, 0.98], [60, 61, 62], [61, 61, 62])
    c = EVAvsLoRA.check_claims("vader_words", t)
    assert [x.id for x in c] == ["a vader_words", "b vader_words", "c vader_words"]
    assert [x.held for x in c] == [True, True, True]
    assert c[0].evidence["gain"] == pytest.approx(1 - 0.92333333, rel=1e-4)


def test_claims_did_not_hold():
    # (a) a 7% mean gain but one seed above LoRA; (b) only 1% below the control;
    # (c) 1.33 points below LoRA on the paired mean
    t = _entry([0.80, 0.85, 1.05], [1.0, 1.0, 1.0], [0.93, 0.91, 0.93], [58, 60, 61], [60, 61, 62])
    c = EVAvsLoRA.check_claims("vader_words", t)
    assert [x.held for x in c] == [False, False, False]
    assert "NOT every" in c[0].detail and c[2].evidence["mean_difference"] == pytest.approx(-4 / 3)


def test_claims_not_tested():
    ok = ([0.9] * 3, [1.0] * 3, [1.0] * 3)
    c = EVAvsLoRA.check_claims("vader_words", _entry(*ok, [60] * 3, [5, 6, 7]))
    assert [x.held for x in c] == [None] * 3 and "did not learn" in c[0].detail
    c = EVAvsLoRA.check_claims("mnist1d_shift", _entry(*ok, [40] * 3, [40] * 3, "acc", 45.0))
    assert [x.held for x in c] == [None] * 3 and "too mild" in c[0].detail
    c = EVAvsLoRA.check_claims("mnist1d_shift", _entry(*ok, [40] * 3, [40] * 3, "acc"))
    assert [x.held for x in c] == [True, True, True]
    div = _entry(*ok, [40] * 3, [40] * 3, "acc", div=["eva seed 1"])
    c = EVAvsLoRA.check_claims("mnist1d_shift", div)
    assert [x.held for x in c] == [None] * 3 and "diverged" in c[1].detail


def test_bad_config_is_one_line_config_error():
    with pytest.raises(ConfigError, match="--tasks"):
        EVAvsLoRAConfig(tasks="vader_words,cifar").task_list()
    with pytest.raises(ConfigError, match="--vader-lrs"):
        EVAvsLoRAConfig(vader_lrs="1e-3,fast").lrs("vader_words")
    with pytest.raises(ConfigError, match="--shift-lrs"):
        EVAvsLoRAConfig(shift_lrs="-1").lrs("mnist1d_shift")
    with pytest.raises(ConfigError, match="rho"):
        EVAvsLoRAConfig(rho=0.5)
    with pytest.raises(ConfigError, match="eva-batches"):
        EVAvsLoRA().validate(EVAvsLoRAConfig(eva_batches=20, steps=10), {"train": 100})


def test_smoke_run_end_to_end_and_resume(tmp_path):
    from weightlab.recipes.runner import make_config, run_recipe

    cfg = make_config("eva-vs-lora", smoke=True, tasks="mnist1d_shift")
    out = tmp_path / "run"
    _, summary = run_recipe("eva-vs-lora", cfg, out=out)
    assert [c["id"] for c in summary["claims"]] == [
        "a mnist1d_shift",
        "b mnist1d_shift",
        "c mnist1d_shift",
    ]
    for c in summary["claims"]:
        assert c["verdict"] in ("held", "did not hold", "not tested") and c["detail"]
    t = summary["tasks"]["mnist1d_shift"]
    ranks = t["arms"]["eva"]["seeds"][1]["info"]["ranks"]
    assert sum(ranks.values()) == 2 * cfg.rank
    assert t["arms"]["control"]["seeds"][1]["info"]["ranks"] == ranks
    assert (out / "eva_vs_lora.png").exists() or list(out.rglob("*.png"))
    assert "rank allocation" in (out / "report.md").read_text()
    timing = read_json(out / "timing.json")
    assert timing["measurements"][0]["rows"]  # EVA init seconds per seed
    # resume: the control refits EVA (its eva unit is done) and gives the same summary
    before = (out / "summary.json").read_bytes()
    (out / "summary.json").unlink()
    (out / "units" / "mnist1d_shift-control-seed-1.json").unlink()
    run_recipe("eva-vs-lora", cfg, out=out)
    assert read_json(out / "timing.json")["computed_units"] == ["mnist1d_shift-control-seed-1"]
    assert (out / "summary.json").read_bytes() == before
