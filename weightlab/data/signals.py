"""Signals for coordinate networks (SIRENs, Sitzmann et al. 2020): regression from
coordinates in ``[-1, 1]`` to one value.

- ``signal1d``: seeded Gaussian white noise on a periodic grid, band-limited by zeroing
  every Fourier coefficient outside ``f_lo <= |k| <= f_hi`` (``k`` in cycles per period),
  scaled so that ``max |y| = 1``.
- ``signal2d``: the same in two dimensions with a radial band
  ``f_lo <= sqrt(kx^2 + ky^2) <= f_hi``.
- ``image``: scikit-learn's ``china.jpg`` (427 x 640, shipped with scikit-learn),
  grayscale (ITU-R 601 luma), centre square crop, area-averaged down to ``2 * size``
  pixels a side, mapped to ``[-1, 1]``.

Split (all three). The signal lives on a fine grid of ``M = 2n`` points per axis
(``n`` = ``n`` or ``size``). Train is every other point in every axis, an ``n``-point grid
per axis (``n`` points in 1-D, ``n x n`` in 2-D: the 64 x 64 image by default). The
points in between are held out and alternate between val and test: a held-out point
with fine index ``j`` (1-D) or ``(i, j)`` (2-D) goes to val when ``j // 2`` (or
``i // 2 + j // 2``) is even, to test otherwise. Val and test therefore measure
interpolation between training samples; a band with ``f_hi < n / 2`` is resolved by
the training grid (Nyquist). Coordinates: ``-1 + 2j / M`` for the periodic noise signals
(the grid covers ``[-1, 1)``), pixel centres ``-1 + (2j + 1) / M`` for the image.
``x`` is ``(N, dim)``, ``y`` is ``(N, 1)``. ``info``: ``signal`` (the fine-grid values),
``coords`` (the fine grid's 1-D coordinates) and, for the noise signals, ``band`` and
``seed`` (``source`` for the image).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from weightlab.data.params import Param
from weightlab.data.task import TaskData, make_regression_split
from weightlab.errors import DataError
from weightlab.seeding import derive_seed, generator, preserved_global_rngs

SIGNAL1D_PARAMS = (
    Param("n", "int", 1024, "training samples (the fine grid has 2n points)", min=4, max=2**22),
    Param("f_lo", "int", 1, "lowest frequency kept, in cycles over [-1, 1)", min=0),
    Param("f_hi", "int", 32, "highest frequency kept (< n / 2)", min=0),
    Param("seed", "int", 0, "seed of the white noise", min=0),
)
SIGNAL2D_PARAMS = (
    Param("n", "int", 64, "training grid side (the fine grid is 2n x 2n)", min=4, max=2048),
    Param("f_lo", "int", 1, "lowest radial frequency kept, in cycles over [-1, 1)", min=0),
    Param("f_hi", "int", 16, "highest radial frequency kept (< n / 2)", min=0),
    Param("seed", "int", 0, "seed of the white noise", min=0),
)
IMAGE_PARAMS = (
    Param("size", "int", 64, "training grid side (the image is resized to 2 size)", min=4, max=212),
)


def _check_band(task: str, n: int, f_lo: int, f_hi: int) -> None:
    if f_lo > f_hi:
        raise DataError(f"task {task!r}: f_lo={f_lo} is above f_hi={f_hi}; give f_lo <= f_hi")
    if 2 * f_hi >= n:
        raise DataError(
            f"task {task!r}: f_hi={f_hi} is not below the training grid's Nyquist frequency "
            f"n/2 = {n / 2:g}; lower f_hi or raise n to at least {2 * f_hi + 1}"
        )


def _noise(shape: tuple[int, ...], *parts: object) -> np.ndarray:
    g = generator(derive_seed(*parts))
    return torch.randn(shape, generator=g, dtype=torch.float64).numpy()


def _peak_normalize(s: np.ndarray) -> np.ndarray:
    peak = np.abs(s).max()
    return s / peak if peak > 0 else s


def periodic_coords(m: int) -> np.ndarray:
    return -1.0 + 2.0 * np.arange(m) / m


def _task(name: str, parts: list[tuple[np.ndarray, np.ndarray]], info: dict) -> TaskData:
    splits = [make_regression_split(x, y[:, None]) for x, y in parts]
    return TaskData(name, *splits, 0, kind="regression", info=info)


def split_1d(signal: np.ndarray, coords: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(x, y) of train / val / test from a fine 1-D grid (see the module docstring)."""
    j = np.arange(len(signal))
    groups = (j % 2 == 0, (j % 2 == 1) & ((j // 2) % 2 == 0), (j % 2 == 1) & ((j // 2) % 2 == 1))
    return [(coords[g][:, None], signal[g]) for g in groups]


def split_2d(signal: np.ndarray, coords: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(x, y) of train / val / test from a fine 2-D grid, row-major order."""
    i, j = np.meshgrid(np.arange(signal.shape[0]), np.arange(signal.shape[1]), indexing="ij")
    on_grid = (i % 2 == 0) & (j % 2 == 0)
    even = (i // 2 + j // 2) % 2 == 0
    groups = (on_grid, ~on_grid & even, ~on_grid & ~even)
    xy = np.stack([coords[i], coords[j]], axis=-1)
    return [(xy[g], signal[g]) for g in groups]


def band_limited_1d(m: int, f_lo: int, f_hi: int, seed: int) -> np.ndarray:
    """``m`` samples of white noise with every rfft bin outside ``[f_lo, f_hi]`` zeroed."""
    spec = np.fft.rfft(_noise((m,), "signal1d", seed))
    k = np.arange(len(spec))
    spec[(k < f_lo) | (k > f_hi)] = 0
    return _peak_normalize(np.fft.irfft(spec, n=m))


def band_limited_2d(m: int, f_lo: int, f_hi: int, seed: int) -> np.ndarray:
    """``m x m`` white noise with every 2-D Fourier coefficient whose radial frequency is
    outside ``[f_lo, f_hi]`` zeroed (the mask is symmetric, so the result is real)."""
    spec = np.fft.fft2(_noise((m, m), "signal2d", seed))
    k = np.fft.fftfreq(m, d=1.0 / m)
    radius = np.hypot(k[:, None], k[None, :])
    spec[(radius < f_lo) | (radius > f_hi)] = 0
    return _peak_normalize(np.fft.ifft2(spec).real)


def _fine_grid_info(signal: np.ndarray, coords: np.ndarray) -> dict:
    """``info["signal"]`` and ``info["coords"]`` of a fine grid, as float32 tensors."""
    return {
        "signal": torch.as_tensor(signal, dtype=torch.float32),
        "coords": torch.as_tensor(coords, dtype=torch.float32),
    }


def _load_band(
    task: str,
    draw: Callable[[int, int, int, int], np.ndarray],
    split: Callable[[np.ndarray, np.ndarray], list[tuple[np.ndarray, np.ndarray]]],
    n: int,
    f_lo: int,
    f_hi: int,
    seed: int,
) -> TaskData:
    """A band-limited noise task: ``draw(2n, f_lo, f_hi, seed)`` on the periodic fine grid,
    cut into train / val / test by ``split``."""
    _check_band(task, n, f_lo, f_hi)
    m = 2 * n
    s, t = draw(m, f_lo, f_hi, seed), periodic_coords(m)
    info = _fine_grid_info(s, t) | {"band": (f_lo, f_hi), "seed": seed}
    return _task(task, split(s, t), info)


def load_signal1d(n: int, f_lo: int, f_hi: int, seed: int) -> TaskData:
    return _load_band("signal1d", band_limited_1d, split_1d, n, f_lo, f_hi, seed)


def load_signal2d(n: int, f_lo: int, f_hi: int, seed: int) -> TaskData:
    return _load_band("signal2d", band_limited_2d, split_2d, n, f_lo, f_hi, seed)


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` area-averaging weights: output pixel ``i`` covers
    ``[i, i + 1) * n_in / n_out`` of the input and averages it, each input pixel
    weighted by the length of its overlap."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def china_gray() -> np.ndarray:
    """scikit-learn's ``china.jpg`` as float64 luma in ``[0, 1]`` (427 x 640)."""
    try:
        with preserved_global_rngs():  # the first sklearn import draws from Python's random
            from sklearn.datasets import load_sample_image

            rgb = load_sample_image("china.jpg").astype(np.float64) / 255.0
    except ImportError as e:  # pragma: no cover - Pillow comes with matplotlib
        raise DataError(
            f"cannot read scikit-learn's china.jpg ({e}); install Pillow: pip install pillow"
        ) from e
    return rgb @ np.array([0.299, 0.587, 0.114])


def load_image(size: int) -> TaskData:
    gray = china_gray()
    h, w = gray.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = gray[top : top + side, left : left + side]
    m = 2 * size
    a = area_matrix(side, m)
    fine = 2.0 * (a @ square @ a.T) - 1.0
    t = -1.0 + (2.0 * np.arange(m) + 1.0) / m
    info = _fine_grid_info(fine, t) | {"source": "sklearn china.jpg"}
    return _task("image", split_2d(fine, t), info)
