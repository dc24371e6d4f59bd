"""The ``jacobian`` and ``ntvp`` methods of :func:`weightlab.kernels.empirical.empirical_ntk`
(Novak et al. 2022, "Fast Finite Width Neural Tangent Kernel", ICML, Sec. 3.1 Jacobian
contraction, Sec. 3.2 NTK-vector products), with the row-sparse embedding blocks."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap
from torch.nn.utils import parametrize

from weightlab.errors import ConfigError
from weightlab.kernels._ntk_common import _check_inputs, _chunks, _probe, _select, _Setup

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


def _vmapped_or_looped(model: nn.Module, f: Callable, out_chunk: int | None) -> Callable:
    """Per-example Jacobians of ``f(pg, xi)`` over a batch: ``vmap(jacrev)`` where the model
    runs under ``vmap``; else (data-dependent control flow, ``.item()``: e.g. transformers'
    BertModel given an ``attention_mask``) one ``jacrev`` per example in a loop, with a
    warning. Same values either way; the loop is slower."""
    batched = vmap(jacrev(f, chunk_size=out_chunk), in_dims=(None, 0))
    single = jacrev(f, chunk_size=1)  # chunk_size=1: a loop over outputs, no vmap
    state = {"loop": False}

    def jac(pg: dict, xs: torch.Tensor) -> dict:
        if not state["loop"]:
            try:
                return batched(pg, xs)
            except RuntimeError as e:
                if "vmap" not in str(e):
                    raise
                state["loop"] = True
                warnings.warn(
                    f"empirical_ntk: {type(model).__name__} cannot run under vmap "
                    f"({str(e).splitlines()[0][:120]}); computing per-example Jacobians in "
                    "a loop instead (same values, slower)",
                    RuntimeWarning,
                    stacklevel=2,
                )
        outs = [single(pg, xi) for xi in xs]
        return {n: torch.stack([o[n] for o in outs]) for n in outs[0]}

    return jac


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

        jac = _vmapped_or_looped(model, f, out_chunk)
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
