"""WordPiece tokenization for uncased BERT models, read from a ``vocab.txt``
(Wu et al. 2016, "Google's Neural Machine Translation System", Section 4.1; BERT's basic
tokenizer, Devlin et al. 2019, Appendix A.2).

1. Basic tokenization: drop control characters and NUL / U+FFFD, map whitespace to spaces,
   surround CJK ideographs with spaces, lowercase and strip accents (NFD, drop combining
   marks), split on whitespace and on every punctuation character (ASCII symbols and the
   Unicode ``P*`` categories).
2. WordPiece: each word is split greedily, longest match first, into vocabulary pieces;
   continuation pieces carry ``##``. A word with no complete split, or longer than 100
   characters, becomes ``[UNK]``.
3. Encoding: ``[CLS] pieces [SEP]``, truncated to ``max_length`` (keeping ``[SEP]``) and
   padded with ``[PAD]``; the attention mask is 1 on real tokens.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from pathlib import Path

import torch

from weightlab.errors import ConfigError, DataError

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")

__all__ = ["WordPiece"]


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _clean(text: str) -> str:
    out = []
    for ch in text:
        cp = ord(ch)
        if cp in (0, 0xFFFD):
            continue
        if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
            out.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Cf"):
            continue
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    return "".join(out)


def basic_tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Step 1: words and punctuation marks of ``text``."""
    words = []
    for tok in _clean(text).split():
        if lowercase:
            tok = tok.lower()
            tok = "".join(
                c for c in unicodedata.normalize("NFD", tok) if unicodedata.category(c) != "Mn"
            )
        cur = []
        for ch in tok:
            if _is_punct(ch):
                if cur:
                    words.append("".join(cur))
                    cur = []
                words.append(ch)
            else:
                cur.append(ch)
        if cur:
            words.append("".join(cur))
    return words


class WordPiece:
    """A WordPiece tokenizer over ``vocab`` (token -> id, e.g. from :meth:`from_file`)."""

    def __init__(self, vocab: dict[str, int], lowercase: bool = True, max_word_chars: int = 100):
        missing = [s for s in SPECIAL if s not in vocab]
        if missing:
            raise DataError(
                f"vocabulary lacks the special token(s) {', '.join(missing)}; use a BERT vocab.txt"
            )
        self.vocab = vocab
        self.lowercase = lowercase
        self.max_word_chars = max_word_chars
        self.pad_id, self.unk_id = vocab["[PAD]"], vocab["[UNK]"]
        self.cls_id, self.sep_id = vocab["[CLS]"], vocab["[SEP]"]
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_file(cls, path: str | Path, lowercase: bool = True) -> WordPiece:
        """Read ``vocab.txt`` (one token per line; the line number is the id)."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except OSError as e:
            raise DataError(f"cannot read vocabulary {path}: {e.strerror}; check the path") from e
        if lines and lines[-1] == "":
            lines.pop()
        return cls({tok.rstrip("\r"): i for i, tok in enumerate(lines)}, lowercase)

    def word_ids(self, word: str) -> list[int]:
        """Step 2 for one word: greedy longest-match-first pieces."""
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        if len(word) > self.max_word_chars:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            end, piece = len(word), None
            while start < end:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in self.vocab:
                    piece = self.vocab[sub]
                    break
                end -= 1
            if piece is None:
                ids = [self.unk_id]
                break
            ids.append(piece)
            start = end
        self._cache[word] = ids
        return ids

    def tokenize(self, text: str) -> list[int]:
        """Ids of ``text``'s pieces, without special tokens."""
        return [i for w in basic_tokenize(text, self.lowercase) for i in self.word_ids(w)]

    def encode(
        self, texts: Sequence[str], max_length: int = 16
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)``, int64 ``(len(texts), max_length)``: ``[CLS] ...
        [SEP]``, truncated to ``max_length`` and padded with ``[PAD]``."""
        if max_length < 2:
            raise ConfigError(f"max_length must be >= 2 ([CLS] and [SEP]), got {max_length}")
        ids = torch.full((len(texts), max_length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(texts), max_length), dtype=torch.long)
        for r, text in enumerate(texts):
            row = [self.cls_id, *self.tokenize(text)[: max_length - 2], self.sep_id]
            ids[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = 1
        return ids, mask

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Untruncated token counts, ``[CLS]`` and ``[SEP]`` included."""
        return [len(self.tokenize(t)) + 2 for t in texts]
