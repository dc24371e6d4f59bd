"""EVA init (Paischer et al. 2024): incremental SVD, rank redistribution, shared inputs,
2-D inputs, bad input, and parity with PEFT's EVA (same ranks, same A up to sign)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from weightlab.adapters.eva import EVA, IncrementalSVD, redistribute_ranks
from weightlab.adapters.lora import adapter_modules, add_adapters
from weightlab.errors import ConfigError


class QKV(nn.Module):
    """q, k, v read one tensor; ``o`` reads a 3-D input, ``pool`` a 2-D one (BERT's pooler)."""

    def __init__(self, d: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.pool = nn.Linear(d, d)
        with torch.no_grad():
            for m in (self.q, self.k, self.v, self.o, self.pool):
                m.weight.copy_(torch.randn(d, d, generator=g) / d**0.5)

    def forward(self, x):
        h = self.q(x) + self.k(x) + torch.tanh(self.v(x))
        h = self.o(torch.relu(h))
        return self.pool(h[:, 0])


def _data(n=6, b=4, t=8, d=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) * torch.logspace(0, -2, d)[None]
    return [torch.randn(b, t, d, generator=g) @ mix.T for _ in range(n)]


def test_incremental_svd_equals_pca_of_all_rows():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 10, generator=g, dtype=torch.float64) @ torch.randn(
        10, 10, generator=g, dtype=torch.float64
    )
    svd = IncrementalSVD(10)  # k = d: no truncation, so the incremental SVD is exact
    for chunk in x.split(20):
        svd.update(chunk)
    xc = x - x.mean(0)
    _, s, vh = torch.linalg.svd(xc, full_matrices=False)
    assert torch.allclose(svd.components.abs(), vh.abs(), atol=1e-8)
    assert torch.allclose(svd.explained_variance_ratio, s**2 / (xc**2).sum(), atol=1e-10)
    # sign rule: the largest-magnitude entry of each component is positive
    rows = torch.arange(10)
    assert (svd.components[rows, svd.components.abs().argmax(1)] > 0).all()


def test_lowrank_svd_matches_exact_on_a_decaying_spectrum():
    g = torch.Generator().manual_seed(0)
    scales = torch.logspace(0, -3, 40, dtype=torch.float64)
    x = torch.randn(200, 40, generator=g, dtype=torch.float64) * scales
    exact, low = IncrementalSVD(4), IncrementalSVD(4, "lowrank", torch.Generator().manual_seed(1))
    for chunk in x.split(50):
        exact.update(chunk)
        low.update(chunk)
    cos = (exact.components * low.components).sum(1).abs()
    assert torch.allclose(cos, torch.ones(4, dtype=cos.dtype), atol=1e-5)  # float32 path
    assert torch.allclose(low.explained_variance_ratio, exact.explained_variance_ratio, rtol=1e-4)


def test_redistribute_ranks_hand_case():
    ratios = {
        "a": torch.tensor([0.5, 0.3, 0.1, 0.05]),
        "b": torch.tensor([0.4, 0.02, 0.01, 0.0]),
        "c": torch.tensor([0.2, 0.15, 0.12, 0.11]),
    }
    # budget 6: 0.5 a, 0.4 b, 0.3 a, 0.2 c, 0.15 c, 0.12 c
    assert redistribute_ranks(ratios, 6, {}) == {"a": 2, "b": 1, "c": 3}
    # a sharer that got more than its leader swaps with it
    assert redistribute_ranks(ratios, 6, {"c": "a"}) == {"a": 3, "b": 1, "c": 2}


def test_eva_a_is_top_right_singular_vectors_b_zero_and_output_unchanged():
    model, data = QKV(), _data()
    x = data[0]
    before = model(x)
    eva = EVA(data, 1, rho=1.0, svd="exact")  # one batch: one exact SVD (more batches: incremental)
    aset = add_adapters(model, ["q", "k", "v", "o", "pool"], rank=3, init=eva)
    assert eva.ranks == dict.fromkeys(["q", "k", "v", "o", "pool"], 3)  # rho = 1: uniform
    assert torch.allclose(model(x), before, atol=1e-6)  # B = 0
    a = adapter_modules(model)["q"]
    rows = torch.cat([t.reshape(-1, 16) for t in data[:1]]).double()
    vh = torch.linalg.svd(rows - rows.mean(0), full_matrices=False)[2]
    assert torch.allclose(a.lora_A.detach().abs().double(), vh[:3].abs(), atol=1e-5)
    assert torch.allclose(a.lora_A @ a.lora_A.T, torch.eye(3), atol=1e-5)  # norm-1 rows
    assert all(float(m.lora_B.detach().abs().max()) == 0 for m in aset.adapters.values())


def test_shared_inputs_are_keyed_by_identity_and_2d_pooler_works():
    model, data = QKV(), _data()
    eva = EVA(data, 2, rho=2.0)
    add_adapters(model, ["q", "k", "v", "o", "pool"], rank=2, init=eva)
    assert eva.shared == {"k": "q", "v": "q"}  # one SVD for q, k, v
    a = adapter_modules(model)
    assert torch.equal(a["q"].lora_A[:1], a["k"].lora_A[:1])
    assert "pool" in eva.ranks and eva.explained_variance_ratio["pool"].numel() == 4

    class Twins(nn.Module):  # equal values, distinct tensors: not shared
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(16, 4), nn.Linear(16, 4)

        def forward(self, x):
            return self.a(x) + self.b(x.clone())

    eva2 = EVA(data, 2, rho=1.0)
    add_adapters(Twins(), ["a", "b"], rank=2, init=eva2)
    assert eva2.shared == {}


def test_token_mask_leaves_padding_out_of_the_svd():
    data = _data(n=2)
    mask = torch.zeros(4, 8, dtype=torch.bool)
    mask[:, :5] = True
    padded = [t.clone() for t in data]
    for t in padded:
        t[:, 5:] = 100.0  # padding positions with a huge value
    masked = EVA(padded, 2, rho=1.0, svd="exact", token_mask=lambda b: mask)
    add_adapters(QKV(), ["q", "pool"], rank=2, init=masked)
    clean = EVA([t[:, :5] for t in data], 2, rho=1.0, svd="exact")
    add_adapters(QKV(), ["q", "pool"], rank=2, init=clean)
    a, b = masked._svd["q"], clean._svd["q"]
    assert torch.allclose(a.components.abs(), b.components.abs(), atol=1e-8)
    assert masked._svd["pool"].count == 8  # the 2-D pooler input keeps its rows
    short = EVA(padded, 2, rho=1.0, svd="exact", token_mask=lambda b: mask[:, :5])
    with pytest.raises(ConfigError, match="token_mask has shape"):
        add_adapters(QKV(), ["q", "pool"], rank=2, init=short)  # never silently all rows


def test_budget_and_scaling_follow_the_redistribution():
    model, data = QKV(), _data()
    eva = EVA(data, 2, rho=3.0)
    aset = add_adapters(model, ["q", "k", "v", "o", "pool"], rank=2, alpha=4.0, init=eva)
    assert sum(eva.ranks.values()) == 5 * 2  # the global budget
    assert max(eva.ranks.values()) <= 6
    for plan in aset.plans:
        assert plan.scaling == pytest.approx(2.0)  # alpha follows the rank: s = alpha/r kept
        assert aset.adapters[plan.name].lora_A.shape[0] == eva.ranks[plan.name]


def test_bad_input_is_one_line():
    with pytest.raises(ConfigError, match="EVA needs data"):
        EVA(None, 4)
    with pytest.raises(ConfigError, match="n_batches"):
        EVA(_data(), 0)
    with pytest.raises(ConfigError, match="rho"):
        EVA(_data(), 2, rho=0.5)
    with pytest.raises(ConfigError, match="svd"):
        EVA(_data(), 2, svd="fast")
    with pytest.raises(ConfigError, match="only 6"):
        add_adapters(QKV(), ["q"], rank=2, init=EVA(_data(), 10))

    class Unused(QKV):
        def __init__(self):
            super().__init__()
            self.spare = nn.Linear(16, 16)

    with pytest.raises(ConfigError, match="could not hook spare") as e:
        add_adapters(Unused(), ["q", "spare"], rank=2, init=EVA(_data(), 2))
    assert "\n" not in str(e.value)

    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv1d(2, 4, 3)

        def forward(self, x):
            return self.c(x)

    with pytest.raises(ConfigError, match="Linear layers only"):
        add_adapters(Conv(), ["c"], rank=2, init=EVA(torch.randn(4, 2, 9), 2))


def test_taskdata_and_pairs_are_accepted():
    data = _data()
    pairs = [(x, torch.zeros(len(x))) for x in data]
    e1, e2 = EVA(pairs, 2, rho=1.5), EVA(torch.cat(data[:2]), 2)
    add_adapters(QKV(), ["q", "o"], rank=2, init=e1)
    add_adapters(QKV(), ["q", "o"], rank=2, init=e2)
    assert e1.explained_variance_ratio.keys() == e2.explained_variance_ratio.keys()


# ---- parity with PEFT's EVA (peft installed as the test extra) -------------------------


def _hf_bert():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.BertModel(cfg).eval()
    with torch.no_grad():  # structured FFN inputs so that the ranks are redistributed
        for i, layer in enumerate(model.encoder.layer):
            g = torch.Generator().manual_seed(5 + i)
            w = torch.randn(64, 2, generator=g) @ torch.randn(2, 32, generator=g)
            layer.intermediate.dense.weight.copy_(w)
            layer.attention.output.dense.weight.mul_(3.0)
    return model


@pytest.mark.slow  # importing peft + transformers alone takes ~5 s; the check itself < 1 s
def test_parity_with_peft_eva_ranks_and_a_up_to_sign(monkeypatch):
    peft = pytest.importorskip("peft")
    from peft.tuners.lora import eva as peft_eva

    base = _hf_bert()
    g = torch.Generator().manual_seed(1)
    batches = [{"input_ids": torch.randint(0, 100, (4, 12), generator=g)} for _ in range(3)]

    ours = copy.deepcopy(base)
    eva = EVA(batches, 2, rho=2.0, svd="exact")
    add_adapters(ours, ["*.query", "*.key", "*.value", "encoder.*.dense"], rank=4, init=eva)

    class ExactPCA(peft_eva.IncrementalPCA):  # PEFT's hook with an exact SVD per update
        def __init__(self, **kw):
            super().__init__(**{**kw, "lowrank": False})

    monkeypatch.setattr(peft_eva, "IncrementalPCA", ExactPCA)
    cfg = peft.LoraConfig(
        r=4,
        lora_alpha=4,
        target_modules=["query", "key", "value", "dense"],
        exclude_modules=["pooler.dense"],  # PEFT's hash hook crashes on the pooler's input
        init_lora_weights="eva",
        eva_config=peft.EvaConfig(rho=2.0, tau=0.0),
    )
    pm = peft.get_peft_model(copy.deepcopy(base), cfg)
    # tau = -1: every component counts as converged after the second SVD batch, so PEFT
    # reads exactly 2 batches (after its one hashing forward), as EVA(batches, 2)
    pm.peft_config["default"].eva_config.tau = -1.0
    state = peft_eva.get_eva_state_dict(
        pm,
        dataloader=batches,
        prepare_model_inputs_fn=None,
        prepare_layer_inputs_fn=None,
        show_progress_bar=False,
    )
    state = {k.removeprefix("base_model.model."): v for k, v in state.items()}
    assert {k: v.shape[0] for k, v in state.items()} == eva.ranks
    assert len(set(eva.ranks.values())) > 1  # the ranks were redistributed
    adapters = adapter_modules(ours)
    for name, a_peft in state.items():
        if a_peft.shape[0] == 0:
            assert name not in adapters
            continue
        a = adapters[name].lora_A.detach()
        cos = (a * a_peft).sum(1).abs()
        assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5), name


