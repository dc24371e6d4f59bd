"""Hidden-state extraction: every requested layer's output in ONE forward per batch, via
forward hooks, reduced per example to a feature vector in a stated way.

Feature forms (``pool``), stated in every result:

- ``"flattened"``: each example's output tensor flattened, padding positions included
  (as torch-cka forms features: ``out.flatten(1)``);
- ``"pooled"``: the mean over tokens of a ``(batch, tokens, dim)`` output, weighted by
  the attention mask when the batch carries one (sentence-transformers' mean pooling);
  for a ``(batch, channels, h, w)`` output, the mean over the spatial positions;
- ``"sentence"``: MiniLM's sentence embedding applied to a layer: the masked mean over
  tokens, then L2 normalisation (all-MiniLM-L6-v2's pooling and ``Normalize`` modules).

For our :class:`~weightlab.models.bert.BertModel` (and :class:`SentenceEncoder`, which
shares its module names) the default layers are the embedding output (hidden state 0) and
every ``encoder.layer.i`` output: 7 hidden states for MiniLM. Batches are tensors (``model(x)``;
packed ``(B, 2, L)`` token inputs carry their mask), ``(x, y, ...)`` tuples (``x`` used)
or dicts of keyword arguments (``model(**batch)``, e.g. ``input_ids`` and
``attention_mask``).

Probes never change the model: extraction runs under ``torch.no_grad()`` in eval mode,
and every module's train/eval mode is restored afterwards (hooks removed, tested).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.probes.cka import (
    DEFAULT_SIGMA_FRAC,
    FEATURES,
    CKAMatrix,
    MinibatchCKA,
)
from weightlab.progress import progress_bar

__all__ = [
    "HiddenStates",
    "bert_layers",
    "hidden_state_cka",
    "hidden_states",
    "iter_hidden_states",
    "pool_states",
]


@dataclass(frozen=True)
class HiddenStates:
    """Per-layer features ``(n, D)`` in layer order, with the feature form stated."""

    names: tuple[str, ...]
    features: dict[str, torch.Tensor]
    pool: str
    n: int
    forwards: int

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.features:
            raise ConfigError(f"no layer {name!r}; layers: {', '.join(self.names)}")
        return self.features[name]

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "pool": self.pool,
            "n": self.n,
            "forwards": self.forwards,
            "dims": {k: int(v.shape[1]) for k, v in self.features.items()},
        }


def bert_layers(model: nn.Module) -> list[str]:
    """``["embeddings", "encoder.layer.0", …]``: the hidden states of a BERT-named model
    (our BertModel or SentenceEncoder), or a ConfigError when it has no such modules."""
    names = dict(model.named_modules())
    if "embeddings" not in names or "encoder.layer" not in names:
        raise ConfigError(
            "pass layers=[...] (full module names): the model has no BERT 'embeddings' and "
            "'encoder.layer' modules to default to"
        )
    return ["embeddings", *(f"encoder.layer.{i}" for i in range(len(names["encoder.layer"])))]


def _resolve(model: nn.Module, layers: Sequence[str] | None) -> list[tuple[str, nn.Module]]:
    if layers is None:
        layers = bert_layers(model)
    if isinstance(layers, str):
        layers = [layers]
    modules = dict(model.named_modules())
    missing = [n for n in layers if n not in modules]
    if missing:
        known = ", ".join(n for n in modules if n)
        raise ConfigError(
            f"no layer(s) {', '.join(map(repr, missing))}; layers that exist: {known}"
        )
    if len(set(layers)) != len(layers):
        raise ConfigError(f"layers must be distinct, got {list(layers)}")
    if not layers:
        raise ConfigError("layers is empty; name at least one module")
    return [(n, modules[n]) for n in layers]


def _split(batch) -> tuple[tuple, dict, torch.Tensor | None]:
    """(args, kwargs, attention mask or None) of one batch."""
    if isinstance(batch, Mapping):
        mask = batch.get("attention_mask")
        return (), dict(batch), mask
    if isinstance(batch, tuple | list):
        if not batch:
            raise ConfigError("an empty batch tuple was given; batches are x, (x, y) or dicts")
        return _split(batch[0])
    if isinstance(batch, torch.Tensor):
        mask = None
        if not batch.is_floating_point() and batch.ndim == 3 and batch.shape[1] == 2:
            mask = batch[:, 1]  # packed (ids, mask) input, see models.bert.pack_inputs
        return (batch,), {}, mask
    raise ConfigError(
        f"a batch must be a tensor, an (x, y, ...) tuple or a dict of model inputs, got "
        f"{type(batch).__name__}"
    )


def pool_states(out: torch.Tensor, pool: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One layer's output ``(B, ...)`` -> features ``(B, D)`` in the form ``pool``."""
    if pool not in FEATURES:
        raise ConfigError(f"unknown pool {pool!r}; choose one of: {', '.join(FEATURES)}")
    if pool == "flattened":
        return out.reshape(out.shape[0], -1)
    if out.ndim == 4 and pool == "pooled":
        return out.mean((2, 3))
    if out.ndim != 3:
        raise ConfigError(
            f"pool={pool!r} needs (batch, tokens, dim) outputs, got shape {tuple(out.shape)}; "
            "use pool='flattened'"
        )
    if mask is None:
        pooled = out.mean(1)
    else:
        m = mask[:, : out.shape[1]].to(out.dtype).unsqueeze(-1)  # right padding (trimmed)
        pooled = (out * m).sum(1) / m.sum(1).clamp_min(1e-9)
    if pool == "sentence":
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
    return pooled


