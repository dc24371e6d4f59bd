"""weightlab's LSTM: one ``Linear`` on ``[x, h]`` plus pointwise gates.

Hochreiter & Schmidhuber (1997) with a forget gate, in PyTorch's formulation
(``torch.nn.LSTM``'s documentation)::

    i, f, g, o = split(W [x_t, h_{t-1}] + b)      # gate order of nn.LSTM: i, f, g, o
    c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)
    h_t = σ(o) ⊙ tanh(c_t)

``W = [W_ih, W_hh]`` (concatenated along the input dimension) and ``b = b_ih + b_hh``, so a
copy of an ``nn.LSTM``'s weights (:meth:`LSTM.from_torch`) gives its outputs to float
rounding (tested to 1e-6). Why not ``nn.LSTM`` itself: ``torch.func.vmap`` has no batching
rule for it (torch 2.13), so a population of RNN hypernetworks could not be vectorized; this
module is plain ``Linear`` + pointwise ops and runs under ``vmap`` and ``functional_call``.
"""

from __future__ import annotations

import torch
from torch import nn

from weightlab.errors import ConfigError

__all__ = ["LSTM"]


class LSTM(nn.Module):
    """A single-layer, unidirectional LSTM; ``gates`` is the one ``Linear(in + H, 4H)``.

    ``forward(x, state=None)``: ``x`` is ``(T, B, in)`` (or ``(B, T, in)`` with
    ``batch_first=True``, or unbatched ``(T, in)``); returns ``(outputs, (h_T, c_T))`` like
    ``nn.LSTM`` with one layer (``h_T``, ``c_T`` of shape ``(1, B, H)``, or ``(1, H)``
    unbatched). ``state`` defaults to zeros.
    """

    def __init__(self, input_size: int, hidden_size: int, batch_first: bool = False) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ConfigError(
                f"LSTM sizes must be positive, got input {input_size}, hidden {hidden_size}"
            )
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.batch_first = bool(batch_first)
        self.gates = nn.Linear(self.input_size + self.hidden_size, 4 * self.hidden_size)

    def step(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: ``x (B, in)``, ``h, c (B, H)`` -> ``(h', c')``."""
        i, f, g, o = self.gates(torch.cat([x, h], dim=-1)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ConfigError(
                f"LSTM input has shape {tuple(x.shape)}; expected (T, B, {self.input_size})"
            )
        if state is None:
            h = x.new_zeros(x.shape[1], self.hidden_size)
            c = x.new_zeros(x.shape[1], self.hidden_size)
        else:
            h, c = (s.reshape(x.shape[1], self.hidden_size) for s in state)
        outs = []
        for t in range(x.shape[0]):
            h, c = self.step(x[t], h, c)
            outs.append(h)
        out = torch.stack(outs, dim=0)
        if unbatched:
            return out.squeeze(1), (h, c)
        if self.batch_first:
            out = out.transpose(0, 1)
        return out, (h.unsqueeze(0), c.unsqueeze(0))

    @classmethod
    @torch.no_grad()
    def from_torch(cls, lstm: nn.LSTM) -> LSTM:
        """A copy of a one-layer, unidirectional ``nn.LSTM`` (no projection)."""
        if lstm.num_layers != 1 or lstm.bidirectional or lstm.proj_size:
            raise ConfigError(
                "LSTM.from_torch copies a one-layer, unidirectional nn.LSTM without projection; "
                f"got num_layers={lstm.num_layers}, bidirectional={lstm.bidirectional}, "
                f"proj_size={lstm.proj_size}"
            )
        out = cls(lstm.input_size, lstm.hidden_size, batch_first=lstm.batch_first)
        w = torch.cat([lstm.weight_ih_l0, lstm.weight_hh_l0], dim=1)
        out = out.to(device=w.device, dtype=w.dtype)
        out.gates.weight.copy_(w)
        if lstm.bias:
            out.gates.bias.copy_(lstm.bias_ih_l0 + lstm.bias_hh_l0)
        else:
            out.gates.bias.zero_()
        return out

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, batch_first={self.batch_first}"
