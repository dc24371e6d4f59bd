"""Guidance: a layer-wise representational-alignment loss from a frozen guide network to
a target network [#81].

Subramaniam et al. (2024), "Training the Untrainable: Introducing Inductive Bias via
Representational Alignment": "The target is optimized to perform well and to match its
internal representations, layer-by-layer, to those of the guide; the guide is unchanged."
The neural distance here is linear CKA (Kornblith et al. 2019, Eq. 5; :func:`linear_cka`
from :mod:`weightlab.probes.cka`, differentiable): for layer pairs ``(t_i, g_i)`` and a
batch ``x``,

    ``L = task_loss(target(x), y) + weight · Σ_i (1 − CKA(T_i(x), G_i(x)))``

with ``T_i``, ``G_i`` the outputs of the target's and the guide's modules (flattened per
example). The guide runs in eval mode under ``no_grad``: its weights and BatchNorm
statistics never change.

How it plugs into the one training loop (:func:`weightlab.train.train`): a **wrapper
model plus a custom loss**. :class:`Guided` wraps the target (``target`` is its only
registered submodule, so the optimizer and ``state_dict`` see the target's parameters
only, under ``target.``); in training mode with gradients enabled its forward also runs the
guide and stores the alignment penalty; :meth:`Guided.loss` returns the per-example loss
callable for ``TrainConfig(loss=...)``: the task loss per example plus the penalty (the
same for every example of the batch, so the batch mean adds it once). In eval mode (the
loop's evaluations) the penalty is not computed and the loss is the task loss alone, so
validation and test losses are comparable with an unguided run. Populations cannot run it
(the guide's forward is not part of a member's functional call): use the loop engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.probes.cka import linear_cka
from weightlab.train.losses import resolve_loss


def _module(model: nn.Module, name: str, what: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        names = [n for n in modules if n]
        raise ConfigError(
            f"{what} layer {name!r} does not exist; its modules are: "
            f"{', '.join(names[:40])}{' ...' if len(names) > 40 else ''}"
        )
    return modules[name]


class Guided(nn.Module):
    """``target`` trained with guidance from the frozen ``guide`` (module docstring).

    Args:
        target: the network being trained (its outputs are the wrapper's outputs).
        guide: the frozen guide (trained or untrained); kept out of the parameters.
        pairs: ``(target_module, guide_module)`` module paths whose outputs are aligned.
        weight: the penalty's weight.
        guide_input: maps the batch to the guide's input (e.g. flat pixels to images).
        debiased: use the debiased linear CKA (HSIC_u) instead of the biased one.
    """

    def __init__(
        self,
        target: nn.Module,
        guide: nn.Module,
        pairs: Sequence[tuple[str, str]],
        weight: float = 1.0,
        guide_input: Callable[[torch.Tensor], torch.Tensor] | None = None,
        debiased: bool = False,
    ) -> None:
        super().__init__()
        if not pairs:
            raise ConfigError("guidance needs at least one (target, guide) layer pair")
        if not weight >= 0:
            raise ConfigError(f"guidance weight must be >= 0, got {weight}")
        self.target = target
        self._guide = (guide,)  # a tuple: not a submodule, so no parameters or state
        guide.requires_grad_(False)
        guide.eval()
        self.pairs = [(str(t), str(g)) for t, g in pairs]
        self._t_mods = [_module(target, t, "target") for t, _ in self.pairs]
        self._g_mods = [_module(guide, g, "guide") for _, g in self.pairs]
        self.weight = float(weight)
        self.guide_input = guide_input
        self.debiased = debiased
        self.penalty: torch.Tensor | None = None
        self.last_cka: list[float] = []

    @property
    def guide(self) -> nn.Module:
        return self._guide[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled()):
            self.penalty = None
            return self.target(x)
        t_out: dict[int, torch.Tensor] = {}
        g_out: dict[int, torch.Tensor] = {}

        def keep(store, i):
            return lambda _m, _i, o: store.__setitem__(i, o)

        hooks = [m.register_forward_hook(keep(t_out, i)) for i, m in enumerate(self._t_mods)]
        hooks += [m.register_forward_hook(keep(g_out, i)) for i, m in enumerate(self._g_mods)]
        try:
            out = self.target(x)
            guide = self.guide
            guide.eval()
            with torch.no_grad():
                guide(x if self.guide_input is None else self.guide_input(x))
        finally:
            for h in hooks:
                h.remove()
        n = len(x)
        ckas = [
            linear_cka(t_out[i].reshape(n, -1), g_out[i].reshape(n, -1), debiased=self.debiased)
            for i in range(len(self.pairs))
        ]
        self.last_cka = [float(c.detach()) for c in ckas]
        self.penalty = self.weight * sum(1 - c for c in ckas)
        return out

    def loss(self, task_loss: str = "cross_entropy", kind: str = "classification"):
        """The per-example loss for ``TrainConfig(loss=...)``: ``task_loss`` per example plus
        the penalty stored by the last training-mode forward (none in eval mode)."""
        base = resolve_loss(task_loss, kind)

        def guided_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            losses = base(pred, target)
            if self.penalty is None:
                return losses
            return losses + self.penalty.to(losses.dtype)

        return guided_loss


def guidance_penalty(
    target: nn.Module,
    guide: nn.Module,
    x: torch.Tensor,
    pairs: Sequence[tuple[str, str]],
    guide_input: Callable[[torch.Tensor], torch.Tensor] | None = None,
    debiased: bool = False,
) -> torch.Tensor:
    """``Σ_i (1 − CKA(T_i(x), G_i(x)))`` for one batch, differentiable in the target's
    parameters. Both networks' train/eval modes and the guide's ``requires_grad`` flags are
    restored afterwards (the target runs in training mode, as in a guided step)."""
    flags = [p.requires_grad for p in guide.parameters()]
    modes = (target.training, guide.training)
    try:
        wrapped = Guided(target, guide, pairs, 1.0, guide_input, debiased)
        wrapped.train()
        with torch.enable_grad():
            wrapped(x)
    finally:
        target.train(modes[0])
        guide.train(modes[1])
        for p, f in zip(guide.parameters(), flags, strict=True):
            p.requires_grad_(f)
    return wrapped.penalty
