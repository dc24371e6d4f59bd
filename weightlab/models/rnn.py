"""Small recurrent classifiers over a sequence (Elman 1990 recurrences).

A ``(B, L)`` input (e.g. MNIST-1D, ``L = 40``) is read as ``L / features`` time steps of
``features`` values each; ``(B, T, features)`` inputs are used as they are. The class
logits come from a Linear layer on the last hidden state.

- :class:`CellRNN` unrolls the recurrence ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``
  itself, with an ``nn.RNNCell`` (``cell="rnn_cell"``) or two Linear layers
  (``cell="linear"``), so ``torch.func.vmap`` can batch it over population members.
- :class:`SeqRNN` runs PyTorch's fused ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (which vmap
  rejects in torch 2.13: a population trains it member by member).
"""

from __future__ import annotations

import torch
from torch import nn

from weightlab.errors import ConfigError

RECURRENT = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def _steps(x: torch.Tensor, features: int) -> torch.Tensor:
    if x.dim() == 3:
        return x
    if x.shape[-1] % features:
        raise ConfigError(
            f"an input of length {x.shape[-1]} does not split into steps of {features} features; "
            "choose features dividing the length"
        )
    return x.reshape(x.shape[0], -1, features)


class CellRNN(nn.Module):
    """Elman RNN unrolled in Python: ``cell="rnn_cell"`` (``nn.RNNCell``, tanh) or
    ``cell="linear"`` (``input``: Linear(features, hidden), ``recurrent``: Linear(hidden,
    hidden), tanh); ``head``: Linear(hidden, num_classes) on the last state."""

    def __init__(
        self, features: int = 4, hidden: int = 32, num_classes: int = 10, cell: str = "rnn_cell"
    ) -> None:
        super().__init__()
        if features <= 0 or hidden <= 0 or num_classes <= 0:
            raise ConfigError("CellRNN needs positive features, hidden and num_classes")
        if cell not in ("rnn_cell", "linear"):
            raise ConfigError(f"unknown cell {cell!r}; choose rnn_cell or linear")
        self.features, self.hidden, self.kind = features, hidden, cell
        if cell == "rnn_cell":
            self.cell = nn.RNNCell(features, hidden)
        else:
            self.input = nn.Linear(features, hidden)
            self.recurrent = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = _steps(x, self.features)
        h = seq.new_zeros(seq.shape[0], self.hidden)
        for t in range(seq.shape[1]):
            if self.kind == "rnn_cell":
                h = self.cell(seq[:, t], h)
            else:
                h = torch.tanh(self.input(seq[:, t]) + self.recurrent(h))
        return self.head(h)


class SeqRNN(nn.Module):
    """``kind`` in ``rnn`` / ``lstm`` / ``gru``: one fused ``nn.RNN``-family layer stack
    (``batch_first``) and ``head``: Linear(hidden, num_classes) on the last output."""

    def __init__(
        self,
        features: int = 4,
        hidden: int = 32,
        num_classes: int = 10,
        kind: str = "rnn",
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        if kind not in RECURRENT:
            raise ConfigError(f"unknown recurrent layer {kind!r}; choose one of: rnn, lstm, gru")
        if features <= 0 or hidden <= 0 or num_classes <= 0 or num_layers <= 0:
            raise ConfigError("SeqRNN needs positive features, hidden, num_classes and num_layers")
        self.features = features
        self.rnn = RECURRENT[kind](features, hidden, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(_steps(x, self.features))
        return self.head(out[:, -1])
