"""Sparsity: pruning as ``score × allocation × schedule``.

- scores (:mod:`~weightlab.sparsity.scores`): magnitude, random;
- allocation (:mod:`~weightlab.sparsity.allocation`): exact layer-wise or global counts,
  nested masks, uniform and ERK densities, per-layer pruning rates;
- schedule (:mod:`~weightlab.sparsity.imp`): iterative magnitude pruning with rewinding
  (the lottery-ticket procedure of Frankle & Carbin 2019);
- controls (:mod:`~weightlab.sparsity.random_masks`): random masks with exact counts.

Masks are ``{plain_param_name: bool tensor}`` and are attached to a model with
:func:`weightlab.core.apply_masks`.
"""

from weightlab.sparsity.allocation import (
    erk_densities,
    global_masks,
    keep_counts,
    layer_rates,
    layerwise_masks,
    mask_counts,
    round_half_up,
    uniform_densities,
)
from weightlab.sparsity.imp import (
    IMPConfig,
    IMPRound,
    density_schedule,
    imp_step,
    iterative_magnitude_pruning,
)
from weightlab.sparsity.random_masks import random_masks
from weightlab.sparsity.scores import magnitude_scores, random_scores, weights_of

__all__ = [
    "IMPConfig",
    "IMPRound",
    "density_schedule",
    "erk_densities",
    "global_masks",
    "imp_step",
    "iterative_magnitude_pruning",
    "keep_counts",
    "layer_rates",
    "layerwise_masks",
    "magnitude_scores",
    "mask_counts",
    "random_masks",
    "random_scores",
    "round_half_up",
    "uniform_densities",
    "weights_of",
]
