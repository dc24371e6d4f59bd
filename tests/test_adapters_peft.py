"""PEFT format and parity with PEFT (peft 0.21, test extra).

Default suite: export/import round trip inside weightlab and the bad-input errors.
Slow (importing peft/transformers alone takes several seconds): LoRA forward and one AdamW
step equal PEFT's on a small MLP and on MiniLM's 36 attention/FFN linears (transformers'
BertModel from the package folder, offline); PiSSA/OLoRA equal PEFT's; PiSSA's randomized
SVD within a stated tolerance of PEFT's ``pissa_niter_N``; export loads in
``PeftModel.from_pretrained`` on the original base with the same outputs, for every init;
a PEFT-saved adapter imports with the same outputs.
"""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from torch import nn

from weightlab.adapters.lora import adapter_modules, add_adapters
from weightlab.adapters.peft_format import export_peft, import_peft
from weightlab.errors import ConfigError, DataError

INITS = ["random", "gaussian", "pissa", "olora"]


class MLP(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1, self.fc2, self.fc3 = nn.Linear(12, 24), nn.Linear(24, 24), nn.Linear(24, 4)

    def forward(self, x):
        return self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


def _bump_B(aset, seed=3, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in aset.adapters.values():
            a.lora_B.add_(torch.randn(a.lora_B.shape, generator=g) * scale)


def test_roundtrip_within_weightlab(tmp_path):
    m = MLP()
    aset = add_adapters(m, ["fc1", "fc3"], rank=3, overrides={"fc3": {"rank": 2, "alpha": 5.0}})
    _bump_B(aset)
    x = torch.randn(6, 12)
    y = m(x).detach()
    export_peft(m, tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (
        cfg["r"] == 3 and cfg["rank_pattern"] == {"fc3": 2} and cfg["alpha_pattern"] == {"fc3": 5.0}
    )
    m2 = MLP()
    a2 = import_peft(m2, tmp_path)
    torch.testing.assert_close(m2(x), y, rtol=1e-6, atol=1e-7)
    assert a2.adapters["fc3"].scaling == 2.5


def test_roundtrip_base_modifying_init_on_original_base(tmp_path):
    m = MLP()
    with pytest.warns(UserWarning):
        aset = add_adapters(m, ["fc*"], rank=2, init="pissa")
    _bump_B(aset)
    y = m(x := torch.randn(5, 12)).detach()
    export_peft(m, tmp_path)
    m2 = MLP()  # the ORIGINAL base
    a2 = import_peft(m2, tmp_path)
    assert a2.adapters["fc1"].rank == 4
    torch.testing.assert_close(m2(x), y, rtol=1e-5, atol=1e-5)


def test_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="no LoRA adapters"):
        export_peft(MLP(), tmp_path / "none")
    m = MLP()
    add_adapters(m, ["fc1"], rank=2)
    export_peft(m, tmp_path / "ok")
    small = nn.Sequential()
    small.add_module("fc1", nn.Linear(7, 24))
    with pytest.raises(DataError, match=r"lora_A \(2, 12\).*weight is \(24, 7\); load it on") as e:
        import_peft(small, tmp_path / "ok")
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="which this model lacks"):
        import_peft(nn.Sequential(nn.Linear(12, 24)), tmp_path / "ok")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text((tmp_path / "ok" / "adapter_config.json").read_text())
    blob = (tmp_path / "ok" / "adapter_model.safetensors").read_bytes()
    (bad / "adapter_model.safetensors").write_bytes(blob[:40] + b"\x00garbage" + blob[60:90])
    with pytest.raises(DataError, match="corrupt: re-export it") as e:
        import_peft(MLP(), bad)
    assert "\n" not in str(e.value)
    (bad / "adapter_config.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read .*adapter_config.json"):
        import_peft(MLP(), bad)
    with pytest.raises(DataError, match="has no adapter_config.json"):
        import_peft(MLP(), tmp_path / "missing")


# ---------------------------------------------------------------- parity with PEFT (slow)


def _peft():
    return pytest.importorskip("peft")


def _peft_model(base, targets, r, alpha, init=True):
    peft = _peft()
    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, init_lora_weights=init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.get_peft_model(base, cfg)


def _peft_layers(pm):
    out = {}
    for name, mod in pm.base_model.model.named_modules():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            out[name] = mod
    return out


def _copy_into_peft(aset, pm):
    with torch.no_grad():
        for name, mod in _peft_layers(pm).items():
            a = aset.adapters[name]
            mod.lora_A["default"].weight.copy_(a.lora_A.view_as(mod.lora_A["default"].weight))
            mod.lora_B["default"].weight.copy_(a.lora_B.view_as(mod.lora_B["default"].weight))


def _step_parity(ours, theirs, aset, batch, loss_fn):
    ps_ours = list(aset.parameters())
    ps_peft = [p for p in theirs.parameters() if p.requires_grad]
    assert sum(p.numel() for p in ps_ours) == sum(p.numel() for p in ps_peft)
    opt1 = torch.optim.AdamW(ps_ours, lr=1e-2)
    opt2 = torch.optim.AdamW(ps_peft, lr=1e-2)
    l1, l2 = loss_fn(ours, batch), loss_fn(theirs, batch)
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-7)
    l1.backward()
    l2.backward()
    opt1.step()
    opt2.step()
    for name, mod in _peft_layers(theirs).items():
        a = aset.adapters[name]
        for mine, peft_w in (
            (a.lora_A, mod.lora_A["default"].weight),
            (a.lora_B, mod.lora_B["default"].weight),
        ):
            torch.testing.assert_close(
                mine.detach().view_as(peft_w), peft_w.detach(), rtol=1e-5, atol=1e-6
            )
    with torch.no_grad():
        torch.testing.assert_close(
            loss_fn(ours, batch), loss_fn(theirs, batch), rtol=1e-5, atol=1e-7
        )


