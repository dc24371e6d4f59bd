"""Level sets: where a quantized weight may land, in units of its scale.

Every level set is an integer grid ``q ∈ [qmin, qmax]`` behind a monotone map: a weight ``x``
with scale ``s`` is normalized to ``u = x/s``, mapped onto the grid as ``t = encode(u)``
(continuous, level ``k`` at ``t = k``), rounded to an integer ``q`` (nearest, ties to even, or
stochastic) and clamped, then mapped back as ``x̂ = s·decode(q)``. The integer ``q`` is the
weight's *level index*, which the oscillation and freezing metrics track.

- :class:`Uniform`: ``t = u``, the integer grid with a zero (survey of quantization methods,
  Gholami et al. 2021, Eq. 2); symmetric narrow (``±(2^(b−1) − 1)``), symmetric full
  (``−2^(b−1) … 2^(b−1) − 1``, LSQ's, Esser et al. 2020) or asymmetric (``0 … 2^b − 1`` with
  an integer zero point ``z``: ``t = u + z``, ``x̂ = s(q − z)``, PyTorch's affine scheme).
- :class:`PowerExponent`: ``t = sign(u)|u|^a · qmax`` on the symmetric narrow grid, so the
  levels ``sign(q)|q/qmax|^(1/a)`` crowd near zero for ``a < 1`` (NUPES, Yvinec et al. 2023,
  Eq. 3); ``a = 1`` is :class:`Uniform`. ``s`` is the clipping range.
- :class:`MidRise`: StatsQ's zero-free grid (Liu et al. 2023, OFQ): levels
  ``(k + ½)·s/2^(b−1)``, ``k = −2^(b−1) … 2^(b−1) − 1``; inputs clip to ``[−s, s)``.
- :class:`Table` level sets: a sorted list of levels, ``t`` interpolated linearly between
  them, so nearest rounding picks the nearest level and stochastic rounding picks a
  neighbour with probability proportional to closeness: :class:`PowersOfTwo` (DenseShift's
  zero-free ``±2^(−p)``, Li et al. 2023, or with a zero level) and :class:`Binary` (``±1``).

``scale_for_range(c)`` turns a clipping range ``c`` (the largest magnitude to represent, from
a scale estimator) into the level set's own scale: the step of a uniform grid, ``c`` itself
for the others.
"""

from __future__ import annotations

import math

import torch

from weightlab.errors import ConfigError

MAX_BITS = 16
LEVEL_SETS = (
    "uniform",
    "uniform_full",
    "uniform_asym",
    "power",
    "midrise",
    "shift",
    "shift_zero",
    "binary",
)


def check_bits(bits: int, lo: int = 1) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not lo <= bits <= MAX_BITS:
        raise ConfigError(
            f"bits must be an integer from {lo} to {MAX_BITS}, got {bits!r}; pick a bit width "
            f"in {lo}–{MAX_BITS}"
        )
    return bits


class LevelSet:
    """Base class: a monotone map onto the integer grid ``[qmin, qmax]``."""

    name: str = ""
    affine: bool = False  # an integer zero point is part of the scale (asymmetric uniform)
    zero_free: bool = False

    def __init__(self, bits: int) -> None:
        self.bits = bits

    @property
    def qmin(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def qmax(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def n_levels(self) -> int:
        return self.qmax - self.qmin + 1

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        """Normalized weight ``u = x/s`` → continuous grid position ``t``."""
        return u

    def decode(self, q: torch.Tensor) -> torch.Tensor:
        """Integer grid values (as floats) → normalized levels."""
        return q

    def scale_for_range(self, c: torch.Tensor) -> torch.Tensor:
        """The scale that represents magnitudes up to ``c`` (the clipping range)."""
        return c

    def levels(self) -> torch.Tensor:
        """All normalized levels, ascending (float64)."""
        q = torch.arange(self.qmin, self.qmax + 1, dtype=torch.float64)
        return self.decode(q)

    def describe(self) -> str:
        return f"{self.name}{self.bits}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bits={self.bits})"


class Uniform(LevelSet):
    """The integer grid with a zero. ``mode``: ``"narrow"`` (symmetric ``±(2^(b−1) − 1)``),
    ``"full"`` (``−2^(b−1) … 2^(b−1) − 1``) or ``"asym"`` (``0 … 2^b − 1``, zero point)."""

    def __init__(self, bits: int, mode: str = "narrow") -> None:
        if mode not in ("narrow", "full", "asym"):
            raise ConfigError(f"uniform mode must be narrow, full or asym, got {mode!r}")
        super().__init__(check_bits(bits, 2))
        self.mode = mode
        self.affine = mode == "asym"
        self.name = {"narrow": "uniform", "full": "uniform_full", "asym": "uniform_asym"}[mode]

    @property
    def qmin(self) -> int:
        b = self.bits
        return {"narrow": -(2 ** (b - 1) - 1), "full": -(2 ** (b - 1)), "asym": 0}[self.mode]

    @property
    def qmax(self) -> int:
        b = self.bits
        return 2**b - 1 if self.mode == "asym" else 2 ** (b - 1) - 1

    def scale_for_range(self, c: torch.Tensor) -> torch.Tensor:
        """Step ``c/|qmin|``: ``c/(2^(b−1) − 1)`` on the narrow grid (``±c`` exact),
        ``c/2^(b−1)`` on the full one (LSQ's grid; StatsQ's scale on it)."""
        return c / -self.qmin

    def affine_range(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Asymmetric scale and integer zero point covering ``[lo, hi]`` (``lo ≤ 0 ≤ hi``
        enforced, so 0 is exact), as PyTorch's ``MinMaxObserver`` with ``quint``."""
        lo = torch.minimum(lo, torch.zeros_like(lo))
        hi = torch.maximum(hi, torch.zeros_like(hi))
        scale = ((hi - lo) / (self.qmax - self.qmin)).clamp_min(torch.finfo(torch.float32).eps)
        zp = (self.qmin - torch.round(lo / scale)).clamp(self.qmin, self.qmax)
        return scale, zp


class PowerExponent(LevelSet):
    """NUPES's power quantizer: ``sign(u)|u|^a`` on the symmetric narrow grid, ``a ∈ (0, 1]``."""

    name = "power"

    def __init__(self, bits: int, exponent: float = 0.5) -> None:
        super().__init__(check_bits(bits, 2))
        check_exponent(exponent)
        self.exponent = float(exponent)

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1) - 1)

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        return torch.sign(u) * u.abs().pow(self.exponent) * self.qmax

    def decode(self, q: torch.Tensor) -> torch.Tensor:
        return torch.sign(q) * (q.abs() / self.qmax).pow(1.0 / self.exponent)

    def describe(self) -> str:
        return f"power{self.bits}(a={self.exponent:g})"


def check_exponent(a: float) -> float:
    if isinstance(a, bool) or not isinstance(a, int | float) or not (0.0 < a <= 1.0):
        raise ConfigError(
            f"the power exponent a must lie in (0, 1], got {a!r}; a = 1 is the uniform grid"
        )
    return float(a)


class MidRise(LevelSet):
    """StatsQ's zero-free grid ``(k + ½)·s/2^(b−1)``; ``s`` is the range (inputs clip to
    ``[−s, s)``)."""

    name = "midrise"
    zero_free = True

    def __init__(self, bits: int) -> None:
        super().__init__(check_bits(bits, 1))

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1))

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        return u * 2 ** (self.bits - 1) - 0.5

    def decode(self, q: torch.Tensor) -> torch.Tensor:
        return (q + 0.5) / 2 ** (self.bits - 1)


