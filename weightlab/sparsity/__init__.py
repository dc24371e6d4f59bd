"""Sparsity: every pruning method as ``score × allocation × schedule`` over one mask format.

Masks are ``{plain_param_name: bool tensor}`` and are attached with
:func:`weightlab.core.apply_masks` (or passed as ``MemberSpec.masks`` to a population).

- scores: magnitude, random (:mod:`.scores`); pruning at init SNIP, GraSP, SynFlow
  (:mod:`.saliency`), layer collapse (:mod:`.collapse`);
- allocation: exact layer-wise or global counts, uniform and ERK densities
  (:mod:`.allocation`); granularity per weight, N:M, block, channel (:mod:`.granularity`);
- schedules: iterative magnitude pruning with rewinding (:mod:`.imp`); static, one-shot,
  periodic and gradual polynomial pruning as step callbacks (:mod:`.schedules`,
  :mod:`.pruners`); dynamic sparse training SET and RigL (:mod:`.dst`); iterative hard
  thresholding (:mod:`.iht`);
- structure: units pruned into a smaller model (:mod:`.structured`), training from
  scratch at matched epochs or FLOPs (:mod:`.scratch`), residual-block removal
  (:mod:`.layers`), layer gates and TRSP (:mod:`.gates`);
- search: random node masks (:mod:`.node_search`), N2N (:mod:`.n2n`), TAS (:mod:`.tas`),
  distillation tasks (:mod:`.distill`); input-feature selection RelChaNet
  (:mod:`.feature_selection`);
- analysis and controls: random masks (:mod:`.random_masks`), unit matching and support
  recovery (:mod:`.matching`), norm-matched dense controls (:mod:`.norm_match`);
- speed and interop: CSR and 2:4 export (:mod:`.export`), ``torch.nn.utils.prune``
  (:mod:`.interop`).

Names that would clash at package level (the pruning ``Schedule`` classes, each module's
``SCORES`` / ``ALLOCATIONS``) stay in their modules.
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
from weightlab.sparsity.collapse import CollapseReport, layer_collapse
from weightlab.sparsity.dst import SET, RigL, make_dst
from weightlab.sparsity.export import CSRLinear, merged_copy, to_csr, to_semi_structured
from weightlab.sparsity.feature_selection import RelChaNet
from weightlab.sparsity.granularity import (
    block_mask,
    channel_mask,
    granular_mask,
    granular_masks,
    nm_mask,
    unstructured_mask,
)
from weightlab.sparsity.iht import HardThreshold, hard_threshold, top_k_mask
from weightlab.sparsity.imp import (
    IMPConfig,
    IMPRound,
    density_schedule,
    imp_step,
    iterative_magnitude_pruning,
)
from weightlab.sparsity.interop import from_torch_prune, to_torch_prune
from weightlab.sparsity.layers import block_scores, lowest_blocks, random_blocks, remove_blocks
from weightlab.sparsity.matching import match_units, recovery_metrics
from weightlab.sparsity.norm_match import norm_match
from weightlab.sparsity.pruners import Pruner, make_pruner
from weightlab.sparsity.random_masks import random_masks
from weightlab.sparsity.saliency import (
    SynFlowScorer,
    allocate,
    grasp_scores,
    pai_scores,
    prune_at_init,
    snip_scores,
    synflow_prune,
    synflow_scores,
)
from weightlab.sparsity.schedules import make_schedule
from weightlab.sparsity.scores import magnitude_scores, random_scores, weights_of
from weightlab.sparsity.scratch import scratch_budget, train_from_scratch
from weightlab.sparsity.structured import StructuredPrune, prune_structured, structured_report

__all__ = [
    "SET",
    "CSRLinear",
    "CollapseReport",
    "HardThreshold",
    "IMPConfig",
    "IMPRound",
    "Pruner",
    "RelChaNet",
    "RigL",
    "StructuredPrune",
    "allocate",
    "block_mask",
    "block_scores",
    "channel_mask",
    "density_schedule",
    "erk_densities",
    "from_torch_prune",
    "global_masks",
    "granular_mask",
    "granular_masks",
    "grasp_scores",
    "hard_threshold",
    "imp_step",
    "iterative_magnitude_pruning",
    "keep_counts",
    "layer_collapse",
    "layer_rates",
    "layerwise_masks",
    "lowest_blocks",
    "magnitude_scores",
    "make_dst",
    "make_pruner",
    "make_schedule",
    "mask_counts",
    "match_units",
    "merged_copy",
    "nm_mask",
    "norm_match",
    "pai_scores",
    "prune_at_init",
    "prune_structured",
    "random_blocks",
    "random_masks",
    "random_scores",
    "recovery_metrics",
    "remove_blocks",
    "round_half_up",
    "scratch_budget",
    "snip_scores",
    "structured_report",
    "SynFlowScorer",
    "synflow_prune",
    "synflow_scores",
    "to_csr",
    "to_semi_structured",
    "to_torch_prune",
    "top_k_mask",
    "train_from_scratch",
    "uniform_densities",
    "unstructured_mask",
    "weights_of",
]
