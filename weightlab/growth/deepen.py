"""Function-preserving deepening: Net2DeeperNet (Chen, Goodfellow & Shlens 2016, "Net2Net:
Accelerating Learning via Knowledge Transfer", Sec. 3.2).

A layer ``h = φ(W x)`` is followed by a new layer initialized to the identity, ``U = I``
(Linear: ``(I, 0)``; Conv: a Dirac kernel with "same" padding and zero bias), and a copy of the
activation, so ``φ(U φ(W x)) = φ(φ(W x))``. This equals ``φ(W x)`` only when ``φ∘φ = φ``
(Chen et al.: "this is true for the rectified linear activation"): ReLU, ReLU6, Hardtanh and
Identity pass; GELU, tanh, sigmoid etc. are refused. ``batchnorm=True`` also inserts a
BatchNorm between the new layer and the activation with running mean 0, running variance 1,
``γ = √(1 + ε)`` and ``β = 0``, the identity in eval mode only (train mode normalizes with
batch statistics).

Supported containers: ``nn.Sequential`` (the new modules are inserted into it, so later
indices shift) and weightlab's :class:`~weightlab.models.mlp.MLP` /
:class:`~weightlab.models.ghost_bn.MLPBN` (a Linear inserted into ``layers``; MLPBN also gets a
norm or ``nn.Identity`` in ``norms``). Their forward applies the model's activation after the
new layer, which is the activation copy.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from weightlab.errors import ConfigError
from weightlab.growth.optim_state import add_params
from weightlab.models.ghost_bn import MLPBN, GhostBatchNorm1d
from weightlab.models.mlp import MLP

__all__ = ["IDEMPOTENT", "deepen", "identity_layer"]

IDEMPOTENT = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Identity)
"""Activation modules with φ∘φ = φ: the only ones deepening keeps exact."""
_MLP_IDEMPOTENT = ("relu", "linear")
_ACTIVATIONS = (
    nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Softplus, nn.Mish, nn.SELU,
    nn.CELU, nn.PReLU, nn.Hardswish, nn.Hardsigmoid, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid,
    nn.GLU, nn.Softmax, nn.RReLU,
)  # fmt: skip
_NORMS = (nn.modules.batchnorm._BatchNorm, GhostBatchNorm1d)


def _refuse_activation(after: str, name: str) -> ConfigError:
    return ConfigError(
        f"cannot deepen after {after!r}: its activation {name} has φ∘φ ≠ φ, so an identity layer "
        "plus a copy of it would change the function; deepen after ReLU, ReLU6, Hardtanh or "
        "Identity"
    )


def identity_layer(like: nn.Module, kernel_size: int | None = None) -> nn.Module:
    """A layer computing the identity on ``like``'s output: Linear ``(I, 0)``, or a Conv1d/2d
    with a Dirac kernel (``nn.init.dirac_``), stride 1, "same" padding ``k // 2`` and zero
    bias (Chen et al. 2016, Sec. 3.2). Same dtype and device as ``like``'s weight."""
    w = like.weight
    if isinstance(like, nn.Linear):
        layer = nn.Linear(like.out_features, like.out_features)
        with torch.no_grad():
            layer.weight.copy_(torch.eye(like.out_features))
            layer.bias.zero_()
        return layer.to(w.device, w.dtype)
    k = kernel_size if kernel_size is not None else like.kernel_size[0]
    if isinstance(k, bool) or int(k) != k or k < 1 or k % 2 == 0:
        raise ConfigError(
            f"a same-padded identity conv needs an odd kernel size, got {k}; pass kernel_size=1 or 3"
        )
    conv = type(like)(like.out_channels, like.out_channels, int(k), padding=int(k) // 2)
    with torch.no_grad():
        nn.init.dirac_(conv.weight)
        conv.bias.zero_()
    return conv.to(w.device, w.dtype)


def _identity_norm(kind: type[nn.Module], features: int, like: torch.Tensor, **kw) -> nn.Module:
    """BatchNorm that is the identity in eval mode: mean 0, var 1, γ = √(1+ε), β = 0."""
    norm = kind(features, **kw)
    with torch.no_grad():
        norm.weight.fill_(math.sqrt(1.0 + norm.eps))
        norm.bias.zero_()
        norm.running_mean.zero_()
        norm.running_var.fill_(1.0)
    return norm.to(like.device, like.dtype)


def _parent(model: nn.Module, after: str) -> tuple[nn.Module, str]:
    head, _, tail = after.rpartition(".")
    return (model.get_submodule(head) if head else model), tail


def _deepen_mlp(model: nn.Module, i: int, after: str, batchnorm: bool) -> list[nn.Module]:
    layers = model.layers
    if i >= len(layers) - 1:
        raise ConfigError(
            f"cannot deepen after {after!r}: it is the output layer (no activation follows); "
            "deepen after a hidden layer"
        )
    if model.activation not in _MLP_IDEMPOTENT:
        raise _refuse_activation(after, model.activation)
    if batchnorm and not isinstance(model, MLPBN):
        raise ConfigError(
            f"cannot deepen {type(model).__name__} after {after!r} with batchnorm=True: MLP has "
            "no norms; use MLPBN or an nn.Sequential"
        )
    new = identity_layer(layers[i])
    inserted = [new]
    layers.insert(i + 1, new)
    if isinstance(model, MLPBN):
        w = new.out_features
        if batchnorm:
            vb = model.virtual_batch
            kind, kw = (
                (nn.BatchNorm1d, {}) if vb is None else (GhostBatchNorm1d, {"virtual_batch": vb})
            )
            norm = _identity_norm(kind, w, new.weight, **kw)
            inserted.append(norm)
        else:
            norm = nn.Identity()
        model.norms.insert(i + 1, norm)
    model.widths.insert(i + 1, model.widths[i + 1])
    return inserted


def _deepen_sequential(
    seq: nn.Sequential, idx: int, after: str, batchnorm: bool, kernel_size: int | None
) -> list[nn.Module]:
    layer = seq[idx]
    j = idx + 1
    if j < len(seq) and isinstance(seq[j], _NORMS):
        j += 1
    act = None
    if j < len(seq) and isinstance(seq[j], IDEMPOTENT):
        act, j = copy.deepcopy(seq[j]), j + 1
    elif j < len(seq) and isinstance(seq[j], _ACTIVATIONS):
        raise _refuse_activation(after, type(seq[j]).__name__)
    new = identity_layer(layer, kernel_size)
    modules = [new]
    if batchnorm:
        kind = nn.BatchNorm2d if isinstance(layer, nn.Conv2d) else nn.BatchNorm1d
        modules.append(_identity_norm(kind, new.weight.shape[0], new.weight))
    if act is not None:
        modules.append(act)
    _insert(seq, j, modules, after.rpartition(".")[2])
    return modules


def _insert(seq: nn.Sequential, pos: int, modules: list[nn.Module], base: str) -> None:
    """Insert ``modules`` at position ``pos``: renumbered when the Sequential's names are
    ``0..n-1``, else named ``{base}_identity``, ``{base}_identity_1``..."""
    items = list(seq._modules.items())
    numeric = [k for k, _ in items] == [str(i) for i in range(len(items))]
    names = [f"{base}_identity" + (f"_{i}" if i else "") for i in range(len(modules))]
    clash = [n for n in names if n in seq._modules]
    if not numeric and clash:
        raise ConfigError(f"cannot deepen: the Sequential already has a module {clash[0]!r}")
    items[pos:pos] = list(zip(names, modules, strict=True))
    seq._modules.clear()
    for i, (k, m) in enumerate(items):
        seq._modules[str(i) if numeric else k] = m


def deepen(
    model: nn.Module,
    after: str,
    batchnorm: bool = False,
    optimizer: torch.optim.Optimizer | None = None,
    kernel_size: int | None = None,
) -> str:
    """Insert an identity layer (and a copy of the next activation) after layer ``after``,
    in place, without changing the function (Net2DeeperNet, Chen et al. 2016, Sec. 3.2).

    Args:
        model: an ``nn.Sequential`` (``after`` one of its Linear/Conv1d/Conv2d, possibly
            nested) or weightlab's MLP / MLPBN (``after = "layers.i"``, a hidden layer).
        after: the layer after whose activation (and BatchNorm, if any) the new layer goes.
        batchnorm: also insert a BatchNorm (mean 0, var 1, γ = √(1+ε), β = 0): exact in eval
            mode only.
        optimizer: the inserted parameters join the param group of ``after``'s weight, with
            empty state.
        kernel_size: of an inserted conv (odd); default ``after``'s.

    Returns:
        The inserted layer's module name (later modules of the container shift by one index
        per inserted module).
    """
    try:
        layer = model.get_submodule(after)
    except AttributeError as e:
        raise ConfigError(f"model has no layer {after!r}; name a Linear or Conv module") from e
    if not isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        raise ConfigError(
            f"cannot deepen after {after!r} ({type(layer).__name__}): name a Linear, Conv1d or Conv2d"
        )
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)) and layer.groups != 1:
        raise ConfigError(f"cannot deepen after {after!r}: grouped convs are not supported")
    parent, tail = _parent(model, after)
    head = after.rpartition(".")[0]
    if isinstance(model, (MLP, MLPBN)) and head == "layers":
        inserted = _deepen_mlp(model, int(tail), after, batchnorm)
        name = f"layers.{int(tail) + 1}"
    elif isinstance(parent, nn.Sequential):
        seq_idx = list(parent._modules).index(tail)
        inserted = _deepen_sequential(parent, seq_idx, after, batchnorm, kernel_size)
        key = next(k for k, m in parent._modules.items() if m is inserted[0])
        name = f"{head}.{key}" if head else key
    else:
        raise ConfigError(
            f"cannot deepen after {after!r}: its container is {type(parent).__name__}; deepen "
            "inside an nn.Sequential or weightlab's MLP / MLPBN"
        )
    for m in inserted:
        m.train(layer.training)  # the new norm follows the model's mode (eval: the identity)
    if optimizer is not None:
        params = [p for m in inserted for p in m.parameters()]
        beside = (
            layer.parametrizations["weight"].original
            if parametrize.is_parametrized(layer, "weight")
            else layer.weight
        )
        add_params(optimizer, beside, params)
    return name
