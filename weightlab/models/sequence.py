"""Sequence models that read a ``(B, L)`` input (e.g. MNIST-1D, ``L = 40``) as ``L`` tokens of
one value each, for self-pretraining (Amos, Berant & Gupta 2023, "Never Train from Scratch").

Every model is a *backbone* producing per-token features ``(B, L, d)`` plus a *head* chosen at
construction:

- ``head="classify"``: mean over the tokens, then ``Linear(d, num_classes)``: logits ``(B, C)``;
- ``head="denoise"``: ``Linear(d, 1)`` on every token: one value per token, ``(B, L)``.

The backbone's parameters live under ``backbone.`` and are named and shaped the same under
both heads, so a backbone pretrained with the denoising head loads into the classifier
(:func:`backbone_state`, :func:`load_backbone`).

Inputs: ``(B, L)`` values, or ``(B, 2, L)``: values and a 0/1 mask indicator per token (the
masked-denoising input, see :mod:`weightlab.init.self_pretrain`). Each token enters the
backbone as the pair ``(value · (1 − m), m)``; a plain ``(B, L)`` input has ``m = 0``. So a
masked token carries no value and a learned "mask" direction instead (BERT's ``[MASK]``
token, for scalar tokens).

Backbones, all written so that ``torch.func.vmap`` batches them over population members:

- :class:`SeqTransformer`: token embedding ``Linear(2, d)`` of ``(value, mask)`` plus learned
  positions, pre-LN encoder blocks (Vaswani et al. 2017 attention written out:
  ``softmax(QKᵀ/√d_h) V``; Xiong et al. 2020 pre-LN), final LayerNorm;
- :class:`SeqCNN`: ``Conv1d`` layers with "same" padding (dilation ``2^i`` by default), ReLU;
- :class:`SeqGRU`: a GRU cell unrolled in Python from two Linear layers (Cho et al. 2014,
  Eqs. 5-8), bit-compatible with ``torch.nn.GRU`` (``reset="after"``, PyTorch's and cuDNN's
  form) or Cho et al.'s original form (``reset="before"``). ``nn.GRU`` itself has no vmap
  batching rule in torch 2.13, so a population would train it member by member.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from weightlab.errors import ConfigError

HEADS = ("classify", "denoise")
BACKBONE_PREFIX = "backbone."


def split_tokens(x: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values (B, L), mask (B, L))`` of an input ``(B, L)`` (mask 0) or ``(B, 2, L)``;
    masked values are zeroed."""
    if x.dim() == 2 and x.shape[-1] == length:
        return x, torch.zeros_like(x)
    if x.dim() == 3 and x.shape[1] == 2 and x.shape[-1] == length:
        v, m = x[:, 0], x[:, 1]
        return v * (1 - m), m
    raise ConfigError(
        f"a sequence model of length {length} reads inputs (B, {length}) or (B, 2, {length}), "
        f"got {tuple(x.shape)}; reshape the inputs to {length} tokens"
    )


def _check(length: int, d: int, num_classes: int, head: str) -> None:
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}; choose one of: {', '.join(HEADS)}")
    if length <= 0 or d <= 0 or num_classes <= 0:
        raise ConfigError("a sequence model needs positive length, width and num_classes")


class SequenceModel(nn.Module):
    """``backbone`` (``(B, L) | (B, 2, L) -> (B, L, d)``) plus a ``head``: ``"classify"`` (mean
    over tokens, ``Linear(d, num_classes)``) or ``"denoise"`` (``Linear(d, 1)`` per token,
    output ``(B, L)``). Subclasses call :meth:`_build` with their backbone, which registers it
    before the head: a build scheme draws in module order, so one seed gives the same backbone
    under either head."""

    def __init__(self, length: int, d: int, num_classes: int, head: str) -> None:
        super().__init__()
        _check(length, d, num_classes, head)
        self.length, self.d, self.head_kind = int(length), int(d), head
        self.num_classes = int(num_classes)

    def _build(self, backbone: nn.Module) -> None:
        self.backbone = backbone
        self.head = nn.Linear(self.d, self.num_classes if self.head_kind == "classify" else 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token features ``(B, L, d)``."""
        return self.backbone(*split_tokens(x, self.length))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        if self.head_kind == "classify":
            return self.head(h.mean(dim=1))
        return self.head(h).squeeze(-1)


class _Block(nn.Module):
    """Pre-LN encoder block: ``h + Attn(LN(h))``, then ``h + FFN(LN(h))`` (GELU)."""

    def __init__(self, d: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)

    def attention(self, h: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention, ``softmax(Q Kᵀ / √d_h) V`` per head (no mask: the
        encoder sees the whole sequence)."""
        b, n, d = h.shape
        dh = d // self.heads
        q, k, v = self.qkv(h).view(b, n, 3, self.heads, dh).permute(2, 0, 3, 1, 4)
        att = torch.softmax((q * dh**-0.5) @ k.transpose(-2, -1), dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, n, d))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attention(self.ln1(h))
        return h + self.fc2(F.gelu(self.fc1(self.ln2(h))))


