"""MNIST-format IDX files (LeCun et al. 1998): ``read_idx(path)`` and ``load_idx_task(dir)``.

IDX layout: two zero bytes, a dtype code (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16,
``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64, all big-endian), the number of
dimensions, one big-endian uint32 per dimension, then the values in row-major order.

A directory for ``idx:DIR`` holds ``train-images*``, ``train-labels*``, ``t10k-images*``
and ``t10k-labels*`` (e.g. ``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte``),
each plain or ``.gz``; when both a file and its ``.gz`` are present the plain one is read.
t10k is the test split; a permutation seeded from ``seed`` moves ``round(0.1 n)`` training
images to val. Images are flattened to one row each (``info["image_shape"]`` keeps the
shape); uint8 pixels are divided by 255, other integer types by their dtype's maximum,
float pixels are kept as stored.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from weightlab.data.splits import partition
from weightlab.data.task import TaskData, make_split
from weightlab.errors import DataError
from weightlab.seeding import derive_seed

DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FILES = ("train-images", "train-labels", "t10k-images", "t10k-labels")
VAL_FRACTION = 0.1
_FIX = "copy or download the file again"


def _raw_bytes(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path} is not a complete gzip file ({e}); {_FIX}") from e
    except OSError as e:
        raise DataError(f"cannot read {path} ({e}); check the path and its permissions") from e


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in one IDX file (plain or ``.gz``), in native byte order."""
    path = Path(path)
    raw = _raw_bytes(path)
    if len(raw) < 4:
        raise DataError(
            f"{path} is truncated: {len(raw)} bytes, shorter than an IDX header; {_FIX}"
        )
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{path} is not an IDX file (magic number 0x{raw[:4].hex()} does not start with two "
            "zero bytes); give MNIST-format train-*/t10k-* files"
        )
    code, ndim = raw[2], raw[3]
    if code not in DTYPES:
        raise DataError(
            f"{path} has an unknown IDX dtype code 0x{code:02x} (known: "
            f"{', '.join(f'0x{c:02x}' for c in DTYPES)}); give MNIST-format files"
        )
    if ndim == 0:
        raise DataError(f"{path} declares 0 dimensions; an IDX array needs at least one")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header ({len(raw)} bytes); {_FIX}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(DTYPES[code])
    need = math.prod(dims) * dtype.itemsize
    have = len(raw) - header
    if have < need:
        raise DataError(
            f"{path} is truncated: its header declares shape {dims} ({need} bytes of data) but "
            f"only {have} bytes follow; {_FIX}"
        )
    if have > need:
        raise DataError(
            f"{path} has {have - need} bytes after the data its header declares (shape {dims}); "
            f"it is not a valid IDX file; {_FIX}"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=math.prod(dims), offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def find_idx_file(folder: Path, prefix: str) -> Path:
    """The one file ``prefix*`` in ``folder`` (a plain file wins over its ``.gz``)."""
    found = sorted(p for p in folder.glob(f"{prefix}*") if p.is_file())
    names = {p.name for p in found}
    found = [p for p in found if not (p.name.endswith(".gz") and p.name[:-3] in names)]
    if not found:
        raise DataError(
            f"idx:{folder} has no file matching {prefix}*; the folder needs "
            f"{', '.join(f + '-...' for f in FILES)} (MNIST IDX files, plain or .gz)"
        )
    if len(found) > 1:
        raise DataError(
            f"idx:{folder} has several files matching {prefix}* "
            f"({', '.join(p.name for p in found)}); keep one of them"
        )
    return found[0]


def _pixels(images: np.ndarray) -> np.ndarray:
    x = images.reshape(len(images), -1) if images.ndim > 1 else images[:, None]
    if images.dtype.kind in "iu":
        return x.astype(np.float32) / np.float32(np.iinfo(images.dtype).max)
    return x.astype(np.float32)


def _pair(folder: Path, which: str) -> tuple[np.ndarray, np.ndarray, Path, Path]:
    img_path = find_idx_file(folder, f"{which}-images")
    lab_path = find_idx_file(folder, f"{which}-labels")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"{lab_path} holds a {labels.dtype} array of shape {labels.shape}; labels must be "
            "a 1-D integer IDX array (MNIST's idx1-ubyte)"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{img_path.name} has {len(images)} images but {lab_path.name} has {len(labels)} "
            "labels; give image and label files from the same set"
        )
    if len(labels) and labels.min() < 0:
        raise DataError(f"{lab_path} has negative labels; labels must be 0, 1, ...")
    return images, labels.astype(np.int64), img_path, lab_path


def load_idx_task(folder: str | Path, seed: int = 0) -> TaskData:
    """``idx:DIR`` as a classification task (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"idx:{folder}: no such directory; give idx:DIR with DIR holding the MNIST IDX files"
        )
    x_tr, y_tr, img_path, _ = _pair(folder, "train")
    x_te, y_te, test_path, _ = _pair(folder, "t10k")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(
            f"{img_path.name} has images of shape {x_tr.shape[1:]} but {test_path.name} has "
            f"{x_te.shape[1:]}; give train and test files of the same dataset"
        )
    n = len(y_tr)
    n_val = max(1, int(round(VAL_FRACTION * n)))
    if n - n_val < 1 or len(y_te) == 0:
        raise DataError(
            f"idx:{folder}: {n} training and {len(y_te)} test images are too few; need at "
            "least 2 training and 1 test image"
        )
    val_idx, tr_idx = partition(n, [n_val, n - n_val], derive_seed("idx-val", seed))
    px_tr, px_te = _pixels(x_tr), _pixels(x_te)
    info = {"source": str(folder), "image_shape": tuple(x_tr.shape[1:]), "seed": seed}
    return TaskData(
        f"idx:{folder}",
        make_split(px_tr[tr_idx], y_tr[tr_idx]),
        make_split(px_tr[val_idx], y_tr[val_idx]),
        make_split(px_te, y_te),
        int(max(y_tr.max(), y_te.max())) + 1,
        info=info,
    )
