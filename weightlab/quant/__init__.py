"""Weight quantization (issue 21): one quantizer design (level set × scale estimator ×
rounding × granularity) as a :class:`~weightlab.core.transforms.Transform`, PTQ and QAT,
instrumentation, binary mean-field weights, quantized bases under adapters, packed export.
See docs/architecture.md, "## Quantization". Names are imported lazily."""

from __future__ import annotations

import importlib

_EXPORTS: dict[str, str] = {
    "LEVEL_SETS": "levels",
    "LevelSet": "levels",
    "Uniform": "levels",
    "PowerExponent": "levels",
    "MidRise": "levels",
    "PowersOfTwo": "levels",
    "Binary": "levels",
    "make_levels": "levels",
    "bits_per_weight": "levels",
    "group_view": "granularity",
    "grouped_shape": "granularity",
    "fake_quant": "fake",
    "quantize_values": "fake",
    "ESTIMATORS": "scales",
    "estimate": "scales",
    "mse_errors": "scales",
    "mse_search_scale": "scales",
    "QuantSpec": "quantizer",
    "Quantizer": "quantizer",
    "quantize": "quantizer",
    "quantizers": "quantizer",
    "remove_quantizers": "quantizer",
    "search_exponent": "nupes",
    "power_quantize": "nupes",
    "calibrated_power_quantize": "nupes",
    "power_weights": "nupes",
    "output_errors": "nupes",
    "layer_grams": "nupes",
    "ExponentSearch": "nupes",
    "DEFAULT_GRID": "nupes",
    "SignScale": "shift",
    "sign_scale": "shift",
    "Magnitudes": "shift",
    "LowVariance": "shift",
    "low_variance_head": "shift",
    "OscillationTracker": "instrument",
    "FreezingTracker": "instrument",
    "level_shares": "instrument",
    "grid_positions": "instrument",
    "ConfidenceGuidedAnnealing": "cga",
    "boundary_mask": "cga",
    "size_report": "export",
    "file_size_report": "export",
    "SizeReport": "export",
    "SizeRow": "export",
    "pack": "export",
    "save_packed": "export",
    "load_packed": "export",
    "read_packed": "export",
    "PackedFile": "export",
    "unpack_into": "export",
    "dequantized_module": "export",
    "independent_copy": "export",
    "pack_state_dict": "export",
    "save_packed_state_dict": "export",
    "QLORA_SPEC": "qlora",
    "add_quantized_adapters": "qlora",
    "merge_quantized_adapter": "qlora",
    "merge_output_errors": "qlora",
    "uniform_fake_quant": "quantizer",
    "MeanFieldBinaryLinear": "binary",
    "MeanFieldBinaryMLP": "binary",
    "FieldPrior": "binary",
    "bernoulli_kl": "binary",
    "field_kl": "binary",
    "gaussian_field": "binary",
    "gaussian_log_probs": "binary",
    "perceptron_nll": "binary",
    "sign_expectation": "binary",
    "binarize": "binary",
    "binary_accuracy": "binary",
    "SignLinear": "binary",
    "sign_ste": "binary",
    "Metaplastic": "binary",
    "MetaplasticCallback": "binary",
    "metaplastic_update_": "binary",
    "meta_factor": "binary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"weightlab.quant.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'weightlab.quant' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
