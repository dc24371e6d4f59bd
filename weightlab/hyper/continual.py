"""Continual-learning hypernetworks: chunked MLP and RNN (LSTM) generators with the output
regularizer, and a task-incremental driver on the ONE training loop.

Chandra, Varshney, Srijith & Gupta (2022), "Continual Learning with Dependency Preserving
Hypernetworks" (row [#75]): "We propose to use recurrent neural network (RNN) based
hypernetwork that can generate layer weights efficiently while allowing for dependencies
across them." The chunked MLP hypernetwork and the output regularizer are von Oswald et al.
(2020), "Continual learning with hypernetworks" (Eq. 2), as in hypnettorch 0.0.4
(``ChunkedHMLP``, ``calc_fix_target_reg``).

- :class:`ChunkedMLPHypernet`: chunk ``k`` of task ``t`` is ``MLP([c_k, e_t])`` (ReLU
  between layers, none after the last); the ``K`` chunks are joined and cut to the target's
  parameter count ``P`` (``K = ⌈P / chunk⌉``). ``c_k`` (chunk embeddings) and ``e_t`` (task
  embeddings) are learned, drawn N(0, 1) as hypnettorch does.
- :class:`ChunkedRNNHypernet`: weightlab's :class:`~weightlab.hyper.lstm.LSTM` runs over
  ``k = 1 … K`` on the same inputs ``[c_k, e_t]``, and one ``Linear(H, chunk)`` maps each
  step's hidden state to chunk ``k``: chunk ``k`` depends on chunks ``< k`` (the paper's
  dependency across layers).
- Both multiply their output by ``scale = 0.1``.
- Regularizer (:func:`output_regularizer`): ``L_t + β/t · Σ_{j<t} ‖h(e_j) − h*(e_j)‖²``,
  ``t`` the number of previous tasks, ``h*`` the hypernetwork frozen at the start of task
  ``t`` (:func:`hypernet_targets`, detached); the previous tasks' outputs come from one
  batched call. While task ``t`` trains, only its own embedding ``e_t`` trains among the
  task embeddings (:meth:`ChunkedHypernet.set_task`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

from weightlab.errors import ConfigError
from weightlab.hyper.fused import chunked_mlp, mlp_targets
from weightlab.hyper.generated import fast_mlp_dims, parameter_shapes, split_flat
from weightlab.hyper.lstm import LSTM
from weightlab.seeding import generator as make_generator

__all__ = [
    "ChunkedHypernet",
    "ChunkedMLPHypernet",
    "ChunkedRNNHypernet",
    "HyperClassifier",
    "HyperPopulation",
    "hypernet_targets",
    "output_regularizer",
]

OUTPUT_SCALE = 0.1


def _functorch_active() -> bool:
    """True inside a ``torch.func`` transform (``vmap``, ``grad``): the fused functions
    have no batching rule, so the autograd path runs there."""
    return torch._C._functorch.maybe_current_level() is not None


def _init_linear(layer: nn.Linear, g: torch.Generator) -> None:
    """PyTorch's default ``nn.Linear`` init (U(±1/√fan_in) for weight and bias), from ``g``."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=g)
        if layer.bias is not None:
            layer.bias.uniform_(-bound, bound, generator=g)


