"""Transforms: reparametrizations ``W_eff = T(W, state)``.

A :class:`Transform` is an ``nn.Module`` attached to a parameter with
``torch.nn.utils.parametrize``; several attached to one parameter compose in the order
they were attached (``T2(T1(W))``). :func:`merge` bakes every attached transform into a
plain parameter and leaves an ordinary module whose ``state_dict`` loads into a fresh,
untransformed copy of the architecture.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from weightlab.errors import ConfigError


class Transform(nn.Module):
    """Base class: ``forward(W)`` returns the effective weight (same shape as ``W``).

    Subclasses keep their state as buffers or parameters. ``right_inverse`` maps an
    assigned effective weight back to the stored one; the default stores it unchanged.
    """

    def forward(self, weight: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight


def _resolve(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError as e:
        raise ConfigError(f"model has no module {module_name!r} (for parameter {name!r})") from e
    if not (
        parametrize.is_parametrized(module, attr)
        or isinstance(getattr(module, attr, None), nn.Parameter)
    ):
        raise ConfigError(f"model has no parameter {name!r}")
    return module, attr


def attach(model: nn.Module, name: str, transform: Transform) -> Transform:
    """Attach ``transform`` to the parameter ``name`` (plain name, e.g. ``layers.0.weight``)."""
    module, attr = _resolve(model, name)
    parametrize.register_parametrization(module, attr, transform)
    return transform


def transforms_of(model: nn.Module, name: str) -> list[Transform]:
    """The transforms attached to parameter ``name``, in application order."""
    module, attr = _resolve(model, name)
    if not parametrize.is_parametrized(module, attr):
        return []
    return [t for t in module.parametrizations[attr] if isinstance(t, Transform)]


def parametrized_names(model: nn.Module) -> list[str]:
    """Plain names of all parameters that have transforms attached."""
    out = []
    for mname, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for attr in module.parametrizations:
                out.append(f"{mname}.{attr}" if mname else attr)
    return out


@torch.no_grad()
def merge(model: nn.Module) -> nn.Module:
    """Bake all transforms into plain parameters, in place; returns ``model``.

    Afterwards the model is an ordinary module: no parametrizations, no mask buffers,
    and its ``state_dict`` keys are those of the untransformed architecture.
    """
    for name in parametrized_names(model):
        module, attr = _resolve(model, name)
        parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
    return model


def merged_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every transform baked in (:func:`merge`); ``model`` is
    untouched.

    ``copy.deepcopy`` of a parametrized module shares its dynamically made
    ``Parametrized<Class>`` class with the original, and ``merge`` deletes the weight
    property from that class, which would break the original. Each parametrized module of
    the copy gets its own copy of the class first."""
    out = copy.deepcopy(model)
    for module in out.modules():
        if parametrize.is_parametrized(module):
            cls = type(module)
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    return merge(out)
