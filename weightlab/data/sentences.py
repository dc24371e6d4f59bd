"""Templated English sentences for MiniLM tasks, deterministic per seed (offline: the
MiniLM package ships no text).

Each sentence is one of :data:`TEMPLATES` with its slots filled from the word lists
(:data:`WORDS`), every choice drawn from ``weightlab.seeding.generator(seed)``. All words
are common lowercase English words, so MiniLM's WordPiece keeps most of them whole; the
sentences run 7–14 WordPiece tokens with ``[CLS]`` and ``[SEP]`` (they fit 16 tokens).
"""

from __future__ import annotations

import string

import torch

from weightlab.data.params import Param
from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator

WORDS: dict[str, tuple[str, ...]] = {
    "name": ("anna", "ben", "maria", "david", "sara", "tom", "lucy", "peter", "emma", "jack"),
    "noun": (
        "dog",
        "cat",
        "teacher",
        "doctor",
        "child",
        "farmer",
        "student",
        "driver",
        "bird",
        "artist",
        "friend",
        "neighbor",
        "pilot",
        "cook",
        "horse",
        "writer",
    ),
    "thing": (
        "book",
        "car",
        "house",
        "letter",
        "song",
        "garden",
        "window",
        "bridge",
        "river",
        "phone",
        "painting",
        "boat",
        "table",
        "city",
        "movie",
        "road",
    ),
    "place": (
        "park",
        "station",
        "school",
        "market",
        "beach",
        "library",
        "kitchen",
        "forest",
        "office",
        "village",
        "hospital",
        "harbor",
    ),
    "adj": (
        "old",
        "new",
        "small",
        "large",
        "quiet",
        "bright",
        "dark",
        "happy",
        "sad",
        "strange",
        "beautiful",
        "cold",
        "warm",
        "busy",
        "empty",
        "famous",
    ),
    "verb": (
        "found",
        "liked",
        "saw",
        "painted",
        "sold",
        "cleaned",
        "visited",
        "wanted",
        "built",
        "opened",
        "lost",
        "watched",
        "carried",
        "described",
    ),
    "adv": ("slowly", "quickly", "often", "never", "always", "carefully", "quietly", "finally"),
    "time": (
        "yesterday",
        "today",
        "tomorrow",
        "last week",
        "every morning",
        "in the evening",
        "at night",
        "on sunday",
    ),
    "feel": (
        "good",
        "bad",
        "great",
        "terrible",
        "nice",
        "awful",
        "fine",
        "wonderful",
        "boring",
        "pleasant",
        "horrible",
        "excellent",
    ),
}

TEMPLATES: tuple[str, ...] = (
    "the {adj} {noun} {verb} the {thing} {time}.",
    "{name} {adv} {verb} the {adj} {thing} near the {place}.",
    "the {noun} at the {place} {verb} my {thing}.",
    "{time}, {name} and the {noun} {verb} the {thing}.",
    "the {thing} in the {place} looks {feel}.",
    "i think the {adj} {thing} is {feel}.",
    "did the {noun} really {adv} like the {thing}?",
    "{name} said the {place} was {adj} and {feel}.",
    "we {verb} the {adj} {thing} at the {place} {time}.",
    "the {noun} was not {feel} about the {adj} {thing}.",
)

__all__ = [
    "PARAMS",
    "TEMPLATES",
    "WORDS",
    "encoder_for",
    "load_sentence_embeddings",
    "sentence_splits",
    "sentences",
    "vocabulary_texts",
]

PARAMS = (
    Param(
        "model",
        "str",
        "minilm",
        "encoder whose mean-pooled embeddings are the targets: all-MiniLM-L6-v2 or a tiny "
        "random BERT (smoke runs, no package needed)",
        choices=("minilm", "tiny"),
    ),
    Param("n_train", "int", 1600, "training sentences", min=1),
    Param("n_val", "int", 64, "validation sentences", min=1),
    Param("n_test", "int", 512, "held-out test sentences", min=1),
    Param("max_length", "int", 16, "tokens per sentence ([CLS] and [SEP] included)", min=8, max=64),
    Param("seed", "int", 0, "seed of the sentences", min=0),
)


