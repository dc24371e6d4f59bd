"""Generated weights (issue 22): the GeneratedWeight transform, hypernetworks (chunked MLP
and LSTM, continual learning), low-rank weight predictors, MIP, hourglass lifts and
implicit weight fields. See docs/architecture.md, "## Growth and hypernetworks". Names are
imported lazily."""

from __future__ import annotations

import importlib

from weightlab.lazy import guard_shadowed_names

_EXPORTS: dict[str, str] = {
    "GeneratedWeight": "generated",
    "attach_generated": "generated",
    "generate_population": "generated",
    "generated_params": "generated",
    "parameter_shapes": "generated",
    "split_flat": "generated",
    "fast_mlp_dims": "generated",
    "chunked_mlp": "fused",
    "mlp_targets": "fused",
    "LSTM": "lstm",
    "ChunkedHypernet": "continual",
    "ChunkedMLPHypernet": "continual",
    "ChunkedRNNHypernet": "continual",
    "HyperClassifier": "continual",
    "HyperPopulation": "continual",
    "hypernet_targets": "continual",
    "output_regularizer": "continual",
    "HourglassBlock": "hourglass",
    "FrozenRandomProjection": "hourglass",
    "HourglassNet": "hourglass",
    "ConventionalNet": "hourglass",
    "parameter_count": "hourglass",
    "hourglass_parameters": "hourglass",
    "conventional_parameters": "hourglass",
    "hourglass_factory": "hourglass",
    "conventional_factory": "hourglass",
    "WeightPredictor": "predictor",
    "LowRankPredictor": "predictor",
    "ChunkPredictor": "predictor",
    "layer_descriptors": "predictor",
    "predict_weights": "predictor",
    "meta_train": "predictor",
    "MIPHypernet": "mip",
    "HyperTarget": "mip",
    "GammaStream": "mip",
    "mip_hypernet": "mip",
    "default_hypernet": "mip",
    "encode_gamma": "mip",
    "magnitude_ratio": "mip",
    "mixed_loss": "mip",
    "ImplicitWeightField": "neumeta",
    "fourier_features": "neumeta",
    "path_length": "neumeta",
    "shortest_path_order": "neumeta",
    "smooth_mlp": "neumeta",
    "train_field": "neumeta",
    "train_fields": "neumeta",
}

__all__ = sorted(_EXPORTS)
guard_shadowed_names(__name__, _EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"weightlab.hyper.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'weightlab.hyper' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
