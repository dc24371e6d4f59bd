"""LoLDU (Shi et al. 2024): pivoted LDU reconstruction, residual + delta = W at init,
gradients only on z and s, merge/unmerge/remove, own-format export, bad input."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from weightlab.adapters.inits import BaseWeightsModifiedWarning
from weightlab.adapters.loldu import LoLDU, LoLDULayer, ldu, load_loldu, save_loldu
from weightlab.adapters.lora import (
    adapter_modules,
    add_adapters,
    merge_adapters,
    remove_adapters,
    unmerge_adapters,
)
from weightlab.adapters.peft_format import export_peft
from weightlab.errors import ConfigError


class Net(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.c1 = nn.Conv1d(3, 6, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(24, 10), nn.Linear(10, 4)
        with torch.no_grad():
            for m in (self.c1, self.fc1, self.fc2):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.3)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)

    def forward(self, x):
        h = torch.tanh(self.c1(x)).flatten(1)[:, :24]
        return self.fc2(torch.tanh(self.fc1(h)))


def _add(model, rank=2, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BaseWeightsModifiedWarning)
        return add_adapters(model, ["c1", "fc1", "fc2"], rank=min(rank, 4), init=LoLDU(rank), **kw)


@pytest.mark.parametrize("shape", [(6, 6), (10, 24), (24, 10)])
def test_ldu_reconstructs_w(shape):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    p, lower, d, upper = ldu(w)
    assert torch.allclose(p @ lower @ torch.diag(d) @ upper, w, atol=1e-12)
    k = min(shape)
    assert torch.allclose(torch.diagonal(lower[:k]), torch.ones(k, dtype=w.dtype))
    assert torch.allclose(torch.diagonal(upper), torch.ones(k, dtype=w.dtype))
    assert torch.equal(torch.triu(lower[:k], 1), torch.zeros(k, k, dtype=w.dtype))
    assert torch.equal(torch.tril(upper[:, :k], -1), torch.zeros(k, k, dtype=w.dtype))


def test_residual_plus_delta_is_w_at_init_and_output_unchanged():
    model, x = Net(), torch.randn(5, 3, 8, generator=torch.Generator().manual_seed(2))
    before = {n: m.weight.detach().clone() for n, m in model.named_children()}
    y0 = model(x)
    with pytest.warns(BaseWeightsModifiedWarning):
        aset = add_adapters(model, ["c1", "fc1", "fc2"], rank=2, init=LoLDU(2))
    assert torch.allclose(model(x), y0, atol=1e-5)
    for name, a in aset.adapters.items():
        assert isinstance(a, LoLDULayer)
        w = a.base_layer.weight.detach()
        assert not torch.allclose(w, before[name])  # the base is the residual now
        assert torch.allclose(w + a.delta().detach(), before[name], atol=1e-6)
        # the frozen factors are the first r columns of P·L and rows of U of W's LDU
        p, lower, d, upper = ldu(before[name].reshape(w.shape[0], -1).double())
        assert torch.allclose(a.lora_B.double(), (p @ lower)[:, :2], atol=1e-6)
        assert torch.allclose(a.lora_A.double(), upper[:2], atol=1e-5)
        assert torch.allclose(a.vector_z.detach().double(), d[:2], atol=1e-6)
        assert float(a.scaling_factor.detach()) == 1.0  # alpha = r by default: s = 1


def test_gradients_only_on_z_and_s():
    model = Net()
    aset = _add(model, rank=3)
    assert aset.num_trainable() == 3 * (3 + 1)  # r + 1 per layer
    model(torch.randn(4, 3, 8)).pow(2).sum().backward()
    for name, p in model.named_parameters():
        trained = name.endswith(("vector_z", "scaling_factor"))
        assert (p.grad is not None) == trained, name
        if trained:
            assert float(p.grad.abs().sum()) > 0


def test_merge_unmerge_and_remove_restore_exactly():
    model, x = Net(), torch.randn(3, 3, 8)
    w0 = {n: m.weight.detach().clone() for n, m in model.named_children()}
    _add(model)
    with torch.no_grad():
        for a in adapter_modules(model).values():
            a.vector_z.mul_(1.5)
            a.scaling_factor.fill_(0.7)
    y = model(x)
    residual = {n: a.base_layer.weight.detach().clone() for n, a in adapter_modules(model).items()}
    merge_adapters(model)
    assert all(type(m) is not LoLDULayer for m in model.modules())
    assert torch.allclose(model(x), y, atol=1e-5)
    unmerge_adapters(model)
    for n, a in adapter_modules(model).items():
        assert torch.equal(a.base_layer.weight, residual[n])
    remove_adapters(model)
    for n, m in model.named_children():
        assert torch.equal(m.weight, w0[n])


def test_own_format_round_trip_and_peft_refused(tmp_path):
    model, x = Net(), torch.randn(3, 3, 8)
    _add(model)
    with torch.no_grad():
        for a in adapter_modules(model).values():
            a.vector_z.add_(0.25)
            a.scaling_factor.fill_(1.3)
    y = model(x)
    f = save_loldu(model, tmp_path / "loldu.safetensors")
    other = Net()
    _add(other)
    assert not torch.allclose(other(x), y)
    load_loldu(other, f)
    assert torch.allclose(other(x), y, atol=1e-6)
    with pytest.raises(ConfigError, match="LoLDULayer.*own format") as e:
        export_peft(model, tmp_path / "peft")
    assert "\n" not in str(e.value)


def test_bad_input():
    with pytest.raises(ConfigError, match="needs a rank"):
        LoLDU()
    with pytest.raises(ConfigError, match="integer >= 1"):
        LoLDU(0)
    with pytest.raises(ConfigError, match="exceeds min"):
        _add(Net(), rank=5)  # fc2 is 10 -> 4
    with pytest.raises(ConfigError, match="activation side"):
        _add(Net(), path="transform")
    model = Net()
    _add(model)
    with pytest.raises(Exception, match="cannot read LoLDU file"):
        load_loldu(model, "/nonexistent/file.safetensors")
