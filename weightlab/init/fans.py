"""Fan-in and fan-out of a weight block: the ``n_in`` / ``n_out`` of Glorot & Bengio
(2010, Eq. 12) and He et al. (2015, Eq. 10, 14), i.e. how many inputs feed one output and
how many outputs one input feeds, per layer type.

- Linear ``(out, in)``: ``fan_in = in``, ``fan_out = out``.
- Conv ``(C_out, C_in/g, k...)``: ``fan_in = (C_in/g)·∏k``, ``fan_out = C_out·∏k`` (as
  ``torch.nn.init._calculate_fan_in_and_fan_out``).
- ConvTranspose ``(C_in, C_out/g, k...)``: ``fan_in = (C_in/g)·∏k``,
  ``fan_out = (C_out/g)·∏k`` (each output position of a transposed convolution sums
  ``C_in/g`` channels over the kernel; PyTorch's own default reads the fan-in off the
  second dimension instead).
- Embedding ``(V, D)``, read as a Linear fed a one-hot vector: ``fan_in = V``,
  ``fan_out = D``.
- RNN / LSTM / GRU and their cells, per gate block ``(H, n)``: ``fan_in = n`` (input size
  for ``weight_ih``, hidden size for ``weight_hh``), ``fan_out = H``.
- MultiheadAttention ``in_proj_weight`` ``(3E, E)``: three ``E × E`` Linear blocks (query,
  key, value).
"""

from __future__ import annotations

import math

Fans = tuple[int, int]


def linear_fans(shape: tuple[int, ...]) -> Fans:
    """``(out, in)`` weight (Linear, Embedding transposed, one RNN gate block)."""
    return int(shape[1]), int(shape[0])


def conv_fans(shape: tuple[int, ...]) -> Fans:
    """Conv weight ``(C_out, C_in/g, k...)``."""
    receptive = math.prod(shape[2:])
    return int(shape[1]) * receptive, int(shape[0]) * receptive


def conv_transpose_fans(shape: tuple[int, ...], groups: int) -> Fans:
    """ConvTranspose weight ``(C_in, C_out/g, k...)``."""
    receptive = math.prod(shape[2:])
    return int(shape[0]) // groups * receptive, int(shape[1]) * receptive


def embedding_fans(shape: tuple[int, ...]) -> Fans:
    """Embedding table ``(V, D)`` fed one-hot: ``fan_in = V``, ``fan_out = D``."""
    return int(shape[0]), int(shape[1])


__all__ = ["conv_fans", "conv_transpose_fans", "embedding_fans", "linear_fans"]
