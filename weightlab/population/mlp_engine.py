"""Fast path for :class:`weightlab.models.MLP`: stacked weights, batched matmuls and a
hand-written backward pass, no autograd.

For member ``n`` with layers ``Z_l = A_{l-1} W_l^T + b_l``, ``A_l = φ(Z_l)`` and a loss
``L`` averaged over a batch of ``B`` examples, backpropagation (Rumelhart et al. 1986) gives

- ``∂L/∂Z_L = (softmax(Z_L) - onehot(y)) / B`` for cross-entropy,
  ``2 (Z_L - y) / (B · D)`` for MSE over ``D`` outputs, and for any other per-example loss
  ``∂L/∂Z_L`` by autograd on the output alone (the rest stays hand-written);
- ``∂L/∂W_l = (∂L/∂Z_l)^T A_{l-1}``, ``∂L/∂b_l = Σ_b ∂L/∂Z_l``
- ``∂L/∂Z_{l-1} = (∂L/∂Z_l W_l) ⊙ φ'(Z_{l-1})``, with ``φ' = [Z > 0]`` (relu),
  ``1`` (linear), ``1 - A²`` (tanh), ``cos Z`` (sin, as in SIRENs, Sitzmann et al. 2020) or gelu's

computed for all ``N`` members at once with ``torch.baddbmm`` / ``torch.bmm`` on
``(N, B, ·)`` tensors, written straight into the flat gradient buffer (see
:class:`~weightlab.population.optim.FlatLayout`) so the optimizer step is one fused kernel.
Members that share the data order share the input: ``x`` is broadcast (stride 0) over the
member dimension instead of copied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch.nn import functional as F

from weightlab.models.mlp import MLP
from weightlab.models.siren import SIREN
from weightlab.population.loss import EngineLoss
from weightlab.population.optim import FlatLayout, PopulationOptimizer
from weightlab.train.config import OptimConfig

FAST_ACTIVATIONS = ("relu", "tanh", "gelu", "sin", "linear")


def supports(model: torch.nn.Module) -> bool:
    """True when ``model`` is a plain :class:`MLP` or :class:`~weightlab.models.siren.SIREN`
    the fast path computes exactly."""
    if list(model.buffers()):
        return False
    names = [n for n, _ in model.named_parameters()]
    if type(model) is MLP:
        return model.activation in FAST_ACTIVATIONS and names == _param_names(len(model.layers))
    if type(model) is SIREN:
        return names == _param_names(len(model.layers), siren=True)
    return False


def _param_names(layers: int, siren: bool = False) -> list[str]:
    """``layers.{i}.weight/bias`` (a SIREN's sine layers hold theirs in ``.linear``)."""
    inner = [".linear" if siren and i < layers - 1 else "" for i in range(layers)]
    return [f"layers.{i}{inner[i]}.{k}" for i in range(layers) for k in ("weight", "bias")]


class MLPEngine:
    """Trains ``N`` MLPs (or SIRENs) of identical widths as one computation.

    A SIREN's hidden layers compute ``sin(ω0 Z_l)`` (Sitzmann et al. 2020, Eq. 1), so their
    backward multiplies by ``ω0 cos(ω0 Z_l)``, in the loop's order (``cos`` first, then ``ω0``).

    ``params`` are stacked ``(N, *shape)`` tensors whose dtype the engine keeps; ``loss``
    is the training loss (default: cross-entropy); ``opt_kwargs`` go to
    :class:`PopulationOptimizer` (``total_steps``, ``multipliers``).
    """

    def __init__(
        self,
        template: MLP,
        params: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        optims: Sequence[OptimConfig] | None,
        device: torch.device,
        *,
        loss: EngineLoss | None = None,
        opt_kwargs: Mapping[str, object] | None = None,
    ) -> None:
        self.widths = list(template.widths)
        siren = type(template) is SIREN
        self.act = "sin" if siren else template.activation
        self.omega = template.omega0 if siren else None  # pre-activation scale (SIREN)
        first = next(iter(params.values()))
        self.n = n = first.shape[0]
        self.dtype = first.dtype
        self.loss = loss or EngineLoss()
        self.layout = FlatLayout(n, {k: v.shape[1:] for k, v in params.items()})
        self.flat = torch.empty(self.layout.total, device=device, dtype=self.dtype)
        self.grad = torch.zeros_like(self.flat)
        for name, v in self.layout.views(self.flat).items():
            v.copy_(params[name])
        L = len(self.widths) - 1
        views, gviews = self.layout.views(self.flat), self.layout.views(self.grad)
        names = _param_names(L, siren)
        self.W = [views[names[2 * i]] for i in range(L)]
        self.b = [views[names[2 * i + 1]].unsqueeze(1) for i in range(L)]
        self.gW = [gviews[names[2 * i]] for i in range(L)]
        self.gb = [gviews[names[2 * i + 1]] for i in range(L)]
        self.opt = (
            PopulationOptimizer(self.flat, self.layout, optims, masks, **dict(opt_kwargs or {}))
            if optims
            else None
        )
        self._bufs: dict[int, list[torch.Tensor]] = {}

    # -- state ---------------------------------------------------------------------------
    def params(self) -> dict[str, torch.Tensor]:
        return self.layout.views(self.flat)

    def buffers(self) -> dict[str, torch.Tensor]:
        return {}

    # -- compute -------------------------------------------------------------------------
    def _buffers(self, batch: int) -> list[torch.Tensor]:
        """Preallocated ``Z_l`` (and gelu/sin outputs, input grads) for a batch size."""
        if batch not in self._bufs:
            dev, n, dt = self.flat.device, self.n, self.dtype
            z = [torch.empty(n, batch, w, device=dev, dtype=dt) for w in self.widths[1:]]
            a = [torch.empty(n, batch, w, device=dev, dtype=dt) for w in self.widths[1:-1]]
            d = [torch.empty(n, batch, w, device=dev, dtype=dt) for w in self.widths[1:-1]]
            self._bufs = {batch: [z, a, d]}
        return self._bufs[batch]

    def _logp(self, logits: torch.Tensor) -> torch.Tensor:
        if getattr(self, "_logp_buf", None) is None or self._logp_buf.shape != logits.shape:
            self._logp_buf = torch.empty_like(logits)
        return self._logp_buf

    def _forward(self, x: torch.Tensor, z: list, a: list) -> list[torch.Tensor]:
        """Activations ``[A_0, A_1, ..., Z_L]``; ``z``/``a`` are output buffers or None."""
        n, L = self.n, len(self.W)
        if x.dim() == 2:  # shared input: broadcast over members without a copy
            x = x.unsqueeze(0).expand(n, *x.shape)
        acts = [x]
        h = x
        for i in range(L):
            zi = torch.baddbmm(self.b[i], h, self.W[i].transpose(1, 2), out=z[i] if z else None)
            if i < L - 1:
                if self.act == "linear":
                    h = zi
                elif self.act == "relu":
                    h = zi.relu_()
                elif self.act == "tanh":
                    h = zi.tanh_()
                elif self.act == "sin":
                    if self.omega is not None:  # SIREN: sin(ω0 (W a + b)), Z_l holds ω0 (W a + b)
                        zi.mul_(self.omega)
                    h = torch.sin(zi, out=a[i]) if a else torch.sin(zi)
                else:
                    h = F.gelu(zi, out=a[i]) if a else F.gelu(zi)
            else:
                h = zi
            acts.append(h)
        return acts

    def _output_grad(self, out: torch.Tensor, y: torch.Tensor):
        """``(per-member batch loss (N,), ∂L/∂Z_L)``; the gradient may overwrite ``out``."""
        batch = out.shape[1]
        if self.loss.kind == "cross_entropy":
            logp = torch._log_softmax(out, -1, False, out=self._logp(out))
            yy = (y if y.dim() == 2 else y.unsqueeze(0).expand(self.n, batch)).unsqueeze(-1)
            loss = logp.gather(-1, yy).squeeze(-1).mean(1).neg_()
            # dL/dZ_L = (softmax - onehot) / B, built in place in logp's storage
            dz = logp.exp_()
            dz.scatter_add_(-1, yy, torch.full_like(yy, -1.0, dtype=dz.dtype))
            return loss, dz.mul_(1.0 / batch)
        target = self.loss.member_targets(y, self.n)
        if self.loss.kind == "mse":
            return self.loss.mse_grad(out, target, self._logp(out))
        return self.loss.autograd_grad(out, target)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step for every member; returns the per-member batch loss ``(N,)``.

        ``x``: ``(B, in)`` shared by all members or ``(N, B, in)``; ``y``: ``(B, *t)`` or
        ``(N, B, *t)`` (labels or float targets, per the engine's loss).
        """
        batch = x.shape[-2]
        z, a, d = self._buffers(batch)
        with torch.no_grad():
            acts = self._forward(x, z, a)
            loss, dz = self._output_grad(acts[-1], y)
            for i in range(len(self.W) - 1, -1, -1):
                torch.bmm(dz.transpose(1, 2), acts[i], out=self.gW[i])
                torch.sum(dz, dim=1, out=self.gb[i])
                if i == 0:
                    break
                da = torch.bmm(dz, self.W[i], out=d[i - 1])
                if self.act == "linear":  # identity: φ' = 1
                    dz = da
                elif self.act == "relu":  # relu'(z) = [a > 0], written over da in place
                    dz = torch.ops.aten.threshold_backward.grad_input(
                        da, acts[i], 0.0, grad_input=da
                    )
                elif self.act == "tanh":
                    dz = da.mul_(1 - acts[i].square())
                elif self.act == "sin":  # sin'(z) = cos(z); Z_{i-1} is not needed after this
                    dz = da.mul_(torch.cos(z[i - 1], out=z[i - 1]))
                    if self.omega is not None:  # SIREN: d(ω0 u)/du = ω0
                        dz.mul_(self.omega)
                else:
                    dz = torch.ops.aten.gelu_backward(da, z[i - 1])
            self.opt.step(self.grad)
        return loss

    @torch.no_grad()
    def evaluate(self, split, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member summed loss ``(N,)`` and number correct ``(N,)`` (classification) or
        summed squared error per output ``(N, *out)`` (regression) on ``split``."""
        loss, second = None, None
        for s in range(0, len(split), rows):
            xs, ys = split.x[s : s + rows], split.y[s : s + rows]
            xs = xs.reshape(len(xs), -1)  # as MLP.forward (and 1-D SIREN inputs as (B, 1))
            out = self._forward(xs, None, None)[-1]
            part = self.loss.eval_stats(out, self.loss.member_targets(ys, self.n))
            loss = part[0] if loss is None else loss + part[0]
            second = part[1] if second is None else second + part[1]
        return loss, second