@pytest.mark.slow  # importing peft takes ~5 s
def test_export_writes_eva_ranks_and_loads_in_peft(tmp_path):
    peft = pytest.importorskip("peft")
    from weightlab.adapters.peft_format import export_peft

    base, data = QKV(), _data()
    ours = copy.deepcopy(base)
    eva = EVA(data, 2, rho=3.0)
    aset = add_adapters(ours, ["q", "k", "v", "o", "pool"], rank=2, init=eva)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for a in aset.adapters.values():
            a.lora_B.copy_(torch.randn(a.lora_B.shape, generator=g) * 0.1)
    folder = export_peft(ours, tmp_path / "eva")
    pm = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(folder))
    for name, layer in pm.base_model.model.named_modules():
        if hasattr(layer, "lora_A") and "default" in layer.lora_A:
            assert layer.lora_A["default"].weight.shape[0] == eva.ranks[name]
    x = data[0]
    assert torch.allclose(pm(x), ours(x), atol=1e-6)


def test_eva_on_weightlabs_bert_with_packed_tokens_and_padding_mask():
    from weightlab.models.bert import SentenceEncoder, pack_inputs
    from weightlab.models.minilm import encoder_linears, tiny_bert

    enc = SentenceEncoder(tiny_bert(0))
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(3):
        ids = torch.randint(5, 512, (8, 10), generator=g)
        lengths = torch.randint(3, 11, (8,), generator=g)
        mask = (torch.arange(10)[None] < lengths[:, None]).long()
        batches.append(pack_inputs(ids * mask, mask))
    before = enc(batches[0])
    eva = EVA(batches, 3, rho=2.0, token_mask=lambda x: x[:, 1])
    aset = add_adapters(enc, encoder_linears(), rank=4, init=eva)
    assert len(eva.ranks) == 36 and sum(eva.ranks.values()) == 36 * 4
    assert len(eva.shared) == 12  # key and value share the query's SVD in each layer
    assert len(aset) == sum(r > 0 for r in eva.ranks.values())
    assert torch.allclose(enc(batches[0]), before, atol=1e-5)
    tokens = sum(int(b[:, 1].sum()) for b in batches)
    assert eva._svd["encoder.layer.0.attention.self.query"].count == tokens
    from weightlab.models.bert import trimmed_token_mask

    trim = SentenceEncoder(tiny_bert(0), trim_padding=True)
    eva_t = EVA(batches, 3, rho=2.0, token_mask=trimmed_token_mask)
    add_adapters(trim, encoder_linears(), rank=4, init=eva_t)
    assert eva_t._svd["encoder.layer.0.attention.self.query"].count == tokens
