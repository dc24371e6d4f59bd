"""Adapters on pretrained models (issue 19): LoRA on the activation side and as a
Transform, adapter inits (random, PiSSA, OLoRA; the :class:`AdapterInit` interface for
EVA, LoLDU, Bone), and PEFT's adapter format. Names are imported lazily."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AdapterPlan": "lora",
    "AdapterSet": "lora",
    "LoRADelta": "lora",
    "LoRALayer": "lora",
    "add_adapters": "lora",
    "adapter_modules": "lora",
    "format_plans": "lora",
    "merge_adapters": "lora",
    "preview_adapters": "lora",
    "remove_adapters": "lora",
    "unmerge_adapters": "lora",
    "AdapterInit": "inits",
    "AdapterInitContext": "inits",
    "BaseWeightsModifiedWarning": "inits",
    "OLoRA": "inits",
    "PiSSA": "inits",
    "RandomInit": "inits",
    "get_adapter_init": "inits",
    "export_peft": "peft_format",
    "import_peft": "peft_format",
    "SubspaceModel": "subspace",
    "make_projection": "subspace",
    "DenseProjection": "subspace",
    "SparseProjection": "subspace",
    "FastfoodProjection": "subspace",
    "fwht": "subspace",
    "EVA": "eva",
    "IncrementalSVD": "eva",
    "redistribute_ranks": "eva",
    "LoLDU": "loldu",
    "LoLDULayer": "loldu",
    "ldu": "loldu",
    "save_loldu": "loldu",
    "load_loldu": "loldu",
    "Bone": "bone",
    "BoneDelta": "bone",
    "BoneExcludedWarning": "bone",
    "bone_delta": "bone",
    "export_bone_peft": "bone",
    "interpolate_state": "interpolate",
    "correction_count": "interpolate",
    "CorrectionCount": "interpolate",
    "SPSAConfig": "zeroth_order",
    "SPSAResult": "zeroth_order",
    "run_spsa": "zeroth_order",
    "OneByteQuantizer": "zeroth_order",
    "Float32Codec": "zeroth_order",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"weightlab.adapters.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'weightlab.adapters' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
