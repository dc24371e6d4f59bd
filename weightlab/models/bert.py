"""A native BERT encoder in plain PyTorch (Devlin et al. 2019, "BERT: Pre-training of Deep
Bidirectional Transformers", Section 3; Vaswani et al. 2017, Eq. 1 for attention).

Module and parameter names equal Hugging Face's ``BertModel`` (``embeddings.word_embeddings``,
``encoder.layer.{i}.attention.self.query``, ``encoder.layer.{i}.intermediate.dense``,
``pooler.dense``, ...), so a ``model.safetensors`` written by ``transformers`` loads with
``load_state_dict`` and selectors written for one work on the other. No ``transformers``
import: building and loading MiniLM stays fast.

- Embeddings: word + absolute position + token type, LayerNorm, dropout.
- Encoder layer (post-LN): ``h = LN(x + Dropout(W_o · Attn(x)))``,
  ``y = LN(h + Dropout(W_2 · GELU(W_1 h)))``; GELU is the exact (erf) form.
- Attention: ``softmax(Q Kᵀ / √d_head + bias) V`` per head, where ``bias`` is the dtype's
  most negative value on padded keys (Hugging Face's additive mask). Three paths, chosen per
  model with :meth:`BertModel.set_attention`: ``"sdpa"`` (``scaled_dot_product_attention``,
  default), ``"math"`` (SDPA restricted to its math backend) and ``"eager"`` (explicit
  softmax). Only eager and math support double backward on CPU (GraSP needs it).
- Pooling: :func:`mean_pool` (the sentence embedding of sentence-transformers before
  normalisation), and BERT's tanh pooler on ``[CLS]`` (:meth:`BertModel.pooler_output`).
- Dropout layers are ``nn.Dropout`` modules (the training loop replaces them with its
  seeded dropout); with attention dropout above 0 in training mode SDPA falls back to the
  eager path so that dropout stays a module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import nn
from torch.nn import functional as F

from weightlab.errors import ConfigError

ATTENTION = ("sdpa", "math", "eager")

__all__ = [
    "ATTENTION",
    "BertConfig",
    "BertLayer",
    "BertModel",
    "SentenceEncoder",
    "mean_pool",
    "trimmed_token_mask",
    "pack_inputs",
    "unpack_inputs",
]


@dataclass(frozen=True)
class BertConfig:
    """Shape of a BERT encoder (Hugging Face ``config.json`` names)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_prob"):
                if not 0 <= v < 1:
                    raise ConfigError(f"BERT {f.name} must lie in [0, 1), got {v}")
            elif f.name not in ("pad_token_id",) and not v > 0:
                raise ConfigError(f"BERT {f.name} must be > 0, got {v}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"BERT hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}; change one of them"
            )

    @classmethod
    def from_dict(cls, d: dict, *, dropout: bool = False) -> BertConfig:
        """From a Hugging Face ``config.json`` dict. ``dropout=False`` sets both dropout
        rates to 0 (deterministic fine-tuning); ``True`` keeps the file's rates."""
        if d.get("hidden_act", "gelu") != "gelu":
            raise ConfigError(
                f"hidden_act {d.get('hidden_act')!r} is not supported; only 'gelu' BERT models"
            )
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError("only absolute position embeddings are supported")
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if not dropout:
            kw["hidden_dropout_prob"] = 0.0
            kw["attention_probs_dropout_prob"] = 0.0
        try:
            return cls(**kw)
        except TypeError as e:
            raise ConfigError(f"malformed BERT config: {e}") from e


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.word_embeddings = nn.Embedding(cfg.vocab_size, h, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, h)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, h)
        self.LayerNorm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        n = input_ids.shape[1]
        if n > self.position_embeddings.num_embeddings:
            raise ConfigError(
                f"sequence of {n} tokens is longer than the model's "
                f"{self.position_embeddings.num_embeddings} positions; truncate the input"
            )
        pos = torch.arange(n, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.head_dim = h // cfg.num_attention_heads
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)
        self.impl = "sdpa"

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``x (B, L, H)``; ``bias (B, 1, 1, L)`` additive key mask or ``None``."""
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        impl = self.impl
        if impl != "eager" and self.training and self.dropout.p > 0:
            impl = "eager"  # keep attention dropout a (seedable) module
        if impl == "eager":
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
            if bias is not None:
                scores = scores + bias
            ctx = self.dropout(scores.softmax(-1)) @ v
        elif impl == "math":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(SDPBackend.MATH):
                ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        b, _, n, _ = ctx.shape
        return ctx.transpose(1, 2).reshape(b, n, -1)


class BertSelfOutput(nn.Module):
    """``LN(residual + Dropout(dense(x)))`` (Hugging Face's ``BertSelfOutput`` and
    ``BertOutput``)."""

    def __init__(self, d_in: int, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class BertAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg.hidden_size, cfg)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    """One post-LN encoder layer; ``forward(x, bias)`` maps hidden states to hidden states."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertSelfOutput(cfg.intermediate_size, cfg)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        h = self.attention(x, bias)
        return self.output(self.intermediate(h), h)


