"""Generated weights: a target network's weights as the output of a generator ``G(z)``.

Ha, Dai & Le (2017), "HyperNetworks"; von Oswald et al. (2020), "Continual learning with
hypernetworks": a hypernetwork ``G`` maps a condition ``z`` (a task embedding, a
hyperparameter) to the weights of a target network. Two forms here:

- :class:`GeneratedWeight`, a :class:`~weightlab.core.transforms.Transform` on one target
  weight: ``W_eff = G(z)[name]`` (``mode="replace"``) or ``W + G(z)[name]`` (``"add"``, ``W``
  trainable or frozen). It composes like every transform, in attach order: a
  :class:`~weightlab.core.mask.Mask` attached after it gives ``G(z) ⊙ M``, and by the chain
  rule the masked entries send ``G`` zero gradient. Each transform calls ``G`` once per
  forward (a generator of several weights is called once per weight).
- :func:`generate_population`: one call ``G(Z)`` for ``N`` conditions (``Z`` of shape
  ``(N, d)``), then ``N`` targets on the functional path (``torch.func.functional_call``
  under ``torch.func.vmap``), so a loss over all of them takes one backward pass.

A generator returns either a dict ``{plain parameter name: tensor}`` or one flat tensor
whose last dimension is cut, in order, into the target's parameter shapes
(:func:`parameter_shapes`: ``named_parameters`` order, e.g. weight, bias per layer, as
hypnettorch's ``ret_format="flattened"``). An output whose shape differs from its target's
is a one-line :class:`~weightlab.errors.ConfigError` naming both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from weightlab.core.selectors import plain_name
from weightlab.core.transforms import Transform, _resolve, attach
from weightlab.errors import ConfigError

__all__ = [
    "GeneratedWeight",
    "attach_generated",
    "fast_mlp_dims",
    "generate_population",
    "generated_params",
    "parameter_shapes",
    "split_flat",
]

MODES = ("replace", "add")


def parameter_shapes(
    target: nn.Module, names: Sequence[str] | None = None
) -> dict[str, torch.Size]:
    """``{plain name: shape}`` of ``target``'s parameters in ``named_parameters`` order
    (only ``names``, kept in that order, when given; an unknown name is refused)."""
    shapes = {plain_name(n): p.shape for n, p in target.named_parameters()}
    if names is None:
        return shapes
    unknown = [n for n in names if n not in shapes]
    if unknown:
        raise ConfigError(
            f"the target has no parameter {unknown[0]!r}; choose among {', '.join(shapes)}"
        )
    return {n: s for n, s in shapes.items() if n in set(names)}


def split_flat(flat: torch.Tensor, shapes: Mapping[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Cut the last dimension of ``flat`` (``(..., P)``, ``P = Σ numel``) into
    ``{name: (..., *shape)}`` in the order of ``shapes``."""
    total = sum(math.prod(s) for s in shapes.values())
    if flat.shape[-1] != total:
        raise ConfigError(
            f"generator output has {flat.shape[-1]} values per condition (shape "
            f"{tuple(flat.shape)}), the target's parameters {', '.join(shapes)} need {total}; "
            "make the generator's output size the target's parameter count"
        )
    lead = flat.shape[:-1]
    # one split (its backward is one concatenation), not one slice per name (each slice's
    # backward would add a zero-filled full-size gradient)
    parts = torch.split(flat, [math.prod(s) for s in shapes.values()], dim=-1)
    return {
        name: part.reshape(*lead, *shape)
        for (name, shape), part in zip(shapes.items(), parts, strict=True)
    }


def fast_mlp_dims(target: nn.Module) -> tuple[tuple[int, int], ...] | None:
    """Each layer's ``(out, in)`` when ``target`` is a plain
    :class:`~weightlab.models.mlp.MLP` that :func:`~weightlab.hyper.fused.mlp_targets`
    computes exactly (activation relu, tanh or linear; no transforms, no buffers), else
    ``None``."""
    from weightlab.hyper.fused import TARGET_ACTIVATIONS
    from weightlab.models.mlp import MLP

    if type(target) is not MLP or target.activation not in TARGET_ACTIVATIONS:
        return None
    # checked without walking named_parameters (this runs on every call): the MLP holds
    # only ``layers``, a ModuleList of plain Linear layers (a parametrized layer's type
    # differs), with biases and no buffers
    if target._parameters or target._buffers or list(target._modules) != ["layers"]:
        return None
    layers = target.layers
    if type(layers) is not nn.ModuleList or layers._parameters or layers._buffers:
        return None
    for layer in layers:
        if type(layer) is not nn.Linear or layer.bias is None or layer._buffers:
            return None
    return tuple((layer.out_features, layer.in_features) for layer in layers)


