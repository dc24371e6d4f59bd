"""LoRA: dry run, activation vs Transform path, frozen base, merge/unmerge, masks, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from weightlab.adapters.lora import (
    LoRADelta,
    LoRALayer,
    add_adapters,
    format_plans,
    merge_adapters,
    preview_adapters,
    remove_adapters,
    unmerge_adapters,
)
from weightlab.core import Selector, apply_masks
from weightlab.errors import ConfigError
from weightlab.models.minilm import encoder_linears, tiny_bert


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)
    )


def _convnet() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, stride=2), nn.Flatten()
    )


def _conv1d() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv1d(2, 5, 5, padding=2, dilation=1), nn.ReLU(), nn.Conv1d(5, 3, 3))


def _randomize_B(s) -> None:
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for a in s.adapters.values():
            a.lora_B.copy_(torch.randn(a.lora_B.shape, generator=g) * 0.1)


def _paths_agree(make, x, select, **kw):
    m1, m2 = make(), make()
    s1 = add_adapters(m1, select, path="activation", seed=3, **kw)
    s2 = add_adapters(m2, select, path="transform", seed=3, **kw)
    _randomize_B(s1)
    _randomize_B(s2)
    y1, y2 = m1(x), m2(x)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-6)
    (y1**2).sum().backward()
    (y2**2).sum().backward()
    for name in s1.adapters:
        a1, a2 = s1.adapters[name], s2.adapters[name]
        assert isinstance(a1, LoRALayer) and isinstance(a2, LoRADelta)
        # float32, two summation orders: the absolute tolerance scales with the gradient
        for g1, g2 in ((a1.lora_A.grad, a2.lora_A.grad), (a1.lora_B.grad, a2.lora_B.grad)):
            atol = max(1e-7, 1e-6 * float(g2.abs().max()))
            torch.testing.assert_close(g1, g2, rtol=1e-5, atol=atol)
        assert a1.base_layer.weight.grad is None and not a1.base_layer.weight.requires_grad
    return m1, s1


def test_preview_is_a_dry_run_with_counts():
    m = _mlp()
    before = copy.deepcopy(m.state_dict())
    plans = preview_adapters(m, nn.Linear, rank=4, overrides={"4": {"rank": 2, "alpha": 8}})
    assert [p.name for p in plans] == ["0", "2", "4"]
    assert [p.trainable for p in plans] == [4 * (10 + 16), 4 * (16 + 16), 2 * (16 + 3)]
    assert plans[2].scaling == 4.0 and plans[0].scaling == 1.0
    table = format_plans(plans)
    assert "total" in table and f"{sum(p.trainable for p in plans):,}" in table
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert not any(isinstance(x, LoRALayer) for x in m.modules())


def test_paths_agree_mlp_and_base_frozen():
    x = torch.randn(7, 10)
    m, s = _paths_agree(_mlp, x, nn.Linear, rank=3, alpha=6.0)
    assert s.num_trainable() == 3 * (26 + 32 + 19)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert all("lora_" in n for n in trainable) and len(trainable) == 6


def test_paths_agree_conv2d_conv1d():
    _paths_agree(_convnet, torch.randn(2, 3, 8, 8), "conv", rank=2)
    _paths_agree(_conv1d, torch.randn(3, 2, 20), nn.Conv1d, rank=2, alpha=4.0)


def test_paths_agree_native_bert_attention():
    x = torch.randint(5, 100, (2, 6))
    sel = Selector(types=("linear",), include=("encoder.layer.*.attention.*",))
    _paths_agree(lambda: tiny_bert(0, layers=1), x, sel, rank=4)


@pytest.mark.slow  # importing transformers alone takes seconds
def test_paths_agree_hf_bert_projections():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )

    def make():
        torch.manual_seed(0)
        return transformers.BertModel(cfg).eval()

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = make()

        def forward(self, ids):
            return self.bert(input_ids=ids).last_hidden_state

    ids = torch.randint(1, 64, (2, 5), generator=torch.Generator().manual_seed(0))
    sel = Selector(types=("linear",), include=("bert.encoder.layer.*",))
    _, s = _paths_agree(Wrap, ids, sel, rank=2)
    assert len(s) == 6


def test_merge_unmerge_exact_and_plain():
    m = _mlp()
    w0 = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(5, 10)
    s = add_adapters(m, nn.Linear, rank=2)
    _randomize_B(s)
    y = m(x).detach()
    merge_adapters(m)
    assert set(m.state_dict()) == set(w0)
    assert all(type(layer) in (nn.Linear, nn.Tanh) for layer in m)
    torch.testing.assert_close(m(x), y, rtol=1e-5, atol=1e-6)
    unmerge_adapters(m)
    assert isinstance(m[0], LoRALayer)
    torch.testing.assert_close(m(x), y, rtol=0, atol=0)
    remove_adapters(m)
    assert all(torch.equal(w0[k], v) for k, v in m.state_dict().items())


def test_transform_path_composes_with_mask():
    m = _mlp()
    w0 = m[2].weight.detach().clone()
    s = add_adapters(m, ["2"], rank=2, path="transform")
    _randomize_B(s)
    mask = (torch.rand(16, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    apply_masks(m, {"2.weight": mask})
    a = s.adapters["2"]
    want = ((w0 * mask) + (a.lora_B @ a.lora_A)) * mask  # stored W0 is zeroed where M = 0
    torch.testing.assert_close(m[2].weight, want)
    x = torch.randn(4, 10)
    y = m(x).detach()
    merge_adapters(m)
    assert type(m[2]) is nn.Linear
    torch.testing.assert_close(m(x), y, rtol=1e-6, atol=1e-7)
    unmerge_adapters(m)
    torch.testing.assert_close(m[2].weight, want)


def test_remove_restores_exactly_after_base_modifying_init():
    m = _mlp()
    w0 = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.warns(UserWarning, match="rewrote the base weights"):
        add_adapters(m, nn.Linear, rank=2, init="olora")
    assert not torch.equal(m[0].base_layer.weight, w0["0.weight"])
    remove_adapters(m)
    assert all(torch.equal(w0[k], v) for k, v in m.state_dict().items())


def test_bad_input_one_line():
    m = _mlp()
    with pytest.raises(ConfigError, match=r"matches no layer; layers that exist: 0, 2, 4") as e:
        add_adapters(m, ["encoder.*"])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"rank 11 .* 1\.\.10 = min\(in, out\)"):
        preview_adapters(m, nn.Linear, rank=11)
    with pytest.raises(ConfigError, match="unknown adapter path"):
        add_adapters(m, nn.Linear, path="dense")
    with pytest.raises(ConfigError, match="unknown adapter init"):
        add_adapters(m, nn.Linear, init="loftq")
    add_adapters(m, ["0"])
    with pytest.raises(ConfigError, match="already has an adapter"):
        add_adapters(m, ["0*"])


def test_minilm_selector_on_tiny_bert():
    m = tiny_bert(0, layers=2)
    plans = preview_adapters(m, encoder_linears(), rank=4)
    assert len(plans) == 12
    s = add_adapters(m, encoder_linears(), rank=4, overrides={"*.query": {"rank": 2}})
    assert s.adapters["encoder.layer.0.attention.self.query"].rank == 2
    assert s.adapters["encoder.layer.0.attention.self.key"].rank == 4


def test_model_folder_missing_weights_is_one_line(tmp_path):
    from weightlab.errors import DataError
    from weightlab.models.minilm import load_bert, minilm_path

    (tmp_path / "config.json").write_text((minilm_path() / "config.json").read_text())
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(DataError, match="has no model.safetensors") as e:
        load_bert(tmp_path)
    assert "\n" not in str(e.value)
