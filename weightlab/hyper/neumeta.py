"""An implicit weight field for MLPs of any hidden width (NeuMeta), and neuron smoothing.

Yang & Wang 2024, "Neural Metamorphosis" (NeuMeta, row [#87]): instead of storing one
network per size, learn "the continuous weight manifold of neural networks": an implicit
neural representation (INR) that maps the coordinates of one weight entry to its value, so a
network of a width never trained can be sampled. Here, reduced to MLPs ``in-w-w-out``:

* **Field** (:class:`ImplicitWeightField`): one MLP per parameter tensor (three ReLU layers
  of 64, then one output). Entry ``(i, j)`` of an ``o × n`` tensor enters as

      c = [i/o, j/n, o/w_ref, n/w_ref],   φ(c) = [c, sin(2^k π c), cos(2^k π c)]_{k=0..7}

  (68 numbers; a bias entry uses ``j = 0``). A weight is the output divided by ``√n`` (the
  fan-in), a bias is the output itself. While training, ``U(−½, ½)`` is added to ``i`` and
  ``j`` (the paper's coordinate noise, which makes the field smooth between integer
  coordinates).
* **Smoothing** (:func:`smooth_mlp`): the paper's permutation that makes the weights a
  smooth function of the unit index, a shortest-Hamiltonian-path (TSP) problem solved
  heuristically. Per hidden layer, unit ``u`` is the vector
  ``[incoming row W_l[u], bias b_l[u], outgoing column W_{l+1}[:, u]]``; the path starts at
  unit 0, visits the nearest unvisited unit each step, then 2-opt reversals are applied
  until none shortens it (:func:`shortest_path_order`). Permuting hidden units is
  function-preserving.
* **Loss** (:func:`train_fields`): per step, one hidden width ``w`` (round-robin over the
  training widths), the cross-entropy of the sampled width-``w`` net on a batch, plus, when
  ``w = w_ref``, the reconstruction ``Σ_tensors ‖q − p‖² / ‖p‖²`` to the smoothed reference
  net ``p`` (a fixed weight of 1; the authors' decaying weighting did worse here).

:func:`train_fields` (several fields of one shape as one stacked computation, e.g. seeds
and arms) is a custom seeded loop, like :func:`weightlab.hyper.predictor.meta_train`:
the sampled network changes shape every step, which :func:`weightlab.train.train` cannot
express.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from weightlab.data.task import TaskData
from weightlab.errors import ConfigError
from weightlab.progress import progress_bar
from weightlab.seeding import derive_seed, generator

__all__ = [
    "ImplicitWeightField",
    "fourier_features",
    "path_length",
    "shortest_path_order",
    "smooth_mlp",
    "train_field",
    "train_fields",
]

FREQUENCIES = 8  # sin, cos of 2^k π c for k = 0 .. 7
COORD_SIZE = 4  # [i/o, j/n, o/w_ref, n/w_ref]
FEATURE_SIZE = COORD_SIZE * (1 + 2 * FREQUENCIES)  # 68


def fourier_features(c: torch.Tensor) -> torch.Tensor:
    """``(N, 4)`` coordinates → ``(N, 68)``: ``[c, sin(2^k π c), cos(2^k π c)]`` for
    ``k = 0 … 7`` (NeuMeta's positional encoding of the weight coordinates)."""
    scales = math.pi * 2.0 ** torch.arange(FREQUENCIES, dtype=c.dtype, device=c.device)
    z = (c[:, :, None] * scales).flatten(1)  # (N, 4·8)
    return torch.cat([c, torch.sin(z), torch.cos(z)], dim=1)


def _mlp(sizes: Sequence[int], g: torch.Generator) -> nn.Sequential:
    """Linear layers with ReLU between them, PyTorch's default ``U(±1/√fan_in)`` drawn from
    ``g`` in module order (float32)."""
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if k:
            layers.append(nn.ReLU())
        lin = nn.utils.skip_init(nn.Linear, a, b)
        bound = 1 / math.sqrt(a)
        with torch.no_grad():
            for p in (lin.weight, lin.bias):
                p.copy_((torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 - 1) * bound)
        layers.append(lin)
    return nn.Sequential(*layers)


class ImplicitWeightField(nn.Module):
    """NeuMeta's weight field for ``MLP([d_in, w × depth, d_out])`` (see the module
    docstring): one coordinate MLP ``68 → 64 → 64 → 64 → 1`` per parameter tensor.

    Args:
        d_in, d_out: input and output sizes of the sampled nets (40 and 10 on MNIST-1D).
        train_widths: the hidden widths it is trained on; :meth:`sample` accepts any width
            between their minimum and maximum.
        w_ref: the reference width that normalizes ``o`` and ``n`` (the widest, 32).
        depth: hidden layers of the sampled nets (2).
        hidden: width of each coordinate MLP's three ReLU layers (64).
        seed: draws the coordinate MLPs' initial parameters.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        train_widths: Sequence[int],
        w_ref: int | None = None,
        depth: int = 2,
        hidden: int = 64,
        seed: int = 0,
    ):
        super().__init__()
        ws = sorted({int(w) for w in train_widths})
        for name, v in (("d_in", d_in), ("d_out", d_out), ("depth", depth), ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if not ws or ws[0] <= 0:
            raise ConfigError(f"train_widths must be positive integers, got {list(train_widths)}")
        self.d_in, self.d_out, self.depth = d_in, d_out, depth
        self.train_widths = ws
        self.w_ref = int(w_ref) if w_ref is not None else ws[-1]
        if self.w_ref <= 0:
            raise ConfigError(f"w_ref must be a positive integer, got {w_ref!r}")
        g = generator(seed)
        self.fields = nn.ModuleDict()
        for layer in range(depth + 1):
            for kind in ("weight", "bias"):
                self.fields[f"{layer}_{kind}"] = _mlp([FEATURE_SIZE, hidden, hidden, hidden, 1], g)

    @property
    def width_range(self) -> tuple[int, int]:
        return self.train_widths[0], self.train_widths[-1]

    def widths(self, width: int) -> list[int]:
        """``[d_in, width × depth, d_out]``."""
        return [self.d_in, *([int(width)] * self.depth), self.d_out]

    def check_width(self, width: int) -> None:
        """One-line :class:`ConfigError` for a hidden width outside the training range."""
        lo, hi = self.width_range
        if isinstance(width, bool) or not isinstance(width, int) or not lo <= width <= hi:
            raise ConfigError(
                f"width {width!r} is outside the weight field's training range {lo}..{hi}; "
                f"sample a width in {lo}..{hi} or train the field on wider/narrower nets"
            )

    def coordinates(
        self, o: int, n: int, bias: bool, noise: torch.Generator | None = None
    ) -> torch.Tensor:
        """The ``(o·n, 4)`` (or ``(o, 4)`` for a bias) float32 coordinates of a tensor's
        entries, row-major; ``noise`` adds ``U(−½, ½)`` to ``i`` and ``j`` (drawn from it)."""
        i = torch.arange(o, dtype=torch.float64)
        j = torch.zeros(1, dtype=torch.float64) if bias else torch.arange(n, dtype=torch.float64)
        ii, jj = torch.meshgrid(i, j, indexing="ij")
        ii, jj = ii.reshape(-1), jj.reshape(-1)
        if noise is not None:
            ii = ii + torch.rand(ii.shape, generator=noise, dtype=torch.float64) - 0.5
            if not bias:
                jj = jj + torch.rand(jj.shape, generator=noise, dtype=torch.float64) - 0.5
        c = torch.stack(
            [
                ii / o,
                jj / n,
                torch.full_like(ii, o / self.w_ref),
                torch.full_like(ii, n / self.w_ref),
            ],
            dim=1,
        )
        return c.float()

    def sample(self, width: int, noise: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The state dict (``layers.i.weight`` / ``layers.i.bias``) of the hidden-width-``width``
        MLP the field describes; gradients flow into the field (call under
        :func:`torch.no_grad` to just sample). ``noise``: a generator for the training-time
        coordinate noise (``None``: integer coordinates). A width outside the training range
        is a one-line :class:`ConfigError`."""
        self.check_width(width)
        ws = self.widths(width)
        state = {}
        dev = next(self.parameters()).device
        for layer, (n, o) in enumerate(zip(ws[:-1], ws[1:], strict=True)):
            cw = fourier_features(self.coordinates(o, n, False, noise).to(dev))
            w = self.fields[f"{layer}_weight"](cw).reshape(o, n) / math.sqrt(n)
            cb = fourier_features(self.coordinates(o, n, True, noise).to(dev))
            b = self.fields[f"{layer}_bias"](cb).reshape(o)
            state[f"layers.{layer}.weight"] = w
            state[f"layers.{layer}.bias"] = b
        return state


# -- smoothing ------------------------------------------------------------------------------
def path_length(dist: torch.Tensor, order: Sequence[int]) -> float:
    """Length of the open path visiting ``order`` under the distance matrix ``dist``."""
    return float(sum(dist[a, b] for a, b in zip(order[:-1], order[1:], strict=True)))


def shortest_path_order(points: torch.Tensor) -> list[int]:
    """A short Hamiltonian path through the rows of ``points`` (Euclidean distances):
    nearest neighbour from row 0, then 2-opt (reverse ``order[i..j]``) while a reversal
    shortens the open path by more than 1e-12 relative (the path keeps starting at row 0).
    Deterministic."""
    p = points.detach().double()
    n = p.shape[0]
    if n <= 2:
        return list(range(n))
    d = torch.cdist(p, p).tolist()
    order, left = [0], set(range(1, n))
    while left:
        last = order[-1]
        nxt = min(left, key=lambda u: (d[last][u], u))
        order.append(nxt)
        left.remove(nxt)
    tol = 1e-12 * max(1.0, max(max(r) for r in d))
    improved = True
    while improved:
        improved = False
        for i in range(1, n):
            for j in range(i + 1, n):
                # reverse order[i..j]: edges (i-1, i) and (j, j+1) become (i-1, j) and (i, j+1)
                a, b, c = order[i - 1], order[i], order[j]
                old = d[a][b] - d[a][c]
                if j + 1 < n:
                    e = order[j + 1]
                    old += d[c][e] - d[b][e]
                if old > tol:
                    order[i : j + 1] = order[i : j + 1][::-1]
                    improved = True
    return order


def smooth_mlp(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[list[int]]]:
    """NeuMeta's smoothing of an :class:`~weightlab.models.mlp.MLP` state dict: each hidden
    layer's units are reordered along :func:`shortest_path_order` over
    ``[incoming row, bias, outgoing column]`` (layer by layer, after the previous layer's
    permutation reached this layer's incoming rows). Function-preserving. Returns the new
    state dict and the orders (``order[k]`` = the old unit now at position ``k``)."""
    out = {k: v.detach().clone() for k, v in state.items()}
    n_layers = len([k for k in out if k.startswith("layers.") and k.endswith(".weight")])
    orders = []
    for layer in range(n_layers - 1):
        w, b = out[f"layers.{layer}.weight"], out[f"layers.{layer}.bias"]
        nxt = out[f"layers.{layer + 1}.weight"]
        feats = torch.cat([w, b[:, None], nxt.T], dim=1)
        order = shortest_path_order(feats)
        idx = torch.tensor(order, device=w.device)
        out[f"layers.{layer}.weight"] = w[idx]
        out[f"layers.{layer}.bias"] = b[idx]
        out[f"layers.{layer + 1}.weight"] = nxt[:, idx]
        orders.append(order)
    return out, orders


# -- training -------------------------------------------------------------------------------
def train_field(
    field: ImplicitWeightField,
    data: TaskData,
    reference: Mapping[str, torch.Tensor],
    *,
    steps: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    noise: bool = True,
    recon_weight: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Train one ``field`` in place and return each step's loss: :func:`train_fields` with
    a single field."""
    return train_fields(
        [field],
        data,
        [reference],
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        noise=[noise],
        recon_weight=recon_weight,
        seeds=[seed],
        progress=progress,
    )[0]


def _check_reference(field: ImplicitWeightField, reference: Mapping[str, torch.Tensor]) -> None:
    ws = field.widths(field.w_ref)
    want = {}
    for i, (m, o) in enumerate(zip(ws[:-1], ws[1:], strict=True)):
        want[f"layers.{i}.weight"], want[f"layers.{i}.bias"] = (o, m), (o,)
    got = {k: tuple(v.shape) for k, v in reference.items()}
    if got != want:
        raise ConfigError(
            f"the reference state dict has shapes {got}, the field's width-{field.w_ref} net "
            f"needs {want}; pass the reference MLP of width w_ref"
        )


def _coordinate_mlp(params: Sequence[torch.Tensor], feats: torch.Tensor) -> torch.Tensor:
    """Stacked coordinate MLPs: ``params = [W1, b1, …, W4, b4]`` each with a leading field
    axis ``F``; ``feats`` ``(F, N, 68)`` → ``(F, N)``."""
    h = feats
    n = len(params) // 2
    for k in range(n):
        w, b = params[2 * k], params[2 * k + 1]
        h = torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))
        if k < n - 1:
            h = F.relu(h)
    return h[..., 0]


def train_fields(
    fields: Sequence[ImplicitWeightField],
    data: TaskData,
    references: Sequence[Mapping[str, torch.Tensor]],
    *,
    steps: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    noise: Sequence[bool] | None = None,
    recon_weight: float = 1.0,
    seeds: Sequence[int] | None = None,
    progress: bool = False,
) -> list[list[float]]:
    """Train several fields of the same shape in place, as one stacked computation (batched
    matmuls over a leading field axis; Adam on the stacked parameters is the same update as
    one Adam per field), and return each field's per-step losses.

    Step ``t`` takes the hidden width ``train_widths[t mod K]`` (round-robin, shared by all
    fields). Field ``f`` draws its batch of ``batch_size`` training examples (a fresh
    permutation each epoch) and its coordinate noise ``U(−½, ½)`` on ``i`` and ``j`` (when
    ``noise[f]``) from ``generator(derive_seed("neumeta-field", seeds[f]))``, samples its
    width-``w`` net and adds its cross-entropy on the batch, plus
    ``recon_weight · Σ_tensors ‖q − p‖²/‖p‖²`` to ``references[f]`` (the width-``w_ref``
    state dict, smoothed or not) when ``w = w_ref``."""
    fields = list(fields)
    k = len(fields)
    noise = [True] * k if noise is None else [bool(v) for v in noise]
    seeds = list(range(k)) if seeds is None else [int(s) for s in seeds]
    if not fields or len(references) != k or len(noise) != k or len(seeds) != k:
        raise ConfigError("train_fields needs one reference, noise flag and seed per field")
    f0 = fields[0]
    shapes0 = [tuple(p.shape) for p in f0.parameters()]
    for f in fields[1:]:
        same = (f.train_widths, f.w_ref, f.d_in, f.d_out, f.depth) == (
            f0.train_widths,
            f0.w_ref,
            f0.d_in,
            f0.d_out,
            f0.depth,
        )
        if not same or [tuple(p.shape) for p in f.parameters()] != shapes0:
            raise ConfigError("train_fields needs fields of one shape (widths, sizes, hidden)")
    if data.kind != "classification" or len(data.input_shape) != 1:
        raise ConfigError("train_field needs a classification task with flat inputs (e.g. mnist1d)")
    if data.input_shape[0] != f0.d_in or data.num_classes != f0.d_out:
        raise ConfigError(
            f"the task has {data.input_shape[0]} inputs and {data.num_classes} classes, the "
            f"field samples {f0.d_in}-in, {f0.d_out}-out nets; build the field for this task"
        )
    n = len(data.train)
    if not 1 <= batch_size <= n:
        raise ConfigError(f"batch_size must be in 1..{n} (the training split), got {batch_size}")
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    for f, r in zip(fields, references, strict=True):
        _check_reference(f, r)
    dev = next(f0.parameters()).device
    names = [name for name, _ in f0.named_parameters()]
    stacked = {
        name: torch.stack([dict(f.named_parameters())[name].detach() for f in fields])
        .to(dev)
        .requires_grad_(True)
        for name in names
    }
    per_tensor = {
        key: [stacked[name] for name in names if name.startswith(f"fields.{key}.")]
        for key in f0.fields
    }
    dtype = stacked[names[0]].dtype
    refs = {
        key: torch.stack([r[key].detach().to(dev, dtype) for r in references])
        for key in references[0]
    }
    ref_norm = {key: v.pow(2).flatten(1).sum(1) for key, v in refs.items()}
    gens = [generator(derive_seed("neumeta-field", s)) for s in seeds]
    orders = [torch.randperm(n, generator=g) for g in gens]
    pos = 0
    opt = torch.optim.Adam(list(stacked.values()), lr=lr)
    losses: list[list[float]] = [[] for _ in range(k)]
    bar = progress_bar(steps, "weight field", "step", progress, leave=False)
    for t in range(steps):
        w = f0.train_widths[t % len(f0.train_widths)]
        if pos + batch_size > n:
            orders, pos = [torch.randperm(n, generator=g) for g in gens], 0
        idx = [o[pos : pos + batch_size] for o in orders]
        pos += batch_size
        x = torch.stack([data.train.x[i.to(data.train.x.device)] for i in idx]).to(dev, dtype)
        y = torch.stack([data.train.y[i.to(data.train.y.device)] for i in idx]).to(dev)
        ws = f0.widths(w)
        state = {}
        for layer, (m, o) in enumerate(zip(ws[:-1], ws[1:], strict=True)):
            for kind in ("weight", "bias"):
                c = torch.stack(
                    [
                        f0.coordinates(o, m, kind == "bias", g if nz else None)
                        for g, nz in zip(gens, noise, strict=True)
                    ]
                ).to(dev, dtype)
                feats = fourier_features(c.reshape(-1, COORD_SIZE)).reshape(k, c.shape[1], -1)
                out = _coordinate_mlp(per_tensor[f"{layer}_{kind}"], feats)
                if kind == "weight":
                    state[f"layers.{layer}.weight"] = out.reshape(k, o, m) / math.sqrt(m)
                else:
                    state[f"layers.{layer}.bias"] = out.reshape(k, o)
        h = x
        for layer in range(len(ws) - 1):
            wt, b = state[f"layers.{layer}.weight"], state[f"layers.{layer}.bias"]
            h = torch.baddbmm(b[:, None, :], h, wt.transpose(1, 2))
            if layer < len(ws) - 2:
                h = F.relu(h)
        ce = F.cross_entropy(h.reshape(-1, h.shape[-1]), y.reshape(-1), reduction="none")
        loss = ce.reshape(k, -1).mean(1)
        if w == f0.w_ref:
            recon = sum(
                (state[key] - refs[key]).pow(2).flatten(1).sum(1) / ref_norm[key] for key in refs
            )
            loss = loss + recon_weight * recon
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        for i, v in enumerate(loss.detach().tolist()):
            losses[i].append(v)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    with torch.no_grad():
        for i, f in enumerate(fields):
            for name, p in f.named_parameters():
                p.copy_(stacked[name][i])
            f.eval()
    return losses
