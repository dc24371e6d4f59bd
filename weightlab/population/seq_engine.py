"""Per-member path for modules that ``torch.func.vmap`` rejects.

Some modules have no batching rule for ``vmap`` (in torch 2.13: ``nn.RNN``, ``nn.LSTM`` and
``nn.GRU``, whose fused kernels ``aten::rnn_tanh`` / ``aten::lstm`` / ``aten::gru`` cannot be
vectorized). :func:`vmap_rejection` finds out once per population by running a vmapped
forward and backward (and an eval-mode forward) of the model on two members, on copies;
if one raises, the population trains on :class:`SequentialEngine` and logs one line on the
``"weightlab"`` logger saying so and why.

:class:`SequentialEngine` keeps everything of :class:`~weightlab.population.func_engine.FuncEngine`
(flat parameter layout, stacked buffers, :class:`~weightlab.population.optim.PopulationOptimizer`,
losses, metrics, dropout masks drawn outside the forward) and only replaces the
vectorized forward by a Python loop over members: member ``n``'s output is
``functional_call(template, (θ_n, β_n), x_n)`` on views of the same flat buffer, so one
autograd call still gives every member its own gradient and the update arithmetic is the
one the vmapped path uses (tested against the single-model loop).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.func import functional_call, vmap

from weightlab.errors import ConfigError
from weightlab.models.dropout import (
    dropout_layers,
    dropout_step,
    functional_dropout,
    replace_dropout,
)
from weightlab.population.func_engine import FuncEngine

log = logging.getLogger("weightlab")


def vmap_rejection(model: nn.Module, x: torch.Tensor) -> str | None:
    """Why ``vmap(functional_call(model, ...))`` cannot train ``model`` on ``x``, or ``None``.

    Does what a training step and an evaluation of the generic path do, on two stacked
    copies of ``model``'s parameters and buffers (copies: nothing is written back): a
    train-mode vmapped forward, the gradient of its sum with respect to the stacked
    parameters, and an eval-mode vmapped forward under ``no_grad``. Random operations are
    allowed here (``randomness="different"``): they are refused separately by
    :func:`refuse_random_forward`, not a reason to change path.
    """
    params = {
        k: torch.stack([v.detach()] * 2).requires_grad_() for k, v in model.named_parameters()
    }
    layers = dropout_layers(model)
    was = model.training

    def one(p, b, xi):
        with dropout_step(layers, 0, 1):
            return functional_call(model, (p, b), (xi,))

    def forward():
        buffers = {k: torch.stack([v.detach()] * 2) for k, v in model.named_buffers()}
        out = vmap(one, in_dims=(0, 0, None), randomness="different")(params, buffers, x)
        return out[0] if isinstance(out, tuple) else out

    try:
        model.train()
        out = forward()
        if out.requires_grad:
            torch.autograd.grad(out.sum(), list(params.values()), allow_unused=True)
        model.eval()
        with torch.no_grad():
            forward()
    except (RuntimeError, NotImplementedError) as e:
        text = str(e).strip()
        return text.splitlines()[0] if text else type(e).__name__
    finally:
        model.train(was)
    return None


def refuse_random_forward(model: nn.Module, x: torch.Tensor) -> None:
    """Raise :class:`ConfigError` if a training forward of ``model`` draws from PyTorch's
    global RNG, which a population cannot reproduce per member: dropout > 0 inside a
    functional call (``nn.MultiheadAttention(dropout>0)``, ``nn.Dropout1d/2d/3d``,
    ``nn.AlphaDropout``, ``nn.RNN(dropout>0)``, ``F.dropout`` in a forward). Plain
    ``nn.Dropout`` modules are first replaced by weightlab's seeded
    :class:`~weightlab.models.dropout.Dropout` (:func:`replace_dropout`, as the single-model
    loop does), so they are accepted. ``model`` must be a throwaway copy.

    Named modules are found by type; anything else by running one train-mode forward on
    ``x`` (under ``fork_rng``) and checking whether the global generator's state moved.
    """
    replace_dropout(model)
    fix = "use weightlab.models.dropout.Dropout modules (weightlab.models.dropout.replace_dropout)"
    for name, m in model.named_modules():
        label = f"{name or '<model>'} ({type(m).__name__})"
        if isinstance(m, nn.RNNBase) and m.dropout > 0 and m.num_layers > 1:
            raise ConfigError(
                f"population members cannot use dropout inside a functional call: module "
                f"{label} has dropout={m.dropout}; set dropout=0 (stack one-layer RNNs with "
                "weightlab.models.dropout.Dropout between them for dropout)"
            )
    inside = functional_dropout(model)
    if inside:
        name = inside[0]
        kind = type(model.get_submodule("" if name == "<model>" else name)).__name__
        raise ConfigError(
            f"population members cannot use dropout > 0 inside a functional call: module "
            f"{name} ({kind}); set its dropout to 0 and {fix}"
        )
    was = model.training
    model.train()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad(), dropout_step(model, 0, 1):
            before = torch.random.get_rng_state()
            model(x)
            moved = not torch.equal(before, torch.random.get_rng_state())
    finally:
        model.train(was)
    if moved:
        raise ConfigError(
            f"{type(model).__name__}'s training forward draws from torch's global RNG (e.g. "
            f"F.dropout in forward), which a population cannot reproduce per member; {fix}"
        )


def log_path(model: nn.Module, reason: str | None) -> None:
    """The one log line naming the path a population's generic members take."""
    name = type(model).__name__
    if reason is None:
        log.info("population of %s: torch.func vmap path", name)
    else:
        log.info(
            "population of %s: per-member sequential path (torch.func.vmap rejects it: %s)",
            name,
            reason,
        )


class SequentialEngine(FuncEngine):
    """:class:`FuncEngine` whose forward runs member by member instead of under ``vmap``."""

    def _map_members(self, fn, params, buffers, x, x_dim, masks):
        outs = []
        for i in range(self.n):
            p = {k: v[i] for k, v in params.items()}
            b = {k: v[i] for k, v in buffers.items()}
            xi = x if x_dim is None else x.select(x_dim, i)
            mi = [m[i] for m in masks] if masks is not None else None
            outs.append(fn(p, b, xi, mi))
        return torch.stack(outs)
