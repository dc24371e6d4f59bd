"""Base shapes: which dimension of every parameter is a *width*, and its base size.

μP and the other abc-parametrizations scale each tensor by powers of the width
multiplier ``m = n / n_base`` (Yang et al. 2021, "Tensor Programs V", Sec. 4 and App. B).
The base shapes say, per parameter name, the base size of each dimension that grows with
width and ``None`` for a fixed one. They are declared once (:meth:`BaseShapes.declare`)
or inferred from two models that differ only in width, as ``mup.make_base_shapes`` does
(:meth:`BaseShapes.infer`), and stored as a small JSON dict beside the weights, never as
attributes on parameters (so ``copy.deepcopy``, ``torch.func.stack_module_state`` and
parameter replacement cannot lose them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from weightlab.errors import ConfigError

Shape = tuple[int | None, ...]


def _shapes(x: nn.Module | Mapping[str, object]) -> dict[str, tuple[int, ...]]:
    if isinstance(x, nn.Module):
        return {n: tuple(p.shape) for n, p in x.named_parameters()}
    if isinstance(x, Mapping):
        return {str(n): tuple(int(d) for d in s) for n, s in x.items()}
    raise ConfigError(f"base shapes come from a model or a {{name: shape}} dict, got {type(x)}")


@dataclass(frozen=True)
class Dims:
    """One parameter's width multipliers: ``mults[i] = shape[i] / base[i]`` for width
    dimensions and ``None`` for fixed ones."""

    shape: tuple[int, ...]
    base: Shape

    @property
    def mults(self) -> tuple[float | None, ...]:
        return tuple(
            None if b is None else s / b for s, b in zip(self.shape, self.base, strict=True)
        )

    @property
    def ninf(self) -> int:
        return sum(b is not None for b in self.base)


@dataclass(frozen=True)
class BaseShapes:
    """``{parameter name: base shape}`` with ``None`` for fixed dimensions."""

    shapes: Mapping[str, Shape]
    fixed: Mapping[str, Shape] | None = None  # sizes of fixed dims, when known (checked)

    @classmethod
    def declare(cls, shapes: Mapping[str, Shape]) -> BaseShapes:
        """Declared by hand: ``{"layers.1.weight": (64, 64), "layers.0.weight": (64, None)}``."""
        out = {}
        for n, s in shapes.items():
            dims = tuple(None if d is None else int(d) for d in s)
            if any(d is not None and d <= 0 for d in dims):
                raise ConfigError(f"base shape of {n!r} must hold positive sizes or None, got {s}")
            out[str(n)] = dims
        return cls(out)

    @classmethod
    def infer(
        cls, base: nn.Module | Mapping[str, object], delta: nn.Module | Mapping[str, object]
    ) -> BaseShapes:
        """From a base model and a *delta* model that differs only in width: a dimension is
        a width if its size differs; its base size is the base model's (as
        ``mup.make_base_shapes``)."""
        b, d = _shapes(base), _shapes(delta)
        if set(b) != set(d):
            raise ConfigError(
                "base and delta models must have the same parameter names; "
                f"only in one: {sorted(set(b) ^ set(d))[:4]}"
            )
        out: dict[str, Shape] = {}
        fixed: dict[str, Shape] = {}
        for n, sb in b.items():
            sd = d[n]
            if len(sb) != len(sd):
                raise ConfigError(f"{n!r} has rank {len(sb)} in base, {len(sd)} in delta")
            out[n] = tuple(x if x != y else None for x, y in zip(sb, sd, strict=True))
            fixed[n] = tuple(x if x == y else None for x, y in zip(sb, sd, strict=True))
        if not any(any(v is not None for v in s) for s in out.values()):
            raise ConfigError(
                "base and delta models have identical shapes, so no width dimension was found; "
                "build the delta model at another width"
            )
        return cls(out, fixed)

    def check(self, model: nn.Module) -> dict[str, Dims]:
        """Each parameter's :class:`Dims`; a base shape that does not fit ``model`` (other
        names, rank, or a fixed dimension of another size) is a :class:`ConfigError`."""
        shapes = _shapes(model)
        if set(shapes) != set(self.shapes):
            extra, missing = set(self.shapes) - set(shapes), set(shapes) - set(self.shapes)
            raise ConfigError(
                "base shapes do not match the model: "
                f"not in model {sorted(extra)[:3]}, not in base shapes {sorted(missing)[:3]}; "
                "make them from this architecture (BaseShapes.infer(base, delta))"
            )
        out = {}
        for n, s in shapes.items():
            base = self.shapes[n]
            if len(base) != len(s):
                raise ConfigError(
                    f"base shape of {n!r} has rank {len(base)}, the model's {s}; "
                    "make the base shapes from this architecture"
                )
            fixed = self.fixed.get(n) if self.fixed else None
            for i, (b, d) in enumerate(zip(base, s, strict=True)):
                if b is None and fixed is not None and fixed[i] is not None and fixed[i] != d:
                    raise ConfigError(
                        f"{n!r} dim {i} is fixed at {fixed[i]} in the base shapes but is {d} in "
                        "the model; make the base shapes from this architecture"
                    )
            out[n] = Dims(s, base)
        return out

    def to_dict(self) -> dict[str, object]:
        """JSON-able: ``{"base": {name: [size or null]}, "fixed": {...} or null}``."""
        fixed = None if self.fixed is None else {n: list(s) for n, s in self.fixed.items()}
        return {"base": {n: list(s) for n, s in self.shapes.items()}, "fixed": fixed}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> BaseShapes:
        if not isinstance(d, Mapping) or not isinstance(d.get("base"), Mapping):
            raise ConfigError('base shapes JSON must be {"base": {name: [size or null]}, ...}')
        out = cls.declare(d["base"])  # type: ignore[arg-type]
        fixed = d.get("fixed")
        if fixed is None:
            return out
        return cls(out.shapes, {str(n): tuple(s) for n, s in fixed.items()})  # type: ignore
