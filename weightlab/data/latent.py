"""Latent-variable tasks of "On the Provable Advantage of Unsupervised Pretraining" (Ge, Tang,
Fan & Jin 2023, row [#37]): a latent variable ``z`` generates the input ``x``, the label
depends on ``z`` only, and an unlabeled pool lets a learner fit the generative model first.

- ``latent_factors``: a factor model ``x = A z + σ ε``, ``z ~ N(0, I_r)``, ``ε ~ N(0, I_d)``,
  the loadings ``A ∈ R^{d×r}`` i.i.d. ``N(0, a_var)``; the label ``y = 1[wᵀz > 0]`` with
  ``w`` a seeded unit vector of ``R^r``.
- ``latent_mixture``: a Gaussian mixture with ``r`` equally likely components, ``z`` the
  component, ``x = μ_z + σ ε``, the means ``μ_k`` the columns of ``A`` (so the same
  ``a_var``); each component carries a fixed label, half of them (``⌊r/2⌋``, seeded) class 1.

``A``, ``w`` and the component labels come from ``derive_seed("latent", kind, "model",
seed)``; each split (train = the ``n_train`` labeled examples, val, test, and the unlabeled
pool ``info["x_unlabeled"]`` of ``n_unlabeled`` inputs) from its own derived seeds, one per
block of 256 rows, so a split's first ``m`` rows are the same whatever its size (nested
pools for an ``m`` sweep). ``info`` also holds ``A``, ``w`` (factors) or ``component_labels``
(mixture), ``sigma``, ``r`` and the latents ``z_test``.
"""

from __future__ import annotations

import torch

from weightlab.data.params import Param
from weightlab.data.task import Split, TaskData
from weightlab.errors import DataError
from weightlab.seeding import derive_seed, generator

__all__ = [
    "FACTOR_PARAMS",
    "MIXTURE_PARAMS",
    "LatentModel",
    "latent_model",
    "load_latent_factors",
    "load_latent_mixture",
]

MAX_ELEMENTS = 100_000_000
CHUNK = 256  # rows drawn per derived seed, so a longer split extends a shorter one


def _params(r_default: int, r_help: str) -> tuple[Param, ...]:
    return (
        Param("n_train", "int", 50, "labeled training examples", min=2),
        Param("n_val", "int", 0, "validation examples (0: none)", min=0),
        Param("n_test", "int", 2000, "test examples", min=2),
        Param("n_unlabeled", "int", 10000, "unlabeled inputs in info['x_unlabeled']", min=0),
        Param("d", "int", 100, "input dimension", min=1, max=100000),
        Param("r", "int", r_default, r_help, min=1, max=10000),
        Param("a_var", "float", 0.25, "variance of each entry of A (loadings / means)", gt=0),
        Param("sigma", "float", 1.0, "noise standard deviation σ", gt=0, max=1000),
        Param("seed", "int", 0, "seed of the model (A, w) and of every split", min=0),
    )


FACTOR_PARAMS = _params(5, "latent dimension r (number of factors)")
MIXTURE_PARAMS = _params(4, "number of mixture components (>= 2)")


