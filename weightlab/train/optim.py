"""Optimizers for the single-model loop: ``torch.optim`` with parameter groups, a per-step
learning-rate schedule and gradient clipping, as specified by :class:`OptimConfig`.

- ``sgd``: ``torch.optim.SGD`` (momentum, Nesterov: Sutskever et al. 2013, Eq. 3-4 in
  PyTorch's formulation); ``adam``: ``torch.optim.Adam`` (Kingma & Ba 2015, Algorithm 1)
  with L2 weight decay added to the gradient; ``adamw``: ``torch.optim.AdamW``
  (Loshchilov & Hutter 2019, Algorithm 2, decoupled decay ``w <- w - lr * wd * w``).
- Parameter groups (:func:`weightlab.train.groups.resolve_groups`) become torch param
  groups with ``lr = lr * lr_mult`` and ``weight_decay = weight_decay * wd_mult``; each
  torch group also carries ``lr_mult`` for the schedule.
- Schedule: before update ``t`` (1-based), :func:`set_lr` sets every group's
  ``lr = cfg.lr * lr_mult * schedule.factor(t - 1, total)``.
- Clipping (:func:`clip_gradients`), after masks and before the update: first
  ``clip_value`` (clamp each entry), then ``clip_norm`` (``torch.nn.utils.clip_grad_norm_``
  over all of the model's trainable parameters: scale ``min(1, c / (‖g‖₂ + 1e-6))``).
- ``sgld``: :class:`weightlab.dynamics.sgld.SGLD` (Welling & Teh 2011, Eq. 4, full batch),
  its noise seeded by ``make_optimizer(..., seed=)`` (the loop passes the member's seed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from weightlab.core.selectors import plain_name
from weightlab.errors import ConfigError
from weightlab.train.config import OptimConfig
from weightlab.train.groups import resolve_groups


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """torch param groups for ``model``'s trainable parameters, one per distinct
    ``(lr_mult, wd_mult)`` in order of first appearance."""
    named = [(plain_name(n), p) for n, p in model.named_parameters() if p.requires_grad]
    mults = resolve_groups([n for n, _ in named], cfg.groups, model)
    groups: dict[tuple[float, float], list[torch.Tensor]] = {}
    for n, p in named:
        groups.setdefault(mults[n], []).append(p)
    return [
        {
            "params": ps,
            "lr": cfg.lr * lr_m,
            "weight_decay": cfg.weight_decay * wd_m,
            "lr_mult": lr_m,
        }
        for (lr_m, wd_m), ps in groups.items()
    ]


def make_optimizer(
    model_or_params: nn.Module | Iterable[torch.Tensor],
    cfg: OptimConfig,
    *,
    fused: bool | None = None,
    seed: int = 0,
) -> torch.optim.Optimizer:
    """``torch.optim.SGD``/``Adam``/``AdamW`` (or weightlab's ``SGLD``) configured by ``cfg``.

    Pass the model to use ``cfg.groups``; an iterable of parameters gets one group (and
    ``cfg.groups`` must be empty). ``fused`` is handed to torch (``None``: torch's default).
    ``seed``: the member's seed, which seeds SGLD's noise (unused by the others).
    """
    order = None
    if isinstance(model_or_params, nn.Module):
        groups = param_groups(model_or_params, cfg)
        order = [p for _, p in model_or_params.named_parameters() if p.requires_grad]
    else:
        if cfg.groups:
            raise ConfigError("parameter groups need the model: pass the module to make_optimizer")
        groups = [
            {
                "params": list(model_or_params),
                "lr": cfg.lr,
                "weight_decay": cfg.weight_decay,
                "lr_mult": 1.0,
            }
        ]
    if cfg.name == "sgld":
        from weightlab.dynamics.sgld import SGLD

        return SGLD(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=seed, order=order)
    extra = {} if fused is None else {"fused": fused}
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **extra
        )
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **extra)


def set_lr(opt: torch.optim.Optimizer, cfg: OptimConfig, done: int, total: int) -> None:
    """Learning rates for the update after ``done`` completed steps of ``total``."""
    factor = cfg.schedule.factor(done, total)
    for g in opt.param_groups:
        g["lr"] = cfg.lr * g.get("lr_mult", 1.0) * factor


def clip_gradients(params: Sequence[torch.Tensor], cfg: OptimConfig) -> None:
    """Clip the gradients of ``params`` in place: by value, then by total L2 norm."""
    if cfg.clip_value > 0:
        torch.nn.utils.clip_grad_value_(params, cfg.clip_value)
    if cfg.clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
