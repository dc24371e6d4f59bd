"""Fast path for :class:`weightlab.models.MLP`: stacked weights, batched matmuls and a
hand-written backward pass, no autograd.

For member ``n`` with layers ``Z_l = A_{l-1} W_l^T + b_l``, ``A_l = φ(Z_l)`` and mean
cross-entropy over a batch of ``B`` examples, backpropagation (Rumelhart et al. 1986) gives

- ``∂L/∂Z_L = (softmax(Z_L) - onehot(y)) / B``
- ``∂L/∂W_l = (∂L/∂Z_l)^T A_{l-1}``, ``∂L/∂b_l = Σ_b ∂L/∂Z_l``
- ``∂L/∂Z_{l-1} = (∂L/∂Z_l W_l) ⊙ φ'(Z_{l-1})``

computed for all ``N`` members at once with ``torch.baddbmm`` / ``torch.bmm`` on
``(N, B, ·)`` tensors, written straight into the flat gradient buffer (see
:class:`~weightlab.population.optim.FlatLayout`) so the optimizer step is one fused kernel.
Members that share the data order share the input: ``x`` is broadcast (stride 0) over the
member dimension instead of copied.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from weightlab.models.mlp import MLP
from weightlab.population.optim import FlatLayout, PopulationOptimizer
from weightlab.train.config import OptimConfig

FAST_ACTIVATIONS = ("relu", "tanh", "gelu")


def supports(model: torch.nn.Module) -> bool:
    """True when ``model`` is a plain :class:`MLP` the fast path computes exactly."""
    return (
        type(model) is MLP
        and model.activation in FAST_ACTIVATIONS
        and not list(model.buffers())
        and [n for n, _ in model.named_parameters()]
        == [f"layers.{i}.{k}" for i in range(len(model.layers)) for k in ("weight", "bias")]
    )


class MLPEngine:
    """Trains ``N`` MLPs of identical widths as one computation."""

    def __init__(
        self,
        template: MLP,
        params: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        optims: Sequence[OptimConfig] | None,
        device: torch.device,
    ) -> None:
        self.widths = list(template.widths)
        self.act = template.activation
        self.n = n = next(iter(params.values())).shape[0]
        self.layout = FlatLayout(n, {k: v.shape[1:] for k, v in params.items()})
        self.flat = torch.empty(self.layout.total, device=device)
        self.grad = torch.zeros_like(self.flat)
        for name, v in self.layout.views(self.flat).items():
            v.copy_(params[name])
        L = len(self.widths) - 1
        views, gviews = self.layout.views(self.flat), self.layout.views(self.grad)
        self.W = [views[f"layers.{i}.weight"] for i in range(L)]
        self.b = [views[f"layers.{i}.bias"].unsqueeze(1) for i in range(L)]
        self.gW = [gviews[f"layers.{i}.weight"] for i in range(L)]
        self.gb = [gviews[f"layers.{i}.bias"] for i in range(L)]
        self.opt = PopulationOptimizer(self.flat, self.layout, optims, masks) if optims else None
        self._bufs: dict[int, list[torch.Tensor]] = {}

    # -- state ---------------------------------------------------------------------------
    def params(self) -> dict[str, torch.Tensor]:
        return self.layout.views(self.flat)

    def buffers(self) -> dict[str, torch.Tensor]:
        return {}

    # -- compute -------------------------------------------------------------------------
    def _buffers(self, batch: int) -> list[torch.Tensor]:
        """Preallocated ``Z_l`` (and gelu outputs / input grads) for a batch size."""
        if batch not in self._bufs:
            dev, n = self.flat.device, self.n
            z = [torch.empty(n, batch, w, device=dev) for w in self.widths[1:]]
            a = [torch.empty(n, batch, w, device=dev) for w in self.widths[1:-1]]
            d = [torch.empty(n, batch, w, device=dev) for w in self.widths[1:-1]]
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
                if self.act == "relu":
                    h = zi.relu_()
                elif self.act == "tanh":
                    h = zi.tanh_()
                else:
                    h = F.gelu(zi, out=a[i]) if a else F.gelu(zi)
            else:
                h = zi
            acts.append(h)
        return acts

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step for every member; returns the per-member batch loss ``(N,)``.

        ``x``: ``(B, in)`` shared by all members or ``(N, B, in)``; ``y``: ``(B,)`` or ``(N, B)``.
        """
        batch = x.shape[-2]
        z, a, d = self._buffers(batch)
        with torch.no_grad():
            acts = self._forward(x, z, a)
            logits = acts[-1]
            logp = torch._log_softmax(logits, -1, False, out=self._logp(logits))
            yy = (y if y.dim() == 2 else y.unsqueeze(0).expand(self.n, batch)).unsqueeze(-1)
            loss = logp.gather(-1, yy).squeeze(-1).mean(1).neg_()
            # dL/dZ_L = (softmax - onehot) / B, built in place in logp's storage
            dz = logp.exp_()
            dz.scatter_add_(-1, yy, torch.full_like(yy, -1.0, dtype=dz.dtype))
            dz.mul_(1.0 / batch)
            for i in range(len(self.W) - 1, -1, -1):
                torch.bmm(dz.transpose(1, 2), acts[i], out=self.gW[i])
                torch.sum(dz, dim=1, out=self.gb[i])
                if i == 0:
                    break
                da = torch.bmm(dz, self.W[i], out=d[i - 1])
                if self.act == "relu":  # relu'(z) = [a > 0], written over da in place
                    dz = torch.ops.aten.threshold_backward.grad_input(
                        da, acts[i], 0.0, grad_input=da
                    )
                elif self.act == "tanh":
                    dz = da.mul_(1 - acts[i].square())
                else:
                    dz = torch.ops.aten.gelu_backward(da, z[i - 1])
            self.opt.step(self.grad)
        return loss

    @torch.no_grad()
    def evaluate(self, split, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member summed cross-entropy and number correct on ``split``."""
        loss = torch.zeros(self.n, device=self.flat.device, dtype=torch.float64)
        correct = torch.zeros(self.n, device=self.flat.device, dtype=torch.long)
        for s in range(0, len(split), rows):
            xs, ys = split.x[s : s + rows].flatten(1), split.y[s : s + rows]
            logits = self._forward(xs, None, None)[-1]
            yy = ys.unsqueeze(0).expand(self.n, -1)
            ce = F.cross_entropy(logits.transpose(1, 2), yy, reduction="none")
            loss += ce.sum(1, dtype=torch.float64)
            correct += (logits.argmax(-1) == yy).sum(1)
        return loss, correct
