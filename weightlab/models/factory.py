"""Build models without touching the global RNG: construct on the meta device, then
initialize from a seeded generator."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from weightlab.init.schemes import init_module_
from weightlab.seeding import generator

ModelFactory = Callable[[int], nn.Module]


def build(
    cls: type[nn.Module], *args, seed: int, init: str = "kaiming_uniform", device="cpu", **kwargs
) -> nn.Module:
    """Instantiate ``cls(*args, **kwargs)`` and initialize it from ``seed`` with ``init``."""
    with torch.device("meta"):
        model = cls(*args, **kwargs)
    model = model.to_empty(device="cpu")
    for m in model.modules():  # buffers made on meta hold no values: reset them
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
    init_module_(model, generator(seed), init)
    return model.to(device)


def model_factory(
    cls: type[nn.Module], *args, init: str = "kaiming_uniform", **kwargs
) -> ModelFactory:
    """A ``seed -> nn.Module`` factory (CPU) for :func:`build` with fixed arguments."""

    def factory(seed: int) -> nn.Module:
        return build(cls, *args, seed=seed, init=init, **kwargs)

    factory.__qualname__ = f"model_factory({cls.__name__})"
    return factory
