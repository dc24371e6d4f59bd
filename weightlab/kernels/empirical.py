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

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap
from torch.nn.utils import parametrize

from weightlab.core.selectors import Selector, plain_name
from weightlab.errors import ConfigError
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
# inputs, parameters, qualification
# --------------------------------------------------------------------------------------


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


def qualifies_structured(model: nn.Module) -> bool:
    """Whether ``method="structured"`` applies: a plain stack of Linear layers and pointwise
    activations with no transforms attached."""
    return _stack_linears(model) is not None


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
# Jacobian contraction (with row-sparse embedding blocks)
# --------------------------------------------------------------------------------------


def _sparse_embeddings(model: nn.Module, x1: torch.Tensor, chosen: dict[str, str]) -> dict:
    """``{real weight name: module}`` of the Embeddings whose block is built from per-position
    gradients: looked up once per forward with batched ids ``(batch, ...)``."""
    cands = {}
    for mname, m in model.named_modules():
        if type(m) is nn.Embedding and m.max_norm is None and not parametrize.is_parametrized(m):
            wname = f"{mname}.weight" if mname else "weight"
            if wname in chosen:
                cands[wname] = m
    if not cands:
        return {}
    calls: dict[str, list[tuple[int, ...]]] = {k: [] for k in cands}
    handles = []
    for k, m in cands.items():
        handles.append(
            m.register_forward_hook(lambda _m, a, _o, k=k: calls[k].append(tuple(a[0].shape)))
        )
    try:
        with torch.no_grad():
            model(x1[:2])
    finally:
        for h in handles:
            h.remove()
    b = min(2, x1.shape[0])
    return {
        k: m
        for k, m in cands.items()
        if len(calls[k]) == 1 and len(calls[k][0]) >= 2 and calls[k][0][0] == b
    }