def _mlp_loss(model, x):
    return (model(x) ** 2).mean()


@pytest.mark.slow
@pytest.mark.parametrize("path", ["activation", "transform"])
def test_mlp_forward_and_step_equal_peft(path):
    ours = MLP()
    aset = add_adapters(ours, ["fc1", "fc2", "fc3"], rank=4, alpha=8.0, path=path)
    _bump_B(aset)
    theirs = _peft_model(MLP(), ["fc1", "fc2", "fc3"], 4, 8)
    _copy_into_peft(aset, theirs)
    _step_parity(ours, theirs, aset, torch.randn(16, 12), _mlp_loss)


def _hf_minilm(monkeypatch, layers=None):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from weightlab.models.minilm import minilm_path

    model = transformers.BertModel.from_pretrained(str(minilm_path()), add_pooling_layer=False)
    if layers is not None:
        model.encoder.layer = model.encoder.layer[:layers]
    return model.eval()


def _bert_batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return ids, mask


def _bert_loss(model, batch):
    ids, mask = batch
    h = model(input_ids=ids, attention_mask=mask).last_hidden_state
    pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return (pooled**2).mean()


MINILM_TARGETS = [
    "query",
    "key",
    "value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
]


@pytest.mark.slow
def test_minilm_forward_and_step_equal_peft(monkeypatch):
    from weightlab.models.minilm import encoder_linears

    ours = _hf_minilm(monkeypatch)
    aset = add_adapters(ours, encoder_linears(), rank=8, alpha=16.0)
    assert len(aset) == 36
    _bump_B(aset, scale=0.02)
    theirs = _peft_model(_hf_minilm(monkeypatch), MINILM_TARGETS, 8, 16)
    assert len(_peft_layers(theirs)) == 36
    _copy_into_peft(aset, theirs)
    _step_parity(ours, theirs, aset, _bert_batch(), _bert_loss)


@pytest.mark.slow
@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_base_modifying_inits_equal_peft(monkeypatch, init):
    from weightlab.models.minilm import encoder_linears

    ours = _hf_minilm(monkeypatch, layers=1)
    with pytest.warns(UserWarning):
        aset = add_adapters(ours, encoder_linears(), rank=8, alpha=16.0, init=init)
    theirs = _peft_model(_hf_minilm(monkeypatch, layers=1), MINILM_TARGETS, 8, 16, init=init)
    for name, mod in _peft_layers(theirs).items():
        a = aset.adapters[name]
        torch.testing.assert_close(a.base_layer.weight, mod.base_layer.weight, rtol=1e-5, atol=1e-6)
        ba = a.lora_B @ a.lora_A
        peft_ba = mod.lora_B["default"].weight @ mod.lora_A["default"].weight
        torch.testing.assert_close(ba, peft_ba, rtol=1e-5, atol=1e-5)


