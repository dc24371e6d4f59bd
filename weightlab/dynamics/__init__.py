"""Training dynamics (issue 23): analytic learning curves, SGLD, stage and Fourier probes,
path norms, dense Hebbian memories. See docs/architecture.md, "## Training dynamics".
Names are imported lazily."""

from __future__ import annotations

import importlib

from weightlab.lazy import guard_shadowed_names

_EXPORTS: dict[str, str] = {
    "generalization_curve": "analytic",
    "mp_density": "analytic",
    "mp_edges": "analytic",
    "mp_nodes": "analytic",
    "SGLD": "sgld",
    "sgld_noise": "sgld",
    "sgld_update_": "sgld",
    "split_noise": "sgld",
    "check_step_size": "sgld",
    "power_spectrum": "fourier",
    "neuron_spectrum": "fourier",
    "neuron_concentration": "fourier",
    "concentration": "fourier",
    "concentration_summary": "fourier",
    "split_operands": "fourier",
    "frequencies": "fourier",
    "fourier_probe": "fourier",
    "detect_stages": "stages",
    "Stages": "stages",
    "first_at_least": "stages",
    "path_norm": "norms",
    "two_layer_norm": "norms",
    "path_norm_probe": "norms",
    "two_layer_norm_probe": "norms",
    "fit_factor_analysis": "factor_analysis",
    "FactorModel": "factor_analysis",
    "DinoNet": "random_teachers",
    "DinoLoss": "random_teachers",
    "near_teacher": "random_teachers",
    "distillation_targets": "random_teachers",
    "teacher_outputs": "random_teachers",
    "ConvResidualStudents": "conv_residual",
    "phase_plan": "conv_residual",
    "train_students": "conv_residual",
    "half_squared_sum": "conv_residual",
    "member_losses": "conv_residual",
    "uniform_ball": "conv_residual",
    "DenseHebbian": "hebbian",
    "Retrieval": "hebbian",
    "SupervisedPatterns": "hebbian",
    "random_patterns": "hebbian",
    "supervised_patterns": "hebbian",
    "corrupt": "hebbian",
    "overlaps": "hebbian",
    "check_order": "hebbian",
    "check_dilution": "hebbian",
    "check_quality": "hebbian",
}

__all__ = sorted(_EXPORTS)


guard_shadowed_names(__name__, _EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"weightlab.dynamics.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'weightlab.dynamics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
