"""Relative representations: Moschella, Maiorca, Fumero, Norelli, Locatello & Rodolà (2023),
"Relative representations enable zero-shot latent space communication" [#1].

A sample's relative representation is its vector of cosine similarities to the latents of a
fixed set of anchor samples (the paper's Eq. 1 with ``sim`` = cosine):
``r_x = (cos(e_x, e_{a_1}), …, cos(e_x, e_{a_k}))``. It is unchanged by any orthogonal map
and any positive rescaling of the latent space applied to samples and anchors alike (the
paper's "invariance to latent isometries and rescalings"), which is what lets a head
trained on one encoder's relative space read another encoder's.

- :func:`relative_projection`: the projection (differentiable); :func:`matched_cosine`:
  the mean cosine between two spaces' vectors of the same samples.
- Zero-shot stitching, default protocol (:func:`zero_shot_stitch`): two MLPs trained
  normally; a relative head (a linear classifier) is fitted through the training loop on
  encoder B's relative space and reused, unchanged, on encoder A's relative space
  (anchors encoded by A). Control: absolute stitching, A's latent fed to B's own head.
- The paper's end-to-end variant (:class:`RelativeMLP`): encoder → relative projection
  against the anchors encoded by the same encoder at every forward → a normalization layer
  → head, trained as one model; stitching reuses model B's normalization and head on model
  A's relative space.

For a weightlab MLP the latent is the pre-activation output of hidden layer ``latent``
(default the last hidden layer: ``layers.1`` of 64-128-32-10), and its head is the
activation followed by the remaining layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError, DataError

__all__ = [
    "NORMS",
    "RelativeMLP",
    "StitchResult",
    "fit_relative_head",
    "matched_cosine",
    "mlp_head",
    "mlp_latent",
    "relative_projection",
    "relative_task",
    "zero_shot_stitch",
]

NORMS = ("batchnorm", "layernorm", "none")


def relative_projection(z: torch.Tensor, anchors: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarities ``(n, k)`` of the latents ``z`` ``(n, d)`` to the anchor latents
    ``anchors`` ``(k, d)`` (Moschella et al. 2023, Eq. 1, cosine similarity). Differentiable;
    a zero vector has similarity 0."""
    if z.ndim != 2 or anchors.ndim != 2 or z.shape[1] != anchors.shape[1]:
        raise DataError(
            f"latents {tuple(z.shape)} and anchors {tuple(anchors.shape)} must be (n, d) and "
            "(k, d) of one dimension d; encode both with the same encoder"
        )
    zn = z / z.norm(dim=1, keepdim=True).clamp_min(eps)
    an = anchors / anchors.norm(dim=1, keepdim=True).clamp_min(eps)
    return zn @ an.T


def matched_cosine(u: torch.Tensor, v: torch.Tensor, shift: int = 0) -> float:
    """Mean over samples of ``cos(u_i, v_i)``: how alike two spaces represent the same
    samples (absolute latents of two seeds, or their relative representations). ``shift``
    ``> 0`` pairs ``u_i`` with ``v_{(i + shift) mod n}`` instead, the mismatched-sample
    baseline: a space whose vectors all point one way scores high on both."""
    if shift:
        v = torch.roll(v, -int(shift), dims=0)
    if u.shape != v.shape:
        raise DataError(
            f"matched vectors must have one shape, got {tuple(u.shape)}, {tuple(v.shape)}"
        )
    return float(nn.functional.cosine_similarity(u.double(), v.double(), dim=1).mean())


def _check_mlp(model: nn.Module, latent: int | None) -> int:
    from weightlab.models.mlp import MLP

    if not isinstance(model, MLP):
        raise ConfigError(
            f"stitching splits weightlab's MLP into encoder and head, got {type(model).__name__}"
        )
    last = len(model.layers) - 2
    k = last if latent is None else int(latent)
    if not 0 <= k <= last:
        raise ConfigError(
            f"latent layer {latent} does not exist; hidden layers: "
            + ", ".join(f"layers.{i}" for i in range(last + 1))
        )
    return k


def _eval(model: nn.Module, fn):
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return fn()
    finally:
        model.train(was)


def mlp_latent(model: nn.Module, x: torch.Tensor, latent: int | None = None) -> torch.Tensor:
    """The pre-activation output of hidden layer ``layers.{latent}`` of a weightlab MLP
    (default: the last hidden layer), in eval mode without gradients."""
    from weightlab.models.mlp import ACTIVATIONS

    k = _check_mlp(model, latent)

    def run():
        h = x.flatten(1)
        for i in range(k + 1):
            h = model.layers[i](h)
            if i < k:
                h = ACTIVATIONS[model.activation](h)
        return h

    return _eval(model, run)


def mlp_head(model: nn.Module, z: torch.Tensor, latent: int | None = None) -> torch.Tensor:
    """The rest of the MLP applied to latents ``z`` of layer ``latent``: the activation,
    then layers ``latent + 1`` to the last (the head absolute stitching reuses)."""
    from weightlab.models.mlp import ACTIVATIONS

    k = _check_mlp(model, latent)

    def run():
        h = z
        for i in range(k + 1, len(model.layers)):
            h = model.layers[i](ACTIVATIONS[model.activation](h))
        return h

    return _eval(model, run)