class ChunkedHypernet(nn.Module):
    """Shared parts of the chunked hypernetworks: chunk embeddings ``chunk_embs (K, c)``,
    task embeddings ``cond_embs[t] (d,)``, the cut to ``num_outputs`` and the output scale.

    ``forward(z)``: ``z`` of shape ``(N, d)`` (or ``(d,)``) -> ``(N, P)`` (or ``(P,)``).
    Subclasses implement ``_chunks(inp)``: ``(N, K, c + d)`` -> ``(N, K, chunk)``.
    """

    def __init__(
        self,
        num_outputs: int,
        chunk_size: int,
        chunk_emb_size: int,
        cond_emb_size: int,
        num_conds: int,
        scale: float,
    ) -> None:
        super().__init__()
        for label, v in (
            ("num_outputs", num_outputs),
            ("chunk_size", chunk_size),
            ("chunk_emb_size", chunk_emb_size),
            ("cond_emb_size", cond_emb_size),
            ("num_conds", num_conds),
        ):
            if int(v) <= 0:
                raise ConfigError(f"hypernetwork {label} must be positive, got {v}")
        self.num_outputs = int(num_outputs)
        self.chunk_size = int(chunk_size)
        self.num_chunks = math.ceil(self.num_outputs / self.chunk_size)
        self.chunk_emb_size = int(chunk_emb_size)
        self.cond_emb_size = int(cond_emb_size)
        self.scale = float(scale)
        self.chunk_embs = nn.Parameter(torch.empty(self.num_chunks, self.chunk_emb_size))
        self.cond_embs = nn.ParameterList(
            nn.Parameter(torch.empty(self.cond_emb_size)) for _ in range(int(num_conds))
        )

    @property
    def num_conds(self) -> int:
        return len(self.cond_embs)

    def _init_embeddings(self, g: torch.Generator) -> None:
        with torch.no_grad():
            self.chunk_embs.normal_(0.0, 1.0, generator=g)
            for e in self.cond_embs:
                e.normal_(0.0, 1.0, generator=g)

    def embeddings(self, ids: Sequence[int]) -> torch.Tensor:
        """The task embeddings ``e_j`` for ``j`` in ``ids``, stacked ``(len(ids), d)``."""
        bad = [j for j in ids if not 0 <= int(j) < self.num_conds]
        if bad:
            raise ConfigError(
                f"task {bad[0]} has no embedding; this hypernetwork has tasks 0..{self.num_conds - 1}"
            )
        return torch.stack([self.cond_embs[int(j)] for j in ids])

    def set_task(self, t: int) -> None:
        """Only ``e_t`` trains among the task embeddings (the others: ``requires_grad=False``)."""
        self.embeddings([t])
        for j, e in enumerate(self.cond_embs):
            e.requires_grad_(j == t)

    def generate(self, ids: Sequence[int]) -> torch.Tensor:
        """``h(e_j)`` for ``j`` in ``ids`` in one call: ``(len(ids), P)``."""
        return self(self.embeddings(ids))

    def _chunks(self, inp: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _conditions(self, z: torch.Tensor) -> tuple[torch.Tensor, bool]:
        single = z.dim() == 1
        if single:
            z = z.unsqueeze(0)
        if z.dim() != 2 or z.shape[-1] != self.cond_emb_size:
            raise ConfigError(
                f"hypernetwork condition has shape {tuple(z.shape)}; expected (N, "
                f"{self.cond_emb_size})"
            )
        return z, single

    def forward_autograd(self, z: torch.Tensor) -> torch.Tensor:
        """The plain autograd path: ``[c_k, z_n]`` concatenated ``(N, K, c + d)``, the
        chunks, joined, cut and scaled (the reference the fused MLP path is tested against)."""
        z, single = self._conditions(z)
        n = z.shape[0]
        c = self.chunk_embs.unsqueeze(0).expand(n, -1, -1)
        e = z.unsqueeze(1).expand(-1, self.num_chunks, -1)
        out = self._chunks(torch.cat([c, e], dim=-1))  # (N, K, chunk)
        out = out.reshape(n, self.num_chunks * self.chunk_size)[:, : self.num_outputs]
        out = self.scale * out
        return out.squeeze(0) if single else out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.forward_autograd(z)


class ChunkedMLPHypernet(ChunkedHypernet):
    """Chunk ``k`` of task ``t`` = ``scale · MLP([c_k, e_t])``; hidden ``layers`` with ReLU.

    With ``chunk_size=300, chunk_emb_size=32, cond_emb_size=32, layers=(64, 64),
    num_conds=5`` and a 64-64-64-2 target (``P = 8450``, ``K = 29``) it has hypnettorch's
    ``ChunkedHMLP`` parameter count, 28,908 (tested for equal outputs on equal weights).
    """

    def __init__(
        self,
        num_outputs: int,
        chunk_size: int = 300,
        chunk_emb_size: int = 32,
        cond_emb_size: int = 32,
        layers: Sequence[int] = (64, 64),
        num_conds: int = 5,
        scale: float = OUTPUT_SCALE,
        seed: int = 0,
    ) -> None:
        super().__init__(num_outputs, chunk_size, chunk_emb_size, cond_emb_size, num_conds, scale)
        widths = [chunk_emb_size + cond_emb_size, *[int(w) for w in layers], chunk_size]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        g = make_generator(seed)
        for layer in self.layers:
            _init_linear(layer, g)
        self._init_embeddings(g)

    def _chunks(self, inp: torch.Tensor) -> torch.Tensor:
        h = inp
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = F.relu(h)
        return h

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, d)`` -> ``(N, P)`` (``(d,)`` -> ``(P,)``) by the fused path
        (:func:`~weightlab.hyper.fused.chunked_mlp`: split first layer, scale inside the
        last matmul, hand-written backward); a view into the padded ``(N, K · chunk)``
        result, so not contiguous unless ``P = K · chunk``."""
        if _functorch_active():  # vmap / grad transforms: the autograd path
            return self.forward_autograd(z)
        z, single = self._conditions(z)
        out = chunked_mlp(
            z,
            self.chunk_embs,
            [layer.weight for layer in self.layers],
            [layer.bias for layer in self.layers],
            self.scale,
            self.num_outputs,
        )
        return out.squeeze(0) if single else out


class ChunkedRNNHypernet(ChunkedHypernet):
    """An LSTM over ``k = 1 … K`` on inputs ``[c_k, e_t]``, then ``Linear(H, chunk)`` per
    step (one shared head): chunk ``k = scale · head(h_k)``. With ``hidden=38`` and the
    64-64-64-2 target it has 28,444 parameters (about the MLP hypernetwork's 28,908)."""

    def __init__(
        self,
        num_outputs: int,
        chunk_size: int = 300,
        chunk_emb_size: int = 32,
        cond_emb_size: int = 32,
        hidden: int = 38,
        num_conds: int = 5,
        scale: float = OUTPUT_SCALE,
        seed: int = 0,
    ) -> None:
        super().__init__(num_outputs, chunk_size, chunk_emb_size, cond_emb_size, num_conds, scale)
        self.rnn = LSTM(chunk_emb_size + cond_emb_size, int(hidden))
        self.head = nn.Linear(int(hidden), chunk_size)
        g = make_generator(seed)
        # nn.LSTM's default: U(±1/√H) for every weight and bias (the bias here is one vector)
        bound = 1.0 / math.sqrt(int(hidden))
        with torch.no_grad():
            self.rnn.gates.weight.uniform_(-bound, bound, generator=g)
            self.rnn.gates.bias.uniform_(-bound, bound, generator=g)
        _init_linear(self.head, g)
        self._init_embeddings(g)

    def _chunks(self, inp: torch.Tensor) -> torch.Tensor:
        hs, _ = self.rnn(inp.transpose(0, 1))  # (K, N, H)
        return self.head(hs).transpose(0, 1)


@torch.no_grad()
def hypernet_targets(hnet: ChunkedHypernet, ids: Sequence[int]) -> torch.Tensor | None:
    """``h*(e_j)`` for ``j`` in ``ids``: the hypernetwork's current outputs, detached
    (``(len(ids), P)``), or ``None`` for no previous task. Take them at the start of a task."""
    ids = list(ids)
    if not ids:
        return None
    return hnet.generate(ids).detach().clone()


def output_regularizer(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(1/t) Σ_j ‖h(e_j) − h*(e_j)‖²`` over the ``t`` rows (von Oswald et al. 2020, Eq. 2;
    hypnettorch's ``calc_fix_target_reg`` with ``targets``); ``outputs``, ``targets``:
    ``(t, P)``. The loss adds ``β`` times this."""
    if outputs.shape != targets.shape:
        raise ConfigError(
            f"regularizer outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} differ"
        )
    return (outputs - targets).square().sum(dim=1).mean()


class HyperClassifier(nn.Module):
    """A target network whose parameters come from ``hnet(e_task)``, for the training loop.

    ``forward(x)``: generates the current task's parameters and runs ``target`` on them
    (``functional_call``; the target's own parameters are frozen and unused). In training
    mode after :meth:`start_task` with previous tasks, the same hypernetwork call also
    produces ``h(e_j)`` for every ``j < t`` (one batched call) and stores
    ``reg = output_regularizer(h(e_j), h*(e_j))``; :meth:`loss` is the loop's per-example
    loss ``CE + β·reg`` (batch mean ``L_t + β·reg``). Evaluation (eval mode) is plain CE.
    """

    def __init__(self, hnet: ChunkedHypernet, target: nn.Module, beta: float = 0.01) -> None:
        super().__init__()
        self.shapes = parameter_shapes(target)
        total = sum(math.prod(s) for s in self.shapes.values())
        if hnet.num_outputs != total:
            raise ConfigError(
                f"the hypernetwork generates {hnet.num_outputs} values, the target has {total} "
                "parameters; build the hypernetwork with num_outputs = the target's count"
            )
        if beta < 0:
            raise ConfigError(f"beta must be >= 0, got {beta}")
        self.hnet = hnet
        self.target = target
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.beta = float(beta)
        self.task = 0
        self.register_buffer("targets", None)
        self.last_reg: torch.Tensor | None = None

    def start_task(self, t: int) -> None:
        """Begin task ``t``: freeze ``h*`` (targets for tasks ``< t``) and train only ``e_t``."""
        self.hnet.set_task(t)
        self.task = int(t)
        self.targets = hypernet_targets(self.hnet, range(t))

    def weights(self, t: int | None = None) -> dict[str, torch.Tensor]:
        """The target's parameters for task ``t`` (default: the current task)."""
        flat = self.hnet.generate([self.task if t is None else t])[0]
        return split_flat(flat, self.shapes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.task
        if self.training and self.targets is not None:
            out = self.hnet.generate([t, *range(t)])
            self.last_reg = output_regularizer(out[1:], self.targets)
            flat = out[0]
        else:
            self.last_reg = None
            flat = self.hnet.generate([t])[0]
        return functional_call(self.target, split_flat(flat, self.shapes), (x,))

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example ``CE + β·reg`` (``reg`` of the last training forward; 0 otherwise)."""
        ce = F.cross_entropy(pred, y, reduction="none")
        if self.training and self.last_reg is not None and self.beta > 0:
            return ce + self.beta * self.last_reg
        return ce


class HyperPopulation(nn.Module):
    """``N`` hypernetworks of one architecture (e.g. ``N`` seeds) trained as one module by
    the ONE loop: their parameters stacked ``(N, ...)``, one hypernetwork call and one
    target forward for all members (fused functions for MLP hypernetworks and plain MLP
    targets, :mod:`weightlab.hyper.fused`; ``vmap`` otherwise), one backward.

    ``forward(x)``: ``x`` of shape ``(B, N, in)`` (member ``n`` sees ``x[:, n]``: each member
    keeps its own data order) -> logits ``(B, N, classes)``. :meth:`loss` takes labels
    ``(B, N)`` and returns ``Σ_n (CE_n + β·reg_n)`` per example, so member ``n``'s gradient is
    exactly its own loss's and, with an element-wise optimizer (Adam, SGD) and no gradient
    clipping, each member trains as it would alone (tested against
    :class:`HyperClassifier`). The loop's own evaluation of such a module is meaningless
    (its accuracy counts all members); evaluate with :meth:`accuracy`.
    """

    def __init__(
        self, hnets: Sequence[ChunkedHypernet], target: nn.Module, beta: float = 0.01
    ) -> None:
        super().__init__()
        if not hnets:
            raise ConfigError("HyperPopulation needs at least one hypernetwork")
        kinds = {(type(h), tuple((n, p.shape) for n, p in h.named_parameters())) for h in hnets}
        if len(kinds) != 1:
            raise ConfigError(
                "HyperPopulation members must share one architecture; build every member "
                "with the same class and sizes"
            )
        single = HyperClassifier(hnets[0], target, beta)  # checks sizes and beta
        self.shapes = single.shapes
        self.beta = single.beta
        self.num_members = len(hnets)
        self._template = [hnets[0]]  # not registered: its parameters are replaced
        self._target = [target]
        params, _ = stack_module_state(list(hnets))
        self._names = list(params)
        self.stacked = nn.ParameterDict(
            {n.replace(".", "__"): nn.Parameter(v.detach().clone()) for n, v in params.items()}
        )
        self.num_conds = hnets[0].num_conds
        self.task = 0
        self.register_buffer("targets", None)
        self.last_reg: torch.Tensor | None = None

    def _params(self) -> dict[str, torch.Tensor]:
        return {n: self.stacked[n.replace(".", "__")] for n in self._names}

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i``'s hypernetwork parameters (load into one of the members)."""
        return {n: v[i].detach().clone() for n, v in self._params().items()}

    def start_task(self, t: int) -> None:
        """Begin task ``t`` for every member: targets ``h*(e_j), j < t`` frozen, only
        ``e_t`` trains among the task embeddings."""
        if not 0 <= t < self.num_conds:
            raise ConfigError(f"task {t} has no embedding; tasks are 0..{self.num_conds - 1}")
        for j in range(self.num_conds):
            self.stacked[f"cond_embs__{j}"].requires_grad_(j == t)
        self.task = int(t)
        with torch.no_grad():
            self.targets = self.generate(list(range(t))).detach().clone() if t else None

    def generate(self, ids: Sequence[int]) -> torch.Tensor:
        """Every member's ``h(e_j)`` for ``j`` in ``ids`` in one call: ``(N, len(ids), P)``
        (MLP hypernetworks: :func:`~weightlab.hyper.fused.chunked_mlp` on the stacked
        parameters; others: ``vmap(functional_call)``)."""
        template = self._template[0]
        ids = [int(j) for j in ids]
        if type(template) is ChunkedMLPHypernet:
            p = self._params()
            layers = range(len(template.layers))
            return chunked_mlp(
                torch.stack([p[f"cond_embs.{j}"] for j in ids], dim=1),
                p["chunk_embs"],
                [p[f"layers.{i}.weight"] for i in layers],
                [p[f"layers.{i}.bias"] for i in layers],
                template.scale,
                template.num_outputs,
            )

        def one(p: dict[str, torch.Tensor]) -> torch.Tensor:
            z = torch.stack([p[f"cond_embs.{j}"] for j in ids])
            return functional_call(template, p, (z,))

        return vmap(one)(self._params())

    def _run_targets(self, flat: torch.Tensor, x: torch.Tensor, x_dim: int | None) -> torch.Tensor:
        """``(N, B, out)``: plain MLP targets by :func:`~weightlab.hyper.fused.mlp_targets`,
        others by ``vmap(functional_call)``."""
        target = self._target[0]
        dims = fast_mlp_dims(target)
        if dims is not None:
            xx = x.flatten(1) if x_dim is None else x.movedim(x_dim, 0).flatten(2)
            return mlp_targets(flat, xx, dims, target.activation)

        def one(w: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
            return functional_call(target, split_flat(w, self.shapes), (xx,))

        return vmap(one, in_dims=(0, x_dim))(flat, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3 or x.shape[1] != self.num_members:
            raise ConfigError(
                f"HyperPopulation input has shape {tuple(x.shape)}; expected (B, "
                f"{self.num_members}, ...), one slice per member"
            )
        t = self.task
        if self.training and self.targets is not None:
            out = self.generate([t, *range(t)])  # (N, 1 + t, P)
            diff = out[:, 1:] - self.targets
            self.last_reg = diff.square().sum(dim=2).mean(dim=1)  # (N,)
            flat = out[:, 0]
        else:
            self.last_reg = None
            flat = self.generate([t])[:, 0]
        return self._run_targets(flat, x, 1).movedim(0, 1)  # (B, N, classes)

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per example: ``Σ_n CE(pred[:, n], y[:, n]) + β Σ_n reg_n`` (``(B,)``)."""
        ce = F.cross_entropy(pred.flatten(0, 1), y.flatten(0, 1), reduction="none")
        ce = ce.view(y.shape).sum(dim=1)
        if self.training and self.last_reg is not None and self.beta > 0:
            return ce + self.beta * self.last_reg.sum()
        return ce

    @torch.no_grad()
    def accuracy(self, tasks: Sequence, upto: int) -> torch.Tensor:
        """Test accuracy (%) of every member on tasks ``0 … upto``: ``(N, upto + 1)``; one
        hypernetwork call generates all of them. NaN where outputs are not finite."""
        flat = self.generate(list(range(upto + 1)))  # (N, T, P)
        out = torch.empty(self.num_members, upto + 1, dtype=torch.float64)
        for j in range(upto + 1):
            split = tasks[j].test
            pred = self._run_targets(flat[:, j], split.x, None)  # (N, n, classes)
            acc = (pred.argmax(-1) == split.y).double().mean(dim=1) * 100
            acc[~torch.isfinite(pred).all(dim=2).all(dim=1)] = float("nan")
            out[:, j] = acc
        return out
