"""Ghost Batch Normalization and an MLP with batch normalization.

Hoffer, Hubara & Soudry (2017), "Train longer, generalize better: closing the generalization
gap in large batch training of neural networks", Sec. 4.1 and Algorithm 1: a large batch of
``B`` examples is split into ``B / |B_S|`` *ghost* (virtual) batches of ``|B_S|`` consecutive
examples; each is normalized with its own mean and (biased) variance,

    x̂ = (x − μ_l) / sqrt(σ²_l + ε),   y = γ x̂ + β,

so the noise of small-batch statistics is kept while the gradient is still averaged over the
whole batch. The running statistics used at inference follow Algorithm 1's sequential
momentum update, one update per ghost batch ``l = 1..L`` in order,

    μ_run ← (1 − η) μ_run + η μ_l,   σ²_run ← (1 − η) σ²_run + η σ̃²_l

(σ̃² with Bessel's correction, as ``torch.nn.BatchNorm1d``), computed in closed form so one
call costs a few tensor operations. With ``|B_S| ≥ B`` it equals ``nn.BatchNorm1d``.

Pure tensor code: it runs in the single-model loop and under ``torch.func.vmap`` (the
population engine's generic path), where the running statistics are per-member buffers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from weightlab.errors import ConfigError

__all__ = ["GhostBatchNorm1d", "MLPBN"]


class GhostBatchNorm1d(nn.Module):
    """Batch normalization over ghost batches of ``virtual_batch`` examples (Hoffer et al.
    2017, Sec. 4.1). Inputs ``(B, C)``. ``virtual_batch=None`` (or ``>= B``) is ordinary
    batch normalization. A batch that is not a multiple of ``virtual_batch`` ends in one
    smaller ghost batch. Parameter and buffer names equal ``nn.BatchNorm1d``'s."""

    def __init__(
        self,
        num_features: int,
        virtual_batch: int | None = None,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if virtual_batch is not None and int(virtual_batch) < 2:
            raise ConfigError(
                f"a ghost batch needs >= 2 examples to have a variance, got {virtual_batch}"
            )
        if not 0 < momentum <= 1:
            raise ConfigError(f"batch-norm momentum must lie in (0, 1], got {momentum}")
        self.num_features = int(num_features)
        self.virtual_batch = None if virtual_batch is None else int(virtual_batch)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.weight = nn.Parameter(torch.ones(self.num_features))
        self.bias = nn.Parameter(torch.zeros(self.num_features))
        self.register_buffer("running_mean", torch.zeros(self.num_features))
        self.register_buffer("running_var", torch.ones(self.num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def reset_parameters(self) -> None:
        """γ = 1, β = 0 and fresh running statistics (as ``nn.BatchNorm1d``)."""
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()
            self.running_mean.zero_()
            self.running_var.fill_(1.0)
            self.num_batches_tracked.zero_()

    def extra_repr(self) -> str:
        return f"{self.num_features}, virtual_batch={self.virtual_batch}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            x_hat = (x - self.running_mean) / torch.sqrt(self.running_var + self.eps)
            return x_hat * self.weight + self.bias
        b = x.shape[0]
        vb = b if self.virtual_batch is None else min(self.virtual_batch, b)
        if b % vb == 0:
            g = x.reshape(b // vb, vb, x.shape[-1])  # ghost batches of consecutive examples
            mean = g.mean(dim=1, keepdim=True)
            var = (g - mean).square().mean(dim=1, keepdim=True)
            out = ((g - mean) / torch.sqrt(var + self.eps)).reshape(x.shape)
            means, vars_, sizes = mean.squeeze(1), var.squeeze(1), [vb] * (b // vb)
        else:
            outs, ms, vs, sizes = [], [], [], []
            for chunk in x.split(vb):
                if chunk.shape[0] < 2:
                    raise ConfigError(
                        f"batch of {b} leaves a ghost batch of 1 example with virtual batch "
                        f"{vb}; choose a batch size that is a multiple of {vb}"
                    )
                m = chunk.mean(dim=0)
                v = (chunk - m).square().mean(dim=0)
                outs.append((chunk - m) / torch.sqrt(v + self.eps))
                ms.append(m)
                vs.append(v)
                sizes.append(chunk.shape[0])
            out, means, vars_ = torch.cat(outs), torch.stack(ms), torch.stack(vs)
        self._update_running(means, vars_, sizes)
        return out * self.weight + self.bias

    @torch.no_grad()
    def _update_running(self, means: torch.Tensor, vars_: torch.Tensor, sizes: list[int]):
        """Algorithm 1's per-ghost-batch momentum updates, in closed form:
        ``r_L = (1−η)^L r_0 + Σ_l η (1−η)^(L−1−l) s_l``."""
        eta, n_ghost = self.momentum, len(sizes)
        powers = torch.tensor(
            [eta * (1 - eta) ** (n_ghost - 1 - i) for i in range(n_ghost)],
            dtype=means.dtype,
            device=means.device,
        )
        bessel = torch.tensor([n / (n - 1) for n in sizes], dtype=means.dtype, device=means.device)
        keep = (1 - eta) ** n_ghost
        new_mean = (powers[:, None] * means.detach()).sum(0)
        new_var = (powers[:, None] * bessel[:, None] * vars_.detach()).sum(0)
        self.running_mean.mul_(keep).add_(new_mean)
        self.running_var.mul_(keep).add_(new_var)
        self.num_batches_tracked.add_(n_ghost)


class MLPBN(nn.Module):
    """``widths = [in, h1, ..., out]``: ``Linear → BN → activation`` per hidden layer and a
    plain ``Linear`` readout. Linear layers are ``layers.0 .. layers.{L-1}`` (as
    :class:`~weightlab.models.mlp.MLP`), norms ``norms.0 .. norms.{L-2}``.
    ``virtual_batch=None`` uses ``nn.BatchNorm1d``; an integer uses
    :class:`GhostBatchNorm1d` with that ghost-batch size. Both have the same parameter
    and buffer names, so one seed gives the same initial weights either way."""

    def __init__(
        self,
        widths: Sequence[int],
        virtual_batch: int | None = None,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        from weightlab.models.mlp import ACTIVATIONS

        widths = [int(w) for w in widths]
        if len(widths) < 3 or any(w <= 0 for w in widths):
            raise ConfigError(
                f"MLPBN widths must be >= 3 positive integers (one hidden layer), got {widths}"
            )
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}"
            )
        self.widths, self.activation, self.virtual_batch = widths, activation, virtual_batch
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(w) if virtual_batch is None else GhostBatchNorm1d(w, virtual_batch)
            for w in widths[1:-1]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from weightlab.models.mlp import ACTIVATIONS

        x = x.flatten(1)
        act = ACTIVATIONS[self.activation]
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.norms):
                x = act(self.norms[i](x))
        return x
