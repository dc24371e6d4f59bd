"""Growth (issue 22): function-preserving widening and deepening with optimizer state,
template mixtures (MixtureGrowth), stage-shared learngenes (SWS). See
docs/architecture.md, "## Growth and hypernetworks". Names are imported lazily."""

from __future__ import annotations

import importlib

from weightlab.lazy import guard_shadowed_names

_EXPORTS: dict[str, str] = {
    "widen": "widen",
    "widen_state": "widen",
    "widen_masks": "widen",
    "widen_plan": "widen",
    "index_map": "widen",
    "WidenPlan": "widen",
    "WidenEntry": "widen",
    "deepen": "deepen",
    "identity_layer": "deepen",
    "IDEMPOTENT": "deepen",
    "TemplateLinear": "mixture",
    "TemplateMLP": "mixture",
    "mixture_grow": "mixture",
    "orthogonal_coefficients": "mixture",
    "Block": "mixture",
    "NEW_BLOCKS": "mixture",
    "StageSharedNet": "sws",
    "ResidualMLP": "sws",
    "expand_blocks": "sws",
    "teacher_block_init": "sws",
    "DistillationLoss": "sws",
    "pack_soft_targets": "sws",
    "teacher_logits": "sws",
    "distillation_task": "sws",
    "block_params": "sws",
    "forward_flops": "sws",
}

__all__ = sorted(_EXPORTS)


guard_shadowed_names(__name__, _EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"weightlab.growth.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'weightlab.growth' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
