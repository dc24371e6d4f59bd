"""Shared pieces of :mod:`weightlab.kernels.empirical`: input and parameter checks, the
output count, chunking and assembling the requested form."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from weightlab.core.selectors import Selector, plain_name
from weightlab.errors import ConfigError


@dataclass
class _Setup:
    names: dict[str, str]  # real parameter name -> plain name
    n_out: int


def _check_inputs(x1: torch.Tensor, x2: torch.Tensor | None) -> None:
    for nm, x in (("x1", x1), ("x2", x2)):
        if x is None:
            continue
        if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] == 0:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ConfigError(
                f"empirical_ntk needs {nm} as a batch of inputs (n, ...), got {got}; "
                "stack the examples along dim 0"
            )
    if x2 is not None and x1.shape[1:] != x2.shape[1:]:
        raise ConfigError(
            f"x1 and x2 have different example shapes {tuple(x1.shape[1:])} and "
            f"{tuple(x2.shape[1:])}; pass inputs of the same shape"
        )


def _select(model: nn.Module, params: object) -> dict[str, str]:
    """Real name -> plain name of the parameters to differentiate."""
    trainable = {n: plain_name(n) for n, p in model.named_parameters() if p.requires_grad}
    if params is None:
        chosen = trainable
    else:
        if isinstance(params, Selector):
            wanted = set(params(model))
        elif isinstance(params, str):
            wanted = {params}
        else:
            wanted = set(params)  # type: ignore[arg-type]
        known = set(trainable.values())
        missing = sorted(wanted - known)
        if missing:
            raise ConfigError(
                f"params names {missing[:3]} are not trainable parameters of the model; use "
                "plain names such as 'layers.0.weight'"
            )
        chosen = {n: pn for n, pn in trainable.items() if pn in wanted}
    if not chosen:
        raise ConfigError("empirical_ntk: the model has no trainable parameters to differentiate")
    return chosen


def _probe(model: nn.Module, x1: torch.Tensor) -> int:
    """The number of outputs per example (one forward on two examples); a shape mismatch
    becomes a one-line ConfigError."""
    xs = x1[:2]
    try:
        with torch.no_grad():
            out = model(xs)
    except (RuntimeError, ValueError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"inputs of example shape {tuple(x1.shape[1:])} do not fit the model ({first}); "
            "pass inputs of the model's input dimension"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != xs.shape[0]:
        raise ConfigError(
            "empirical_ntk needs a model returning one output tensor with the batch on dim 0; "
            "wrap it to select the output"
        )
    return int(out[0].numel())


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _finish(
    blocks: dict[str, torch.Tensor], form: str, n_out: int
) -> torch.Tensor | dict[str, torch.Tensor]:
    """``blocks`` hold ``(n1, n2, O, O)`` (full/blocks) or ``(n1, n2)`` (trace) tensors."""
    if form == "blocks":
        return {k: (v[:, :, 0, 0] if n_out == 1 else v) for k, v in blocks.items()}
    if len(blocks) == 1:
        (total,) = blocks.values()
        return total[:, :, 0, 0] if form == "full" and n_out == 1 else total
    total = None
    for v in blocks.values():
        total = v.clone() if total is None else total.add_(v)
    assert total is not None
    if form == "full" and n_out == 1:
        return total[:, :, 0, 0]
    return total