@contextmanager
def _probing(model: nn.Module):
    """Eval mode for the duration; every module's mode restored after. (Gradients are
    switched off around each forward only: a generator must not hold the global grad mode
    across its ``yield``s, or interleaved generators restore it out of order.)"""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def iter_hidden_states(
    model: nn.Module,
    batches: Iterable,
    layers: Sequence[str] | None = None,
    pool: str = "flattened",
    *,
    device: torch.device | str | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield ``{layer: (B, D) features}`` for each batch, from ONE forward per batch with a
    forward hook on every requested layer (a tuple output contributes its first element).
    ``device`` moves the batch's tensors before the forward."""
    if pool not in FEATURES:
        raise ConfigError(f"unknown pool {pool!r}; choose one of: {', '.join(FEATURES)}")
    named = _resolve(model, layers)
    store: dict[str, torch.Tensor] = {}
    mask_box: list[torch.Tensor | None] = [None]

    def hook(name: str):
        def fn(_module, _inputs, output):
            out = output[0] if isinstance(output, tuple | list) else output
            if name in store:
                raise ConfigError(
                    f"layer {name!r} ran twice in one forward; its hidden state is ambiguous: "
                    "name a module that runs once"
                )
            store[name] = pool_states(out.detach(), pool, mask_box[0])

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in named]
    try:
        with _probing(model):
            for batch in batches:
                args, kwargs, mask = _split(batch)
                if device is not None:
                    args = tuple(a.to(device) if torch.is_tensor(a) else a for a in args)
                    kwargs = {
                        k: v.to(device) if torch.is_tensor(v) else v for k, v in kwargs.items()
                    }
                    mask = None if mask is None else mask.to(device)
                mask_box[0] = mask
                store.clear()
                with torch.no_grad():
                    model(*args, **kwargs)
                absent = [n for n, _ in named if n not in store]
                if absent:
                    raise ConfigError(
                        f"layer(s) {', '.join(absent)} did not run in the forward; name "
                        "modules on the forward path"
                    )
                yield {n: store[n] for n, _ in named}
    finally:
        for h in handles:
            h.remove()


def hidden_states(
    model: nn.Module,
    batches: Iterable,
    layers: Sequence[str] | None = None,
    pool: str = "flattened",
    *,
    device: torch.device | str | None = None,
    out_device: torch.device | str | None = None,
    progress: bool = False,
) -> HiddenStates:
    """Every requested layer's features over all ``batches`` (one forward per batch),
    concatenated over examples (``out_device`` moves them, e.g. to "cpu")."""
    batches = list(batches) if not isinstance(batches, Sequence) else batches
    parts: dict[str, list[torch.Tensor]] = {}
    forwards = 0
    bar = progress_bar(len(batches), "hidden states", "batch") if progress else None
    for states in iter_hidden_states(model, batches, layers, pool, device=device):
        for name, t in states.items():
            parts.setdefault(name, []).append(t if out_device is None else t.to(out_device))
        forwards += 1
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    if not forwards:
        raise ConfigError("no batches were given; pass at least one batch of inputs")
    feats = {}
    for name, ts in parts.items():
        dims = {t.shape[1] for t in ts}
        if len(dims) > 1:
            raise ConfigError(
                f"layer {name!r} gives {sorted(dims)} features per example across batches "
                "(different sequence lengths); pad every batch to one length or pool"
            )
        feats[name] = torch.cat(ts)
    names = tuple(parts)
    return HiddenStates(names, feats, pool, int(feats[names[0]].shape[0]), forwards)


def hidden_state_cka(
    model: nn.Module,
    batches: Iterable,
    layers: Sequence[str] | None = None,
    *,
    pool: str = "flattened",
    other: nn.Module | None = None,
    other_layers: Sequence[str] | None = None,
    other_batches: Iterable | None = None,
    kernel: str = "linear",
    estimator: str = "debiased",
    sigma_frac: float = DEFAULT_SIGMA_FRAC,
    gram_dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> CKAMatrix:
    """Minibatch CKA (Nguyen, Raghu & Kornblith 2021) of every layer pair, streamed: one
    forward per batch collects all layers' features, their Grams are stacked and every
    pair's HSIC comes from one matrix product; nothing but the ``(L, L)`` sums is kept.
    With ``other`` (a second model, on ``other_batches`` or the same batches) the matrix
    is ``model``'s layers × ``other``'s layers, one forward of each per batch."""
    acc = MinibatchCKA(
        kernel=kernel,
        estimator=estimator,
        features=pool,
        sigma_frac=sigma_frac,
        gram_dtype=gram_dtype,
    )
    batches = list(batches) if not isinstance(batches, Sequence) else batches
    if other is None and (other_layers is not None or other_batches is not None):
        raise ConfigError("other_layers/other_batches need other= (a second model)")
    ob = batches if other_batches is None else list(other_batches)
    if len(ob) != len(batches):
        raise ConfigError(
            f"other_batches has {len(ob)} batches, batches {len(batches)}; pass the same "
            "examples in the same batches"
        )
    bar = progress_bar(len(batches), "CKA", "batch") if progress else None
    with closing(iter_hidden_states(model, batches, layers, pool, device=device)) as rows:
        if other is None:
            for r in rows:
                acc.update(r)
                if bar is not None:
                    bar.update()
        else:
            with closing(iter_hidden_states(other, ob, other_layers, pool, device=device)) as cs:
                for r, c in zip(rows, cs, strict=True):
                    acc.update(r, c)
                    if bar is not None:
                        bar.update()
    if bar is not None:
        bar.close()
    return acc.result()