class Table(LevelSet):
    """A finite sorted list of normalized levels; ``t`` interpolates linearly between them,
    so grid rounding is nearest-level rounding (ties to the even index) and stochastic
    rounding moves to a neighbour with probability proportional to closeness."""

    def __init__(self, bits: int, values: list[float]) -> None:
        super().__init__(bits)
        self._values = torch.tensor(sorted(values), dtype=torch.float64)
        self._cache: dict[tuple, torch.Tensor] = {}

    def _table(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = self._values.to(dtype=like.dtype, device=like.device)
        return self._cache[key]

    @property
    def qmin(self) -> int:
        return 0

    @property
    def qmax(self) -> int:
        return len(self._values) - 1

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        v = self._table(u)
        k = torch.searchsorted(v, u.contiguous(), right=True).clamp(1, len(v) - 1) - 1
        lo, hi = v[k], v[k + 1]
        return k.to(u.dtype) + (u - lo) / (hi - lo)

    def decode(self, q: torch.Tensor) -> torch.Tensor:
        v = self._table(q)
        return v[q.long().clamp(0, len(v) - 1)]

    def levels(self) -> torch.Tensor:
        return self._values.clone()


class PowersOfTwo(Table):
    """Shift levels ``±2^(−p)``. Zero-free (DenseShift): ``p = 0 … 2^(b−1) − 1``, ``2^b``
    levels; with a zero: ``0`` and ``p = 0 … 2^(b−1) − 2``, ``2^b − 1`` levels. The scale is
    the largest magnitude."""

    def __init__(self, bits: int, zero: bool = False) -> None:
        check_bits(bits, 2 if zero else 1)
        n = 2 ** (bits - 1) - (1 if zero else 0)
        mags = [2.0 ** (-p) for p in range(n)]
        values = [*mags, *(-m for m in mags)] + ([0.0] if zero else [])
        super().__init__(bits, values)
        self.zero_free = not zero
        self.name = "shift_zero" if zero else "shift"


class Binary(Table):
    """``±1``: one bit, no zero. Its natural scale is ``mean|W|`` (XNOR-Net)."""

    name = "binary"
    zero_free = True

    def __init__(self, bits: int = 1) -> None:
        if bits != 1:
            raise ConfigError(f"the binary level set has 1 bit, got bits={bits}; use bits=1")
        super().__init__(1, [-1.0, 1.0])


def make_levels(name: str, bits: int, exponent: float = 1.0) -> LevelSet:
    """A level set by name (:data:`LEVEL_SETS`) and bit width."""
    check_bits(bits)
    if name == "uniform":
        return Uniform(bits, "narrow")
    if name == "uniform_full":
        return Uniform(bits, "full")
    if name == "uniform_asym":
        return Uniform(bits, "asym")
    if name == "power":
        return PowerExponent(bits, exponent)
    if name == "midrise":
        return MidRise(bits)
    if name == "shift":
        return PowersOfTwo(bits, zero=False)
    if name == "shift_zero":
        return PowersOfTwo(bits, zero=True)
    if name == "binary":
        return Binary(bits)
    raise ConfigError(f"unknown level set {name!r}; choose one of {', '.join(LEVEL_SETS)}")


def bits_per_weight(levels: LevelSet) -> int:
    """Storage bits per weight index: ``ceil(log2(n_levels))``."""
    return max(1, math.ceil(math.log2(levels.n_levels)))
