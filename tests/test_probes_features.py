"""Hidden-state extraction (probes/features.py): one forward per batch for all layers,
the feature forms, the streamed all-pairs CKA, no mutation of the model, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from weightlab.data.sentences import sentences
from weightlab.errors import ConfigError
from weightlab.models.bert import BertConfig, BertModel, SentenceEncoder, pack_inputs
from weightlab.models.minilm import tiny_bert, tiny_tokenizer
from weightlab.probes.cka import cka_matrix
from weightlab.probes.features import (
    bert_layers,
    hidden_state_cka,
    hidden_states,
    iter_hidden_states,
)
from weightlab.seeding import seeded_global_cpu_rng


@pytest.fixture(scope="module")
def bert():
    texts = sentences(24, seed=0)
    tok = tiny_tokenizer(texts)
    model = tiny_bert(0, vocab_size=len(tok.vocab), layers=3)
    ids, mask = tok.encode(texts, max_length=12)
    batches = [{"input_ids": ids[i : i + 8], "attention_mask": mask[i : i + 8]} for i in (0, 8, 16)]
    return model, ids, mask, batches


def _count_forwards(model: nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_all_layers_in_one_forward_per_batch(bert):
    model, ids, mask, batches = bert
    assert bert_layers(model) == ["embeddings", *(f"encoder.layer.{i}" for i in range(3))]
    calls = _count_forwards(model)
    hs = hidden_states(model, batches)
    assert calls[0] == 3 and hs.forwards == 3
    model._forward_pre_hooks.clear()
    assert hs.names == ("embeddings", "encoder.layer.0", "encoder.layer.1", "encoder.layer.2")
    assert hs.pool == "flattened" and hs.n == 24
    with torch.no_grad():
        emb = model.embeddings(ids, None)
        last = model(ids, mask)
    assert torch.allclose(hs["embeddings"], emb.flatten(1), atol=1e-6)
    assert torch.allclose(hs["encoder.layer.2"], last.flatten(1), atol=1e-5)
    pooled = hidden_states(model, batches, pool="pooled")
    sent = hidden_states(model, batches, ["encoder.layer.2"], pool="sentence")
    with torch.no_grad():
        embed = model.embed(ids, mask)
    assert torch.allclose(pooled["encoder.layer.2"], embed, atol=1e-5)
    assert torch.allclose(sent["encoder.layer.2"], nn.functional.normalize(embed, dim=1), atol=1e-5)
    assert sent.to_dict()["pool"] == "sentence" and sent.to_dict()["dims"] == {
        "encoder.layer.2": 32
    }


def test_sentence_encoder_packed_inputs_match(bert):
    model, ids, mask, _ = bert
    enc = SentenceEncoder(model)
    packed = [(pack_inputs(ids[i : i + 12], mask[i : i + 12]), torch.zeros(12)) for i in (0, 12)]
    a = hidden_states(enc, packed, pool="pooled")
    b = hidden_states(model, [{"input_ids": ids, "attention_mask": mask}], pool="pooled")
    for name in a.names:
        assert torch.allclose(a[name], b[name], atol=1e-5)
    # trimmed padding: the pooled features are unchanged (mask cut to the trimmed length)
    trimmed = hidden_states(SentenceEncoder(model, trim_padding=True), packed, pool="pooled")
    assert torch.allclose(trimmed["encoder.layer.2"], b["encoder.layer.2"], atol=1e-5)


def test_probe_leaves_model_unchanged(bert):
    model, _, _, batches = bert
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    model.encoder.layer[1].eval()
    modes = [m.training for m in model.modules()]
    hs = hidden_states(model, batches)
    hidden_state_cka(model, batches, progress=False)
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks for m in model.modules())
    assert not hs["embeddings"].requires_grad
    model.eval()


def test_dropout_is_off_during_extraction():
    texts = sentences(8, seed=1)
    tok = tiny_tokenizer(texts)
    cfg = BertConfig(
        vocab_size=len(tok.vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        hidden_dropout_prob=0.5,
    )
    with seeded_global_cpu_rng(0):
        model = BertModel(cfg).train()
    ids, mask = tok.encode(texts, max_length=10)
    b = [{"input_ids": ids, "attention_mask": mask}]
    a1, a2 = hidden_states(model, b), hidden_states(model, b)
    assert torch.equal(a1["encoder.layer.0"], a2["encoder.layer.0"])
    assert model.training


def test_streamed_cka_equals_minibatch_cka_of_extracted_features(bert):
    model, _, _, batches = bert
    hs = hidden_states(model, batches)
    for est in ("debiased", "biased"):
        streamed = hidden_state_cka(model, batches, estimator=est, progress=False)
        ref = cka_matrix(hs.features, batch_size=8, estimator=est)
        assert streamed.rows == hs.names and streamed.batches == 3 and streamed.n == 24
        assert streamed.features == "flattened"
        for i in range(4):
            for j in range(4):
                assert streamed.values[i][j] == pytest.approx(ref.values[i][j], rel=1e-6)
    # two models: rows of one, columns of the other (one forward of each per batch)
    other = tiny_bert(1, vocab_size=model.embeddings.word_embeddings.num_embeddings, layers=2)
    two = hidden_state_cka(model, batches, other=other, pool="pooled", progress=False)
    assert two.cols == ("embeddings", "encoder.layer.0", "encoder.layer.1")
    hs2 = hidden_states(other, batches, pool="pooled")
    ref = cka_matrix(
        hidden_states(model, batches, pool="pooled").features, hs2.features, batch_size=8
    )
    assert two.features == "pooled"
    assert two.values[3][2] == pytest.approx(ref.values[3][2], rel=1e-6)
    assert torch.is_grad_enabled()  # two interleaved extraction generators restore grad mode


def test_extraction_generator_does_not_hold_grad_mode_between_batches(bert):
    from weightlab.probes.features import iter_hidden_states

    model, _, _, batches = bert
    gen = iter_hidden_states(model, batches)
    next(gen)
    assert torch.is_grad_enabled()  # the caller's code between batches keeps autograd
    gen.close()
    assert torch.is_grad_enabled()


def test_generic_module_with_named_layers():
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(20, 5, generator=g)
    hs = hidden_states(net, [(x[:10], None), (x[10:], None)], ["0", "1", "2"])
    with torch.no_grad():
        assert torch.allclose(hs["1"], torch.relu(net[0](x)))
    states = list(iter_hidden_states(net, [x], ["2"]))
    assert len(states) == 1 and states[0]["2"].shape == (20, 3)


def test_bad_input(bert):
    model, _, _, batches = bert
    with pytest.raises(ConfigError, match="no layer.*'encoder.layer.9'.*layers that exist: "):
        hidden_states(model, batches, ["encoder.layer.9"])
    with pytest.raises(ConfigError, match="did not run"):
        hidden_states(model, batches, ["pooler"])
    with pytest.raises(ConfigError, match="unknown pool"):
        hidden_states(model, batches, pool="cls")
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU())
    with pytest.raises(ConfigError, match="pass layers"):
        hidden_states(net, [torch.randn(4, 5)])
    with pytest.raises(ConfigError, match="needs \\(batch, tokens, dim\\)"):
        hidden_states(net, [torch.randn(4, 5)], ["0"], pool="pooled")
    with pytest.raises(ConfigError, match="different sequence lengths"):
        hidden_states(net, [torch.randn(4, 2, 5), torch.randn(4, 3, 5)], ["0"])
    with pytest.raises(ConfigError, match="no batches"):
        hidden_states(net, [], ["0"])
    with pytest.raises(ConfigError, match="other_batches has"):
        hidden_state_cka(model, batches, other=model, other_batches=batches[:2], progress=False)
    shared = nn.Linear(5, 5)
    twice = nn.Sequential(shared, nn.ReLU(), shared)
    with pytest.raises(ConfigError, match="ran twice"):
        hidden_states(twice, [torch.randn(4, 5)], ["0"])
    assert all(not m._forward_hooks for m in twice.modules())
