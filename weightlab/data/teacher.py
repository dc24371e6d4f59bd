"""Teacher-student regression tasks: ``x ~ N(0, I)``, ``y = teacher(x) + noise * N(0, I)``.

Every teacher is drawn from ``seed`` alone (not from the split sizes), and each split's
inputs and noise from their own derived seeds, so changing ``n_train`` keeps the teacher
and the val/test sets. Targets are ``(n, d_out)`` float32; the same noise level applies
to every split. Teacher weights are in ``TaskData.info`` as float32 tensors oriented
for ``x @ W`` (shape ``(fan_in, fan_out)``):

- ``teacher_linear``: ``y = x W``, ``W ~ N(0, 1/d_in)`` (the noisy linear teacher of
  Advani & Saxe 2020); ``info["weight"]``.
- ``teacher_mlp``: a random ReLU MLP without biases, ``d_in -> widths... -> d_out``,
  hidden weights ``N(0, 2/fan_in)`` (He et al. 2015), the last ``N(0, 1/fan_in)``;
  ``info["weights"]`` (one tensor per layer).
- ``teacher_sparse``: planted sparse two-layer ReLU, ``y = relu(x W1) W2`` with ``k``
  hidden units each reading exactly ``s`` inputs (``W1`` entries ``N(0, 1/s)`` on a
  random support, ``W2 ~ N(0, 1/k)``), as in the IHT recovery setting (methods row #95);
  ``info["w1"]``, ``info["w2"]``, ``info["support"]`` (bool mask of the nonzero ``W1``).
- ``deep_linear``: ``y = x W``, ``W = U diag(s) V^T`` with ``U`` (``d_in x r``) and ``V``
  (``d_out x r``) the first ``r = min(d_in, d_out)`` columns of Haar-random orthogonal
  matrices (QR of a Gaussian matrix with the sign of ``diag(R)`` fixed, Mezzadri 2007)
  and ``s`` the given singular values padded with zeros (Saxe et al. 2014's teacher);
  ``info["weight"]``, ``info["U"]``, ``info["V"]``, ``info["singular_values"]``.
"""

from __future__ import annotations

import torch

from weightlab.data.params import Param
from weightlab.data.task import Split, TaskData
from weightlab.errors import DataError
from weightlab.seeding import derive_seed, generator

MAX_ELEMENTS = 200_000_000  # inputs of all splits together (800 MB of float32)


def common_params(d_in: int, d_out: int) -> tuple[Param, ...]:
    return (
        Param("n_train", "int", 1000, "training examples", min=1),
        Param("n_val", "int", 500, "validation examples", min=1),
        Param("n_test", "int", 1000, "test examples", min=1),
        Param("d_in", "int", d_in, "input dimension", min=1),
        Param("d_out", "int", d_out, "output dimension", min=1),
        Param("noise", "float", 0.1, "standard deviation of the Gaussian target noise", min=0),
        Param("seed", "int", 0, "seed of the teacher, the inputs and the noise", min=0),
    )


def _randn(shape: tuple[int, ...], *parts: object, std: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=generator(derive_seed(*parts))) * std


