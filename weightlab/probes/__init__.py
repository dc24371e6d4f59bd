"""Probes (issue 20): read weights and representations without changing the model —
weight spectra, representation similarity and unit matching, relative representations,
weight-space geometry (barriers, sharpness, opposing signals), neural collapse, guidance,
generalization probes, data scores and samplers, dataset distillation and model zoos.
Names are imported lazily (``from weightlab.probes import cka``)."""

from __future__ import annotations

import importlib

_EXPORTS: dict[str, str] = {
    "layer_matrices": "spectra",
    "esd": "spectra",
    "spectra": "spectra",
    "Spectra": "spectra",
    "LayerSpectrum": "spectra",
    "LayerWeight": "spectra",
    "GATES": "spectra",
    "fit_power_law": "powerlaw",
    "fit_power_law_batch": "powerlaw",
    "clip_fingers": "powerlaw",
    "TailFit": "powerlaw",
    "MIN_EVALS": "powerlaw",
    "EVALS_THRESH": "powerlaw",
    "FINGER_THRESH": "powerlaw",
    "MAX_FINGERS": "powerlaw",
    "HessianEigen": "hessian",
    "HessianTrace": "hessian",
    "hessian_trace": "hessian",
    "hvp": "hessian",
    "sharpness_probe": "hessian",
    "top_eigenvalue": "hessian",
    "DataScores": "data_scores",
    "el2n": "data_scores",
    "el2n_scores": "data_scores",
    "grand": "data_scores",
    "grand_scores": "data_scores",
    "early_scores": "data_scores",
    "prune_by_score": "data_scores",
    "SCORES": "data_scores",
    "GRAND_METHODS": "data_scores",
    "PRUNE_MODES": "data_scores",
    "CKAMatrix": "cka",
    "CKAResult": "cka",
    "MinibatchCKA": "cka",
    "cka": "cka",
    "cka_matrix": "cka",
    "cka_tensor": "cka",
    "linear_cka": "cka",
    "rbf_cka": "cka",
    "hsic": "cka",
    "hsic_pairs": "cka",
    "gram": "cka",
    "linear_gram": "cka",
    "rbf_gram": "cka",
    "CCAResult": "cca",
    "canonical_correlations": "cca",
    "cca_similarity": "cca",
    "pwcca": "cca",
    "svcca": "cca",
    "svd_reduce": "cca",
    "HiddenStates": "features",
    "hidden_states": "features",
    "iter_hidden_states": "features",
    "hidden_state_cka": "features",
    "bert_layers": "features",
    "pool_states": "features",
    "CollapseMetrics": "collapse",
    "OrthogonalFrame": "collapse",
    "collapse_metrics": "collapse",
    "collapse_probe": "collapse",
    "orthogonal_frame": "collapse",
    "nc1": "collapse",
    "class_means": "collapse",
    "classifier_inputs": "collapse",
    "LayerDivergence": "generalization",
    "layer_divergences": "generalization",
    "gaussian_kl": "generalization",
    "gaussian_fit": "generalization",
    "kl_gaussians": "generalization",
    "sliced_w1": "generalization",
    "sliced_w1_gaussians": "generalization",
    "w1_1d": "generalization",
    "w1_gaussians_1d": "generalization",
    "random_directions": "generalization",
    "capture_outputs": "generalization",
    "Guided": "guidance",
    "guidance_penalty": "guidance",
    "distill": "distill",
    "train_experts": "distill",
    "ExpertSmoothing": "distill",
    "gradient_penalty_loss": "distill",
    "DistilledSet": "distill",
    "synthetic_task": "distill",
    "Zoo": "zoo",
    "ZooGrid": "zoo",
    "ZooMember": "zoo",
    "build_zoo": "zoo",
    "load_zoo": "zoo",
    "member_id": "zoo",
    "phase_diagram": "zoo",
    "OpposingGroups": "opposing",
    "find_opposing_groups": "opposing",
    "loss_spikes": "opposing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"weightlab.probes.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'weightlab.probes' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