def _position_grads(
    model: nn.Module, emb: nn.Embedding, x: torch.Tensor, n_out: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(n, T)`` and per-position gradients ``(n, O, T, H)`` of the outputs with
    respect to the embedding's looked-up vectors (one batched backward per output)."""
    ids_all, g_all = [], []
    for sl in _chunks(x.shape[0], chunk):
        seen: dict[str, torch.Tensor] = {}

        def hook(_m: nn.Module, args: tuple, out: torch.Tensor, seen=seen) -> torch.Tensor:
            z = torch.zeros_like(out, requires_grad=True)
            seen["ids"], seen["z"] = args[0], z
            return out + z

        h = emb.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                xc = x[sl]
                out = model(xc).reshape(xc.shape[0], n_out)
                z = seen["z"]
                gs = [
                    torch.autograd.grad(out[:, o].sum(), z, retain_graph=o < n_out - 1)[0]
                    for o in range(n_out)
                ]
        finally:
            h.remove()
        ids = seen["ids"].reshape(xc.shape[0], -1)
        ids_all.append(ids)
        g_all.append(torch.stack([g.reshape(xc.shape[0], ids.shape[1], -1) for g in gs], 1))
    return torch.cat(ids_all), torch.cat(g_all)


def _embedding_block(
    model: nn.Module,
    emb: nn.Embedding,
    x1: torch.Tensor,
    x2: torch.Tensor | None,
    n_out: int,
    form: str,
    chunk: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``Σ_{t, s: id_t = id'_s ≠ pad} g_t · g'_s`` without a dense Jacobian."""
    i1, g1 = _position_grads(model, emb, x1, n_out, chunk)
    i2, g2 = (i1, g1) if x2 is None else _position_grads(model, emb, x2, n_out, chunk)
    g1, g2 = g1.to(dtype), g2.to(dtype)
    n1, n2 = i1.shape[0], i2.shape[0]
    shape = (n1, n2) if form == "trace" else (n1, n2, n_out, n_out)
    out = torch.zeros(shape, dtype=dtype, device=g1.device)
    pad = emb.padding_idx
    for sa in _chunks(n1, chunk):
        for sb in _chunks(n2, chunk):
            match = i1[sa, None, :, None] == i2[None, sb, None, :]  # (a, b, t, s)
            if pad is not None:
                match = match & (i1[sa, None, :, None] != pad)
            match = match.to(dtype)
            if form == "trace":
                dots = torch.einsum("aoth,bosh->abts", g1[sa], g2[sb])
                out[sa, sb] = (dots * match).sum((2, 3))
            else:
                dots = torch.einsum("aoth,bpsh->abopts", g1[sa], g2[sb])
                out[sa, sb] = torch.einsum("abopts,abts->abop", dots, match)
    return out


def _groups(sizes: dict[str, int], per_param_bytes: int, max_bytes: int) -> list[list[str]]:
    """Consecutive parameter groups whose Jacobians stay within ``max_bytes``."""
    groups: list[list[str]] = []
    cur: list[str] = []
    used = 0
    for name, numel in sizes.items():
        b = numel * per_param_bytes
        if cur and used + b > max_bytes:
            groups.append(cur)
            cur, used = [], 0
        cur.append(name)
        used += b
    if cur:
        groups.append(cur)
    return groups


def _contract(j1: torch.Tensor, j2: torch.Tensor, form: str) -> torch.Tensor:
    """``j (n, O, P)`` pairs -> ``(n1, n2, O, O)`` or, for ``trace``, ``(n1, n2)``."""
    if form == "trace":
        return j1.reshape(j1.shape[0], -1) @ j2.reshape(j2.shape[0], -1).T
    n1, o, _ = j1.shape
    n2 = j2.shape[0]
    k = j1.reshape(n1 * o, -1) @ j2.reshape(n2 * o, -1).T
    return k.reshape(n1, o, n2, o).permute(0, 2, 1, 3)


def _jacobian(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None,
    setup: _Setup,
    form: str,
    chunk: int | None,
    dtype: torch.dtype,
    max_bytes: int,
    out_chunk: int | None,
) -> dict[str, torch.Tensor]:
    n_out, chosen = setup.n_out, setup.names
    all_params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    blocks: dict[str, torch.Tensor] = {}
    c_default = chunk or 64
    sparse = _sparse_embeddings(model, x1, chosen)
    for wname, emb in sparse.items():
        blocks[chosen[wname]] = _embedding_block(model, emb, x1, x2, n_out, form, c_default, dtype)
    dense = {n: all_params[n].numel() for n in chosen if n not in sparse}
    if not dense:
        return blocks
    item = max(torch.finfo(dtype).bits // 8, next(iter(all_params.values())).element_size())
    n_total = x1.shape[0] + (0 if x2 is None else x2.shape[0])
    per_param = n_total * n_out * item
    for group in _groups(dense, per_param, max_bytes):
        frozen = {n: p for n, p in all_params.items() if n not in group}

        def f(pg: dict, xi: torch.Tensor, frozen: dict = frozen) -> torch.Tensor:
            out = functional_call(model, ({**frozen, **pg}, buffers), (xi.unsqueeze(0),))
            return out.reshape(-1)

        jac = vmap(jacrev(f, chunk_size=out_chunk), in_dims=(None, 0))
        pg = {n: all_params[n] for n in group}
        gsize = sum(dense[n] for n in group)
        fits = gsize * per_param <= max_bytes
        c = chunk or max(1, min(n_total, max_bytes // max(gsize * n_out * item, 1)))

        def jac_of(x: torch.Tensor, sl: slice, pg: dict = pg, jac: Callable = jac) -> dict:
            return {
                n: j.reshape(j.shape[0], n_out, -1).to(dtype) for n, j in jac(pg, x[sl]).items()
            }

        if fits:  # the group's whole Jacobian over the inputs fits: compute it once
            j1 = [jac_of(x1, sl) for sl in _chunks(x1.shape[0], c)]
            j1c = {n: torch.cat([d[n] for d in j1]) for n in group}
            del j1
            if x2 is None:
                j2c = j1c
            else:
                j2 = [jac_of(x2, sl) for sl in _chunks(x2.shape[0], c)]
                j2c = {n: torch.cat([d[n] for d in j2]) for n in group}
                del j2
            for n in group:
                blocks[chosen[n]] = _contract(j1c[n], j2c[n], form)
            del j1c, j2c
            continue
        # one oversized parameter group: blockwise over input chunks (recomputing J2)
        xb = x1 if x2 is None else x2
        acc = {}
        for sa in _chunks(x1.shape[0], c):
            ja = jac_of(x1, sa)
            for sb in _chunks(xb.shape[0], c):
                jb = jac_of(xb, sb)
                for n in group:
                    blk = _contract(ja[n], jb[n], form)
                    if n not in acc:
                        shape = (x1.shape[0], xb.shape[0], *blk.shape[2:])
                        acc[n] = torch.zeros(shape, dtype=dtype, device=blk.device)
                    acc[n][sa, sb] = blk
        for n in group:
            blocks[chosen[n]] = acc[n]
    return blocks


# --------------------------------------------------------------------------------------
# NTK-vector products
# --------------------------------------------------------------------------------------


def _batched_f(model: nn.Module, n_out: int) -> Callable:
    all_params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def f(pg: dict, x: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, ({**all_params, **pg}, buffers), (x,))
        return out.reshape(x.shape[0], n_out)

    return f


def ntk_vector_product(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor,
    v: torch.Tensor,
    *,
    params: object = None,
) -> torch.Tensor:
    """``Θ(x1, x2) v`` for ``v (n2, O)`` without forming ``Θ``: ``J1 (J2ᵀ v)``, one ``vjp`` on
    ``x2`` and one ``jvp`` on ``x1`` (Novak et al. 2022, Sec. 3.2). Returns ``(n1, O)`` in the
    model's dtype."""
    _check_inputs(x1, x2)
    n_out = _probe(model, x1)
    chosen = _select(model, params)
    if v.shape != (x2.shape[0], n_out):
        raise ConfigError(
            f"v has shape {tuple(v.shape)}, expected {(x2.shape[0], n_out)}; one row per x2 example"
        )
    f = _batched_f(model, n_out)
    pg = {n: p.detach() for n, p in model.named_parameters() if n in chosen}
    _, pull = vjp(lambda p: f(p, x2), pg)
    (tangent,) = pull(v.to(next(iter(pg.values())).dtype))
    return jvp(lambda p: f(p, x1), (pg,), (tangent,))[1]


def _ntvp(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None,
    setup: _Setup,
    form: str,
    chunk: int | None,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    n_out, chosen = setup.n_out, setup.names
    f = _batched_f(model, n_out)
    xb = x1 if x2 is None else x2
    n1, n2 = x1.shape[0], xb.shape[0]
    all_params = {n: p.detach() for n, p in model.named_parameters()}
    groups = [[n] for n in chosen] if form == "blocks" else [list(chosen)]
    c = chunk or 32
    blocks: dict[str, torch.Tensor] = {}
    for group in groups:
        pg = {n: all_params[n] for n in group}
        k = torch.zeros(n1, n2, n_out, n_out, dtype=dtype, device=x1.device)
        for sb in _chunks(n2, c):
            xs = xb[sb]
            nb = xs.shape[0]
            _, pull = vjp(lambda p, xs=xs: f(p, xs), pg)
            basis = torch.eye(nb * n_out, dtype=next(iter(pg.values())).dtype, device=x1.device)
            basis = basis.reshape(nb * n_out, nb, n_out)
            (tangents,) = vmap(pull)(basis)

            def push(t: dict, pg: dict = pg) -> torch.Tensor:
                return jvp(lambda p: f(p, x1), (pg,), (t,))[1]

            try:
                cols = vmap(push)(tangents)  # (nb * O, n1, O)
            except (RuntimeError, NotImplementedError) as e:
                first = str(e).strip().splitlines()[0]
                raise ConfigError(
                    f"method='ntvp' needs forward-mode AD of every op ({first}); "
                    "use method='jacobian'"
                ) from None
            cols = cols.reshape(nb, n_out, n1, n_out).to(dtype)
            k[:, sb] = cols.permute(2, 0, 3, 1)
        key = chosen[group[0]] if form == "blocks" else "all"
        blocks[key] = torch.einsum("abii->ab", k) if form == "trace" else k
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
