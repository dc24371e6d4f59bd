"""DenseShift's training pieces (Li et al. 2023, "DenseShift: Towards Accurate and
Transferable Low-Bit Shift Network", row [#29]) on top of the core's shift level sets:
zero-free ``shift`` (``±s·2^(−p)``, ``p = 0 … 2^(b−1) − 1``: ``2^b`` levels, no zero) and
``shift_zero`` (``0`` and ``±s·2^(−p)``, ``p = 0 … 2^(b−1) − 2``: ``2^b − 1`` levels).

**Sign-scale decomposition** (:class:`SignScale`, attached by :func:`sign_scale`). The
paper writes a shift weight as ``W = S ⊙ 2^P`` with a sign tensor ``S ∈ {±1}`` and a
power-of-two magnitude, and trains the two parts separately, so a weight's sign can flip
without its magnitude first walking down through every smaller level (the "weight
freezing" the abstract names). The abstract gives no formula; what is implemented here,
exactly (the standard form of the idea):

- two latent float tensors per weight: the *sign latent* ``W_s`` (the module's stored
  weight itself) and the *magnitude latent* ``M`` (a ``Parameter`` of the transform,
  initialized to ``|W|``);
- forward: ``Ŵ = sign(W_s) · s · m`` with ``sign(0) = +1`` and ``m = Q(|M|/s)``, ``Q``
  the nearest of the level set's magnitudes (:class:`Magnitudes`: ``1, ½, …,
  2^(−(2^(b−1)−1))`` zero-free; ``1, ½, …, 2^(−(2^(b−1)−2)), 0`` with a zero), ties to
  the even index: linear-nearest rounding, as the core's
  :class:`~weightlab.quant.levels.PowersOfTwo` table rounds (stochastic rounding moves to
  a neighbour with probability proportional to closeness). ``Ŵ`` always lies on the
  spec's level set; on the zero-free ``shift`` set it is never 0;
- the scale ``s`` comes from the spec's estimator applied to ``M`` (e.g. ``minmax`` per
  channel: ``s = max|M|`` of the row; ``update="step"`` re-estimates it at every training
  forward), no gradient;
- backward, straight-through: ``∂Ŵ/∂W_s = s·m`` (the sign's STE is the identity, as in
  the authors' code), ``∂Ŵ/∂M = sign(W_s)·sign(M)`` where ``|M| ≤ s`` and 0 above the
  top level (``clipped`` STE) or everywhere (``identity``). Both latents get gradients
  and the optimizer trains both (the magnitude latent is a parameter of the model).

The same decomposition on ``shift_zero`` (a weight is 0 when its magnitude rounds to 0)
is the matched baseline with a zero level: the two differ only in the level set.

:class:`SignScale` is a :class:`~weightlab.quant.quantizer.Quantizer` (same spec, ``scale``
buffer, ``track``/``last_q``/``last_t`` after each training forward, ``keep`` gating both
latents' gradients, ``level_indices``), so :func:`~weightlab.quant.quantizer.quantizers`,
:func:`~weightlab.core.merge` and the oscillation / freezing instruments see it like any
other quantizer; its level indices are those of the spec's level set (ascending, as
:func:`~weightlab.quant.levels.make_levels` lists them).

**Low-variance random init for transfer** (:class:`LowVariance`, :func:`low_variance_head`).
A new task head is drawn ``N(0, (γ²/fan_in))`` with ``γ = 0.01`` by default: 1% of LeCun's
standard deviation. Why that scale: the head's initial logits are then ~100× smaller than
a standard head's (the initial loss is ``ln K`` to about 1e-4), and the gradient it sends
back into the pretrained body, ``Wᵀ(softmax − y)``, is ~100× smaller too, so the first
fine-tuning steps move the head, not the transferred features; unlike an all-zero head it
still has random signs, which a zero-free quantized head needs (``sign(0) = +1`` would
make every weight of a row positive, and a per-row ``max|W|`` scale would be 0).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from weightlab.core.selectors import Selector
from weightlab.errors import ConfigError
from weightlab.init.registry import InitContext, Initializer, initialize
from weightlab.quant.fake import grid_round
from weightlab.quant.granularity import group_view
from weightlab.quant.quantizer import Quantizer, QuantSpec, quantize

DEFAULT_GAIN = 0.01  # the low-variance head's std is DEFAULT_GAIN / sqrt(fan_in)


# -- sign-scale decomposition --------------------------------------------------------------
class _SignSTE(torch.autograd.Function):
    """``sign(x)`` with ``sign(0) = +1`` forward, identity backward."""

    @staticmethod
    def forward(ctx, x):
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        return dy


class Magnitudes:
    """The magnitude half of a shift level set, ascending, index 0 first: zero-free
    (``shift``) ``2^(−(n−1)), …, ½, 1`` with ``n = 2^(b−1)``; with a zero (``shift_zero``)
    ``0, 2^(−(n−1)), …, ½, 1`` with ``n = 2^(b−1) − 1``. :meth:`position` is the grid
    position of magnitudes ``u ≥ 0`` (level ``k`` at ``t = k``, linear between neighbours,
    the end segments extrapolated), the same ``t`` as the core's
    :class:`~weightlab.quant.levels.Table` on these levels (tested), in closed form."""

    def __init__(self, bits: int, zero: bool) -> None:
        self.bits, self.zero = bits, zero
        self.n = 2 ** (bits - 1) - (1 if zero else 0)  # nonzero magnitudes
        self.size = self.n + (1 if zero else 0)  # indices 0 … size − 1

    def _powers(self, u: torch.Tensor) -> torch.Tensor:
        """Position on ``2^(−(n−1)) … 1`` (index 0 = the smallest power): with
        ``e = clamp(floor(log2 u), −(n−1), −1)`` the segment is ``[2^e, 2^(e+1)]``, of
        width ``2^e``, so ``t = (e + n − 1) + (u − 2^e)/2^e``."""
        if self.n == 1:  # a single power: the segment [0, 1] (with a zero) or none
            return u if self.zero else torch.zeros_like(u)
        e = torch.floor(torch.log2(u)).clamp_(-(self.n - 1), -1)
        lo = torch.exp2(e)
        return (e + (self.n - 1)) + (u - lo) / lo

    def position(self, u: torch.Tensor) -> torch.Tensor:
        if not self.zero or self.n == 1:
            return self._powers(u)
        s0 = 2.0 ** (-(self.n - 1))
        return torch.where(u < s0, u * (1.0 / s0), 1.0 + self._powers(u))

    def value(self, q: torch.Tensor) -> torch.Tensor:
        """Magnitude of index ``q`` (floats, in ``[0, size − 1]``)."""
        if not self.zero:
            return torch.exp2(q - (self.n - 1))
        return torch.where(q > 0, torch.exp2(q - self.n), 0.0).to(q.dtype)

    def full_index(self, qp: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        """Index into the signed ``shift`` / ``shift_zero`` level set (ascending; the zero
        level, where there is one, is index ``n`` whatever the sign)."""
        qp = qp.to(torch.int32)
        if self.zero:
            return torch.where(positive, self.n + qp, self.n - qp)
        return torch.where(positive, self.n + qp, self.n - 1 - qp)

    def full_position(self, tp: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        """The signed level set's grid position (the core table's ``encode`` of the signed
        value). Zero-free, a magnitude below the smallest level sits on the segment that
        crosses 0 between ``∓2^(−(n−1))`` (``tp ∈ [−1, 0)`` becomes ``tp/2``)."""
        if self.zero:
            return torch.where(positive, self.n + tp, self.n - tp)
        tp = torch.where(tp < 0, 0.5 * tp, tp)
        return torch.where(positive, self.n + tp, self.n - 1 - tp)


class _PowerMagnitude(torch.autograd.Function):
    """``s·m(q)``, ``m(q)`` the table magnitude nearest ``a/s`` (or a stochastic
    neighbour), for ``a ≥ 0``; returns ``(value, index)``. Straight-through backward to
    ``a`` (clipped above the top level, or identity); no gradient to the scale."""

    @staticmethod
    def forward(ctx, a, scale, mags, rounding, generator, clipped):
        u = a * (1.0 / scale)
        r = grid_round(mags.position(u), rounding, generator)
        q = r.clamp(0, mags.size - 1)
        out = mags.value(q) * scale
        ctx.save_for_backward(u <= 1.0 if clipped else None)
        ctx.mark_non_differentiable(q)
        return out, q

    @staticmethod
    def backward(ctx, dy, _dq):
        (inside,) = ctx.saved_tensors
        da = dy if inside is None else dy * inside
        return da, None, None, None, None, None


class SignScale(Quantizer):
    """DenseShift's sign-scale decomposition of one weight (see the module doc). Its spec
    uses the ``shift`` (zero-free) or ``shift_zero`` level set; ``magnitude`` is the
    magnitude latent."""

    def __init__(
        self,
        spec: QuantSpec,
        weight: torch.Tensor,
        *,
        valid: torch.Tensor | None = None,
        seed: int = 0,
        name: str = "",
    ) -> None:
        check_spec(spec)
        super().__init__(spec, weight, valid=valid, seed=seed, name=name)
        self.magnitude = nn.Parameter(weight.detach().abs().clone())
        self.mags = Magnitudes(spec.bits, zero=spec.levels == "shift_zero")

    def recalibrate(self, weight: torch.Tensor | None = None) -> None:
        """Re-estimate a static scale from the magnitude latent (``weight`` is ignored:
        the sign latent carries no magnitude)."""
        super().recalibrate(self.magnitude)

    def _parts(self, weight: torch.Tensor):
        s = self.spec
        mv = group_view(self.magnitude, s.granularity)
        scale, _ = self.current_scale(mv.detach().abs())
        scale = scale.detach().to(weight.dtype)
        w_s = weight
        m = mv.abs()
        if self.keep is not None:  # gate both latents' gradients
            k = self.keep.to(weight.dtype)
            w_s = weight * k + (weight * (1 - k)).detach()
            kv = group_view(k, s.granularity)
            m = m * kv + (m * (1 - kv)).detach()
        mag, qp = _PowerMagnitude.apply(
            m, scale, self.mags, s.rounding, self._gen, s.ste == "clipped"
        )
        sign = _SignSTE.apply(w_s)
        return sign, mag.reshape(weight.shape), qp.reshape(weight.shape), m, scale

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        sign, mag, qp, m, scale = self._parts(weight)
        out = sign * mag
        if self.track and self.training:
            with torch.no_grad():
                tp = self.mags.position(m.detach() * (1.0 / scale)).reshape(weight.shape)
                pos = sign.detach() > 0
                self.last_q = self.mags.full_index(qp, pos)
                self.last_t = self.mags.full_position(tp, pos)
        return out

    def level_indices(self, weight: torch.Tensor) -> torch.Tensor:
        """The ``shift`` level index of every weight (nearest rounding, current scale)."""
        with torch.no_grad():
            mv = group_view(self.magnitude.detach().abs(), self.spec.granularity)
            scale = self.scale.detach().to(mv.dtype)
            qp = torch.round(self.mags.position(mv * (1.0 / scale)))
            qp = qp.clamp(0, self.mags.size - 1).reshape(weight.shape)
            return self.mags.full_index(qp, weight.detach() >= 0)

    def extra_repr(self) -> str:
        return f"sign-scale {self.spec.describe()}"


def check_spec(spec: QuantSpec) -> QuantSpec:
    """The decomposition is defined on the shift level sets (``shift``, zero-free, or
    ``shift_zero``) with a weight-derived scale (not LSQ's learned one)."""
    if spec.levels not in ("shift", "shift_zero"):
        raise ConfigError(
            f"the sign-scale decomposition needs a shift level set, got {spec.levels!r}; use "
            "QuantSpec(levels='shift', ...) (zero-free) or levels='shift_zero'"
        )
    if spec.scale == "lsq":
        raise ConfigError(
            "the sign-scale decomposition takes its scale from the magnitude latent; use "
            "minmax, percentile, mse, meanabs or stats, not lsq"
        )
    return spec


def sign_scale(
    model: nn.Module,
    spec: QuantSpec,
    select: Selector | str | list[str] | None = None,
    *,
    seed: int = 0,
) -> dict[str, SignScale]:
    """Attach :class:`SignScale` to every weight ``select`` picks (default: every Linear
    and Conv weight), in the quantizer's place: first in the weight's transform chain,
    masks and LoRA deltas after it (:func:`~weightlab.quant.quantizer.quantize` with ``cls=SignScale`` does the
    attaching and checks). Returns ``{name: SignScale}``."""
    check_spec(spec)
    return quantize(model, spec, select, seed=seed, cls=SignScale)


# -- low-variance random init ----------------------------------------------------------------
class LowVariance(Initializer):
    """DenseShift's low-variance random init for a new (transfer) head: ``W ~ N(0,
    γ²/fan_in)``, default ``γ = 0.01`` (1% of LeCun's std; see the module doc for why),
    bias 0. Not registered by name: pass an instance to
    :func:`~weightlab.init.registry.initialize` or use :func:`low_variance_head`."""

    def __init__(self, gain: float = DEFAULT_GAIN) -> None:
        if isinstance(gain, bool) or not isinstance(gain, int | float):
            raise ConfigError(f"the low-variance gain must be a number, got {gain!r}")
        if not (math.isfinite(gain) and gain > 0):
            raise ConfigError(f"the low-variance gain must be positive and finite, got {gain}")
        self.gain = float(gain)

    def weight(self, shape: torch.Size, ctx: InitContext) -> torch.Tensor:
        std = self.gain / math.sqrt(ctx.fan_in)
        return torch.randn(tuple(shape), generator=ctx.generator, dtype=torch.float64) * std


def low_variance_head(
    model: nn.Module, head: str, *, seed: int, gain: float = DEFAULT_GAIN
) -> nn.Module:
    """Re-initialize the Linear module ``head`` (a module name, e.g. ``"layers.2"``) of
    ``model`` in place with :class:`LowVariance` (bias 0); returns ``model``."""
    try:
        module = model.get_submodule(head)
    except AttributeError:
        raise ConfigError(f"the model has no module {head!r}; name the head's Linear") from None
    if not isinstance(module, nn.Linear):
        raise ConfigError(f"the head {head!r} is a {type(module).__name__}, not a Linear")
    initialize(model, LowVariance(gain), seed=seed, selector=Selector(include=(head,)))
    return model


__all__ = [
    "DEFAULT_GAIN",
    "LowVariance",
    "SignScale",
    "check_spec",
    "low_variance_head",
    "Magnitudes",
    "sign_scale",
]
