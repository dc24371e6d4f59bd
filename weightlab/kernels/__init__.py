"""Kernels and infinite width, natively in PyTorch: the empirical NTK of any module
(:mod:`~weightlab.kernels.empirical`), analytic NNGP/NTK recursions for fully connected and
hierarchical CNNs and their infinite-depth limits (:mod:`~weightlab.kernels.analytic`),
kernel ridge, GP and NTK-GP regression (:mod:`~weightlab.kernels.regression`), the
Student-t scale mixture (:mod:`~weightlab.kernels.student_t`), the deep kernel machine
(:mod:`~weightlab.kernels.dkm`), random-feature models (:mod:`~weightlab.kernels.random_features`,
:mod:`~weightlab.kernels.rf_attention`, :mod:`~weightlab.kernels.snnk`), power-law fits and
the inductive-bias estimator. Names are imported lazily, on first use."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_MODULES = {
    "analytic": (
        "KernelPair",
        "fc_kernels",
        "cnn_kernels",
        "dual_kernels",
        "infinite_depth_ntk",
        "InfiniteDepthNTK",
        "normalized_ntk",
        "hermite_activation",
        "INFINITE_DEPTH_ACTIVATIONS",
        "RELU_LIMIT_RATIO",
    ),
    "empirical": (
        "empirical_ntk",
        "ntk_vector_product",
        "ProjectedOutput",
        "qualifies_structured",
        "NTKLinear",
        "ntk_mlp",
        "ntk_to_mlp",
        "ntk_lr_groups",
        "mlp_to_ntk",
    ),
    "regression": (
        "cholesky_factor",
        "cholesky_solve",
        "kernel_ridge",
        "gp_posterior",
        "ntk_gp_mean",
    ),
    "student_t": (
        "student_t_process",
        "StudentTPredictive",
        "student_t_log_marginal",
        "fit_student_t",
        "fit_gp",
        "sample_scale_mixture_outputs",
    ),
    "dkm": ("DeepKernelMachine", "relu_gram_map"),
    "random_features": (
        "RandomFeatureNet",
        "RidgePath",
        "ridge_path_features",
        "ridge_path_kernel",
    ),
    "power_law": ("fit_power_law", "PowerLawFit"),
    "rf_attention": ("RandomFeatureAttention",),
    "snnk": ("SNNKLinear",),
    "inductive_bias": ("inductive_bias_bits", "InductiveBias"),
}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f"weightlab.kernels.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'weightlab.kernels' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
