"""Random-subspace training, θ = θ₀ + P z (Li, Farkhoor, Liu & Yosinski 2018, "Measuring the
Intrinsic Dimension of Objective Landscapes", Section 2, Eq. (1): θ^(D) = θ₀^(D) + P θ^(d)).

Only z ∈ R^d is trained; θ₀ (the model's weights at wrapping time) and the random D×d
projection P stay fixed. :func:`subspace` wraps any module into a :class:`SubspaceModel`
whose **only parameter is z**: the single training loop (:func:`weightlab.train.train`) and
populations (:class:`weightlab.population.Population`, generic ``torch.func`` path: θ₀ and
P's random state are buffers, stacked per member) train it unchanged, and the gradient
autograd gives z is Pᵀ ∇_θ L. P z is formed **once per forward** and the wrapped module runs
with ``torch.func.functional_call``; :meth:`SubspaceModel.merged` bakes θ₀ + P z into a
plain copy of the module.

Projections (``projection=``), each with unit-norm columns as in Li et al. (Section 2: "the
columns of P are normalized to unit length"):

- ``"dense"``: Gaussian entries, columns normalised (``orthogonal=True``: orthonormal
  columns by QR). Memory D·d floats, so it is refused above :data:`DENSE_LIMIT` entries
  (MiniLM's 22.7 M × d is out of reach, as Li et al. note for large D);
- ``"sparse"``: a very sparse random projection (Li, Hastie & Church 2006; used by Li et al.
  Section 2): each column has ⌈√D⌉ row draws, repeats zeroed, random signs, value
  1/√(nnz) so every column has norm exactly 1. Memory d·√D;
- ``"fastfood"``: the Fastfood transform (Le, Sarlós & Smola 2013, "Fastfood —
  Approximating Kernel Expansions in Loglinear Time", Eq. (7): V = S H G Π H B) with
  S = I as in Li et al.'s implementation: z is zero-padded to L = 2^⌈log₂ D⌉, then
  x ↦ H G Π H B x with B a random ±1 diagonal, H the (unnormalised, Sylvester) Walsh–Hadamard
  matrix applied by :func:`fwht` in O(L log L), Π a random permutation, G a Gaussian
  diagonal; the first D rows are kept and scaled by 1/√(D·‖g‖²). Every column of the full
  L×L matrix H G Π H B has norm √L·‖g‖, so the kept columns have expected squared norm 1
  (exactly 1 when D is a power of two). Memory O(L): no D×d matrix is ever formed, and
  MiniLM's D = 22.7 M (L = 2²⁵) fits.

Freeze-all-but-a-selector training needs no helper here: in the training loop a parameter
with ``requires_grad=False`` is left out of the optimizer, and ``ParamGroup(match,
lr_mult=0)`` (first match wins) keeps a parameter bit-for-bit unchanged under SGD, momentum,
Adam and AdamW with weight decay, also in populations (it still pays for its gradient).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from fnmatch import fnmatchcase

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator

__all__ = [
    "DENSE_LIMIT",
    "PROJECTIONS",
    "DenseProjection",
    "FastfoodProjection",
    "SparseProjection",
    "SubspaceModel",
    "fwht",
    "make_projection",
    "subspace",
]

PROJECTIONS = ("dense", "sparse", "fastfood")
DENSE_LIMIT = 100_000_000  # entries of a dense P (400 MB in float32)


class _FWHT(torch.autograd.Function):
    """The Walsh–Hadamard transform with its own backward: H is symmetric, so the
    vector-Jacobian product is H applied to the incoming gradient (no saved tensors)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return _fwht_raw(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _FWHT.apply(grad)


FWHT_BLOCK = 32  # butterfly radix: one small Hadamard matmul per 5 bits of the length
_HADAMARD: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _hadamard(s: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (s, dtype, device)
    if key not in _HADAMARD:
        h = torch.ones(1, 1, dtype=torch.float64)
        while h.shape[0] < s:
            h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
        _HADAMARD[key] = h.to(dtype=dtype, device=device)
    return _HADAMARD[key]


def _fwht_raw(x: torch.Tensor) -> torch.Tensor:
    # Sylvester's H_n = H_s1 ⊗ H_s2 ⊗ ... for any split n = s1·s2·... of the index digits:
    # apply a small Hadamard matrix to the last digit (one GEMM), rotate that digit to the
    # front (one transpose), repeat once per digit; the digits end in their original order
    n = x.shape[-1]
    lead = x.shape[:-1]
    sizes, rest = [], n
    while rest > 1:
        sizes.append(min(FWHT_BLOCK, rest))
        rest //= sizes[-1]
    y = x
    for s in reversed(sizes):
        y = y.reshape(*lead, n // s, s) @ _hadamard(s, x.dtype, x.device)
        y = y.transpose(-1, -2)
    return y.reshape(*lead, n)


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Fast Walsh–Hadamard transform over the last dimension (a power of two), unnormalised:
    ``fwht(x) = x @ H`` with H the Sylvester Hadamard matrix (``scipy.linalg.hadamard``),
    in O(n log n): H_n = H_32 ⊗ H_32 ⊗ ... applied one index digit at a time (radix-32
    butterflies: ⌈log₂ n / 5⌉ GEMMs against a 32×32 Hadamard matrix, each followed by a
    transpose). Differentiable (backward = the same transform)."""
    n = x.shape[-1]
    if n < 1 or n & (n - 1):
        raise ConfigError(f"the Walsh-Hadamard transform needs a power-of-two length, got {n}")
    return _FWHT.apply(x)


class DenseProjection(nn.Module):
    """P ∈ R^{D×d} stored densely: Gaussian columns normalised to unit length, or
    orthonormal columns (QR of the Gaussian matrix, signs fixed by R's diagonal)."""

    def __init__(self, D: int, d: int, seed: int, orthogonal: bool = False) -> None:
        super().__init__()
        if D * d > DENSE_LIMIT:
            raise ConfigError(
                f"a dense projection of {D:,} x {d} = {D * d:,} entries exceeds "
                f"{DENSE_LIMIT:,}; use projection='sparse' or 'fastfood'"
            )
        g = generator(derive_seed("subspace-dense", seed))
        p = torch.randn(D, d, generator=g, dtype=torch.float64)
        if orthogonal:
            q, r = torch.linalg.qr(p)
            p = q * torch.sign(torch.diagonal(r))
        else:
            p = p / p.norm(dim=0, keepdim=True)
        self.register_buffer("matrix", p.float())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.matrix @ z


class SparseProjection(nn.Module):
    """Very sparse P (Li, Hastie & Church 2006): per column ⌈√D⌉ uniform row draws, random
    signs, entries ±1/√nnz over the distinct rows drawn (a repeated draw is kept as an
    explicit zero), so every column has norm exactly 1. P z is one ``index_add``."""

    def __init__(self, D: int, d: int, seed: int) -> None:
        super().__init__()
        g = generator(derive_seed("subspace-sparse", seed))
        k = max(1, math.ceil(math.sqrt(D)))
        rows = torch.randint(D, (d, k), generator=g).sort(dim=1).values
        signs = torch.randint(2, (d, k), generator=g) * 2 - 1
        keep = torch.ones(d, k, dtype=torch.bool)
        keep[:, 1:] = rows[:, 1:] != rows[:, :-1]  # first copy of each drawn row
        nnz = keep.sum(1)
        # repeated draws stay as explicit zeros: every seed gives the same shapes (populations)
        vals = signs.double() * keep / nnz.double().sqrt()[:, None]
        self.D = D
        self.register_buffer("rows", rows.reshape(-1).contiguous())
        self.register_buffer("cols", torch.arange(d).repeat_interleave(k))
        self.register_buffer("values", vals.reshape(-1).float().contiguous())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = z.new_zeros(self.D)
        return out.index_add(0, self.rows, self.values * z[self.cols])


class FastfoodProjection(nn.Module):
    """Fastfood P (Le et al. 2013, Eq. 7, S = I as in Li et al. 2018): the first D rows and
    first d columns of H G Π H B / √(D‖g‖²), L = 2^⌈log₂ D⌉, applied in O(L log L)."""

    def __init__(self, D: int, d: int, seed: int) -> None:
        super().__init__()
        L = 1 << max(0, (D - 1).bit_length())
        g = generator(derive_seed("subspace-fastfood", seed))
        self.D, self.d, self.L = D, d, L
        self.register_buffer("b", (torch.randint(2, (L,), generator=g) * 2 - 1).float())
        self.register_buffer("perm", torch.randperm(L, generator=g))
        gauss = torch.randn(L, generator=g, dtype=torch.float64)
        self.register_buffer("gauss", gauss.float())
        self.register_buffer("scale", (1.0 / (D * gauss.square().sum()).sqrt()).float())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.cat([z, z.new_zeros(self.L - self.d)]) * self.b
        x = fwht(x)[self.perm] * self.gauss
        return fwht(x)[: self.D] * self.scale


def make_projection(
    kind: str, D: int, d: int, seed: int = 0, *, orthogonal: bool = False
) -> nn.Module:
    """A projection module ``P(z) -> (D,)`` of ``kind`` in :data:`PROJECTIONS`."""
    if kind not in PROJECTIONS:
        raise ConfigError(f"unknown projection {kind!r}; choose one of {', '.join(PROJECTIONS)}")
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ConfigError(f"subspace dimension d must be a positive integer, got {d!r}")
    if d > D:
        raise ConfigError(
            f"subspace dimension d={d} exceeds the {D:,} trained parameters; use d <= D"
        )
    if orthogonal and kind != "dense":
        raise ConfigError("orthogonal=True needs projection='dense'")
    if kind == "dense":
        return DenseProjection(D, d, seed, orthogonal)
    if kind == "sparse":
        return SparseProjection(D, d, seed)
    return FastfoodProjection(D, d, seed)


def _selected(model: nn.Module, select) -> list[str]:
    names = [n for n, _ in model.named_parameters()]
    if select is None:
        return names
    if isinstance(select, str):
        select = (select,)
    if isinstance(select, Sequence):
        picked = [n for n in names if any(fnmatchcase(n, p) for p in select)]
    elif callable(select):  # a weightlab.core Selector
        hit = set(select(model))
        picked = [n for n in names if n in hit]
    else:
        raise ConfigError(
            f"select must be None, name globs or a Selector, got {type(select).__name__}"
        )
    if not picked:
        raise ConfigError(
            f"the selection {select!r} matches no parameter; parameters are: {', '.join(names)}"
        )
    return picked


class SubspaceModel(nn.Module):
    """``module`` reparametrised as θ = θ₀ + P z; z (``self.z``, zeros at start, so the
    model starts exactly at θ₀) is the only parameter. Parameters outside ``select`` are
    frozen at their values. See the module docstring and :func:`subspace`."""

    def __init__(
        self,
        module: nn.Module,
        d: int,
        projection: str = "fastfood",
        seed: int = 0,
        *,
        select=None,
        orthogonal: bool = False,
    ) -> None:
        super().__init__()
        if any(parametrize.is_parametrized(m) for m in module.modules()):
            raise ConfigError(
                "the module has transforms attached; merge them first "
                "(weightlab.core.transforms.merge) and wrap the plain module"
            )
        names = _selected(module, select)
        params = dict(module.named_parameters())
        self.names = tuple(names)
        self.all_names = tuple(params)
        self.shapes = tuple(tuple(params[n].shape) for n in names)
        self.D = sum(params[n].numel() for n in names)
        self.kind = projection
        self.projection = make_projection(projection, self.D, d, seed, orthogonal=orthogonal)
        self.base = module
        # every parameter of the wrapped module becomes a buffer (θ₀ for the selected ones)
        for name in list(params):
            owner_name, _, attr = name.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            value = owner._parameters.pop(attr).detach()
            owner.register_buffer(attr, value)
        self.z = nn.Parameter(torch.zeros(d, dtype=params[names[0]].dtype))

    @property
    def d(self) -> int:
        return int(self.z.shape[0])

    def delta(self) -> torch.Tensor:
        """P z, flat ``(D,)`` in the order of :attr:`names`."""
        return self.projection(self.z)

    def effective(self) -> dict[str, torch.Tensor]:
        """``{name: θ₀ + (P z)[slice]}`` for the selected parameters."""
        flat = self.delta()
        out, off = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            n = math.prod(shape)
            out[name] = self.base.get_buffer(name) + flat[off : off + n].view(shape)
            off += n
        return out

    def forward(self, *args, **kwargs):
        return functional_call(self.base, self.effective(), args, kwargs)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """A plain copy of the wrapped module with θ = θ₀ + P z as ordinary parameters."""
        eff = {k: v.detach().clone() for k, v in self.effective().items()}
        model = copy.deepcopy(self.base)
        for name in self.all_names:
            owner_name, _, attr = name.rpartition(".")
            owner = model.get_submodule(owner_name) if owner_name else model
            value = eff.get(name, owner._buffers[attr])
            del owner._buffers[attr]
            owner.register_parameter(attr, nn.Parameter(value.clone()))
        return model

    def extra_repr(self) -> str:
        return f"d={self.d}, D={self.D:,}, projection={self.kind!r}"


def subspace(
    model: nn.Module,
    d: int,
    projection: str = "fastfood",
    seed: int = 0,
    *,
    select=None,
    orthogonal: bool = False,
) -> SubspaceModel:
    """Wrap ``model`` (in place: its parameters become buffers) for training in a random
    d-dimensional subspace θ = θ₀ + P z (Li et al. 2018, Eq. 1).

    Args:
        d: subspace dimension, 1 <= d <= D (D = the selected parameters' total size).
        projection: "dense", "sparse" or "fastfood" (see the module docstring).
        seed: seed of P (``derive_seed("subspace-<kind>", seed)``).
        select: which parameters move (None: all; name globs; a Selector); the rest stay
            frozen at their values.
        orthogonal: dense P with orthonormal columns (``d = D`` then gives a rotation).

    Raises:
        ConfigError: an unknown projection, d outside [1, D], a too-large dense P, or a
            selection that matches nothing.
    """
    return SubspaceModel(model, d, projection, seed, select=select, orthogonal=orthogonal)