class _TransformerBackbone(nn.Module):
    def __init__(self, length: int, d: int, layers: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.embed = nn.Linear(2, d)  # (value, mask) -> d: value embedding + mask token
        self.pos = nn.Embedding(length, d)
        self.blocks = nn.ModuleList(_Block(d, heads, ffn) for _ in range(layers))
        self.ln = nn.LayerNorm(d)

    def forward(self, v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        h = self.embed(torch.stack((v, m), dim=-1)) + self.pos.weight
        for block in self.blocks:
            h = block(h)
        return self.ln(h)


class SeqTransformer(SequenceModel):
    """Tiny pre-LN Transformer encoder over ``length`` scalar tokens: width ``d``, ``layers``
    blocks of ``heads`` heads and a GELU feed-forward of width ``ffn`` (default ``2d``)."""

    def __init__(
        self,
        length: int = 40,
        num_classes: int = 10,
        head: str = "classify",
        d: int = 32,
        layers: int = 2,
        heads: int = 4,
        ffn: int | None = None,
    ) -> None:
        super().__init__(length, d, num_classes, head)
        ffn = 2 * d if ffn is None else ffn
        if layers <= 0 or heads <= 0 or d % heads or ffn <= 0:
            raise ConfigError(
                f"SeqTransformer needs layers, heads, ffn > 0 and heads dividing d, got "
                f"layers={layers}, heads={heads}, d={d}, ffn={ffn}"
            )
        self._build(_TransformerBackbone(length, d, layers, heads, ffn))


class _CNNBackbone(nn.Module):
    def __init__(self, d: int, layers: int, kernel: int, dilate: bool) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        for i in range(layers):
            dil = 2**i if dilate else 1
            self.convs.append(
                nn.Conv1d(2 if i == 0 else d, d, kernel, padding=dil * (kernel // 2), dilation=dil)
            )

    def forward(self, v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        h = torch.stack((v, m), dim=1)  # (B, 2, L)
        for conv in self.convs:
            h = F.relu(conv(h))
        return h.transpose(1, 2)


class SeqCNN(SequenceModel):
    """1-D CNN: ``layers`` ``Conv1d`` of ``d`` channels, odd ``kernel``, "same" padding (output
    length = input length), ReLU; dilation ``2^i`` at layer ``i`` when ``dilate`` (receptive
    field ``1 + (kernel − 1)(2^layers − 1)``, 61 tokens at the defaults), else 1."""

    def __init__(
        self,
        length: int = 40,
        num_classes: int = 10,
        head: str = "classify",
        d: int = 40,
        layers: int = 4,
        kernel: int = 5,
        dilate: bool = True,
    ) -> None:
        super().__init__(length, d, num_classes, head)
        if layers <= 0 or kernel <= 0 or kernel % 2 == 0:
            raise ConfigError(
                f"SeqCNN needs layers > 0 and an odd kernel (same padding), got layers={layers}, "
                f"kernel={kernel}"
            )
        self._build(_CNNBackbone(d, layers, kernel, dilate))


class _GRUBackbone(nn.Module):
    def __init__(self, d: int, reset: str) -> None:
        super().__init__()
        self.d, self.reset = d, reset
        self.ih = nn.Linear(2, 3 * d)  # W_r, W_z, W_n (nn.GRU's weight_ih order r, z, n)
        self.hh = nn.Linear(d, 3 * d)  # U_r, U_z, U_n

    def forward(self, v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        gi = self.ih(torch.stack((v, m), dim=-1))  # (B, L, 3d): input parts of all gates
        d = self.d
        h = gi.new_zeros(gi.shape[0], d)
        w_n, b_n = self.hh.weight[2 * d :], self.hh.bias[2 * d :]
        out = []
        for t in range(gi.shape[1]):
            i_r, i_z, i_n = gi[:, t].chunk(3, dim=-1)
            if self.reset == "after":
                h_r, h_z, h_n = self.hh(h).chunk(3, dim=-1)
                r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
                n = torch.tanh(i_n + r * h_n)
            else:
                h_r, h_z = F.linear(h, self.hh.weight[: 2 * d], self.hh.bias[: 2 * d]).chunk(2, -1)
                r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
                n = torch.tanh(i_n + F.linear(r * h, w_n, b_n))
            h = z * h + (1 - z) * n
            out.append(h)
        return torch.stack(out, dim=1)


class SeqGRU(SequenceModel):
    """GRU of hidden size ``d`` over the tokens, unrolled in Python (Cho et al. 2014):

    ``r = σ(W_r x + U_r h)``, ``z = σ(W_z x + U_z h)``, ``h' = z ⊙ h + (1 − z) ⊙ h̃``, with
    ``h̃ = tanh(W x + r ⊙ (U h))`` for ``reset="after"`` (``torch.nn.GRU``'s form, same outputs
    from copied weights: ``ih`` = ``weight_ih_l0``/``bias_ih_l0``, ``hh`` = ``weight_hh_l0``/
    ``bias_hh_l0``) or ``h̃ = tanh(W x + U (r ⊙ h))`` for ``reset="before"`` (Cho et al.'s
    Eq. 8). Every Linear has a bias, as ``nn.GRU``. Features are the hidden states of every
    step (a causal, left-to-right reading)."""

    def __init__(
        self,
        length: int = 40,
        num_classes: int = 10,
        head: str = "classify",
        d: int = 80,
        reset: str = "after",
    ) -> None:
        super().__init__(length, d, num_classes, head)
        if reset not in ("after", "before"):
            raise ConfigError(f"unknown GRU reset form {reset!r}; choose after or before")
        self._build(_GRUBackbone(d, reset))


ARCHITECTURES: dict[str, type[SequenceModel]] = {
    "transformer": SeqTransformer,
    "cnn": SeqCNN,
    "gru": SeqGRU,
}


def backbone_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's entries (``backbone.*``) of a state dict or snapshot: what a denoising
    model hands to a classifier of the same architecture."""
    return {k: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}


@torch.no_grad()
def load_backbone(model: SequenceModel, state: Mapping[str, torch.Tensor]) -> SequenceModel:
    """Copy a backbone state into ``model`` (strict: exactly ``model``'s backbone keys, with
    their shapes); the head keeps its own weights. Returns ``model``."""
    state = backbone_state(state)
    own = backbone_state(model.state_dict())
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise ConfigError(
            f"backbone state does not fit {type(model).__name__}: missing {missing[:3]}, "
            f"unexpected {extra[:3]}; pretrain the same architecture and width"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ConfigError(
                f"backbone tensor {k} has shape {tuple(v.shape)}, the model needs "
                f"{tuple(own[k].shape)}; pretrain the same architecture and width"
            )
    model.load_state_dict({**model.state_dict(), **state}, strict=True)
    return model


def parameter_count(model: nn.Module, backbone_only: bool = False) -> int:
    """Number of parameters (``backbone_only``: of the backbone alone)."""
    return sum(
        p.numel()
        for k, p in model.named_parameters()
        if not backbone_only or k.startswith(BACKBONE_PREFIX)
    )


__all__ = [
    "ARCHITECTURES",
    "HEADS",
    "SeqCNN",
    "SeqGRU",
    "SeqTransformer",
    "SequenceModel",
    "backbone_state",
    "load_backbone",
    "parameter_count",
    "split_tokens",
]
