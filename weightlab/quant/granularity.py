"""Granularity: which weights share one scale.

A weight ``W`` of shape ``(out, in, *kernel)`` is viewed as ``(A, G, g)`` and every scale has
shape ``(A, G, 1)``:

- ``"tensor"``: ``(1, 1, W.numel())``, one scale;
- ``"channel"``: ``(out, 1, in·k)``, one scale per output channel (row);
- an integer ``k``: ``(out, in·k/k, k)``, one scale per group of ``k`` consecutive entries
  along the input dimension of each row (the flattened ``in·kernel`` axis); ``k`` must
  divide it.
"""

from __future__ import annotations

import torch

from weightlab.errors import ConfigError

Granularity = str | int


def check_granularity(granularity: Granularity, shape: tuple[int, ...] | None = None) -> None:
    if isinstance(granularity, bool):
        raise ConfigError(
            f"granularity must be 'tensor', 'channel' or a group size, got {granularity!r}"
        )
    if isinstance(granularity, int):
        if granularity < 1:
            raise ConfigError(f"the group size must be a positive integer, got {granularity}")
        if shape is not None:
            row = _row(shape)
            if row % granularity:
                raise ConfigError(
                    f"group size {granularity} does not divide the input dimension {row} of a "
                    f"weight of shape {tuple(shape)}; pick a divisor of {row}"
                )
        return
    if granularity not in ("tensor", "channel"):
        raise ConfigError(
            f"granularity must be 'tensor', 'channel' or a group size, got {granularity!r}"
        )


def _row(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape[1:]:
        n *= d
    return n


def grouped_shape(shape: tuple[int, ...], granularity: Granularity) -> tuple[int, int, int]:
    """The ``(A, G, g)`` view of a weight of ``shape``."""
    check_granularity(granularity, shape)
    if len(shape) == 1:
        shape = (shape[0], 1)
    out, row = shape[0], _row(shape)
    if granularity == "tensor":
        return (1, 1, out * row)
    if granularity == "channel":
        return (out, 1, row)
    return (out, row // granularity, granularity)


def group_view(w: torch.Tensor, granularity: Granularity) -> torch.Tensor:
    """``w`` reshaped to ``(A, G, g)`` (a view when ``w`` is contiguous)."""
    return w.reshape(grouped_shape(tuple(w.shape), granularity))


def scale_count(shape: tuple[int, ...], granularity: Granularity) -> int:
    a, g, _ = grouped_shape(shape, granularity)
    return a * g