def relative_task(
    model: nn.Module, data: TaskData, anchor_x: torch.Tensor, latent: int | None = None
) -> TaskData:
    """``data`` with every split's inputs replaced by their relative representation under
    ``model``'s encoder (anchors ``anchor_x`` encoded by the same encoder)."""
    anchors = mlp_latent(model, anchor_x, latent)

    def rel(s: Split) -> Split:
        if len(s) == 0:
            return Split(s.x.new_zeros(0, anchors.shape[0]), s.y)
        return Split(relative_projection(mlp_latent(model, s.x, latent), anchors), s.y)

    return TaskData(
        f"{data.name}-relative", rel(data.train), rel(data.val), rel(data.test), data.num_classes
    )


def fit_relative_head(rel: TaskData, cfg, *, seed: int, data_seed: int = 0) -> nn.Module:
    """A linear classifier ``MLP([k, classes])`` trained on a relative task by the training
    loop (:func:`weightlab.train.train` with ``cfg``)."""
    from weightlab.models import build
    from weightlab.models.mlp import MLP
    from weightlab.train import train

    head = build(MLP, [rel.train.x.shape[1], rel.num_classes], seed=seed)
    train(head, rel, cfg, data_seed, seed=seed)
    return head.eval()


def _acc(logits: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * float((logits.argmax(-1) == y).double().mean())


@dataclass(frozen=True)
class StitchResult:
    """Zero-shot stitching of encoder A into model B's heads, accuracies in % on the test
    split: ``native`` B end to end, ``absolute_stitch`` A's latent through B's own head,
    ``relative_native`` B's relative head on B's relative space, ``relative_stitch`` the same
    head on A's relative space; cosines of the same test samples across the two encoders in
    absolute (``cos_absolute``) and relative (``cos_relative``) space, and of mismatched
    samples (sample ``i`` of A against sample ``i + 1`` of B: ``*_unmatched``)."""

    native: float
    native_a: float
    absolute_stitch: float
    relative_native: float
    relative_stitch: float
    cos_absolute: float
    cos_relative: float
    cos_absolute_unmatched: float
    cos_relative_unmatched: float

    def to_dict(self) -> dict:
        return asdict(self)


def zero_shot_stitch(
    model_a: nn.Module,
    model_b: nn.Module,
    data: TaskData,
    anchor_x: torch.Tensor,
    head_cfg,
    *,
    seed: int,
    latent: int | None = None,
) -> StitchResult:
    """The default protocol of the module docstring. Both models stay unchanged."""
    from weightlab.probes.matching import check_same_architecture

    check_same_architecture(model_a, model_b)
    test = data.test
    rel_b = relative_task(model_b, data, anchor_x, latent)
    head = fit_relative_head(rel_b, head_cfg, seed=seed)
    za, zb = mlp_latent(model_a, test.x, latent), mlp_latent(model_b, test.x, latent)
    ra = relative_projection(za, mlp_latent(model_a, anchor_x, latent))
    with torch.no_grad():
        rel_native = _acc(head(rel_b.test.x), test.y)
        rel_stitch = _acc(head(ra), test.y)
    return StitchResult(
        native=_acc(mlp_head(model_b, zb, latent), test.y),
        native_a=_acc(mlp_head(model_a, za, latent), test.y),
        absolute_stitch=_acc(mlp_head(model_b, za, latent), test.y),
        relative_native=rel_native,
        relative_stitch=rel_stitch,
        cos_absolute=matched_cosine(za, zb),
        cos_relative=matched_cosine(ra, rel_b.test.x),
        cos_absolute_unmatched=matched_cosine(za, zb, shift=1),
        cos_relative_unmatched=matched_cosine(ra, rel_b.test.x, shift=1),
    )


class RelativeMLP(nn.Module):
    """The paper's end-to-end relative model: an MLP encoder ``enc_widths`` (the last width is
    the latent, no activation after it), the relative projection against ``anchor_x``
    encoded by the same encoder at every forward (gradients flow through both), a
    normalization layer ``norm`` (``batchnorm``, ``layernorm`` or ``none``) and an MLP head
    ``[k, *head_widths]`` (ReLU between its layers). ``encoder``, ``norm`` and ``head`` are
    submodules, so a head and normalization can be reused on another model's relative
    space (:meth:`relative`, :meth:`classify`)."""

    def __init__(
        self,
        enc_widths: list[int],
        anchor_x: torch.Tensor,
        head_widths: list[int],
        norm: str = "batchnorm",
    ) -> None:
        from weightlab.models.mlp import MLP

        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")
        k = int(anchor_x.shape[0])
        self.encoder = MLP(enc_widths)
        self.register_buffer("anchor_x", anchor_x.detach().clone().float())
        self.norm_kind = norm
        self.norm = (
            nn.BatchNorm1d(k)
            if norm == "batchnorm"
            else nn.LayerNorm(k)
            if norm == "layernorm"
            else nn.Identity()
        )
        self.head = MLP([k, *head_widths])

    def relative(self, x: torch.Tensor) -> torch.Tensor:
        """Relative representation of ``x`` under this model's encoder and anchors."""
        return relative_projection(self.encoder(x), self.encoder(self.anchor_x))

    def classify(self, r: torch.Tensor) -> torch.Tensor:
        """Normalization and head applied to relative representations ``r``."""
        return self.head(self.norm(r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.relative(x))