class BertEncoder(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, bias)
        return x


class BertPooler(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


def key_bias(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``(B, L)`` 0/1 mask -> ``(B, 1, 1, L)`` additive bias: 0 on tokens, the dtype's most
    negative finite value on padding (as Hugging Face builds it)."""
    if attention_mask is None:
        return None
    m = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - m) * torch.finfo(dtype).min


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of the token states over non-padded positions (sentence-transformers' mean
    pooling): ``Σ_t m_t h_t / max(Σ_t m_t, 1e-9)``."""
    if attention_mask is None:
        return hidden.mean(1)
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


class BertModel(nn.Module):
    """BERT encoder: embeddings, ``encoder.layer`` (a ModuleList of :class:`BertLayer`),
    pooler. ``forward(input_ids, attention_mask=None, token_type_ids=None)`` returns the
    last hidden states ``(B, L, H)``; :meth:`embed` the mean-pooled sentence embedding."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)
        self.pooler = BertPooler(cfg)

    def set_attention(self, impl: str) -> BertModel:
        """Use attention path ``impl`` ("sdpa", "math" or "eager") in every layer."""
        set_attention(self, impl)
        return self

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.embeddings(input_ids, token_type_ids)
        return self.encoder(x, key_bias(attention_mask, x.dtype))

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean-pooled last hidden states ``(B, H)`` (before L2 normalisation)."""
        return mean_pool(self(input_ids, attention_mask), attention_mask)

    def pooler_output(self, hidden: torch.Tensor) -> torch.Tensor:
        """BERT's pooler: ``tanh(W h_[CLS] + b)``."""
        return self.pooler(hidden)


def set_attention(model: nn.Module, impl: str) -> None:
    """Set the attention path of every BERT self-attention inside ``model``."""
    if impl not in ATTENTION:
        raise ConfigError(f"unknown attention {impl!r}; choose one of: {', '.join(ATTENTION)}")
    found = False
    for m in model.modules():
        if isinstance(m, BertSelfAttention):
            m.impl = impl
            found = True
    if not found:
        raise ConfigError("the model has no BERT self-attention to set; pass a BERT model")


def pack_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Token ids and attention mask ``(B, L)`` stacked into one int64 ``(B, 2, L)`` tensor,
    the single input the training loop feeds a model (``model(x)``)."""
    if input_ids.shape != attention_mask.shape or input_ids.ndim != 2:
        raise ConfigError(
            f"token ids {tuple(input_ids.shape)} and attention mask "
            f"{tuple(attention_mask.shape)} must both be (batch, length)"
        )
    return torch.stack([input_ids.long(), attention_mask.long()], 1)


def unpack_inputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_inputs`: ``(ids, mask)``."""
    if x.ndim != 3 or x.shape[1] != 2 or x.is_floating_point():
        raise ConfigError(
            f"expected packed token input of shape (batch, 2, length) int, got "
            f"{tuple(x.shape)} {x.dtype}; build it with weightlab.models.bert.pack_inputs"
        )
    return x[:, 0], x[:, 1]


def trimmed_token_mask(x: torch.Tensor) -> torch.Tensor:
    """The attention mask of packed inputs ``(B, 2, L)`` cut to the batch's longest row, as
    :class:`SentenceEncoder` with ``trim_padding=True`` cuts the batch: it matches the
    ``(B, L', features)`` inputs of the encoder's layers (e.g. EVA's ``token_mask``)."""
    mask = unpack_inputs(x)[1].bool()
    used = int(mask.sum(1).max().clamp_min(1))
    return mask[:, :used]


class SentenceEncoder(nn.Module):
    """Mean-pooled BERT sentence embedding as a one-input module for the training loop:
    ``forward(x)`` takes :func:`pack_inputs`' ``(B, 2, L)`` and returns ``(B, H)``.

    It shares ``embeddings`` and ``encoder`` with ``bert`` (same parameter names as
    :class:`BertModel`, e.g. ``encoder.layer.0.attention.self.query.weight``); the pooler,
    unused by mean pooling (it would get no gradient), is left out.

    ``trim_padding=True`` cuts each batch to its longest unpadded row before the encoder
    (right padding, as :func:`pack_inputs` builds it): the same embedding up to float
    rounding, since padded keys are masked and padded rows left out of the mean, at a
    fraction of the cost for short texts (VADER words: 3-8 of 16 positions). It reads the
    mask's values, so it cannot run under ``torch.func.vmap``; the default is off.
    """

    def __init__(self, bert: BertModel, trim_padding: bool = False) -> None:
        super().__init__()
        self.embeddings = bert.embeddings
        self.encoder = bert.encoder
        self.trim_padding = bool(trim_padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = unpack_inputs(x)
        if self.trim_padding and ids.shape[1] > 1:
            used = int(mask.sum(1).max().clamp_min(1))
            ids, mask = ids[:, :used], mask[:, :used]
        h = self.embeddings(ids, None)
        return mean_pool(self.encoder(h, key_bias(mask, h.dtype)), mask)
