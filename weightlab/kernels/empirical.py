"""The empirical neural tangent kernel of any ``nn.Module``.

Jacot, Gabriel & Hongler 2018 ("Neural Tangent Kernel: Convergence and Generalization in
Neural Networks", NeurIPS, Eq. 2 / Def. of Θ) define, for a network ``f(x; θ)`` with ``O``
outputs, the kernel

    Θ(x, x')_{o o'} = Σ_p ∂f_o(x)/∂θ_p · ∂f_{o'}(x')/∂θ_p  =  (J(x) J(x')ᵀ)_{o o'},

summed over the trainable parameters ``θ``. :func:`empirical_ntk` returns it in three forms
(``full``: ``(n1, n2, O, O)``, squeezed to ``(n1, n2)`` for ``O = 1``; ``trace``: ``Σ_o
Θ_{oo}``, ``(n1, n2)``; ``blocks``: one kernel per parameter, keyed by its plain name, whose
sum is the full kernel) with three implementations (Novak et al. 2022, "Fast Finite Width
Neural Tangent Kernel", ICML, Sec. 3-4, name the same three for JAX):

- ``structured``: for plain stacks of Linear layers and pointwise activations (a weightlab
  :class:`~weightlab.models.mlp.MLP`, an ``nn.Sequential`` of ``nn.Linear`` and pointwise
  activations, :class:`NTKLinear` layers included), ``∂f_o/∂W_l = δ_l^o h_{l-1}ᵀ``, so a
  weight's block is ``(δ_l^o · δ_l^{o'}) (h_{l-1} · h'_{l-1})`` — the Gram of the backprop
  signals times (elementwise over input pairs) the Gram of the layer inputs — and a bias's
  block is the Gram of the backprop signals (Novak et al. 2022, Sec. 4, "structured
  derivatives"). One forward and ``O`` backward passes, no Jacobian.
- ``jacobian``: ``torch.func`` ``vmap(jacrev)`` per example, over chunks of inputs and
  groups of parameters whose Jacobian fits ``max_bytes``, accumulating ``J1 J2ᵀ`` per
  group (Novak et al. 2022, Sec. 3.1, "Jacobian contraction"). ``nn.Embedding`` lookups on
  batched token ids (MiniLM's word embedding) never build their dense Jacobian: their row-
  sparse gradient ``∂f/∂E[v] = Σ_{t: id_t = v} g_t`` (``g_t`` the gradient at the looked-up
  position) gives the block ``Σ_{t, s: id_t = id'_s} g_t · g'_s`` from per-position
  gradients (one batched backward per output).
- ``ntvp``: NTK-vector products ``Θ v = J (Jᵀ v)`` (a ``vjp`` then a ``jvp``) applied to the
  columns of the identity (Novak et al. 2022, Sec. 3.2); needs forward-mode AD of every op.

``method="auto"`` picks ``structured`` when the module qualifies, else ``jacobian``.

Conventions: only trainable parameters count (``requires_grad``; ``params`` narrows them to
names or a :class:`~weightlab.core.selectors.Selector`). With transforms attached (masks,
adapters), the parameters are the *stored* ones (``…parametrizations.weight.original``,
keyed by their plain name ``….weight``) and the Jacobian passes through the transform, so
under a :class:`~weightlab.core.mask.Mask` only the free weights count (``∂(W⊙M)/∂W = M``):
the kernel that governs gradient descent on that masked model. A population member is an
ordinary module, ``pop.member(i)`` (masks attached). Examples must not interact in the
forward pass (eval-mode normalization, no dropout): the ``jacobian`` path differentiates one
example at a time, the others batched forward passes. The result is accumulated in
``dtype`` (float64 by default) from derivatives computed in the model's own dtype.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from weightlab.errors import ConfigError
from weightlab.kernels._ntk_common import _check_inputs, _chunks, _finish, _probe, _select, _Setup
from weightlab.kernels._ntk_jacobian import _jacobian, _ntvp, ntk_vector_product
from weightlab.kernels._ntk_mlp import (
    Erf,
    NTKLinear,
    mlp_to_ntk,
    ntk_lr_groups,
    ntk_mlp,
    ntk_to_mlp,
)

FORMS = ("full", "trace", "blocks")
METHODS = ("auto", "structured", "jacobian", "ntvp")
DEFAULT_MAX_BYTES = 1 << 30  # Jacobian blocks held at once (per parameter group)


POINTWISE: tuple[type[nn.Module], ...] = (
    Erf,
    nn.ReLU,
    nn.Tanh,
    nn.GELU,
    nn.Sigmoid,
    nn.SiLU,
    nn.ELU,
    nn.LeakyReLU,
    nn.Softplus,
    nn.Identity,
    nn.Flatten,
    nn.Hardtanh,
    nn.Mish,
)

__all__ = [
    "FORMS",
    "METHODS",
    "NTKLinear",
    "ProjectedOutput",
    "Erf",
    "empirical_ntk",
    "mlp_to_ntk",
    "ntk_lr_groups",
    "ntk_mlp",
    "ntk_to_mlp",
    "ntk_vector_product",
    "qualifies_structured",
]


class ProjectedOutput(nn.Module):
    """A one-output view ``f(x) · v`` of a model with vector outputs (``v`` a fixed buffer),
    e.g. MiniLM's mean-pooled sentence embedding times a seeded direction."""

    def __init__(self, model: nn.Module, direction: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("direction", direction.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) @ self.direction


# --------------------------------------------------------------------------------------
# qualification
# --------------------------------------------------------------------------------------


def _stack_linears(model: nn.Module) -> list[nn.Linear] | None:
    """The Linear layers of a plain stack (MLP or Sequential of Linear + pointwise
    activations, no transforms attached), in order; ``None`` if ``model`` is not one."""
    from weightlab.models.mlp import MLP

    if any(parametrize.is_parametrized(m) for m in model.modules()):
        return None
    if isinstance(model, MLP):
        return list(model.layers)
    if not isinstance(model, nn.Sequential):
        return None
    out: list[nn.Linear] = []

    def walk(seq: nn.Sequential) -> bool:
        for m in seq:
            if isinstance(m, nn.Sequential):
                if not walk(m):
                    return False
            elif type(m) in (nn.Linear, NTKLinear):
                out.append(m)
            elif isinstance(m, POINTWISE) or (isinstance(m, nn.Dropout) and m.p == 0.0):
                if any(True for _ in m.parameters()):
                    return False
            else:
                return False
        return True

    return out if walk(model) and out else None


def _check_mode(model: nn.Module) -> None:
    """Dropout or batch statistics in training mode make the kernel random or couple the
    examples: refuse them (one line) rather than return a kernel of another function."""
    for name, m in model.named_modules():
        if not m.training:
            continue
        if (isinstance(m, nn.Dropout) and m.p > 0) or (
            isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats is not None
        ):
            raise ConfigError(
                f"module {name or type(m).__name__!r} ({type(m).__name__}) is in training mode; "
                "call model.eval() before computing the empirical NTK"
            )


def qualifies_structured(model: nn.Module) -> bool:
    """Whether ``method="structured"`` applies: a plain stack of Linear layers and pointwise
    activations with no transforms attached."""
    return _stack_linears(model) is not None


# --------------------------------------------------------------------------------------
# structured derivatives
# --------------------------------------------------------------------------------------


def _signals(
    model: nn.Module, linears: list[nn.Linear], x: torch.Tensor, n_out: int, chunk: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per Linear: its inputs ``(n, in)`` and backprop signals ``(O, n, out)``."""
    ins: list[list[torch.Tensor]] = [[] for _ in linears]
    deltas: list[list[torch.Tensor]] = [[] for _ in linears]
    for sl in _chunks(x.shape[0], chunk):
        got_in: list[torch.Tensor] = []
        got_out: list[torch.Tensor] = []

        def hook(
            _m: nn.Module, args: tuple, out: torch.Tensor, got_in=got_in, got_out=got_out
        ) -> None:
            got_in.append(args[0])
            got_out.append(out)

        handles = [lin.register_forward_hook(hook) for lin in linears]
        try:
            with torch.enable_grad():
                xc = x[sl].detach().requires_grad_(x.is_floating_point())
                out = model(xc).reshape(xc.shape[0], n_out)
                if len(got_out) != len(linears) or any(t.ndim != 2 for t in got_out):
                    raise ConfigError(
                        "method='structured' needs each Linear applied once to (batch, "
                        "features) inputs; use method='jacobian'"
                    )
                per_o = []
                for o in range(n_out):
                    per_o.append(
                        torch.autograd.grad(out[:, o].sum(), got_out, retain_graph=o < n_out - 1)
                    )
        finally:
            for h in handles:
                h.remove()
        for i in range(len(linears)):
            ins[i].append(got_in[i].detach())
            gs = [g[i] for g in per_o]
            deltas[i].append(gs[0].unsqueeze(0) if len(gs) == 1 else torch.stack(gs))

    def join(ts: list[torch.Tensor], dim: int) -> torch.Tensor:
        return ts[0] if len(ts) == 1 else torch.cat(ts, dim)

    return [join(t, 0) for t in ins], [join(t, 1) for t in deltas]


def _structured(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None,
    setup: _Setup,
    form: str,
    chunk: int | None,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    linears = _stack_linears(model)
    if linears is None:
        raise ConfigError(
            f"method='structured' needs a plain stack of Linear layers and pointwise "
            f"activations without transforms, got {type(model).__name__}; use method='jacobian'"
        )
    n_out = setup.n_out
    c = chunk or max(x1.shape[0], 1)
    h1, d1 = _signals(model, linears, x1, n_out, c)
    h2, d2 = (h1, d1) if x2 is None else _signals(model, linears, x2, n_out, c)
    names = {id(p): n for n, p in model.named_parameters()}
    chosen = setup.names
    blocks: dict[str, torch.Tensor] = {}
    total: torch.Tensor | None = None
    for lin, a1, a2, g1, g2 in zip(linears, h1, h2, d1, d2, strict=True):
        wn, bn = (
            names.get(id(lin.weight)),
            names.get(id(lin.bias)) if lin.bias is not None else None,
        )
        want_w, want_b = wn in chosen, bn is not None and bn in chosen
        if not (want_w or want_b):
            continue
        g1, g2 = g1.to(dtype), g2.to(dtype)
        o, n1, n2 = g1.shape[0], g1.shape[1], g2.shape[1]
        if form == "trace":
            dd = g1.permute(1, 0, 2).reshape(n1, -1) @ g2.permute(1, 0, 2).reshape(n2, -1).T
        else:  # (n1, n2, O, O)
            dd = (g1.reshape(o * n1, -1) @ g2.reshape(o * n2, -1).T).reshape(o, n1, o, n2)
            dd = dd.permute(1, 3, 0, 2)
        wm2, bm2 = getattr(lin, "weight_mult", 1.0) ** 2, getattr(lin, "bias_mult", 1.0) ** 2
        gram = None
        if want_w:
            gram = a1.to(dtype) @ a2.to(dtype).T
            if wm2 != 1.0:
                gram.mul_(wm2)
        if form == "blocks":
            if gram is not None:
                blocks[chosen[wn]] = dd * gram[:, :, None, None]
            if want_b:
                blocks[chosen[bn]] = dd * bm2
            continue
        # full / trace: accumulate dd ⊙ (gram + b_mult²) without per-parameter blocks
        factor = gram if gram is not None else torch.zeros((), dtype=dtype)
        if want_b:
            factor = factor + bm2
        term = dd * (factor if form == "trace" else factor[..., None, None])
        total = term if total is None else total.add_(term)
    if form != "blocks" and total is not None:
        blocks["all"] = total
    return blocks


# --------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------


def empirical_ntk(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    form: str = "full",
    method: str = "auto",
    chunk: int | None = None,
    params: object = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    out_chunk: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The empirical NTK ``Θ(x1, x2) = J(x1) J(x2)ᵀ`` of ``model`` at its current weights
    (Jacot et al. 2018, Eq. 2; see the module docstring for the three methods).

    Args:
        model: any module mapping a batch ``(n, ...)`` to outputs ``(n, ...)`` (``O`` values
            per example); a population member is ``pop.member(i)``.
        x1, x2: input batches (``x2=None``: ``Θ(x1, x1)``, computed once).
        form: ``"full"`` ``(n1, n2, O, O)`` (``(n1, n2)`` when ``O = 1``), ``"trace"``
            ``(n1, n2)`` summed over outputs, or ``"blocks"``: ``{plain parameter name:
            (n1, n2[, O, O])}`` summing to the full kernel.
        method: ``"auto"`` (structured for plain Linear stacks, else jacobian),
            ``"structured"``, ``"jacobian"`` or ``"ntvp"``.
        chunk: examples per chunk (``None``: sized from ``max_bytes``).
        params: parameters to differentiate: ``None`` (every trainable one), plain names,
            or a :class:`~weightlab.core.selectors.Selector`.
        max_bytes: bound on the Jacobian block held at once per parameter group.
        out_chunk: outputs per reverse pass (``jacrev``'s ``chunk_size``; ``None``: all).
        dtype: the kernel's dtype (accumulation; derivatives are in the model's dtype).

    Raises:
        ConfigError: an unknown form or method, ``structured`` on a module that is not a
            plain stack, inputs that do not fit the model, unknown parameter names.
    """
    if form not in FORMS:
        raise ConfigError(f"unknown NTK form {form!r}; choose one of: {', '.join(FORMS)}")
    if method not in METHODS:
        raise ConfigError(f"unknown NTK method {method!r}; choose one of: {', '.join(METHODS)}")
    if chunk is not None and int(chunk) < 1:
        raise ConfigError(f"chunk must be a positive number of examples, got {chunk}")
    _check_inputs(x1, x2)
    _check_mode(model)
    chosen = _select(model, params)
    n_out = _probe(model, x1)
    if x2 is not None:
        _probe(model, x2)
    setup = _Setup(chosen, n_out)
    if method == "auto":
        method = "structured" if qualifies_structured(model) else "jacobian"
    if method == "structured":
        blocks = _structured(model, x1, x2, setup, form, chunk, dtype)
    elif method == "jacobian":
        blocks = _jacobian(model, x1, x2, setup, form, chunk, dtype, max_bytes, out_chunk)
    else:
        blocks = _ntvp(model, x1, x2, setup, form, chunk, dtype)
    return _finish(blocks, form, n_out)
