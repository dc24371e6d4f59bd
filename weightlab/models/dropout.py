"""Seeded dropout (Srivastava et al. 2014, JMLR 15, Eq. 2 with inverted scaling).

weightlab never draws dropout masks from PyTorch's global RNG. The mask of dropout layer
``l`` (position of the :class:`Dropout` among ``model.modules()``, from 0) for the forward
pass of update ``t`` (1-based step) of the member with init seed ``seed`` is::

    g = generator(derive_seed("dropout", seed, t, l))           # CPU
    keep = torch.rand(x.shape, generator=g, dtype=float32) < 1 - p
    mask = keep.to(x.dtype) / (1 - p)                            # output = x * mask

``x.shape`` is the layer input's full shape, batch dim included. The same arithmetic
serves both engines:

- the single-model loop wraps each training forward in ``with dropout_step(model, seed,
  t):``; every :class:`Dropout` then draws its own mask lazily from its input's shape;
- a population engine calls :func:`dropout_masks` outside ``vmap`` (shapes from
  :func:`dropout_input_shapes`) and hands each member's masks to the layers with
  :func:`use_masks` inside the function it maps over.

In eval mode (and with ``p = 0``) the layer is the identity. A training forward outside
both contexts is an error, so no mask can silently come from elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator


class Dropout(nn.Module):
    """Drop-in for ``nn.Dropout(p)`` whose masks come from explicit seeds (module docstring)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0 <= float(p) < 1:
            raise ConfigError(f"dropout probability must lie in [0, 1), got {p}")
        self.p = float(p)
        self._draw: tuple[int, int, int] | None = None  # (seed, step, layer index)
        self._mask: torch.Tensor | None = None
        self._used = False

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self._used:
            raise ConfigError(
                "a weightlab Dropout module ran twice in one forward pass; "
                "give each use its own Dropout module"
            )
        if self._mask is not None:
            mask = self._mask
        elif self._draw is not None:
            seed, step, index = self._draw
            mask = draw_mask(seed, step, index, tuple(x.shape), self.p, x.dtype, x.device)
        else:
            raise ConfigError(
                "weightlab Dropout in training mode needs a seed and step: train with "
                "weightlab.train.train, or wrap the forward in dropout_step(model, seed, step)"
            )
        self._used = True
        return x * mask


def draw_mask(
    seed: int,
    step: int,
    index: int,
    shape: tuple[int, ...],
    p: float,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The scaled keep-mask of layer ``index`` at step ``step`` for member ``seed``."""
    g = generator(derive_seed("dropout", int(seed), int(step), int(index)))
    keep = torch.rand(shape, generator=g, dtype=torch.float32) < (1 - p)
    return (keep.to(dtype) / (1 - p)).to(device)


def dropout_layers(model: nn.Module) -> list[Dropout]:
    """The model's :class:`Dropout` modules in ``model.modules()`` order (index = layer l)."""
    return [m for m in model.modules() if isinstance(m, Dropout)]


def _layers(model_or_layers: nn.Module | Sequence[Dropout]) -> list[Dropout]:
    if isinstance(model_or_layers, nn.Module):
        return dropout_layers(model_or_layers)
    return list(model_or_layers)


@contextmanager
def dropout_step(
    model_or_layers: nn.Module | Sequence[Dropout], seed: int, step: int
) -> Iterator[None]:
    """Within the block, each :class:`Dropout` draws the masks of member ``seed``, step
    ``step`` (each module at most once)."""
    layers = _layers(model_or_layers)
    for i, layer in enumerate(layers):
        layer._draw, layer._used = (int(seed), int(step), i), False
    try:
        yield
    finally:
        for layer in layers:
            layer._draw, layer._used = None, False


@contextmanager
def use_masks(
    model_or_layers: nn.Module | Sequence[Dropout], masks: Sequence[torch.Tensor]
) -> Iterator[None]:
    """Within the block, layer ``l`` multiplies its input by ``masks[l]`` (e.g. one member's
    slice of :func:`dropout_masks` inside ``vmap``)."""
    layers = _layers(model_or_layers)
    if len(masks) != len(layers):
        raise ConfigError(f"got {len(masks)} dropout masks for {len(layers)} Dropout layers")
    for layer, m in zip(layers, masks, strict=True):
        layer._mask, layer._used = m, False
    try:
        yield
    finally:
        for layer in layers:
            layer._mask, layer._used = None, False


def dropout_masks(
    model_or_layers: nn.Module | Sequence[Dropout],
    seed: int,
    step: int,
    shapes: Sequence[Sequence[int]],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> list[torch.Tensor]:
    """Member ``seed``'s masks at ``step``, one per layer, for input shapes ``shapes``
    (batch dim included); identical to what the layers draw under :func:`dropout_step`.
    Layers with ``p = 0`` get a ones mask."""
    layers = _layers(model_or_layers)
    if len(shapes) != len(layers):
        raise ConfigError(f"got {len(shapes)} shapes for {len(layers)} Dropout layers")
    out = []
    for i, (layer, shape) in enumerate(zip(layers, shapes, strict=True)):
        if layer.p == 0:
            out.append(torch.ones(tuple(shape), dtype=dtype, device=device))
        else:
            out.append(draw_mask(seed, step, i, tuple(shape), layer.p, dtype, device))
    return out


@torch.no_grad()
def dropout_input_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """Input shape of each :class:`Dropout` layer for a forward on ``x`` (eval mode, one
    pass; train mode restored)."""
    layers = dropout_layers(model)
    shapes: dict[int, tuple[int, ...]] = {}

    def recorder(i: int):
        def hook(module: nn.Module, args: tuple) -> None:
            shapes.setdefault(i, tuple(args[0].shape))

        return hook

    hooks = [layer.register_forward_pre_hook(recorder(i)) for i, layer in enumerate(layers)]
    was = model.training
    try:
        model.eval()
        model(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    missing = [i for i in range(len(layers)) if i not in shapes]
    if missing:
        raise ConfigError(f"Dropout layers {missing} did not run in a forward pass")
    return [shapes[i] for i in range(len(layers))]


def replace_dropout(model: nn.Module) -> nn.Module:
    """Swap every ``nn.Dropout`` (exactly that class) for :class:`Dropout` of the same ``p``,
    in place; returns ``model``. Dropout inside functional calls (``nn.MultiheadAttention``'s
    ``dropout``) is not a module and is not replaced: see :func:`functional_dropout`."""
    for name, child in list(model.named_children()):
        if type(child) is nn.Dropout:
            setattr(model, name, Dropout(child.p))
        else:
            replace_dropout(child)
    return model


def functional_dropout(model: nn.Module) -> list[str]:
    """Names of modules that apply dropout > 0 inside a functional call (drawing from the
    global RNG): ``nn.MultiheadAttention`` with ``dropout > 0``, and torch dropout modules
    other than ``nn.Dropout`` (``Dropout1d/2d/3d``, ``AlphaDropout``) with ``p > 0``;
    plain ``nn.Dropout`` is left to :func:`replace_dropout`."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention) and m.dropout > 0:
            out.append(name or "<model>")
        elif isinstance(m, nn.modules.dropout._DropoutNd) and type(m) is not nn.Dropout and m.p:
            out.append(name or "<model>")
    return out
