"""MixtureGrowth: grow a network by recombining learned parameter templates (Pham, Teterwak,
Plummer & Saenko 2023, "MixtureGrowth: Growing Neural Networks by Recombining Learned
Parameters", arXiv:2311.04251, Sec. 3; reference code github.com/chaudatascience/mixturegrowth).

A :class:`TemplateLinear` is a grid of weight blocks. Block ``b`` of template set ``s`` is a
linear combination of that set's ``K`` templates (Sec. 3.1, template mixing),

    W_b = Σ_k c_{b,k} T_{s,k},

with the templates ``T_{s,k}`` initialized like ``nn.Linear`` (``U(±1/√fan_in)``) and the
coefficient vector ``c_b`` a row of a seeded orthogonal ``K × K`` matrix, so ``‖c_b‖ = 1`` and
``W_b`` has ``nn.Linear``'s variance. Biases are per unit (not templated). A block may also be
a free weight (the "random new weights" baseline).

:func:`mixture_grow` (Sec. 3.2, growing) joins two trained width-``n`` template nets (sets A
and B) into one of width ``2n``:

- first layer  ``[[A], [B]]``: the two nets' hidden units side by side;
- hidden layer ``[[A, A′], [B′, B]]``: A′ (rows of A's units, columns of B's) mixes A's
  templates with a new coefficient vector ``c′ ⟂ c_A`` of the same norm (``K = 2``: ``c_A``
  turned by 90°; ``K > 2``: the last right singular vector of A's coefficients, the reference
  code's "orthogonal" growth), B′ likewise from B;
- last layer ``[[A, B]]``: the logits add, bias ``b_A + b_B``.

Everything (templates, old and new coefficients, biases) keeps training. With the new blocks
set to zero the grown net computes ``f_A(x) + f_B(x)`` exactly (tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.init.registry import orthogonal
from weightlab.models.mlp import ACTIVATIONS, check_mlp_args
from weightlab.seeding import derive_seed, generator

__all__ = [
    "NEW_BLOCKS",
    "Block",
    "TemplateLinear",
    "TemplateMLP",
    "mixture_grow",
    "orthogonal_coefficients",
]

NEW_BLOCKS = ("mixture", "random")


@dataclass(frozen=True)
class Block:
    """One cell of a :class:`TemplateLinear` grid: ``kind="mix"`` is
    ``Σ_k coefficients[index][k] · templates[set][k]``; ``kind="free"`` is ``free[index]``."""

    kind: str
    index: int
    set: int = -1


def _uniform(shape: Sequence[int], bound: float, g: torch.Generator | None) -> torch.Tensor:
    """``U(±bound)`` as float32, drawn in float64 from ``g`` (the global CPU generator when
    ``g`` is None: the seeded fork :func:`weightlab.models.build` runs ``reset_parameters`` in)."""
    u = torch.rand(tuple(shape), generator=g, dtype=torch.float64)
    return ((u * 2 - 1) * bound).float()


class TemplateLinear(nn.Module):
    """A Linear layer whose weight is a grid of blocks built from parameter templates
    (MixtureGrowth, Pham et al. 2023, Sec. 3.1). ``TemplateLinear(in, out, K)`` is the 1 × 1
    grid of one template set: ``W = Σ_k c_k T_k``.

    Parameters: ``templates_{s}`` (``K × out_s × in_s``, set ``s``), ``coefficients_{j}``
    (``K``, one per mixed block), ``free_{j}`` (free blocks) and ``bias`` (``out``).

    Args:
        in_features, out_features: the layer's size.
        num_templates: ``K``, templates per set.
    """

    def __init__(self, in_features: int, out_features: int, num_templates: int = 2) -> None:
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ConfigError(
                f"TemplateLinear sizes must be positive, got in={in_features}, out={out_features}"
            )
        if num_templates < 1:
            raise ConfigError(f"num_templates must be >= 1, got {num_templates}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.num_templates = int(num_templates)
        self.row_sizes: tuple[int, ...] = (self.out_features,)
        self.col_sizes: tuple[int, ...] = (self.in_features,)
        self.grid: tuple[tuple[Block, ...], ...] = ((Block("mix", 0, 0),),)
        k = self.num_templates
        self._store(
            [torch.empty(k, out_features, in_features)], [torch.empty(k)], [],
            torch.empty(out_features),
        )  # fmt: skip
        self.reset_parameters()

    def _store(
        self,
        templates: Sequence[torch.Tensor],
        coefficients: Sequence[torch.Tensor],
        free: Sequence[torch.Tensor],
        bias: torch.Tensor,
    ) -> None:
        """Register copies as Parameters ``templates_{s}``, ``coefficients_{j}``,
        ``free_{j}``, ``bias`` (owned by this module, so ``reset_parameters`` covers them)."""
        self._counts = (len(templates), len(coefficients), len(free))
        for prefix, ts in (
            ("templates", templates),
            ("coefficients", coefficients),
            ("free", free),
        ):
            for j, t in enumerate(ts):
                self.register_parameter(f"{prefix}_{j}", nn.Parameter(t.detach().clone()))
        self.bias = nn.Parameter(bias.detach().clone())

    @property
    def templates(self) -> list[nn.Parameter]:
        """The template sets, ``templates[s]`` of shape ``K × out_s × in_s``."""
        return [getattr(self, f"templates_{j}") for j in range(self._counts[0])]

    @property
    def coefficients(self) -> list[nn.Parameter]:
        """The mixed blocks' coefficient vectors (``K`` each)."""
        return [getattr(self, f"coefficients_{j}") for j in range(self._counts[1])]

    @property
    def free(self) -> list[nn.Parameter]:
        """The free blocks' weights."""
        return [getattr(self, f"free_{j}") for j in range(self._counts[2])]

    @classmethod
    def from_blocks(
        cls,
        row_sizes: Sequence[int],
        col_sizes: Sequence[int],
        grid: Sequence[Sequence[Block]],
        templates: Sequence[torch.Tensor],
        coefficients: Sequence[torch.Tensor],
        free: Sequence[torch.Tensor],
        bias: torch.Tensor,
    ) -> TemplateLinear:
        """A grid layer from given tensors (copied into new Parameters). ``grid[r][c]`` is the
        block of output rows ``row_sizes[r]`` and input columns ``col_sizes[c]``."""
        if not templates:
            raise ConfigError("a TemplateLinear needs at least one template set")
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self.in_features, self.out_features = int(sum(col_sizes)), int(sum(row_sizes))
        self.num_templates = int(templates[0].shape[0])
        self.row_sizes, self.col_sizes = tuple(map(int, row_sizes)), tuple(map(int, col_sizes))
        self.grid = tuple(tuple(row) for row in grid)
        self._store(templates, coefficients, free, bias)
        self._check_grid()
        return self

    def _check_grid(self) -> None:
        if len(self.grid) != len(self.row_sizes) or any(
            len(row) != len(self.col_sizes) for row in self.grid
        ):
            raise ConfigError("TemplateLinear grid does not match its row and column sizes")
        for r, o in enumerate(self.row_sizes):
            for c, i in enumerate(self.col_sizes):
                b = self.grid[r][c]
                shape = (
                    tuple(self.templates[b.set].shape[1:]) if b.kind == "mix" else
                    tuple(self.free[b.index].shape)
                )  # fmt: skip
                if shape != (o, i):
                    raise ConfigError(
                        f"TemplateLinear block ({r}, {c}) has shape {shape}, its cell is {(o, i)}"
                    )
        if any(t.shape[0] != self.num_templates for t in self.templates) or any(
            c.shape != (self.num_templates,) for c in self.coefficients
        ):
            raise ConfigError("every template set and coefficient vector needs the same K")

    @property
    def template_sets(self) -> int:
        """Number of template sets."""
        return len(self.templates)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Templates, free blocks and bias ``U(±1/√in_features)`` (``nn.Linear``'s default);
        the mixed blocks of each set take the rows of one seeded orthogonal ``K × K`` matrix in
        order (Haar, :func:`weightlab.init.registry.orthogonal`; the reference code's
        ``nn.init.orthogonal_`` coefficients), so each has unit norm. Draws from ``generator``,
        else from the global CPU generator (seeded by :func:`weightlab.models.build`)."""
        bound = 1.0 / math.sqrt(self.in_features)
        k = self.num_templates
        with torch.no_grad():
            for t in self.templates:
                t.copy_(_uniform(t.shape, bound, generator))
            for s in range(len(self.templates)):
                q = orthogonal(k, k, generator, dtype=torch.float64).float()
                blocks = [b for row in self.grid for b in row if b.kind == "mix" and b.set == s]
                for j, b in enumerate(blocks):
                    self.coefficients[b.index].copy_(q[j % k])
            for f in self.free:
                f.copy_(_uniform(f.shape, bound, generator))
            self.bias.copy_(_uniform(self.bias.shape, bound, generator))

    def block_weight(self, r: int, c: int) -> torch.Tensor:
        """The weight of grid cell ``(r, c)``: ``Σ_k c_k T_{s,k}`` or the free block."""
        b = self.grid[r][c]
        if b.kind == "free":
            return getattr(self, f"free_{b.index}")
        c, t = getattr(self, f"coefficients_{b.index}"), getattr(self, f"templates_{b.set}")
        return torch.tensordot(c, t, dims=1)

    @property
    def weight(self) -> torch.Tensor:
        """The effective ``out × in`` weight (the blocks joined; differentiable)."""
        rows = [
            torch.cat([self.block_weight(r, c) for c in range(len(self.col_sizes))], dim=1)
            for r in range(len(self.row_sizes))
        ]
        return torch.cat(rows, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"K={self.num_templates}, grid={len(self.row_sizes)}x{len(self.col_sizes)}, "
            f"sets={self.template_sets}, free={len(self.free)}"
        )


class TemplateMLP(nn.Module):
    """An MLP of :class:`TemplateLinear` layers, ``widths = [in, h1, …, out]`` (the
    recipe's 40-128-128-10 with ``K = 2``), activation between layers, none after the last."""

    def __init__(
        self, widths: Sequence[int], num_templates: int = 2, activation: str = "relu"
    ) -> None:
        super().__init__()
        widths = check_mlp_args(widths, activation, "TemplateMLP")
        self.widths = widths
        self.activation = activation
        self.num_templates = int(num_templates)
        self.layers = nn.ModuleList(
            TemplateLinear(a, b, num_templates)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        act = ACTIVATIONS[self.activation]
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = act(x)
        return x


def orthogonal_coefficients(coefficients: torch.Tensor) -> torch.Tensor:
    """A new coefficient vector ``c′`` orthogonal to every row of ``coefficients`` (``m × K``,
    ``m < K``) with the norm of the first row (MixtureGrowth's orthogonal growth). ``K = 2``
    and one row: ``c`` turned by +90°, ``(−c₂, c₁)``. Otherwise the last right singular vector
    of ``coefficients`` (the reference code's ``torch.linalg.svd(prev).Vh[-1]``), its sign
    fixed so that its largest-magnitude entry is positive."""
    c = coefficients.detach().reshape(-1, coefficients.shape[-1]).double()
    m, k = c.shape
    if m >= k:
        raise ConfigError(
            f"cannot draw a coefficient vector orthogonal to {m} rows in K = {k} dimensions; "
            "use more templates per set (num_templates > number of blocks of the set)"
        )
    norm = c[0].norm()
    if k == 2:
        out = torch.stack([-c[0, 1], c[0, 0]])
    else:
        v = torch.linalg.svd(c, full_matrices=True).Vh[-1]
        v = v * torch.sign(v[v.abs().argmax()])
        out = v * norm / v.norm()
    return out.to(coefficients.dtype)


def _describe(net: nn.Module) -> tuple[list[int], int, str]:
    if not isinstance(net, TemplateMLP):
        raise ConfigError(
            f"mixture_grow takes two TemplateMLP nets, got {type(net).__name__}; build both "
            "with weightlab.growth.mixture.TemplateMLP"
        )
    for i, layer in enumerate(net.layers):
        if layer.grid != ((Block("mix", 0, 0),),) or layer.free or layer.template_sets != 1:
            raise ConfigError(
                f"mixture_grow takes ungrown template nets (one block, one template set per "
                f"layer); layer {i} is a {len(layer.row_sizes)}x{len(layer.col_sizes)} grid "
                f"of {layer.template_sets} sets: grow two nets trained from scratch"
            )
    return list(net.widths), net.num_templates, net.activation


def mixture_grow(
    net_a: TemplateMLP, net_b: TemplateMLP, new_blocks: str = "mixture", seed: int = 0
) -> TemplateMLP:
    """Grow two trained width-``n`` template nets (sets A, B) into one of width ``2n``
    (MixtureGrowth, Pham et al. 2023, Sec. 3.2; see the module docstring for the grid).

    Args:
        net_a, net_b: :class:`TemplateMLP` s of the same widths, activation and ``K``, each
            layer one block of one template set (as built); they are left unchanged.
        new_blocks: ``"mixture"`` (A′ = ``Σ_k c′_k T_{A,k}``, ``c′ ⟂ c_A``, ``‖c′‖ = ‖c_A‖``,
            :func:`orthogonal_coefficients`; MixtureGrowth) or ``"random"`` (A′, B′ free
            blocks ``U(±1/√n_in)``, ``n_in`` the block's input width, drawn from
            ``derive_seed(seed, "mixture_grow", layer, block)``: growing with random weights).
        seed: seeds the random blocks (unused for ``"mixture"``).

    Returns:
        A new :class:`TemplateMLP` with widths ``[in, 2h1, …, 2h_L, out]``, every tensor a copy.
    """
    if new_blocks not in NEW_BLOCKS:
        raise ConfigError(f"new_blocks must be one of {', '.join(NEW_BLOCKS)}; got {new_blocks!r}")
    wa, ka, act_a = _describe(net_a)
    wb, kb, act_b = _describe(net_b)
    if wa != wb:
        raise ConfigError(
            f"mixture_grow needs two nets of the same shape: net_a has widths {wa}, net_b {wb}; "
            "build both with the same widths"
        )
    if ka != kb:
        raise ConfigError(
            f"mixture_grow needs the same template count: net_a has K = {ka} templates per "
            f"layer, net_b K = {kb}; build both with the same num_templates"
        )
    if act_a != act_b:
        raise ConfigError(
            f"mixture_grow needs the same activation: net_a uses {act_a}, net_b {act_b}"
        )
    if len(wa) < 3:
        raise ConfigError(
            f"mixture_grow needs nets with at least one hidden layer; got widths {wa}"
        )
    depth = len(net_a.layers)
    layers = []
    for i, (la, lb) in enumerate(zip(net_a.layers, net_b.layers, strict=True)):
        ta, tb = la.templates[0], lb.templates[0]
        ca, cb = la.coefficients[0], lb.coefficients[0]
        o, n_in = la.out_features, la.in_features
        mix = Block("mix", 0, 0), Block("mix", 1, 1)
        if i == 0:  # [[A], [B]]
            layer = TemplateLinear.from_blocks(
                (o, o), (n_in,), [[mix[0]], [mix[1]]], [ta, tb], [ca, cb], [],
                torch.cat([la.bias, lb.bias]),
            )  # fmt: skip
        elif i == depth - 1:  # [[A, B]]: logits add
            layer = TemplateLinear.from_blocks(
                (o,), (n_in, n_in), [[mix[0], mix[1]]], [ta, tb], [ca, cb], [], la.bias + lb.bias
            )
        elif new_blocks == "mixture":  # [[A, A'], [B', B]]
            layer = TemplateLinear.from_blocks(
                (o, o), (n_in, n_in),
                [[mix[0], Block("mix", 2, 0)], [Block("mix", 3, 1), mix[1]]],
                [ta, tb],
                [ca, cb, orthogonal_coefficients(ca), orthogonal_coefficients(cb)],
                [],
                torch.cat([la.bias, lb.bias]),
            )  # fmt: skip
        else:
            bound = 1.0 / math.sqrt(n_in)
            free = [
                _uniform((o, n_in), bound, generator(derive_seed(seed, "mixture_grow", i, j)))
                for j in range(2)
            ]
            layer = TemplateLinear.from_blocks(
                (o, o), (n_in, n_in),
                [[mix[0], Block("free", 0)], [Block("free", 1), mix[1]]],
                [ta, tb], [ca, cb], free, torch.cat([la.bias, lb.bias]),
            )  # fmt: skip
        layers.append(layer)
    wide = [wa[0], *(2 * w for w in wa[1:-1]), wa[-1]]
    grown = TemplateMLP.__new__(TemplateMLP)
    nn.Module.__init__(grown)
    grown.widths, grown.activation, grown.num_templates = wide, act_a, ka
    grown.layers = nn.ModuleList(layers)
    return grown.to(device=net_a.layers[0].bias.device)
