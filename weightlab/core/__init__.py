"""The weight-operation core: selectors, transforms (parametrizations), masks, snapshots."""

from weightlab.core.mask import Mask, apply_masks, density, get_masks
from weightlab.core.selectors import Selector, select
from weightlab.core.snapshots import restore_snapshot, take_snapshot
from weightlab.core.transforms import Transform, attach, merge, merged_copy, transforms_of

__all__ = [
    "Mask",
    "Selector",
    "Transform",
    "apply_masks",
    "attach",
    "density",
    "get_masks",
    "merge",
    "merged_copy",
    "restore_snapshot",
    "select",
    "take_snapshot",
    "transforms_of",
]