# Stated tolerance. Our randomized SVD draws its test matrix from weightlab's generator,
# PEFT's from torch's global RNG, so the two agree only as two draws of one algorithm do.
# MiniLM's singular values are nearly flat around rank 8 (S_8/S_9 = 1.007-1.05 in layer 0),
# so the rank-8 subspace found with niter 4 and q = r varies from draw to draw: PEFT's own
# principal parts for two seeds differ by 40-81% (relative Frobenius). Held here: each
# residual norm is within 1% of the optimal (full-SVD) one for both, and ours differs from
# PEFT's by at most RANDOMIZED_TOL times PEFT's seed-to-seed difference, per layer.
RANDOMIZED_TOL = 1.25


@pytest.mark.slow
def test_randomized_pissa_vs_peft_niter(monkeypatch):
    from weightlab.models.minilm import encoder_linears

    ours = _hf_minilm(monkeypatch, layers=1)
    full = _hf_minilm(monkeypatch, layers=1)
    with pytest.warns(UserWarning):
        aset = add_adapters(ours, encoder_linears(), rank=8, init="pissa_niter_4")
        fset = add_adapters(full, encoder_linears(), rank=8, init="pissa")
    peft_runs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        pm = _peft_model(_hf_minilm(monkeypatch, layers=1), MINILM_TARGETS, 8, 8, "pissa_niter_4")
        peft_runs.append(_peft_layers(pm))
    for name, mod in peft_runs[0].items():
        a = aset.adapters[name]
        best = fset.adapters[name].base_layer.weight.norm()
        mine, peft_res = a.base_layer.weight.norm(), mod.base_layer.weight.norm()
        assert best <= mine <= 1.01 * best and best <= peft_res <= 1.01 * best
        d0, d1 = (
            m.lora_B["default"].weight @ m.lora_A["default"].weight
            for m in (mod, peft_runs[1][name])
        )
        ours_vs_peft = (a.delta() - d0).norm()
        assert ours_vs_peft <= RANDOMIZED_TOL * (d0 - d1).norm(), name


@pytest.mark.slow
@pytest.mark.parametrize("init", INITS)
def test_export_loads_in_peft_on_original_base(tmp_path, init):
    peft = _peft()
    ours = MLP()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aset = add_adapters(
            ours,
            ["fc1", "fc2", "fc3"],
            rank=3,
            alpha=6.0,
            init=init,
            overrides={"fc3": {"rank": 2}},
        )
    _bump_B(aset)
    x = torch.randn(8, 12)
    y = ours(x).detach()
    export_peft(ours, tmp_path)
    loaded = peft.PeftModel.from_pretrained(MLP(), str(tmp_path))
    assert len(_peft_layers(loaded)) == 3
    torch.testing.assert_close(loaded(x), y, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_export_minilm_pissa_loads_in_peft(tmp_path, monkeypatch):
    peft = _peft()
    from weightlab.models.minilm import encoder_linears

    ours = _hf_minilm(monkeypatch, layers=2)
    with pytest.warns(UserWarning):
        aset = add_adapters(ours, encoder_linears(), rank=8, init="pissa_niter_4")
    _bump_B(aset, scale=0.01)
    batch = _bert_batch()
    with torch.no_grad():
        y = ours(input_ids=batch[0], attention_mask=batch[1]).last_hidden_state
    export_peft(ours, tmp_path)
    loaded = peft.PeftModel.from_pretrained(_hf_minilm(monkeypatch, layers=2), str(tmp_path))
    with torch.no_grad():
        y2 = loaded(input_ids=batch[0], attention_mask=batch[1]).last_hidden_state
    torch.testing.assert_close(y2, y, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_import_peft_saved_adapter(tmp_path):
    theirs = _peft_model(MLP(), ["fc1", "fc3"], 4, 4)
    with torch.no_grad():
        for mod in _peft_layers(theirs).values():
            mod.lora_B["default"].weight.normal_(0, 0.1)
    x = torch.randn(5, 12)
    y = theirs(x).detach()
    theirs.save_pretrained(str(tmp_path))
    ours = MLP()
    aset = import_peft(ours, tmp_path)
    assert set(aset.adapters) == {"fc1", "fc3"} and set(adapter_modules(ours)) == {"fc1", "fc3"}
    torch.testing.assert_close(ours(x), y, rtol=1e-5, atol=1e-6)
    copy.deepcopy(ours)
