"""Locally connected layers and the patch networks of the locality comparison.

:class:`LocallyConnected1d` is a 1-D convolution *without weight sharing*: every output
position ``p`` has its own filter ``W_p`` (Lahoti, Karp, Winston, Singh & Li 2024, "Role of
Locality and Weight Sharing in Image-Based Tasks", row [#32]: the LCN between the CNN, which
ties all ``W_p``, and the FCN, which has no locality). Vectorized as an unfold of the input
into its ``P`` windows and one ``einsum``; with every ``W_p`` equal it computes exactly what
``nn.Conv1d`` computes, and it runs under ``torch.func.vmap`` / ``functional_call`` (the
population engine's generic path).

:class:`PatchNet` builds the three two-layer networks of that comparison on inputs made of
``k`` patches of dimension ``d`` (flattened to ``k·d``): ``"cnn"`` (a ``Conv1d`` with
kernel = stride = ``d``), ``"lcn"`` (the same with untied filters) and ``"fcn"``
(``kd → hidden → 1``); ReLU; the convolutional ones sum-pool over positions before a
linear readout. Its output is the logit pair ``(0, f)``, so cross-entropy on it is the
logistic loss ``log(1 + exp(−y f))`` of the scalar ``f``, ``y = ±1``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from weightlab.errors import ConfigError

__all__ = ["PATCH_KINDS", "LocallyConnected1d", "PatchNet", "PatchNetStack", "tie_conv"]

PATCH_KINDS = ("cnn", "lcn", "fcn")


class LocallyConnected1d(nn.Module):
    """``y[b, o, p] = Σ_{c, j} W[p, o, c, j] · x[b, c, p·stride + j] + bias[p, o]``
    (``c`` over the input channels of ``o``'s group, as ``nn.Conv1d(groups=...)``).

    Args:
        in_channels, out_channels: ``C_in``, ``C_out``.
        kernel_size: window length ``K``; stride: step between windows.
        length: the input length ``L`` (the positions ``P = (L − K) // stride + 1`` each get
            their own filter, so the layer must know ``L`` to own its parameters).
        bias: a bias per position and output channel.
        groups: ``C_in`` and ``C_out`` split into this many groups, group ``g``'s outputs
            reading only group ``g``'s inputs (``nn.Conv1d``'s ``groups``).

    Parameters: ``weight (P, C_out, C_in / groups, K)``, ``bias (P, C_out)``, initialized as
    ``nn.Conv1d`` initializes one filter (``U(±1/√(C_in·K))``, PyTorch's default), each
    position independently.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        length: int,
        bias: bool = True,
        groups: int = 1,
    ) -> None:
        super().__init__()
        for name, v in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("kernel_size", kernel_size),
            ("stride", stride),
            ("length", length),
            ("groups", groups),
        ):
            if int(v) != v or v < 1:
                raise ConfigError(f"LocallyConnected1d: {name} must be an integer >= 1, got {v}")
        if kernel_size > length:
            raise ConfigError(
                f"LocallyConnected1d: kernel_size {kernel_size} exceeds the input length {length}"
            )
        if in_channels % groups or out_channels % groups:
            raise ConfigError(
                f"LocallyConnected1d: groups {groups} must divide in_channels {in_channels} "
                f"and out_channels {out_channels}"
            )
        self.groups = int(groups)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.length = int(kernel_size), int(stride), int(length)
        self.positions = (self.length - self.kernel_size) // self.stride + 1
        shape = (self.positions, self.out_channels, self.in_channels // groups, self.kernel_size)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(self.positions, self.out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``U(±1/√fan_in)`` with ``fan_in = C_in·K`` for weights and biases (Conv1d's default)."""
        bound = 1.0 / math.sqrt(self.in_channels // self.groups * self.kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C_in, L)`` -> ``(B, C_out, P)``."""
        windows = x.unfold(-1, self.kernel_size, self.stride)  # (B, C_in, P, K)
        if self.groups == 1:
            out = torch.einsum("bcpk,pock->bop", windows, self.weight)
        else:
            g, lead = self.groups, windows.shape[:-3]
            windows = windows.reshape(*lead, g, self.in_channels // g, *windows.shape[-2:])
            weight = self.weight.reshape(
                self.positions, g, self.out_channels // g, -1, self.kernel_size
            )
            out = torch.einsum("...gcpk,pgock->...gop", windows, weight)
            out = out.reshape(*lead, self.out_channels, self.positions)
        if self.bias is not None:
            out = out + self.bias.transpose(0, 1)
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, length={self.length}, positions={self.positions}, "
            f"groups={self.groups}"
        )


def tie_conv(layer: LocallyConnected1d, conv: nn.Conv1d) -> None:
    """Copy ``conv``'s one filter (and bias) into every position of ``layer`` (in place):
    the tied LCN, which computes what ``conv`` computes."""
    with torch.no_grad():
        layer.weight.copy_(conv.weight.unsqueeze(0).expand_as(layer.weight))
        if layer.bias is not None:
            layer.bias.copy_(conv.bias.unsqueeze(0).expand_as(layer.bias))


class PatchNet(nn.Module):
    """A two-layer network on ``k`` patches of dimension ``d`` (input ``(B, k·d)``).

    - ``"cnn"``: ``f = aᵀ Σ_j ReLU(W x_j + b) + c``, one ``Conv1d(1, channels, d, stride=d)``;
    - ``"lcn"``: ``f = aᵀ Σ_j ReLU(W_j x_j + b_j) + c``, a :class:`LocallyConnected1d`;
    - ``"fcn"``: ``f = aᵀ ReLU(W x + b) + c``, ``W`` of shape ``(channels·k, k·d)`` (the
      LCN's number of hidden units, without locality).

    Returns the logits ``(0, f)`` of shape ``(B, 2)``: cross-entropy on them is the
    logistic loss of ``f`` and ``argmax`` predicts class 1 iff ``f > 0``.
    """

    def __init__(self, kind: str, k: int, d: int, channels: int = 8) -> None:
        super().__init__()
        if kind not in PATCH_KINDS:
            raise ConfigError(f"PatchNet kind must be one of {PATCH_KINDS}, got {kind!r}")
        if k < 1 or d < 1 or channels < 1:
            raise ConfigError(
                f"PatchNet needs k, d, channels >= 1; got k={k}, d={d}, channels={channels}"
            )
        self.kind, self.k, self.d = kind, int(k), int(d)
        if kind == "cnn":
            self.hidden = nn.Conv1d(1, channels, d, stride=d)
            self.readout = nn.Linear(channels, 1)
        elif kind == "lcn":
            self.hidden = LocallyConnected1d(1, channels, d, d, length=k * d)
            self.readout = nn.Linear(channels, 1)
        else:
            self.hidden = nn.Linear(k * d, channels * k)
            self.readout = nn.Linear(channels * k, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "fcn":
            f = self.readout(torch.relu(self.hidden(x)))
        else:
            h = torch.relu(self.hidden(x.unsqueeze(-2)))  # (B, C, k)
            f = self.readout(h.sum(-1))
        return torch.cat([torch.zeros_like(f), f], dim=-1)


class PatchNetStack(nn.Module):
    """``members`` independent :class:`PatchNet` s of one kind as one module, every weight
    with a leading member dim and every layer one ``einsum`` over members (grouped
    ``Conv1d`` on the CPU measured ~10× slower per step here). Member ``i`` reads only its
    own input ``x[:, i]``, so with the training loss the sum of the members' losses the
    stack's gradient for member ``i`` is its own loss's gradient: a batch of tiny networks
    in a handful of ops, for the one training loop (:func:`weightlab.train.train`).

    Input ``(B, members, k·d)``; output ``f`` of shape ``(B, members)`` (the scalar that
    :class:`PatchNet` returns as the logit pair ``(0, f)``). Parameters: ``hidden_weight``
    ``(M, C, d)`` (CNN), ``(M, k, C, d)`` (LCN, one filter per patch) or ``(M, Ck, kd)``
    (FCN); ``hidden_bias`` ``(M, C)``, ``(M, k, C)`` or ``(M, Ck)``; ``readout_weight``
    ``(M, width)``; ``readout_bias`` ``(M,)``. :meth:`from_members` copies existing nets
    in; :meth:`member` returns member ``i`` as a :class:`PatchNet`.
    """

    def __init__(self, kind: str, k: int, d: int, channels: int = 8, members: int = 1) -> None:
        super().__init__()
        if kind not in PATCH_KINDS:
            raise ConfigError(f"PatchNetStack kind must be one of {PATCH_KINDS}, got {kind!r}")
        if min(k, d, channels, members) < 1:
            raise ConfigError(
                f"PatchNetStack needs k, d, channels, members >= 1; got k={k}, d={d}, "
                f"channels={channels}, members={members}"
            )
        self.kind, self.k, self.d = kind, int(k), int(d)
        self.channels, self.members = int(channels), int(members)
        m, c = self.members, self.channels
        shapes = {
            "cnn": ((m, c, d), (m, c)),
            "lcn": ((m, k, c, d), (m, k, c)),
            "fcn": ((m, c * k, k * d), (m, c * k)),
        }[kind]
        self.width = c * k if kind == "fcn" else c
        self.hidden_weight = nn.Parameter(torch.zeros(shapes[0]))
        self.hidden_bias = nn.Parameter(torch.zeros(shapes[1]))
        self.readout_weight = nn.Parameter(torch.zeros(m, self.width))
        self.readout_bias = nn.Parameter(torch.zeros(m))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "fcn":
            h = torch.relu(torch.einsum("bmi,mhi->bmh", x, self.hidden_weight) + self.hidden_bias)
        else:
            patches = x.reshape(*x.shape[:-1], self.k, self.d)  # (B, M, k, d)
            if self.kind == "cnn":
                pre = torch.einsum("bmkd,mcd->bmkc", patches, self.hidden_weight)
                pre = pre + self.hidden_bias.unsqueeze(1)
            else:
                pre = torch.einsum("bmkd,mkcd->bmkc", patches, self.hidden_weight)
                pre = pre + self.hidden_bias
            h = torch.relu(pre).sum(-2)  # sum-pooled over patches: (B, M, C)
        return (h * self.readout_weight).sum(-1) + self.readout_bias

    def _net_params(self, net: PatchNet) -> dict[str, torch.Tensor]:
        """``net``'s weights in this stack's per-member layout."""
        w = net.hidden.weight
        hw = {"cnn": lambda: w[:, 0, :], "lcn": lambda: w[:, :, 0, :], "fcn": lambda: w}
        hb = net.hidden.bias
        return {
            "hidden_weight": hw[self.kind](),
            "hidden_bias": hb,
            "readout_weight": net.readout.weight.reshape(-1),
            "readout_bias": net.readout.bias.reshape(()),
        }

    @classmethod
    def from_members(cls, nets: list[PatchNet]) -> PatchNetStack:
        """The stack whose member ``i`` computes what ``nets[i]`` computes (weights copied)."""
        first = nets[0]
        channels = first.readout.in_features // (first.k if first.kind == "fcn" else 1)
        stack = cls(first.kind, first.k, first.d, channels, len(nets))
        with torch.no_grad():
            for i, net in enumerate(nets):
                if (net.kind, net.k, net.d) != (first.kind, first.k, first.d):
                    raise ConfigError("PatchNetStack.from_members needs nets of one kind and size")
                for name, value in stack._net_params(net).items():
                    getattr(stack, name)[i].copy_(value)
        return stack

    def member(self, i: int) -> PatchNet:
        """Member ``i`` as a standalone :class:`PatchNet` (weights copied)."""
        net = PatchNet(self.kind, self.k, self.d, self.channels)
        with torch.no_grad():
            for name, view in self._net_params(net).items():
                view.copy_(getattr(self, name)[i])
        return net
