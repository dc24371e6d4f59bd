"""Build models from a seed without touching the caller's RNG state.

:func:`build` constructs the module on the CPU (so buffers keep the values their
constructor gave them), inside ``torch.random.fork_rng(devices=[])`` with only the CPU
default generator seeded (never ``torch.manual_seed``, which would also reseed every
accelerator generator), then initializes it from ``generator(seed)`` with an
:mod:`~weightlab.init.schemes` scheme. The caller's CPU and CUDA RNG states are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from weightlab.init.schemes import get_scheme, init_module_
from weightlab.seeding import derive_seed, seeded_global_cpu_rng

ModelFactory = Callable[[int], nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """What a :func:`model_factory` builds: ``build(cls, *args, seed=s, init=init, **kwargs)``."""

    cls: type[nn.Module]
    args: tuple = ()
    init: str = "kaiming_uniform"
    kwargs: dict[str, Any] = field(default_factory=dict)


def build(
    cls: type[nn.Module], *args, seed: int, init: str = "kaiming_uniform", device="cpu", **kwargs
) -> nn.Module:
    """Instantiate ``cls(*args, **kwargs)`` on the CPU and initialize it from ``seed`` with
    ``init``; returns it on ``device``.

    Construction runs under a forked CPU RNG seeded with ``derive_seed("build", seed)``,
    so whatever the constructor draws is deterministic; every parameter is then
    overwritten by the scheme (see :func:`weightlab.init.init_module_`).
    """
    get_scheme(init)  # fail on a bad name before constructing
    seed = int(seed)
    with seeded_global_cpu_rng(derive_seed("build", seed)), torch.device("cpu"):
        model = cls(*args, **kwargs)
        init_module_(model, seed, init)
    return model.to(device)


def model_factory(
    cls: type[nn.Module], *args, init: str = "kaiming_uniform", **kwargs
) -> ModelFactory:
    """A ``seed -> nn.Module`` factory (CPU) for :func:`build` with fixed arguments.

    The factory carries ``factory.model_spec`` (a :class:`ModelSpec`) so that populations
    can draw all members' weights at once (:func:`weightlab.init.stacked.draw_stacked`).
    """
    get_scheme(init)

    def factory(seed: int) -> nn.Module:
        return build(cls, *args, seed=seed, init=init, **kwargs)

    factory.__qualname__ = f"model_factory({cls.__name__})"
    factory.model_spec = ModelSpec(cls, tuple(args), init, dict(kwargs))
    return factory
