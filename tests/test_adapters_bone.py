"""Bone (Kang 2024) in PEFT's MiSS ``bat`` form: hand-computed blocks, zero start,
gradients only on the block matrix, merge/remove, exclusion and bad input, and parity of
the forward with PEFT's MiSS ``bat``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from weightlab.adapters.bone import (
    Bone,
    BoneDelta,
    BoneExcludedWarning,
    bone_delta,
    export_bone_peft,
)
from weightlab.adapters.lora import (
    adapter_modules,
    add_adapters,
    merge_adapters,
    remove_adapters,
    unmerge_adapters,
)
from weightlab.adapters.peft_format import export_peft
from weightlab.errors import ConfigError


class MLP(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 12), nn.Linear(12, 12), nn.Linear(12, 6)
        with torch.no_grad():
            for m in (self.fc1, self.fc2, self.fc3):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.4)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)

    def forward(self, x):
        return self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


def _fill(aset, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in aset.adapters.values():
            a.miss_block.copy_(torch.randn(a.miss_block.shape, generator=g) * 0.2)


def test_bone_delta_hand_case():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 6, generator=g, dtype=torch.float64)
    b = torch.randn(2, 2, 2, generator=g, dtype=torch.float64)
    d = bone_delta(w, b)
    for i in range(2):
        for j in range(3):
            blk = w[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
            assert torch.allclose(d[2 * i : 2 * i + 2, 2 * j : 2 * j + 2], blk @ b[i] + b[i])


def test_zero_start_gradients_only_on_blocks_and_merge_remove():
    model, x = MLP(), torch.randn(5, 8)
    w0 = {n: m.weight.detach().clone() for n, m in model.named_children()}
    y0 = model(x)
    with pytest.warns(BoneExcludedWarning, match="fc3"):
        aset = add_adapters(model, ["fc1", "fc2", "fc3"], rank=4, init=Bone())
    assert set(aset.adapters) == {"fc1", "fc2"}
    assert all(isinstance(a, BoneDelta) for a in aset.adapters.values())
    assert aset.num_trainable() == 12 * 4 + 12 * 4  # out * r per layer
    assert torch.allclose(model(x), y0, atol=1e-6)
    model(x).pow(2).sum().backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads == {f"{n}.parametrizations.weight.0.miss_block" for n in ("fc1", "fc2")}
    _fill(aset)
    y = model(x)
    assert not torch.allclose(y, y0)
    merge_adapters(model)
    assert torch.allclose(model(x), y, atol=1e-6)
    assert not adapter_modules(model)
    unmerge_adapters(model)
    assert torch.allclose(model(x), y, atol=1e-6)
    remove_adapters(model)
    for n, m in model.named_children():
        assert torch.equal(m.weight, w0[n])
    assert torch.allclose(model(x), y0)


def test_bad_input_and_export_refused(tmp_path):
    with pytest.raises(ConfigError, match="Bone rank 5 divides no selected") as e:
        add_adapters(MLP(), ["fc1", "fc2"], rank=5, init=Bone())
    assert "\n" not in str(e.value)
    model = MLP()
    add_adapters(model, ["fc1", "fc2"], rank=4, init=Bone())
    with pytest.raises(ConfigError, match="BoneDelta"):
        export_peft(model, tmp_path / "peft")


@pytest.mark.slow  # importing peft takes ~5 s; the check itself is instant
def test_forward_equals_peft_miss_bat():
    peft = pytest.importorskip("peft")
    base, x = MLP(), torch.randn(6, 8)
    ours = copy.deepcopy(base)
    aset = add_adapters(ours, ["fc1", "fc2"], rank=4, init=Bone())
    _fill(aset)
    cfg = peft.MissConfig(r=4, init_weights="bat", target_modules=["fc1", "fc2"])
    pm = peft.get_peft_model(copy.deepcopy(base), cfg)
    with torch.no_grad():
        for name, a in aset.adapters.items():
            layer = pm.base_model.model.get_submodule(name)
            layer.miss_block["default"].copy_(a.miss_block)
    assert torch.allclose(ours(x), pm(x), atol=1e-6, rtol=1e-5)


@pytest.mark.slow  # importing peft takes ~5 s
def test_export_loads_in_peft_as_miss_bat(tmp_path):
    peft = pytest.importorskip("peft")
    base, x = MLP(), torch.randn(6, 8)
    ours = copy.deepcopy(base)
    aset = add_adapters(ours, ["fc1", "fc2"], rank=4, init=Bone())
    _fill(aset)
    folder = export_bone_peft(ours, tmp_path / "miss")
    pm = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(folder))
    assert torch.allclose(pm(x), ours(x), atol=1e-6, rtol=1e-5)
    with pytest.raises(ConfigError, match="one rank"):
        other = copy.deepcopy(base)
        add_adapters(other, ["fc1", "fc2"], rank=4, overrides={"fc2": {"rank": 6}}, init=Bone())
        export_bone_peft(other, tmp_path / "x")