def _slots(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def sentences(n: int, seed: int) -> list[str]:
    """``n`` templated sentences from ``seed`` (same seed, same list)."""
    if n < 1:
        raise ConfigError(f"number of sentences must be >= 1, got {n}")
    g = generator(derive_seed("sentences", seed))
    out = []
    for _ in range(n):
        template = TEMPLATES[int(torch.randint(len(TEMPLATES), (), generator=g))]
        fill = {}
        for slot in _slots(template):
            words = WORDS[slot]
            fill[slot] = words[int(torch.randint(len(words), (), generator=g))]
        out.append(template.format(**fill))
    return out


def sentence_splits(sizes: dict[str, int], seed: int) -> dict[str, list[str]]:
    """Disjoint named splits (e.g. ``{"train": 3200, "heldout": 256}``): sentences drawn
    from ``seed`` without repeats across or within splits, in the order of ``sizes``."""
    need = sum(sizes.values())
    seen: set[str] = set()
    pool: list[str] = []
    round_ = 0
    while len(pool) < need:
        for s in sentences(2 * need, derive_seed(seed, round_)):
            if s not in seen:
                seen.add(s)
                pool.append(s)
        round_ += 1
        if round_ > 20:
            raise ConfigError(f"cannot draw {need} distinct templated sentences; ask for fewer")
    out, i = {}, 0
    for name, k in sizes.items():
        out[name] = pool[i : i + k]
        i += k
    return out


def vocabulary_texts() -> list[str]:
    """Every template and word, for building a tiny tokenizer that covers all sentences."""
    return [*TEMPLATES, *(w for ws in WORDS.values() for w in ws)]


def encoder_for(model: str):
    """``(BertModel, WordPiece)`` for the task's ``model`` parameter: all-MiniLM-L6-v2
    (:func:`weightlab.models.minilm.load_minilm`) or ``tiny_bert(0)`` with a whole-word
    tokenizer over the templates' words."""
    from weightlab.models.minilm import load_minilm, tiny_bert, tiny_tokenizer

    if model == "minilm":
        return load_minilm()
    if model == "tiny":
        return tiny_bert(0), tiny_tokenizer(vocabulary_texts())
    raise ConfigError(f"unknown sentence encoder {model!r}; choose minilm or tiny")


@torch.no_grad()
def load_sentence_embeddings(
    model: str = "minilm",
    n_train: int = 1600,
    n_val: int = 64,
    n_test: int = 512,
    max_length: int = 16,
    seed: int = 0,
) -> TaskData:
    """Regression onto an encoder's own sentence embeddings (for layer pruning and
    distillation): ``x`` = token ids and attention mask packed ``(n, 2, max_length)``
    (:func:`weightlab.models.bert.pack_inputs`), ``y`` = the unpruned encoder's
    mean-pooled embedding ``(n, hidden)``. Splits are disjoint sets of templated
    sentences (:func:`sentence_splits`); ``info["sentences"]`` holds the texts."""
    from weightlab.models.bert import pack_inputs

    bert, tok = encoder_for(model)
    texts = sentence_splits({"train": n_train, "val": n_val, "test": n_test}, seed)
    splits = {}
    for name, part in texts.items():
        ids, mask = tok.encode(part, max_length)
        y = torch.cat(
            [bert.embed(ids[i : i + 256], mask[i : i + 256]) for i in range(0, len(part), 256)]
        )
        splits[name] = Split(pack_inputs(ids, mask), y)
    return TaskData(
        "sentences",
        splits["train"],
        splits["val"],
        splits["test"],
        0,
        "regression",
        info={"sentences": texts, "model": model},
    )
