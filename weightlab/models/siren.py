"""SIREN: a multilayer perceptron with sine activations (Sitzmann et al. 2020, "Implicit
Neural Representations with Periodic Activation Functions", NeurIPS).

Layer ``i < L`` computes ``φ_i(x) = sin(ω0 (W_i x + b_i))`` (Eq. 1 with the ``ω0`` scaling of
Sec. 3.2); the last layer is linear. Initialization (Sec. 3.2 and Supplement 1.5), with
``n`` the layer's fan-in:

- first layer: ``W ~ U(-1/n, 1/n)``, so ``sin(ω0 W x)`` spans several periods over ``[-1, 1]``;
- every other layer: ``W ~ U(-sqrt(6/n)/ω0, sqrt(6/n)/ω0)``, so ``ω0 W x`` has the
  ``U(-sqrt(6/n), sqrt(6/n))`` weights of the paper's Theorem 1.5 and activations keep an
  arcsine distribution through depth;
- biases: ``U(-1/sqrt(n), 1/sqrt(n))``, PyTorch's ``nn.Linear`` default, which the paper's
  reference implementation keeps.

Every draw comes from ``weightlab.seeding.generator(seed)`` with the init schemes' uniform
draw (:func:`weightlab.init.schemes.draw`: float64, rounded to float32); ``ω0 = 30`` as in
the paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.init.schemes import Dist, draw
from weightlab.seeding import generator


class SineLayer(nn.Module):
    """``sin(ω0 (W x + b))``; ``linear`` holds ``W`` and ``b``."""

    def __init__(self, in_features: int, out_features: int, omega0: float = 30.0) -> None:
        super().__init__()
        self.omega0 = float(omega0)
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega0 * self.linear(x))


class SIREN(nn.Module):
    """``widths = [in, h1, ..., out]``: sine layers ``layers.0 .. layers.{L-2}`` (each a
    :class:`SineLayer`) and a linear output ``layers.{L-1}``. Input ``(B, in)`` (or ``(B,)``
    for ``in = 1``), output ``(B, out)``. Weights follow the paper's initialization when built
    with a seed (:func:`siren_factory` or :meth:`init_`)."""

    def __init__(self, widths: Sequence[int], omega0: float = 30.0) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 3 or any(w <= 0 for w in widths):
            raise ConfigError(
                f"SIREN widths must be >= 3 positive integers (in, hidden..., out), got {widths}"
            )
        if not (math.isfinite(omega0) and omega0 > 0):
            raise ConfigError(f"SIREN omega0 must be > 0, got {omega0}")
        self.widths, self.omega0 = widths, float(omega0)
        pairs = list(zip(widths[:-1], widths[1:], strict=True))
        layers: list[nn.Module] = [SineLayer(a, b, omega0) for a, b in pairs[:-1]]
        layers.append(nn.Linear(*pairs[-1]))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        for layer in self.layers:
            x = layer(x)
        return x

    @torch.no_grad()
    def init_(self, seed: int) -> SIREN:
        """Draw every weight and bias from ``generator(seed)`` (module docstring), in layer
        order: weight then bias. Returns ``self``."""
        g = generator(seed)
        for i, layer in enumerate(self.layers):
            lin = layer.linear if isinstance(layer, SineLayer) else layer
            n = lin.in_features
            bound = 1.0 / n if i == 0 else math.sqrt(6.0 / n) / self.omega0
            lin.weight.copy_(draw(Dist("uniform", bound), tuple(lin.weight.shape), g))
            lin.bias.copy_(draw(Dist("uniform", 1.0 / math.sqrt(n)), tuple(lin.bias.shape), g))
        return self


def siren_factory(widths: Sequence[int], omega0: float = 30.0) -> Callable[[int], SIREN]:
    """A ``seed -> SIREN`` factory (CPU, paper initialization from ``generator(seed)``)."""
    SIREN(widths, omega0)  # validate once, up front

    def factory(seed: int) -> SIREN:
        with torch.device("meta"):  # no draw from torch's global RNG in nn.Linear's init
            model = SIREN(widths, omega0)
        return model.to_empty(device="cpu").init_(seed)

    factory.__qualname__ = "siren_factory"
    return factory