class LatentModel:
    """The generative model of one task draw: ``sample(n, seed) -> (x, z, y)``."""

    def __init__(self, kind: str, d: int, r: int, a_var: float, sigma: float, seed: int):
        if kind not in ("factors", "mixture"):  # pragma: no cover - programming error
            raise ValueError(kind)
        if kind == "mixture" and r < 2:
            raise DataError("task 'latent_mixture': parameter r must be >= 2 components; got 1")
        g = generator(derive_seed("latent", kind, "model", seed))
        self.kind, self.d, self.r, self.sigma, self.seed = kind, d, r, sigma, seed
        self.A = torch.randn(d, r, generator=g, dtype=torch.float64) * a_var**0.5
        w = torch.randn(r, generator=g, dtype=torch.float64)
        self.w = w / w.norm()
        labels = torch.zeros(r, dtype=torch.long)
        labels[torch.randperm(r, generator=g)[: r // 2]] = 1
        self.component_labels = labels

    def sample(self, n: int, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` draws ``(x, z, y)`` of split ``split`` (its own derived seed); ``z`` is the
        factor vector ``(n, r)`` or the component index ``(n,)``."""
        xs, zs = [], []
        for c, start in enumerate(range(0, n, CHUNK)):
            rows = min(CHUNK, n - start)
            # a whole block is always drawn (torch's normal sampler is not prefix-stable)
            g = generator(derive_seed("latent", self.kind, split, self.seed, c))
            if self.kind == "factors":
                z = torch.randn(CHUNK, self.r, generator=g, dtype=torch.float64)[:rows]
                mean = z @ self.A.T
            else:
                z = torch.randint(0, self.r, (CHUNK,), generator=g)[:rows]
                mean = self.A.T[z]
            noise = torch.randn(CHUNK, self.d, generator=g, dtype=torch.float64)[:rows]
            xs.append((mean + self.sigma * noise).float())
            zs.append(z)
        if not xs:
            z = (
                torch.empty(0, self.r, dtype=torch.float64)
                if self.kind == "factors"
                else torch.empty(0, dtype=torch.long)
            )
            return torch.empty(0, self.d), z, torch.empty(0, dtype=torch.long)
        x, z = torch.cat(xs), torch.cat(zs)
        y = (z @ self.w > 0).long() if self.kind == "factors" else self.component_labels[z]
        return x, z, y


def latent_model(
    kind: str, d: int = 100, r: int = 5, a_var: float = 0.25, sigma: float = 1.0, seed: int = 0
) -> LatentModel:
    """The generative model of ``latent_factors`` (``kind="factors"``) or
    ``latent_mixture`` (``"mixture"``)."""
    return LatentModel(kind, d, r, a_var, sigma, seed)


def _load(kind: str, n_train, n_val, n_test, n_unlabeled, d, r, a_var, sigma, seed) -> TaskData:
    name = f"latent_{kind}"
    total = (n_train + n_val + n_test + n_unlabeled) * d
    if total > MAX_ELEMENTS:
        raise DataError(
            f"task {name!r}: (n_train + n_val + n_test + n_unlabeled) * d = {total:,} values is "
            f"too large (limit {MAX_ELEMENTS:,}); lower the split sizes or d"
        )
    model = LatentModel(kind, d, r, a_var, sigma, seed)
    x, _, y = model.sample(n_train, "train")
    xv, _, yv = model.sample(n_val, "val")
    xt, zt, yt = model.sample(n_test, "test")
    xu, _, _ = model.sample(n_unlabeled, "unlabeled")
    info = {"A": model.A, "sigma": sigma, "r": r, "z_test": zt, "x_unlabeled": xu}
    if kind == "factors":
        info["w"] = model.w
    else:
        info["component_labels"] = model.component_labels
    return TaskData(name, Split(x, y), Split(xv, yv), Split(xt, yt), 2, info=info)


def load_latent_factors(
    n_train: int = 50,
    n_val: int = 0,
    n_test: int = 2000,
    n_unlabeled: int = 10000,
    d: int = 100,
    r: int = 5,
    a_var: float = 0.25,
    sigma: float = 1.0,
    seed: int = 0,
) -> TaskData:
    """The factor-model task of the module docstring."""
    return _load("factors", n_train, n_val, n_test, n_unlabeled, d, r, a_var, sigma, seed)


def load_latent_mixture(
    n_train: int = 50,
    n_val: int = 0,
    n_test: int = 2000,
    n_unlabeled: int = 10000,
    d: int = 100,
    r: int = 4,
    a_var: float = 0.25,
    sigma: float = 1.0,
    seed: int = 0,
) -> TaskData:
    """The Gaussian-mixture task of the module docstring."""
    return _load("mixture", n_train, n_val, n_test, n_unlabeled, d, r, a_var, sigma, seed)
