"""Weight initializers that draw from an explicit generator: the build-time init plans (and
the stacked drawer that replays them for a whole population), the registry of every scheme
as ``init(shape, ctx)`` applied to any model through selectors, criticality and
signal-propagation diagnostics, and the abc-parametrizations (SP, NTK, μP, mean field).

The family modules are imported on first use (``weightlab.init.critical_point`` loads
:mod:`weightlab.init.critical`): importing this package stays light, and the
parametrizations, which build on the training stack, import no cycle through
``weightlab.models``."""

from importlib import import_module
from typing import Any

from weightlab.init.registry import (
    InitContext,
    Initializer,
    get_initializer,
    initialize,
    register,
    registered_schemes,
)
from weightlab.init.schemes import INIT_SCHEMES, init_module_, init_plan
from weightlab.init.stacked import draw_stacked

_LAZY = {
    "critical_point": "critical",
    "mean_field": "critical",
    "signal_propagation": "signal",
    "effective_rank": "signal",
    "plot_signal": "signal",
    "low_rank_matrix": "lowrank",
    "fit_generalized_gaussian": "generalized_gaussian",
    "depth_aware_variance": "depth_aware",
    "LSUV": "lsuv",
    "spectral_centroid": "winner",
    "virgo_variances": "virgo",
    "attach_compander": "compander",
    "rich_feature_construction": "bonsai",
    "BaseShapes": "base_shapes",
    "parametrize": "parametrization",
    "lr_groups": "parametrization",
    "output_scale": "output_scale",
    "coord_check": "coord_check",
    "default_lr": "output_scale",
    "ntk_gram": "kernel_alignment",
    "kernel_target_alignment": "kernel_alignment",
    "initial_alignment": "kernel_alignment",
    "self_pretrain": "self_pretrain",
    "SelfPretrainResult": "self_pretrain",
    "pretrained_init": "self_pretrain",
    "masked_mse": "self_pretrain",
    "denoising_task": "self_pretrain",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"weightlab.init.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'weightlab.init' has no attribute {name!r}")


__all__ = [
    "INIT_SCHEMES",
    "InitContext",
    "Initializer",
    "draw_stacked",
    "get_initializer",
    "init_module_",
    "init_plan",
    "initialize",
    "register",
    "registered_schemes",
    *_LAZY,
]
