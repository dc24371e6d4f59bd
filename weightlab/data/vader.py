"""VADER word-valence tasks (Hutto & Gilbert 2014, "VADER: A Parsimonious Rule-based Model
for Sentiment Analysis of Social Media Text"), from the lexicon shipped in ``vaderSentiment``.

- ``vader_words``: regression on the **mean human rating** (ten raters, scale -4..+4) of the
  purely alphabetic entries of ``vader_lexicon.txt``. The file has 7,520 entries; 7,217 of
  them are alphabetic (the ~300 emoticons, the hyphenated words and the 3 phrases are left
  out). Eight alphabetic words appear twice (fav, lmao, lol, muah, ok, sob, xd, xp): each is
  kept once, with the value VADER itself uses (its lexicon dict keeps the later line), so the
  task has **7,209 distinct words**.
- ``vader_sentences``: templated sentences whose labels come from **VADER's rules, not from
  people**: a template that only carries the word keeps the word's rating; the negation
  template multiplies it by VADER's ``N_SCALAR`` (-0.74); the booster templates add VADER's
  ``B_INCR`` (+0.293, "very") or ``B_DECR`` (-0.293, "slightly") away from zero, exactly as
  ``vaderSentiment.scalar_inc_dec`` does. Labels are the raw valence sums VADER computes
  before its ``normalize`` (``normalize(label)`` equals VADER's ``compound`` score for every
  sentence). Words of one or two letters are left out of the sentences: VADER's tokenizer
  keeps the final period on such tokens (``"ok."``), so VADER itself scores them 0 there.

Split (both tasks): words sharing a stem stay in one split. The stem is :func:`stem`, a
stated suffix-stripping rule (longest matching suffix of :data:`SUFFIXES` removed or
replaced when at least 3 letters remain, then a final ``e`` dropped and a doubled final
consonant undoubled: hate/hated/hates/hating/hater -> ``hat``; happiness/happily -> ``happy``).
The distinct stems are permuted by ``generator(derive_seed("vader_split", seed))`` and
assigned in that order to train until it holds >= 60% of the words, then to validation until
>= 80%, the rest to test. ``seed=0`` is the fixed split.

Inputs are token ids and attention mask packed ``(n, 2, max_length)`` int64
(:func:`weightlab.models.bert.pack_inputs`), as in the ``sentences`` task, with MiniLM's
WordPiece vocabulary (its ``vocab.txt``; the weights are not loaded) or, for smoke runs, a
whole-word tokenizer over the task's own words (``tokenizer="tiny"``). ``y`` is float
``(n, 1)``; the metric is test R².
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np
import torch

from weightlab.data.params import Param
from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator

__all__ = [
    "SENTENCE_TEMPLATES",
    "SENTENCES_PARAMS",
    "SUFFIXES",
    "WORDS_PARAMS",
    "load_vader_sentences",
    "load_vader_words",
    "stem",
    "stem_split",
    "vader_lexicon",
    "vader_words",
]

# (suffix, replacement), tried longest first; a match needs >= 3 letters left
SUFFIXES: tuple[tuple[str, str], ...] = tuple(
    sorted(
        [
            ("iness", "y"),
            ("ingly", ""),
            ("fully", ""),
            ("ities", ""),
            ("ness", ""),
            ("less", ""),
            ("ment", ""),
            ("ings", ""),
            ("edly", ""),
            ("iest", "y"),
            ("ily", "y"),
            ("ies", "y"),
            ("ied", "y"),
            ("ier", "y"),
            ("ity", ""),
            ("ing", ""),
            ("ful", ""),
            ("ers", ""),
            ("est", ""),
            ("ous", ""),
            ("ive", ""),
            ("ed", ""),
            ("ly", ""),
            ("er", ""),
            ("es", ""),
            ("s", ""),
        ],
        key=lambda s: -len(s[0]),
    )
)
MIN_STEM = 3
SPLIT_FRACTIONS = (0.6, 0.2)  # train, val; test gets the rest
_VOWELS = set("aeiouy")

# (template, kind): kind "plain" keeps the rating, "negation" multiplies by N_SCALAR,
# a booster word adds its scalar away from zero (VADER's scalar_inc_dec)
SENTENCE_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("i feel {w}.", "plain"),
    ("it is {w}.", "plain"),
    ("it is not {w}.", "negation"),
    ("it is very {w}.", "very"),
    ("it is slightly {w}.", "slightly"),
)

_TOKENIZER = Param(
    "tokenizer",
    "str",
    "minilm",
    "WordPiece vocabulary: all-MiniLM-L6-v2's vocab.txt, or a whole-word vocabulary over the "
    "task's words (smoke runs with tiny_bert)",
    choices=("minilm", "tiny"),
)
_MAXLEN = Param(
    "max_length", "int", 16, "tokens per input ([CLS] and [SEP] included)", min=4, max=64
)
_SEED = Param("seed", "int", 0, "seed of the stem-grouped split (0: the fixed split)", min=0)
WORDS_PARAMS = (_TOKENIZER, _MAXLEN, _SEED)
SENTENCES_PARAMS = (_TOKENIZER, _MAXLEN, _SEED)


def _vader():
    try:
        from vaderSentiment import vaderSentiment
    except ImportError:
        raise ConfigError(
            "the 'vaderSentiment' package is missing; install it with: "
            "pip install vaderSentiment==3.3.2"
        ) from None
    return vaderSentiment


@lru_cache(maxsize=1)
def vader_lexicon() -> dict[str, float]:
    """VADER's own lexicon dict (``SentimentIntensityAnalyzer().lexicon``: word -> mean
    human rating), every entry, emoticons included."""
    return dict(_vader().SentimentIntensityAnalyzer().lexicon)


def vader_words() -> list[str]:
    """The purely alphabetic lexicon words (7,209 distinct), sorted."""
    return sorted(w for w in vader_lexicon() if w.isalpha())


@cache
def stem(word: str) -> str:
    """The split's stemming rule (see the module docstring): strip the longest matching
    suffix of :data:`SUFFIXES` (with its replacement) if >= 3 letters remain, then drop a
    final ``e`` and undouble a doubled final consonant (if >= 3 letters remain)."""
    w = word.lower()
    for suffix, repl in SUFFIXES:
        if w.endswith(suffix) and len(w) - len(suffix) >= MIN_STEM:
            w = w[: -len(suffix)] + repl
            break
    if w.endswith("e") and len(w) > MIN_STEM:
        w = w[:-1]
    if len(w) > MIN_STEM and w[-1] == w[-2] and w[-1] not in _VOWELS:
        w = w[:-1]
    return w


def stem_split(words: list[str], seed: int = 0) -> dict[str, list[str]]:
    """``{"train", "val", "test"}`` word lists: stems permuted by
    ``generator(derive_seed("vader_split", seed))``, assigned in that order to train until
    >= 60% of the words, then to val until >= 80%, then to test; each list keeps the
    order of ``words``."""
    stems = sorted({stem(w) for w in words})
    count: dict[str, int] = {}
    for w in words:
        count[stem(w)] = count.get(stem(w), 0) + 1
    perm = torch.randperm(len(stems), generator=generator(derive_seed("vader_split", seed)))
    bounds = [f * len(words) for f in np.cumsum(SPLIT_FRACTIONS)]
    where: dict[str, str] = {}
    seen = 0
    for i in perm.tolist():
        s = stems[i]
        where[s] = "train" if seen < bounds[0] else "val" if seen < bounds[1] else "test"
        seen += count[s]
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for w in words:
        out[where[stem(w)]].append(w)
    return out


def _tokenizer(kind: str, texts: list[str]):
    from weightlab.models.minilm import minilm_path, tiny_tokenizer
    from weightlab.models.wordpiece import WordPiece

    if kind == "minilm":
        return WordPiece.from_file(minilm_path() / "vocab.txt", True)
    return tiny_tokenizer(texts)


def _pieces(tok, text: str) -> list[int]:
    """``tok.tokenize(text)`` for ``"prefix {w}suffix"`` texts built by this module, composed
    from the cached pieces of the template's parts and of the alphabetic word (WordPiece's
    basic tokenizer splits at spaces and punctuation, so the concatenation is exact)."""
    for template, _ in SENTENCE_TEMPLATES:
        head, _, tail = template.partition("{w}")
        if (
            text.startswith(head)
            and text.endswith(tail)
            and text[len(head) : len(text) - len(tail)].isalpha()
        ):
            w = text[len(head) : len(text) - len(tail)]
            return [*_part(tok, head), *tok.word_ids(w), *_part(tok, tail)]
    if text.isalpha() and text.islower():
        return tok.word_ids(text)
    return tok.tokenize(text)


def _part(tok, text: str) -> list[int]:
    cache = tok.__dict__.setdefault("_vader_parts", {})
    if text not in cache:
        cache[text] = tok.tokenize(text)
    return cache[text]


def _encode(tok, texts: list[str], max_length: int) -> torch.Tensor:
    """``WordPiece.encode`` + ``pack_inputs`` (same ids), filled through NumPy: each text is
    ``[CLS] pieces [SEP]``, truncated to ``max_length`` and padded with ``[PAD]``."""
    from weightlab.models.bert import pack_inputs

    ids = np.full((len(texts), max_length), tok.pad_id, dtype=np.int64)
    mask = np.zeros((len(texts), max_length), dtype=np.int64)
    for r, text in enumerate(texts):
        row = [tok.cls_id, *_pieces(tok, text)[: max_length - 2], tok.sep_id]
        ids[r, : len(row)] = row
        mask[r, : len(row)] = 1
    return pack_inputs(torch.from_numpy(ids), torch.from_numpy(mask))


def _task(name, texts, labels, tokenizer, max_length, info) -> TaskData:
    vocab_texts = [*vader_words(), *(t for t, _ in SENTENCE_TEMPLATES)]
    tok = _tokenizer(tokenizer, vocab_texts)
    splits = {
        k: Split(
            _encode(tok, texts[k], max_length),
            torch.tensor(labels[k], dtype=torch.float32).reshape(-1, 1),
        )
        for k in ("train", "val", "test")
    }
    info = {**info, "texts": texts, "tokenizer": tokenizer, "max_length": max_length}
    return TaskData(
        name, splits["train"], splits["val"], splits["test"], 0, "regression", info=info
    )


def _split_info(parts: dict[str, list[str]]) -> dict:
    return {
        "split_rule": (
            "stem-grouped: weightlab.data.vader.stem (longest suffix of SUFFIXES stripped if "
            ">= 3 letters remain, final e dropped, doubled final consonant undoubled); stems "
            "permuted by generator(derive_seed('vader_split', seed)); train until >= 60% of "
            "words, val until >= 80%, rest test"
        ),
        "counts": {k: len(v) for k, v in parts.items()},
    }


def load_vader_words(tokenizer: str = "minilm", max_length: int = 16, seed: int = 0) -> TaskData:
    """Regression on the mean human rating of VADER's 7,209 distinct alphabetic words
    (module docstring): ``x`` = the word tokenized alone, ``y`` = its rating ``(n, 1)``."""
    lex = vader_lexicon()
    parts = stem_split(vader_words(), seed)
    labels = {k: [lex[w] for w in ws] for k, ws in parts.items()}
    info = {
        **_split_info(parts),
        "labels": "mean human ratings (-4..+4, ten raters) from vaderSentiment's vader_lexicon.txt",
        "words": parts,
        "alphabetic_entries": 7217,
        "distinct_words": len(vader_words()),
    }
    return _task("vader_words", parts, labels, tokenizer, max_length, info)


def sentence_label(rating: float, kind: str) -> float:
    """A template's label from VADER's constants (read from ``vaderSentiment``):
    plain -> ``rating``; negation -> ``rating * N_SCALAR``; a booster word ->
    ``rating + scalar_inc_dec(word, rating, False)`` (B_INCR / B_DECR away from zero)."""
    v = _vader()
    if kind == "plain":
        return rating
    if kind == "negation":
        return rating * v.N_SCALAR
    return rating + v.scalar_inc_dec(kind, rating, False)


def load_vader_sentences(
    tokenizer: str = "minilm", max_length: int = 16, seed: int = 0
) -> TaskData:
    """Templated sentences labelled by VADER's rules, not by people (module docstring):
    every word of three or more letters in each of :data:`SENTENCE_TEMPLATES`; the split
    is ``vader_words``' stem-grouped split, so a word's sentences share one split."""
    lex = vader_lexicon()
    words = [w for w in vader_words() if len(w) >= 3]
    parts = stem_split(vader_words(), seed)
    keep = set(words)
    texts: dict[str, list[str]] = {}
    labels: dict[str, list[float]] = {}
    for k, ws in parts.items():
        texts[k], labels[k] = [], []
        for w in ws:
            if w not in keep:
                continue
            for template, kind in SENTENCE_TEMPLATES:
                texts[k].append(template.format(w=w))
                labels[k].append(sentence_label(lex[w], kind))
    v = _vader()
    info = {
        **_split_info(texts),
        "labels": "from VADER's rules, not from people: the word's human rating kept, "
        f"times N_SCALAR={v.N_SCALAR} (negation), plus B_INCR={v.B_INCR} / B_DECR={v.B_DECR} "
        "away from zero (boosters); normalize(label) is VADER's compound score",
        "templates": [t for t, _ in SENTENCE_TEMPLATES],
        "words": len(words),
    }
    return _task("vader_sentences", texts, labels, tokenizer, max_length, info)
