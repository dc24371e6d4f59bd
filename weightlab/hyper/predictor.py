"""Weight predictors for MLPs of any width: LoGAH's low-rank decoder and a chunk-copying control.

LoGAH (Zhou et al. 2024, "LoGAH: Predicting 774-Million-Parameter Transformers using Graph
HyperNetworks with 1/100 Parameters", row [#55]) replaces the chunk-copying decoder of graph
hypernetworks (GHN-2/3: predict one fixed-size chunk and copy it until the tensor is full)
by a low-rank decoder that "expands to significantly wider networks without requiring as
excessive increase of parameters". The graph network that embeds each node of the
computational graph is out of scope here: each layer is described by five numbers,

    d = [one-hot(first, hidden, last), ln(fan_in)/5, ln(fan_out)/5]

and the decoder maps ``d`` to a weight matrix (LoGAH's low-rank decoder, listed in the paper's
appendix as ``ConvDecoder3LoRA``):

    h = MLP(d)                       5 → 64 → 64 → 2r²   (ReLU between layers)
    H = ReLU(reshape(h, (2r, r)))
    Y = H Cᵀ + c                     Linear(r, c_max): (2r, c_max)
    [A; B] = reshape(Y, (2c_max, r))  a row-major reshape (no transpose), split in two
                                      (c_max, r) halves, as the authors' ConvDecoder3LoRA
    W = A[:out] B[:in]ᵀ / √in        rank ≤ r, any out, in ≤ c_max

with ``r = 32``, ``c_max = 256``: 146,112 parameters (:class:`LowRankPredictor`). The
``1/√in`` keeps the predicted layer's output variance independent of its fan-in. Biases are
predicted as zero.

The control (:class:`ChunkPredictor`), an "existing hypernetwork" of the GHN kind, has the
same descriptor and about as many parameters (149,376): ``MLP 5 → 128 → 128 → 1024`` gives
one 32×32 chunk, which is tiled ``⌈out/32⌉ × ⌈in/32⌉`` times, cropped to ``out × in`` and
divided by ``√in``.

:func:`predict_weights` turns either predictor into the state dict of an
:class:`~weightlab.models.mlp.MLP` (``layers.i.weight`` / ``layers.i.bias``);
:func:`meta_train` trains a predictor on a task by drawing one width per step from a set,
predicting the net, and back-propagating its cross-entropy on a batch into the predictor
(:func:`torch.func.functional_call` with the predicted weights). It is a custom seeded loop:
the trained module changes shape every step, which :func:`weightlab.train.train` cannot
express.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from weightlab.data.task import TaskData
from weightlab.errors import ConfigError
from weightlab.models.mlp import MLP
from weightlab.progress import progress_bar
from weightlab.seeding import derive_seed, generator

__all__ = [
    "ChunkPredictor",
    "LowRankPredictor",
    "WeightPredictor",
    "layer_descriptors",
    "meta_train",
    "predict_weights",
]

DESCRIPTOR_SIZE = 5  # one-hot(first, hidden, last), ln(in)/5, ln(out)/5


def layer_descriptors(widths: Sequence[int]) -> torch.Tensor:
    """The ``(L, 5)`` float64 descriptors of an MLP of ``widths = [in, h1, ..., out]``: per
    layer ``[first, hidden, last, ln(fan_in)/5, ln(fan_out)/5]`` (a single-layer net's
    one layer is marked first)."""
    widths = [int(w) for w in widths]
    n = len(widths) - 1
    rows = []
    for i in range(n):
        kind = [0.0, 0.0, 0.0]
        kind[0 if i == 0 else (2 if i == n - 1 else 1)] = 1.0
        rows.append([*kind, math.log(widths[i]) / 5, math.log(widths[i + 1]) / 5])
    return torch.tensor(rows, dtype=torch.float64)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of ``sizes`` with ReLU between them, left uninitialized (:func:`_init_`
    draws them; the global RNG is never touched)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.utils.skip_init(nn.Linear, a, b))
    return nn.Sequential(*layers)


def _init_(module: nn.Module, seed: int) -> None:
    """PyTorch's default Linear init, ``U(±1/√fan_in)`` for weights and biases, drawn in
    module order from ``generator(seed)`` (not the global RNG)."""
    g = generator(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                bound = 1 / math.sqrt(m.in_features)
                for p in (m.weight, m.bias):
                    p.copy_(torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 - 1)
                    p.mul_(bound)


class WeightPredictor(nn.Module):
    """Base class: ``forward(descriptors, shapes)`` maps ``(L, 5)`` layer descriptors and
    the layers' ``(out, in)`` shapes to ``L`` weight matrices. ``c_max`` bounds every
    fan-in and fan-out it can predict (``None``: unbounded)."""

    c_max: int | None = None

    def check_widths(self, widths: Sequence[int]) -> None:
        """One-line :class:`ConfigError` for a width this predictor cannot emit."""
        ws = [int(w) for w in widths]
        if len(ws) < 2 or any(w <= 0 for w in ws):
            raise ConfigError(f"MLP widths must be >= 2 positive integers, got {ws}")
        if self.c_max is not None and max(ws) > self.c_max:
            raise ConfigError(
                f"width {max(ws)} of the MLP {ws} is above the predictor's c_max = {self.c_max}; "
                f"use widths <= {self.c_max} or a predictor with a larger c_max"
            )


class LowRankPredictor(WeightPredictor):
    """LoGAH's low-rank decoder on a 5-number layer descriptor (see the module docstring):
    ``W = A[:out] B[:in]ᵀ / √in`` with ``A, B ∈ R^{c_max×r}`` decoded from an MLP
    ``5 → hidden → hidden → 2r²``, a ReLU and ``Linear(r, c_max)``.

    Args:
        rank: ``r`` (32 in the recipe).
        c_max: the widest fan-in or fan-out it predicts (256).
        hidden: the MLP's hidden width (64).
        seed: draws the initial parameters (PyTorch's default ``U(±1/√fan_in)``).
    """

    def __init__(self, rank: int = 32, c_max: int = 256, hidden: int = 64, seed: int = 0):
        super().__init__()
        for name, v in (("rank", rank), ("c_max", c_max), ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        self.rank, self.c_max = rank, c_max
        self.encoder = _mlp([DESCRIPTOR_SIZE, hidden, hidden, 2 * rank * rank])
        self.expand = nn.utils.skip_init(nn.Linear, rank, c_max)
        _init_(self, seed)

    def factors(self, descriptors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, B)``, each ``(L, c_max, r)``, for ``(L, 5)`` descriptors."""
        r = self.rank
        d = descriptors.to(self.expand.weight.dtype)
        h = F.relu(self.encoder(d).reshape(-1, 2 * r, r))
        y = self.expand(h).reshape(-1, 2 * self.c_max, r)  # (L, 2r, c_max) read as (2c_max, r)
        return y[:, : self.c_max], y[:, self.c_max :]

    def forward(
        self, descriptors: torch.Tensor, shapes: Sequence[tuple[int, int]]
    ) -> list[torch.Tensor]:
        a, b = self.factors(descriptors)
        return [a[i, :o] @ b[i, :n].T / math.sqrt(n) for i, (o, n) in enumerate(shapes)]


class ChunkPredictor(WeightPredictor):
    """The GHN-style control: an MLP ``5 → hidden → hidden → chunk²`` predicts one
    ``chunk × chunk`` block, copied ``⌈out/chunk⌉ × ⌈in/chunk⌉`` times, cropped to
    ``out × in`` and divided by ``√in``. Any width works (no ``c_max``).

    Args:
        chunk: the block size (32).
        hidden: the MLP's hidden width (128).
        seed: draws the initial parameters.
    """

    def __init__(self, chunk: int = 32, hidden: int = 128, seed: int = 0):
        super().__init__()
        for name, v in (("chunk", chunk), ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        self.chunk = chunk
        self.net = _mlp([DESCRIPTOR_SIZE, hidden, hidden, chunk * chunk])
        _init_(self, seed)

    def forward(
        self, descriptors: torch.Tensor, shapes: Sequence[tuple[int, int]]
    ) -> list[torch.Tensor]:
        c = self.chunk
        d = descriptors.to(self.net[0].weight.dtype)
        blocks = self.net(d).reshape(-1, c, c)
        out = []
        for i, (o, n) in enumerate(shapes):
            tiled = blocks[i].repeat(-(-o // c), -(-n // c))
            out.append(tiled[:o, :n] / math.sqrt(n))
        return out


def predict_weights(predictor: WeightPredictor, widths: Sequence[int]) -> dict[str, torch.Tensor]:
    """The state dict of ``MLP(widths)`` (``layers.i.weight``, ``layers.i.bias``) that
    ``predictor`` emits: one batched predictor call for all layers, biases zero. Gradients
    flow into the predictor (call under :func:`torch.no_grad` for an init). A width above
    the predictor's ``c_max`` is a one-line :class:`ConfigError`."""
    predictor.check_widths(widths)
    ws = [int(w) for w in widths]
    shapes = [(b, a) for a, b in zip(ws[:-1], ws[1:], strict=True)]
    weights = predictor(layer_descriptors(ws), shapes)
    ref = next(predictor.parameters())
    state = {}
    for i, ((o, _), w) in enumerate(zip(shapes, weights, strict=True)):
        state[f"layers.{i}.weight"] = w
        state[f"layers.{i}.bias"] = torch.zeros(o, dtype=ref.dtype, device=ref.device)
    return state


def meta_train(
    predictor: WeightPredictor,
    data: TaskData,
    hidden_widths: Sequence[int],
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    depth: int = 2,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Meta-train ``predictor`` in place (Adam, ``lr``) and return each step's loss.

    Step ``t`` draws a hidden width ``w`` uniformly from ``hidden_widths`` and a batch of
    ``batch_size`` training examples (a fresh permutation each epoch), both from
    ``generator(derive_seed("meta-train", seed))``; predicts ``MLP([in, w × depth, classes])``
    with :func:`predict_weights`; and back-propagates that net's cross-entropy on the batch
    (:func:`torch.func.functional_call`) into the predictor. Classification tasks with flat
    inputs only."""
    if data.kind != "classification" or len(data.input_shape) != 1:
        raise ConfigError("meta_train needs a classification task with flat inputs (e.g. mnist1d)")
    n = len(data.train)
    if not 1 <= batch_size <= n:
        raise ConfigError(f"batch_size must be in 1..{n} (the training split), got {batch_size}")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    d_in, k = data.input_shape[0], data.num_classes
    nets = {}
    for w in hidden_widths:
        widths = [d_in, *([int(w)] * depth), k]
        predictor.check_widths(widths)
        with torch.device("meta"):
            nets[int(w)] = (widths, MLP(widths))
    g = generator(derive_seed("meta-train", seed))
    choices = list(nets)
    opt = torch.optim.Adam(predictor.parameters(), lr=lr)
    dtype = next(predictor.parameters()).dtype
    losses: list[float] = []
    order, pos = torch.randperm(n, generator=g), 0
    bar = progress_bar(steps, "meta-train", "step", progress, leave=False)
    predictor.train()
    for _ in range(steps):
        w = choices[int(torch.randint(len(choices), (1,), generator=g))]
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=g), 0
        idx = order[pos : pos + batch_size].to(data.train.x.device)
        pos += batch_size
        x, y = data.train.x[idx].to(dtype), data.train.y[idx]
        widths, net = nets[w]
        state = predict_weights(predictor, widths)
        loss = F.cross_entropy(functional_call(net, state, (x,)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    predictor.eval()
    return losses
