"""Run directories, atomic files and resume."""

from weightlab.runs.files import atomic_write_json, load_tensors, read_json, save_tensors
from weightlab.runs.rundir import RunDir, config_hash, default_run_dir, non_default_fields

__all__ = [
    "RunDir",
    "atomic_write_json",
    "config_hash",
    "default_run_dir",
    "load_tensors",
    "non_default_fields",
    "read_json",
    "save_tensors",
]