def _as_dict(
    out: torch.Tensor | Mapping[str, torch.Tensor],
    shapes: Mapping[str, torch.Size],
    lead: tuple[int, ...],
) -> dict[str, torch.Tensor]:
    """A generator's output as ``{name: (*lead, *shape)}``, every name and shape checked."""
    if isinstance(out, torch.Tensor):
        if tuple(out.shape[:-1]) != lead:
            raise ConfigError(
                f"generator output has shape {tuple(out.shape)}, expected {(*lead, '...')} "
                "(one flat row per condition)"
            )
        return split_flat(out, shapes)
    if not isinstance(out, Mapping):
        raise ConfigError(
            f"a generator must return a tensor or a dict of tensors, got {type(out).__name__}"
        )
    missing = [n for n in shapes if n not in out]
    if missing:
        raise ConfigError(
            f"generator output has no entry {missing[0]!r} (it has {', '.join(out) or 'none'}); "
            "return one tensor per generated parameter"
        )
    for name, shape in shapes.items():
        want = (*lead, *shape)
        if tuple(out[name].shape) != want:
            raise ConfigError(
                f"generator output {name!r} has shape {tuple(out[name].shape)}, its target "
                f"{name!r} has shape {want}; make the generator produce the target's shape"
            )
    return {n: out[n] for n in shapes}


class GeneratedWeight(Transform):
    """``W_eff = G(z)[name]`` (``replace``) or ``W + G(z)[name]`` (``add``).

    Args:
        generator: module mapping ``condition`` to a dict of tensors or one flat tensor
            (cut by ``shapes``); shared by every transform it feeds (its parameters then
            appear once in ``model.parameters()``).
        condition: ``z``; an ``nn.Parameter`` trains with the model, any other tensor is a
            buffer.
        name: the plain name of the target weight this transform produces.
        shapes: ``{name: shape}`` of everything the generator produces, in its output
            order (needed for a flat output; :func:`parameter_shapes` of the target).
        mode: ``"replace"`` or ``"add"``.
    """

    def __init__(
        self,
        generator: nn.Module,
        condition: torch.Tensor,
        name: str,
        shapes: Mapping[str, torch.Size],
        mode: str = "replace",
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"unknown GeneratedWeight mode {mode!r}; choose replace or add")
        if name not in shapes:
            raise ConfigError(
                f"generated weight {name!r} is not among the generator's outputs "
                f"({', '.join(shapes)})"
            )
        self.generator = generator
        if isinstance(condition, nn.Parameter):
            self.condition = condition
        else:
            self.register_buffer("condition", condition.detach().clone())
        self.name = name
        self.shapes = dict(shapes)
        self.mode = mode

    def generated(self) -> torch.Tensor:
        """``G(z)[name]``, shape-checked."""
        out = self.generator(self.condition)
        lead = () if isinstance(out, Mapping) else tuple(out.shape[:-1])
        return _as_dict(out, self.shapes, lead)[self.name]

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        g = self.generated()
        if g.shape != weight.shape:
            raise ConfigError(
                f"generator output {self.name!r} has shape {tuple(g.shape)}, its target "
                f"{self.name!r} has shape {tuple(weight.shape)}; make the generator produce "
                "the target's shape"
            )
        g = g.to(weight.dtype)
        return g if self.mode == "replace" else weight + g

    def extra_repr(self) -> str:
        return f"name={self.name!r}, mode={self.mode!r}"