def orthogonal(d: int, *parts: object) -> torch.Tensor:
    """A Haar-random ``d x d`` orthogonal matrix (float64): QR of a Gaussian matrix with
    the columns' signs fixed so that ``diag(R) > 0`` (Mezzadri 2007)."""
    g = torch.randn((d, d), generator=generator(derive_seed(*parts)), dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    sign = torch.sign(torch.diagonal(r))
    sign[sign == 0] = 1.0
    return q * sign


def _make(name: str, p: dict, teacher, info: dict, extra: tuple = ()) -> TaskData:
    """Draw the splits' inputs and noise, apply ``teacher`` (float32 -> float32)."""
    total = (p["n_train"] + p["n_val"] + p["n_test"]) * p["d_in"]
    if total > MAX_ELEMENTS:
        raise DataError(
            f"task {name!r}: (n_train + n_val + n_test) * d_in = {total:,} input values is too "
            f"large (limit {MAX_ELEMENTS:,}); lower the split sizes or d_in"
        )
    splits = []
    for split in ("train", "val", "test"):
        n = p[f"n_{split}"]
        x = _randn((n, p["d_in"]), name, p["seed"], *extra, "x", split)
        y = teacher(x)
        if p["noise"] > 0:
            y = y + _randn(tuple(y.shape), name, p["seed"], *extra, "noise", split, std=p["noise"])
        splits.append(Split(x.contiguous(), y.contiguous()))
    info = {**info, "noise": p["noise"], "seed": p["seed"]}
    return TaskData(name, *splits, 0, kind="regression", info=info)


def mlp_forward(x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """``relu`` between layers, none after the last: the teacher MLP's function."""
    for i, w in enumerate(weights):
        x = x @ w
        if i < len(weights) - 1:
            x = torch.relu(x)
    return x


def load_teacher_linear(**p) -> TaskData:
    w = _randn((p["d_in"], p["d_out"]), "teacher_linear", p["seed"], "w", std=p["d_in"] ** -0.5)
    return _make("teacher_linear", p, lambda x: x @ w, {"weight": w})


def load_teacher_mlp(**p) -> TaskData:
    dims = [p["d_in"], *p["widths"], p["d_out"]]
    weights = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        gain = 1.0 if i == len(dims) - 2 else 2.0
        weights.append(_randn((a, b), "teacher_mlp", p["seed"], "w", i, std=(gain / a) ** 0.5))
    return _make("teacher_mlp", p, lambda x: mlp_forward(x, weights), {"weights": weights})


def load_teacher_sparse(**p) -> TaskData:
    d_in, k, s = p["d_in"], p["k"], p["s"]
    if s > d_in:
        raise DataError(
            f"task 'teacher_sparse': s={s} nonzero input weights per unit cannot exceed "
            f"d_in={d_in}; lower s or raise d_in"
        )
    g = generator(derive_seed("teacher_sparse", p["seed"], "support"))
    support = torch.zeros((d_in, k), dtype=torch.bool)
    for j in range(k):
        support[torch.randperm(d_in, generator=g)[:s], j] = True
    w1 = _randn((d_in, k), "teacher_sparse", p["seed"], "w1", std=s**-0.5) * support
    w2 = _randn((k, p["d_out"]), "teacher_sparse", p["seed"], "w2", std=k**-0.5)
    info = {"w1": w1, "w2": w2, "support": support}
    return _make("teacher_sparse", p, lambda x: mlp_forward(x, [w1, w2]), info)


def load_deep_linear(**p) -> TaskData:
    d_in, d_out = p["d_in"], p["d_out"]
    r = min(d_in, d_out)
    given = p["singular_values"]
    if len(given) > r:
        raise DataError(
            f"task 'deep_linear': {len(given)} singular values given but a {d_in} x {d_out} "
            f"teacher has at most min(d_in, d_out) = {r}; give at most {r} or raise d_in/d_out"
        )
    s = torch.zeros(r, dtype=torch.float64)
    s[: len(given)] = torch.tensor(given, dtype=torch.float64)
    u = orthogonal(d_in, "deep_linear", p["seed"], "U")[:, :r]
    v = orthogonal(d_out, "deep_linear", p["seed"], "V")[:, :r]
    w = ((u * s) @ v.T).float()
    info = {
        "weight": w,
        "U": u.float(),
        "V": v.float(),
        "singular_values": s.float(),
    }
    return _make("deep_linear", p, lambda x: x @ w, info)


LINEAR_PARAMS = common_params(20, 1)
MLP_PARAMS = (
    *common_params(20, 1),
    Param("widths", "ints", "32,32", "hidden widths of the teacher MLP, comma-separated", min=1),
)
SPARSE_PARAMS = (
    *common_params(20, 1),
    Param("k", "int", 4, "hidden units of the planted teacher", min=1),
    Param("s", "int", 3, "nonzero input weights per hidden unit (<= d_in)", min=1),
)
DEEP_LINEAR_PARAMS = (
    *common_params(16, 16),
    Param(
        "singular_values",
        "floats",
        "5,3,2,1",
        "the teacher's singular values, comma-separated; the rest up to min(d_in, d_out) are 0",
        min=0,
    ),
)


def load_teacher_poly(**p) -> TaskData:
    """``teacher_poly``: ``y = prod_{i in monomial} x_i`` on ``x ~ N(0, I_d)`` (default
    ``x_1 x_2``, the polynomial-regression task of Kumar et al. 2024, "Grokking as the
    Transition from Lazy to Rich Training Dynamics", Section 5), plus ``noise * N(0, 1)``.
    Indices are 1-based (``"1,2"`` is ``x_1 x_2``) and distinct, so ``Var(y) = 1`` without
    noise (a product of independent unit Gaussians). Targets are ``(n, 1)`` float32.
    ``info["monomial"]`` holds the 0-based coordinates."""
    d, mono = p["d"], p["monomial"]
    bad = [i for i in mono if not 1 <= i <= d]
    if bad or len(set(mono)) != len(mono):
        raise DataError(
            f"task 'teacher_poly': monomial {','.join(map(str, mono))} must list distinct "
            f"1-based coordinates in 1..d={d}; e.g. monomial=1,2 for x1*x2"
        )
    idx = [i - 1 for i in mono]

    def target(x: torch.Tensor) -> torch.Tensor:
        return x[:, idx].prod(dim=1, keepdim=True)

    q = {**p, "d_in": d}
    return _make("teacher_poly", q, target, {"monomial": torch.tensor(idx)})


POLY_PARAMS = (
    Param("n_train", "int", 300, "training examples", min=1),
    Param("n_val", "int", 500, "validation examples", min=1),
    Param("n_test", "int", 1000, "test examples", min=1),
    Param("d", "int", 50, "input dimension", min=1),
    Param("monomial", "ints", "1,2", "1-based coordinates multiplied (1,2 = x1*x2)", min=1),
    Param("noise", "float", 0.0, "standard deviation of the Gaussian target noise", min=0),
    Param("seed", "int", 0, "seed of the inputs and the noise", min=0),
)
