"""Saliency scores for pruning: which weights matter.

A score is a tensor of the weight's shape; higher means "keep". Pruning is
``score × allocation × schedule`` (see :mod:`weightlab.sparsity.allocation` and
:mod:`weightlab.sparsity.imp`).

- :func:`magnitude_scores`: ``|W|``, the criterion of magnitude pruning (Han et al. 2015,
  "Learning both Weights and Connections", Sec. 3) and of the lottery-ticket procedure
  (Frankle & Carbin 2019, "The Lottery Ticket Hypothesis", Sec. 2, step 3: "prune p% of
  the parameters ... with the smallest magnitudes").
- :func:`random_scores`: i.i.d. ``U(0, 1)`` scores from an explicit generator, which
  turn any allocation into a random mask with the same layer-wise counts (the
  random-pruning control of Frankle & Carbin 2019, Sec. 2).
"""

from __future__ import annotations

import torch
from torch import nn

from weightlab.core.selectors import Selector
from weightlab.errors import ConfigError


def magnitude_scores(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{name: |W|}`` (Frankle & Carbin 2019, Sec. 2; Han et al. 2015, Sec. 3)."""
    return {name: w.detach().abs() for name, w in weights.items()}


def random_scores(
    shapes: dict[str, torch.Size], generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """``{name: U(0, 1) tensor of that shape}`` drawn (on the CPU) from ``generator`` in the
    order of ``shapes``; the same generator state gives the same scores."""
    if not isinstance(generator, torch.Generator):
        raise ConfigError(
            "random_scores needs a torch.Generator; build one with weightlab.seeding.generator(seed)"
        )
    return {
        name: torch.rand(torch.Size(shape), generator=generator, dtype=torch.float64)
        for name, shape in shapes.items()
    }


@torch.no_grad()
def weights_of(model: nn.Module, selector: Selector | None = None) -> dict[str, torch.Tensor]:
    """Detached copies of the *effective* weights (after any attached transforms, so
    pruned weights read as exactly zero) of the parameters picked by ``selector``
    (default: every Linear/Conv weight), keyed by plain parameter names."""
    picked = (selector or Selector())(model)
    if not picked:
        raise ConfigError("the selector picked no parameters; check its types, include and roles")
    return {name: getattr(module, attr).detach().clone() for name, (module, attr) in picked.items()}


__all__ = ["magnitude_scores", "random_scores", "weights_of"]