def attach_generated(
    model: nn.Module,
    generator: nn.Module,
    condition: torch.Tensor,
    names: Sequence[str] | None = None,
    *,
    shapes: Mapping[str, torch.Size] | None = None,
    mode: str = "replace",
    train_base: bool = False,
) -> dict[str, GeneratedWeight]:
    """Attach a :class:`GeneratedWeight` to each of ``names`` (default: every generated
    name). ``shapes`` defaults to :func:`parameter_shapes` of ``model`` over ``names``. The
    stored weights stop training (``requires_grad=False``) in ``replace`` mode (they are
    unused) and in ``add`` mode unless ``train_base``. Every output is shape-checked
    against its target before anything is attached."""
    if mode not in MODES:
        raise ConfigError(f"unknown GeneratedWeight mode {mode!r}; choose replace or add")
    shapes = dict(shapes) if shapes is not None else parameter_shapes(model, names)
    names = list(shapes) if names is None else list(names)
    with torch.no_grad():
        out = generator(condition)
        lead = () if isinstance(out, Mapping) else tuple(out.shape[:-1])
        produced = _as_dict(out, shapes, lead)
    for n in names:
        module, attr = _resolve(model, n)
        target = getattr(module, attr)
        if n not in produced:
            raise ConfigError(
                f"generated weight {n!r} is not among the generator's outputs ({', '.join(shapes)})"
            )
        if produced[n].shape != target.shape:
            raise ConfigError(
                f"generator output {n!r} has shape {tuple(produced[n].shape)}, its target "
                f"{n!r} has shape {tuple(target.shape)}; make the generator produce the "
                "target's shape"
            )
    out_transforms = {}
    for n in names:
        t = attach(model, n, GeneratedWeight(generator, condition, n, shapes, mode))
        module, attr = _resolve(model, n)
        if mode == "replace" or not train_base:
            module.parametrizations[attr].original.requires_grad_(False)
        out_transforms[n] = t
    return out_transforms


def generated_params(
    generator: nn.Module | None,
    target: nn.Module,
    conditions: torch.Tensor,
    *,
    names: Sequence[str] | None = None,
    mode: str = "replace",
    outputs: torch.Tensor | Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """``{name: (N, *shape)}``: one call ``generator(conditions)`` (``conditions`` of shape
    ``(N, d)``), cut and shape-checked against ``target``; in ``add`` mode the target's own
    parameter is added. ``outputs``: an already computed ``generator(conditions)``."""
    if mode not in MODES:
        raise ConfigError(f"unknown generation mode {mode!r}; choose replace or add")
    shapes = parameter_shapes(target, names)
    out = generator(conditions) if outputs is None else outputs
    params = _as_dict(out, shapes, (conditions.shape[0],))
    if mode == "add":
        own = dict(target.named_parameters())
        params = {n: own[n] + p for n, p in params.items()}
    return params


def generate_population(
    generator: nn.Module | None,
    target: nn.Module,
    conditions: torch.Tensor,
    x: torch.Tensor,
    *,
    names: Sequence[str] | None = None,
    mode: str = "replace",
    x_per_member: bool = False,
    outputs: torch.Tensor | Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The ``N`` generated targets' outputs on ``x``: ``(N, B, ...)``.

    One generator call for all ``N`` conditions, then ``vmap(functional_call(target))``
    over the generated parameters (``target``'s other parameters and buffers are shared).
    ``x`` is ``(B, ...)`` for all members, or ``(N, B, ...)`` with ``x_per_member=True``.
    ``target`` must be a plain module (no transforms attached). A loss on the result
    backpropagates into the generator in one backward pass. A plain
    :class:`~weightlab.models.mlp.MLP` target (:func:`fast_mlp_dims`) fed one flat tensor
    of all its parameters (``replace`` mode) runs by
    :func:`~weightlab.hyper.fused.mlp_targets` instead (``baddbmm``, hand-written backward).
    """
    if mode not in MODES:
        raise ConfigError(f"unknown generation mode {mode!r}; choose replace or add")
    if x_per_member and x.shape[0] != conditions.shape[0]:
        raise ConfigError(
            f"x_per_member=True needs x of shape (N={conditions.shape[0]}, B, ...), got "
            f"{tuple(x.shape)}"
        )
    out = generator(conditions) if outputs is None else outputs
    dims = fast_mlp_dims(target) if mode == "replace" else None
    if dims is not None and isinstance(out, torch.Tensor):
        every = names is None or list(names) == list(parameter_shapes(target))
        total = sum(a * (b + 1) for a, b in dims)
        n = conditions.shape[0]
        if every and tuple(out.shape) == (n, total) and out.dtype == x.dtype:
            from weightlab.hyper.fused import mlp_targets

            xx = x.flatten(2) if x_per_member else x.flatten(1)
            return mlp_targets(out, xx, dims, target.activation)
    params = generated_params(generator, target, conditions, names=names, mode=mode, outputs=out)

    def one(p: dict[str, torch.Tensor], xx: torch.Tensor) -> torch.Tensor:
        return functional_call(target, p, (xx,))

    return vmap(one, in_dims=(0, 0 if x_per_member else None))(params, x)
