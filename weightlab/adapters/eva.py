"""EVA, Explained Variance Adaptation (Paischer et al. 2024, "One Initialization to Rule
them All: Fine-tuning via Explained Variance Adaptation", Sec. 3): a data-driven LoRA init.

For every adapted layer an incremental SVD of its minibatch *input* activations
``X (tokens, in)`` gives the right-singular vectors; ``A`` = the top-r of them (rows of
norm 1), ``B = 0``, so ΔW = 0 at start. Ranks are then redistributed under a global
budget by explained variance: each layer offers its first ``round(ρ·r)`` components, all
components of all layers are ranked by explained-variance ratio, and the budget
(Σ r over the targets) goes to the largest; a layer may end with rank 0 (dropped) up to
``round(ρ·r)``. ρ = 1 keeps the ranks uniform. With ``adjust_scaling=True`` α follows the
new rank (α·r'/r), so the scale s = α/r is unchanged (PEFT's ``adjust_scaling_factors``).

Use it as part of adapter construction, before any optimizer exists::

    add_adapters(model, select, rank=8, init=EVA(batches, n_batches=4))

Differences from PEFT's EVA (``peft.tuners.lora.eva``), stated:

- a fixed number of batches is read (PEFT stops on convergence, τ);
- layers fed the same input (q, k, v) share one SVD, found by the *identity* of the input
  tensor in the first forward (PEFT hashes whole tensors in an extra forward);
- the SVD of each update is float64, randomized as PEFT's (``svd="lowrank"``, q = 2k,
  4 iterations, but drawn from a seeded generator) or exact (``svd="exact"``);
- inputs of any rank ≥ 1 are flattened to ``(-1, in)`` (BERT's 2-D pooler input works);
- padding is left out only with ``token_mask`` (a function of the batch), else every
  position counts.

With those, on the same batches and ρ, EVA gives PEFT's ranks and PEFT's A up to sign
(tests/test_adapters_eva.py: ``svd="exact"`` against PEFT with an exact SVD).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Any

import torch
from torch import nn

from weightlab.adapters.inits import AdapterInit, AdapterInitContext, randomized_svd
from weightlab.adapters.lora import AdapterPlan, rebind
from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator

__all__ = ["EVA", "IncrementalSVD", "redistribute_ranks"]


class IncrementalSVD:
    """Incremental PCA of a stream of row batches (Ross et al. 2008, "Incremental Learning
    for Robust Visual Tracking", Sec. 3.1, with the mean update; the algorithm of
    scikit-learn's ``IncrementalPCA.partial_fit``), float64, exact SVD per update.

    ``svd="exact"``: ``torch.linalg.svd`` of each stacked update (float64); ``"lowrank"``:
    the randomized rank-q SVD with q = 2k and 4 subspace iterations in float32 (PEFT's hook
    settings, Halko et al. 2011) drawn from ``generator``, ~15x faster on wide layers.

    After each :meth:`update`: ``components`` ``(k, d)`` the top-k right-singular vectors
    of the centred data seen so far (sign: the largest-magnitude entry of each row is
    positive), ``singular_values`` ``(k,)`` and ``explained_variance_ratio`` ``(k,)`` =
    S² / total sum of squares about the mean.
    """

    def __init__(
        self, k: int, svd: str = "exact", generator: torch.Generator | None = None
    ) -> None:
        self.k, self.svd, self.generator = k, svd, generator
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.sumsq = 0.0
        self.components: torch.Tensor | None = None
        self.singular_values: torch.Tensor | None = None
        self.explained_variance_ratio: torch.Tensor | None = None
        self._pending: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float64)
        if self.components is None:  # the first SVD needs at least k rows
            self._pending.append(x)
            if sum(t.shape[0] for t in self._pending) < self.k:
                return
            x = torch.cat(self._pending)
            self._pending = []
        n = x.shape[0]
        total = self.count + n
        bmean = x.mean(0)
        if self.mean is None:
            stacked = x - bmean
            mean = bmean
        else:
            corr = (self.count * n / total) ** 0.5 * (self.mean - bmean)
            stacked = torch.cat(
                [self.singular_values[:, None] * self.components, x - bmean, corr[None]]
            )
            mean = (self.count * self.mean + n * bmean) / total
        self.sumsq += float((x * x).sum())
        q = 2 * self.k
        if self.svd == "exact" or q >= min(stacked.shape):
            _, s, vh = torch.linalg.svd(stacked, full_matrices=False)
        else:
            # float32, as PEFT's hook (7x faster than float64 here, same top components)
            _, s, v = randomized_svd(stacked.float(), q, 4, self.generator)
            s, vh = s.double(), v.mT.double()
        rows = torch.arange(vh.shape[0])
        sign = torch.sign(vh[rows, vh.abs().argmax(1)])
        vh = vh * torch.where(sign == 0, torch.ones_like(sign), sign)[:, None]
        self.count, self.mean = total, mean
        ss_about_mean = self.sumsq - total * float(mean @ mean)
        self.components, self.singular_values = vh[: self.k], s[: self.k]
        self.explained_variance_ratio = s[: self.k] ** 2 / ss_about_mean


def redistribute_ranks(
    ratios: dict[str, torch.Tensor], budget: int, leaders: dict[str, str]
) -> dict[str, int]:
    """EVA's rank redistribution (Paischer et al. 2024, Sec. 3.2; PEFT's rule): every
    layer offers the explained-variance ratios of its first ``max_rank`` components
    (``ratios[name]``; a layer sharing another's input offers the same values), the
    ``budget`` largest over all layers are kept (ties broken by ``torch.argsort`` over the
    concatenation in the order of ``ratios``, PEFT's call), and a
    layer's rank is how many of its own were kept. ``leaders`` maps a layer that shares
    an input to the layer whose SVD it reuses; such a pair is swapped if the sharer got
    more, so the leader holds the higher rank."""
    names = list(ratios)
    owner = [n for n in names for _ in range(ratios[n].numel())]
    values = torch.cat([ratios[n].reshape(-1) for n in names])
    order = values.argsort(descending=True)[:budget]  # ties: as PEFT's (same call)
    counts = dict.fromkeys(names, 0)
    for i in order.tolist():
        counts[owner[i]] += 1
    for name, lead in leaders.items():
        if counts[name] > counts[lead]:
            counts[name], counts[lead] = counts[lead], counts[name]
    return counts


def _batches(data: Any, n_batches: int, batch_size: int | None) -> list:
    """The first ``n_batches`` batches of ``data``: a tensor (split into ``batch_size``
    rows), a weightlab ``TaskData`` (its training inputs) or an iterable of batches."""
    train = getattr(data, "train", None)
    if train is not None and hasattr(train, "x"):
        data = train.x
    if isinstance(data, torch.Tensor):
        size = batch_size or -(-data.shape[0] // n_batches)
        data = list(torch.split(data, size))
    elif not isinstance(data, Iterable):
        raise ConfigError(
            f"EVA data must be a tensor, a TaskData or an iterable of batches, got "
            f"{type(data).__name__}"
        )
    out = list(islice(iter(data), n_batches))
    if len(out) < n_batches:
        raise ConfigError(
            f"EVA asked for n_batches={n_batches} but the data has only {len(out)}; "
            "lower n_batches or pass more data"
        )
    return out


def _rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A layer input as ``(rows, in)``: the positions where ``mask`` is true when the
    input is ``(*mask.shape, in)`` (tokens of a padded batch), else every position."""
    if mask is not None and x.ndim == mask.ndim + 1:
        if x.shape[:-1] != mask.shape:
            raise ConfigError(
                f"EVA's token_mask has shape {tuple(mask.shape)} but a layer input has "
                f"{tuple(x.shape[:-1])} positions; return a mask matching the layers' inputs "
                "(for padding-trimmed BERT batches: weightlab.models.bert.trimmed_token_mask)"
            )
        return x[mask.bool()]
    return x.reshape(-1, x.shape[-1])


def _default_forward(model: nn.Module, batch: Any) -> None:
    """``model(**batch)`` for a dict, ``model(batch[0])`` for an ``(x, y)`` pair, else
    ``model(batch)``."""
    if isinstance(batch, dict):
        model(**batch)
    elif isinstance(batch, tuple | list):
        model(batch[0])
    else:
        model(batch)


class EVA(AdapterInit):
    """EVA init (Paischer et al. 2024): A = top-r right-singular vectors of each layer's
    input activations, B = 0, ranks redistributed by explained variance (module docstring).

    Args:
        data: a tensor of model inputs (split into batches), a ``TaskData`` (its training
            inputs) or an iterable of batches (dicts go in as ``model(**batch)``, pairs as
            ``model(batch[0])``).
        n_batches: how many batches are read (a fixed number; ≥ 1).
        rho: ρ ≥ 1; a layer's rank may grow to ``round(ρ·r)`` (PEFT's default 2).
        batch_size: rows per batch when ``data`` is one tensor (default: n/n_batches).
        whiten: divide each A row by √(singular value) (PEFT's ``whiten``).
        adjust_scaling: α follows the new rank so s = α/r is unchanged.
        forward: ``forward(model, batch)`` to run one batch (default: see ``data``).
        svd: ``"lowrank"`` (default; randomized SVD per update, PEFT's q = 2k, 4
            iterations, drawn from ``generator(derive_seed(seed, layer))``) or ``"exact"``.
        seed: seed of the randomized SVD's test matrices.
        token_mask: ``token_mask(batch) -> (B, L)`` bool; rows of a ``(B, L, in)`` layer
            input where it is false (padding) are left out of the SVD (PEFT drops padding
            with the attention mask the same way); other inputs (the pooler's ``(B, in)``)
            keep every row. For packed token inputs: ``lambda x: x[:, 1]``.

    After ``add_adapters``: ``ranks`` ``{layer: rank}`` (0 = dropped),
    ``explained_variance_ratio`` ``{layer: (ρr,)}``, ``shared`` ``{layer: leader}``.
    """

    name = "eva"
    needs_data = True

    def __init__(
        self,
        data: Any,
        n_batches: int,
        *,
        rho: float = 2.0,
        batch_size: int | None = None,
        whiten: bool = False,
        adjust_scaling: bool = True,
        forward: Callable[[nn.Module, Any], Any] | None = None,
        svd: str = "lowrank",
        seed: int = 0,
        token_mask: Callable[[Any], torch.Tensor] | None = None,
    ) -> None:
        if data is None:
            raise ConfigError("EVA needs data: pass EVA(data, n_batches) with model inputs")
        if not isinstance(n_batches, int) or n_batches < 1:
            raise ConfigError(f"EVA n_batches must be an integer >= 1, got {n_batches!r}")
        if not rho >= 1.0:
            raise ConfigError(f"EVA rho must be >= 1 (1 keeps ranks uniform), got {rho!r}")
        if svd not in ("lowrank", "exact"):
            raise ConfigError(f"EVA svd must be 'lowrank' or 'exact', got {svd!r}")
        self.svd, self.seed, self.token_mask = svd, seed, token_mask
        self.data, self.n_batches, self.rho = data, n_batches, float(rho)
        self.batch_size, self.whiten, self.adjust_scaling = batch_size, whiten, adjust_scaling
        self.forward = forward or _default_forward
        self.ranks: dict[str, int] = {}
        self.explained_variance_ratio: dict[str, torch.Tensor] = {}
        self.shared: dict[str, str] = {}
        self._svd: dict[str, IncrementalSVD] = {}

    @torch.no_grad()
    def plan(self, model: nn.Module, plans: list[AdapterPlan]) -> list[AdapterPlan]:
        """Run ``n_batches`` forwards with input hooks, then redistribute the ranks."""
        convs = [p.name for p in plans if p.kind != "Linear"]
        if convs:
            raise ConfigError(
                f"EVA adapts Linear layers only; exclude {', '.join(convs)} from the selector"
            )
        batches = _batches(self.data, self.n_batches, self.batch_size)
        modules = {p.name: model.get_submodule(p.name) for p in plans}
        max_rank = {
            p.name: max(1, min(round(p.rank * self.rho), p.in_features, p.out_features))
            for p in plans
        }
        seen: dict[str, torch.Tensor] = {}  # layer -> its input tensor in the first forward
        shared: dict[str, str] = {}
        svd: dict[str, IncrementalSVD] = {}

        def hook_for(name: str):
            def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
                x = args[0] if args else next(iter(kwargs.values()), None)
                if not isinstance(x, torch.Tensor):
                    return
                if first[0]:  # record inputs; a tensor already seen is a shared input
                    if name not in seen:
                        lead = next((n for n, t in seen.items() if t is x), None)
                        if lead is not None:
                            shared[name] = lead
                        seen[name] = x
                elif name not in shared:
                    svd[name].update(_rows(x, mask[0]))

            return hook

        first, mask = [True], [None]
        handles = [
            m.register_forward_pre_hook(hook_for(n), with_kwargs=True) for n, m in modules.items()
        ]
        was_training = model.training
        model.eval()
        try:
            for i, batch in enumerate(batches):
                mask[0] = self.token_mask(batch) if self.token_mask is not None else None
                self.forward(model, batch)
                if i > 0:
                    continue
                missing = [n for n in modules if n not in seen]
                if missing:
                    raise ConfigError(
                        f"EVA could not hook {', '.join(missing)} (no tensor input in a "
                        "forward); exclude them from the selector or pass forward="
                    )
                shared = {n: shared[lead] if lead in shared else lead for n, lead in shared.items()}
                for n, lead in shared.items():  # a group offers its largest round(rho r)
                    max_rank[lead] = max(max_rank[n], max_rank[lead])
                for n, lead in shared.items():
                    max_rank[n] = max_rank[lead]
                for n, x in seen.items():
                    if n not in shared:
                        g = generator(derive_seed(self.seed, n))
                        svd[n] = IncrementalSVD(max_rank[n], self.svd, g)
                        svd[n].update(_rows(x, mask[0]))
                seen.clear()
                first[0] = False
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        unfit = [n for n, s in svd.items() if s.components is None]
        if unfit:
            raise ConfigError(
                f"EVA saw fewer input rows than components for {', '.join(unfit)}; "
                "pass more data or a lower rho"
            )
        # PEFT's order of ties: layers with their own SVD first, then the sharers
        order = [p.name for p in plans if p.name not in shared] + list(shared)
        ratios = {n: svd[shared.get(n, n)].explained_variance_ratio[: max_rank[n]] for n in order}
        ranks = redistribute_ranks(ratios, sum(p.rank for p in plans), shared)
        self.ranks = {p.name: ranks[p.name] for p in plans}
        self.explained_variance_ratio = {p.name: ratios[p.name] for p in plans}
        self.shared, self._svd = dict(shared), {n: svd[shared.get(n, n)] for n in modules}
        out = []
        for p in plans:
            r = ranks[p.name]
            if r == 0:
                continue
            alpha = p.alpha * r / p.rank if self.adjust_scaling else p.alpha
            out.append(rebind(p, rank=r, alpha=alpha))
        return out

    @torch.no_grad()
    def __call__(self, adapter: Any, ctx: AdapterInitContext) -> None:
        svd = self._svd[ctx.name]
        r = adapter.rank
        a = svd.components[:r].clone()
        if self.whiten:
            a = a / svd.singular_values[:r].sqrt()[:, None]
        adapter.lora_A.copy_(a)
        adapter.lora_B.zero_()

    def peft_init(self) -> bool | str:
        return "eva"

    def rank_table(self) -> Sequence[tuple[str, int]]:
        """``[(layer, rank)]`` in target order (0 = dropped by the redistribution)."""
        return list(self.ranks.items())

    def __repr__(self) -> str:
        return f"EVA(n_batches={self.n_batches}, rho={self.rho:g})"
