"""Initialization schemes, every draw from an explicit ``torch.Generator``.

- ``kaiming_uniform``: PyTorch's default for Linear/Conv (He et al. 2015 with
  ``a = sqrt(5)``): ``W ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, bias likewise.
- ``glorot_normal``: Glorot & Bengio (2010) Gaussian, ``W ~ N(0, 2/(fan_in+fan_out))``,
  bias zero; the initialization of the lottery-ticket paper (Frankle & Carbin 2019, App. G).
- ``kaiming_normal``: He et al. (2015) Eq. 10, ``W ~ N(0, 2/fan_in)``, bias zero.

Draws happen on the CPU and are copied to the parameter's device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from weightlab.errors import ConfigError


def _fans(w: torch.Tensor) -> tuple[int, int]:
    receptive = int(math.prod(w.shape[2:])) if w.dim() > 2 else 1
    return w.shape[1] * receptive, w.shape[0] * receptive


def _uniform(shape: torch.Size, bound: float, g: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1).mul_(bound).float()


def _kaiming_uniform(w, b, g):
    fan_in, _ = _fans(w)
    bound = 1.0 / math.sqrt(fan_in)
    out_w = _uniform(w.shape, bound, g)
    out_b = _uniform(b.shape, bound, g) if b is not None else None
    return out_w, out_b


def _glorot_normal(w, b, g):
    fan_in, fan_out = _fans(w)
    std = math.sqrt(2.0 / (fan_in + fan_out))
    return torch.randn(w.shape, generator=g) * std, (
        torch.zeros(b.shape) if b is not None else None
    )


def _kaiming_normal(w, b, g):
    fan_in, _ = _fans(w)
    std = math.sqrt(2.0 / fan_in)
    return torch.randn(w.shape, generator=g) * std, (
        torch.zeros(b.shape) if b is not None else None
    )


Scheme = Callable[[torch.Tensor, torch.Tensor | None, torch.Generator], tuple]
INIT_SCHEMES: dict[str, Scheme] = {
    "kaiming_uniform": _kaiming_uniform,
    "glorot_normal": _glorot_normal,
    "kaiming_normal": _kaiming_normal,
}


@torch.no_grad()
def init_module_(
    model: nn.Module, g: torch.Generator, scheme: str = "kaiming_uniform"
) -> nn.Module:
    """Re-initialize every Linear/Conv in ``model`` (in module order) with ``scheme``.

    Normalization layers get weight 1 and bias 0 and their running statistics reset.
    Any other module that owns parameters (Embedding, Conv3d, a user's layer...) is
    reset by its own ``reset_parameters()`` under a forked global RNG seeded from ``g``,
    so it is deterministic and leaves the caller's RNG state untouched; a module with
    parameters and no ``reset_parameters`` raises :class:`ConfigError`.
    The model is modified in place and returned.
    """
    if scheme not in INIT_SCHEMES:
        raise ConfigError(
            f"unknown init scheme {scheme!r}; choose one of: {', '.join(INIT_SCHEMES)}"
        )
    fn = INIT_SCHEMES[scheme]
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d):
            w, b = fn(m.weight, m.bias, g)
            m.weight.copy_(w)
            if m.bias is not None:
                m.bias.copy_(b)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()
        elif any(True for _ in m.parameters(recurse=False)):
            if not hasattr(m, "reset_parameters"):
                raise ConfigError(
                    f"cannot initialize {type(m).__name__}: it has parameters but no reset_parameters()"
                )
            seed = int(torch.randint(0, 2**62, (), generator=g))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                m.reset_parameters()
    return model
