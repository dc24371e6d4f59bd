"""Empirical NTK [#60]: every method against a Jacobian built by hand with autograd."""

import pytest
import torch
from torch import nn

from weightlab.core.mask import apply_masks
from weightlab.core.selectors import plain_name
from weightlab.errors import ConfigError
from weightlab.kernels.empirical import (
    NTKLinear,
    ProjectedOutput,
    empirical_ntk,
    ntk_mlp,
    ntk_vector_product,
    qualifies_structured,
)
from weightlab.models import build
from weightlab.models.mlp import MLP


def _x(n, d, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _hand_jacobian(model, x):
    """``{plain name: (n, O, P)}``: one backward per example and output."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    n_out = model(x[:1]).numel()
    rows = {plain_name(n): [] for n, _ in params}
    for i in range(x.shape[0]):
        out = model(x[i : i + 1]).reshape(-1)
        per = {plain_name(n): [] for n, _ in params}
        for o in range(n_out):
            grads = torch.autograd.grad(out[o], [p for _, p in params], retain_graph=True)
            for (n, _), g in zip(params, grads, strict=True):
                per[plain_name(n)].append(g.reshape(-1))
        for k, v in per.items():
            rows[k].append(torch.stack(v))
    return {k: torch.stack(v) for k, v in rows.items()}


def _hand_ntk(model, x1, x2=None):
    j1 = _hand_jacobian(model, x1)
    j2 = j1 if x2 is None else _hand_jacobian(model, x2)
    blocks = {k: torch.einsum("aop,bqp->aboq", j1[k], j2[k]) for k in j1}
    return blocks, sum(blocks.values())


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("method", ["structured", "jacobian", "ntvp"])
def test_mlp_multi_output_all_forms_match_hand_jacobian(method):
    m = build(MLP, [5, 7, 6, 3], seed=1, activation="tanh").double()
    x1, x2 = _x(6, 5), _x(4, 5, seed=1)
    blocks, full = _hand_ntk(m, x1, x2)
    k = empirical_ntk(m, x1, x2, method=method, chunk=3)
    assert k.shape == (6, 4, 3, 3)
    assert _rel(k, full) < 1e-12
    tr = empirical_ntk(m, x1, x2, form="trace", method=method)
    assert _rel(tr, torch.einsum("aboo->ab", full)) < 1e-12
    bl = empirical_ntk(m, x1, x2, form="blocks", method=method)
    assert set(bl) == set(blocks)
    for name in blocks:
        assert _rel(bl[name], blocks[name]) < 1e-12, name


def test_structured_equals_jacobian_scalar_output_and_symmetric():
    m = build(MLP, [4, 16, 16, 1], seed=0).double()
    x = _x(9, 4)
    ks = empirical_ntk(m, x, method="structured")
    kj = empirical_ntk(m, x, method="jacobian", chunk=4, max_bytes=2000)  # many groups
    assert ks.shape == (9, 9)
    assert _rel(ks, kj) < 1e-6
    torch.testing.assert_close(ks, ks.T)
    assert torch.linalg.eigvalsh(ks).min() > -1e-9


def test_linear_model_known_answer():
    x = _x(7, 3)
    lin = nn.Linear(3, 1).double()
    torch.testing.assert_close(empirical_ntk(lin, x, method="jacobian"), x @ x.T + 1.0)
    seq = nn.Sequential(nn.Linear(3, 1)).double()
    torch.testing.assert_close(empirical_ntk(seq, x), x @ x.T + 1.0)


def test_ntk_parametrized_mlp_and_float32_model():
    m = ntk_mlp([3, 20, 20, 2], w_std=1.5, b_std=0.3, seed=4)
    assert isinstance(m[0], NTKLinear) and qualifies_structured(m)
    x = _x(5, 3)
    _, full = _hand_ntk(m, x)
    assert _rel(empirical_ntk(m, x), full) < 1e-12
    m32 = build(MLP, [4, 8, 1], seed=0)
    x32 = _x(6, 4).float()
    k32 = empirical_ntk(m32, x32)
    assert k32.dtype == torch.float64
    assert _rel(k32, empirical_ntk(m32.double(), x32.double())) < 1e-5
    assert empirical_ntk(m32.float(), x32, dtype=torch.float32).dtype == torch.float32


def test_masked_model_counts_only_free_weights():
    m = build(MLP, [4, 6, 2], seed=2).double()
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(6, 4, generator=g) > 0.5).double()
    apply_masks(m, {"layers.0.weight": mask})
    assert not qualifies_structured(m)
    x = _x(5, 4)
    k = empirical_ntk(m, x)  # auto -> jacobian through the transform
    # by hand: the effective model's Jacobian with the masked entries dropped
    plain = build(MLP, [4, 6, 2], seed=2).double()
    with torch.no_grad():
        plain.layers[0].weight.copy_(m.layers[0].weight)
    blocks, _ = _hand_ntk(plain, x)
    jw = _hand_jacobian(plain, x)["layers.0.weight"] * mask.reshape(-1)
    blocks["layers.0.weight"] = torch.einsum("aop,bqp->aboq", jw, jw)
    assert _rel(k, sum(blocks.values())) < 1e-12
    bl = empirical_ntk(m, x, form="blocks")
    assert "layers.0.weight" in bl
    assert _rel(bl["layers.0.weight"], blocks["layers.0.weight"]) < 1e-12


def test_population_member_and_params_subset():
    from weightlab.models import model_factory
    from weightlab.population import MemberSpec, Population

    pop = Population(model_factory(MLP, [3, 8, 1]), [MemberSpec(seed=0), MemberSpec(seed=5)])
    member = pop.member(1)
    ref = build(MLP, [3, 8, 1], seed=5)
    x = _x(6, 3).to(member.layers[0].weight.dtype)
    torch.testing.assert_close(empirical_ntk(member, x), empirical_ntk(ref, x))
    sub = empirical_ntk(ref, x, params=["layers.1.weight", "layers.1.bias"])
    bl = empirical_ntk(ref, x, form="blocks")
    torch.testing.assert_close(sub, bl["layers.1.weight"] + bl["layers.1.bias"])


def test_other_module_uses_jacobian():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)
            self.ln = nn.LayerNorm(3)

        def forward(self, x):
            return self.b(self.ln(x + torch.tanh(self.a(x))))

    m = Res().double()
    assert not qualifies_structured(m)
    x1, x2 = _x(5, 3), _x(3, 3, seed=2)
    _, full = _hand_ntk(m, x1, x2)
    assert _rel(empirical_ntk(m, x1, x2), full) < 1e-12
    assert _rel(empirical_ntk(m, x1, x2, method="ntvp", chunk=2), full) < 1e-12
    assert _rel(empirical_ntk(m, x1, x2, out_chunk=1, chunk=2, max_bytes=1), full) < 1e-12
    v = _x(3, 2, seed=3)
    kv = ntk_vector_product(m, x1, x2, v)
    torch.testing.assert_close(kv, torch.einsum("aboq,bq->ao", full, v))


def test_embedding_block_from_per_position_gradients():
    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(11, 4, padding_idx=0)
            self.pos = nn.Embedding(5, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, ids):
            h = torch.tanh(self.emb(ids) + self.pos(torch.arange(ids.shape[1])))
            return self.head(h.mean(1))

    torch.manual_seed(0)
    m = Bag().double()
    ids1 = torch.tensor([[1, 2, 3, 1, 0], [4, 4, 0, 0, 0], [2, 7, 9, 10, 3]])
    ids2 = torch.tensor([[3, 3, 1, 0, 0], [5, 6, 7, 8, 9]])
    from weightlab.kernels._ntk_jacobian import _sparse_embeddings

    names = {n: n for n, _ in m.named_parameters()}
    assert set(_sparse_embeddings(m, ids1, names)) == {"emb.weight"}  # pos: dense
    blocks, full = _hand_ntk(m, ids1, ids2)
    bl = empirical_ntk(m, ids1, ids2, form="blocks")
    assert _rel(bl["emb.weight"], blocks["emb.weight"]) < 1e-12
    assert _rel(empirical_ntk(m, ids1, ids2), full) < 1e-12
    assert (
        _rel(empirical_ntk(m, ids1, form="trace"), torch.einsum("aboo->ab", _hand_ntk(m, ids1)[1]))
        < 1e-12
    )


def test_bad_input_is_one_line_config_error():
    m = build(MLP, [4, 5, 1], seed=0)
    x = torch.randn(3, 4)
    with pytest.raises(ConfigError, match="do not fit the model") as e:
        empirical_ntk(m, torch.randn(3, 7))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="unknown NTK form"):
        empirical_ntk(m, x, form="diag")
    with pytest.raises(ConfigError, match="unknown NTK method"):
        empirical_ntk(m, x, method="fast")
    with pytest.raises(ConfigError, match="plain stack"):
        empirical_ntk(nn.Sequential(nn.Linear(4, 2), nn.LayerNorm(2)), x, method="structured")
    with pytest.raises(ConfigError, match="same shape"):
        empirical_ntk(m, x, torch.randn(2, 5))
    with pytest.raises(ConfigError, match="not trainable"):
        empirical_ntk(m, x, params=["nope.weight"])
    drop = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5), nn.Linear(3, 1))
    with pytest.raises(ConfigError, match=r"training mode; call model.eval\(\)"):
        empirical_ntk(drop, x)
    assert empirical_ntk(drop.eval(), x).shape == (3, 3)


def _tiny_sentences(layers=2):
    from weightlab.models.bert import SentenceEncoder, pack_inputs
    from weightlab.models.minilm import tiny_bert

    bert = tiny_bert(0, layers=layers, vocab_size=64).double()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 64, (4, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    mask[2, 2:] = 0
    x = pack_inputs(ids * mask, mask)
    v = torch.randn(32, generator=g, dtype=torch.float64)
    return ProjectedOutput(SentenceEncoder(bert), v), x


def test_bert_sentences_with_attention_mask_match_hand_jacobian():
    m, x = _tiny_sentences()
    blocks, full = _hand_ntk(m, x)
    blocks = {k: v[:, :, 0, 0] for k, v in blocks.items()}
    full = full[:, :, 0, 0]
    bl = empirical_ntk(m, x, form="blocks", chunk=3, max_bytes=20_000)
    word = "model.embeddings.word_embeddings.weight"
    assert _rel(bl[word], blocks[word]) < 1e-10
    assert _rel(sum(bl.values()), full) < 1e-10
    # masked tokens do not matter: changing a padded token id leaves the kernel unchanged
    x2 = x.clone()
    x2[1, 0, 5] = 7
    assert _rel(empirical_ntk(m, x2), full) < 1e-10


@pytest.mark.slow
def test_minilm_few_sentences_match_hand_jacobian():
    from weightlab.data.sentences import sentences
    from weightlab.models.bert import SentenceEncoder, pack_inputs
    from weightlab.models.minilm import load_minilm

    bert, tok = load_minilm()
    ids, mask = tok.encode(sentences(3, seed=0))
    x = pack_inputs(ids, mask)
    v = torch.randn(384, generator=torch.Generator().manual_seed(0))
    m = ProjectedOutput(SentenceEncoder(bert), v / v.norm())
    k = empirical_ntk(m, x, chunk=2, max_bytes=200 << 20)
    j = _hand_jacobian(m, x)
    want = sum(torch.einsum("aop,bop->ab", t.double(), t.double()) for t in j.values())
    assert _rel(k, want) < 1e-4  # float32 derivatives


class _DataDependent(nn.Module):
    """Branches on a tensor's value (``.item()``), which ``vmap`` cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.a = nn.Linear(3, 4).double()
        self.b = nn.Linear(4, 2).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        h = torch.tanh(h) if h.sum().item() > 0 else torch.relu(h)
        return self.b(h)


def test_module_that_cannot_run_under_vmap_falls_back_to_a_loop():
    model, x = _DataDependent(), _x(5, 3, seed=2)
    with pytest.warns(RuntimeWarning, match="cannot run under vmap"):
        k = empirical_ntk(model, x, method="jacobian")
    _, hand = _hand_ntk(model, x)
    assert _rel(k, hand) < 1e-12


@pytest.mark.slow
def test_transformers_bert_with_attention_mask_matches_hand_jacobian():
    """transformers' BertModel fails under vmap whenever an attention_mask is passed; the
    per-example loop gives the exact kernel."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    bert = transformers.BertModel(cfg).eval()

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert
            self.register_buffer("v", torch.randn(16, generator=torch.Generator().manual_seed(3)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            ids, mask = x[:, 0], x[:, 1]
            h = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(h.dtype)
            return ((h * m).sum(1) / m.sum(1)) @ self.v[:, None]

    g = torch.Generator().manual_seed(4)
    ids = torch.randint(1, 50, (4, 6), generator=g)
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[0, 4:], ids[0, 4:] = 0, 0
    x = torch.stack([ids, mask], 1)
    model = Head()
    with pytest.warns(RuntimeWarning, match="cannot run under vmap"):
        k = empirical_ntk(model, x).double()
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(4):
        grads = torch.autograd.grad(model(x[i : i + 1]).sum(), params, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (g if g is not None else torch.zeros_like(p)).reshape(-1)
                    for g, p in zip(grads, params, strict=True)
                ]
            )
        )
    j = torch.stack(rows).double()
    assert _rel(k, j @ j.T) < 1e-6
