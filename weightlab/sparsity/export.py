"""Speed from sparsity, not just zeros: export pruned Linear layers to sparse kernels.

A mask multiplies weights by zero; the matmul still does all the work. Export turns the
zeros into a sparse format a kernel can skip:

- **CSR on CPU** (:func:`to_csr`): every ``nn.Linear`` whose weight has density <= 10%
  becomes a :class:`CSRLinear` holding the weight as a ``torch.sparse_csr`` tensor;
  ``y = W x + b`` is one ``torch.addmm`` of the CSR weight and the transposed input.
  Outputs equal the dense model's to float tolerance (the sum order differs). A layer
  denser than ``max_density`` (default 10%, where CSR stops paying on CPU) is refused
  with a one-line error naming it, unless ``skip_dense=True``, which leaves such layers
  dense (opt-in). The bench (``bench/sparsity_csr.py``) measures the speed-up.
- **2:4 semi-structured** (:func:`to_semi_structured`): NVIDIA's N:M format (2 non-zeros
  in every 4 consecutive inputs) through ``torch.sparse.to_sparse_semi_structured``. It
  runs on CUDA GPUs with sparse tensor cores only; :func:`semi_structured_unavailable`
  gives the reason it cannot run here (``None`` when it can), and :func:`to_semi_structured`
  raises that reason as a one-line :class:`ConfigError` instead of failing inside PyTorch.

The input model is never modified: export works on a :func:`~weightlab.core.merge` d deep
copy, so masks and other transforms are baked in first.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

import torch
from torch import nn

from weightlab.core.transforms import merged_copy
from weightlab.errors import ConfigError

MAX_CSR_DENSITY = 0.10


class CSRLinear(nn.Module):
    """``nn.Linear`` with its weight stored in CSR (``(out, in)``, CPU); inference only."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features = int(weight.shape[1])
        self.out_features = int(weight.shape[0])
        with warnings.catch_warnings():  # torch's "CSR support is in beta" notice
            warnings.simplefilter("ignore", UserWarning)
            csr = weight.detach().to_sparse_csr()
            # int32 indices: the CPU kernel then takes MKL's sparse path (measured ~2-3x faster
            # than int64 indices at batch 1000 on the lottery MLP at 5% density)
            weight32 = torch.sparse_csr_tensor(
                csr.crow_indices().to(torch.int32),
                csr.col_indices().to(torch.int32),
                csr.values(),
                csr.shape,
            )
        self.register_buffer("weight", weight32)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        # the bias as a column, made once: addmm adds it to the (out, B) product
        col = None if bias is None else self.bias[:, None].contiguous()
        self.register_buffer("bias_column", col, persistent=False)

    @property
    def density(self) -> float:
        return self.weight.values().numel() / (self.in_features * self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # the common case, with no reshapes (~10 us a layer at batch 60)
            # The kernel wants its dense operand (in, B) row-major. Outputs leave as (B, out)
            # views of row-major (out, B) products, and elementwise activations keep that
            # layout, so inside a stack of CSR layers ``x.T`` is already contiguous; only the
            # first layer's input is copied (measured ~1.3-2x faster than the strided operand).
            xt = x.T if x.T.is_contiguous() else x.T.contiguous()
            if self.bias_column is None:
                return torch.mm(self.weight, xt).T
            return torch.addmm(self.bias_column, self.weight, xt).T
        shape = x.shape
        xt = x.reshape(-1, self.in_features).T  # (in, B): the CSR kernel's dense operand
        if self.bias is None:
            yt = torch.mm(self.weight, xt)
        else:
            yt = torch.addmm(self.bias[:, None], self.weight, xt)
        return yt.T.reshape(*shape[:-1], self.out_features)

    def forward_t(self, xt: torch.Tensor) -> torch.Tensor:
        """``(W x + b)`` in the feature-major layout: ``xt`` is ``(in, B)`` row-major, the
        result ``(out, B)`` row-major, ready to be the next layer's ``xt``."""
        if self.bias_column is None:
            return torch.mm(self.weight, xt)
        return torch.addmm(self.bias_column, self.weight, xt)

    def __deepcopy__(self, memo: dict) -> CSRLinear:
        # torch cannot deep-copy a sparse CSR tensor's storage; rebuild from the dense weight
        out = CSRLinear(self.weight.to_dense(), self.bias)
        out.train(self.training)
        memo[id(self)] = out
        return out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"density={self.density:.4f}"
        )


def _forward_t(layer: nn.Module, xt: torch.Tensor) -> torch.Tensor:
    """One module of a feature-major chain: a CSR or dense Linear as one ``addmm`` (``W``
    times the ``(in, B)`` operand, plus the bias column), anything else (an elementwise
    activation) called as is.

    Reads the tensors from the modules' own dicts: at batch 60 the chain's kernels take
    ~50 us and ``Module.__getattr__`` (~1-2 us a lookup here) was a third of the rest."""
    cls = type(layer)
    if cls is CSRLinear:
        weight, bias = layer._buffers["weight"], layer._buffers["bias_column"]
    elif cls is nn.Linear:
        weight, bias = layer._parameters["weight"], layer._parameters["bias"]
        bias = None if bias is None else bias[:, None]
    else:
        return layer(xt)
    return torch.mm(weight, xt) if bias is None else torch.addmm(bias, weight, xt)


# Modules that act elementwise, so they give the same numbers on the feature-major layout.
ELEMENTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ReLU6,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Identity,
    nn.Dropout,
)


_IN_PLACE = {"relu": torch.relu_, "tanh": torch.tanh_, "sin": torch.sin_}


class CSRSequential(nn.Sequential):
    """An exported ``nn.Sequential`` of Linear layers (CSR or dense) and elementwise
    activations that keeps activations feature-major (``(features, B)`` row-major) between
    layers: the input is transposed once, each layer is one ``addmm`` on the previous
    product, the output transposed back once. Per-layer :class:`CSRLinear` calls would
    transpose twice per layer; at batch 60 on the lottery MLP that overhead is as large as
    the sparse kernels themselves (``bench/sparsity_csr.py``). Same children, names and
    indices as the source ``nn.Sequential``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            return super().forward(x)
        xt = x.T.contiguous()
        for module in self._modules.values():
            if type(module) is nn.ReLU:  # in place: each product is a fresh tensor of our own
                xt = torch.relu_(xt)
            else:
                xt = _forward_t(module, xt)
        return xt.T


class CSRMLP(nn.Module):
    """An exported :class:`~weightlab.models.mlp.MLP` in the feature-major layout (see
    :class:`CSRSequential`): ``layers.i`` are :class:`CSRLinear` (or dense ``nn.Linear``
    where ``skip_dense`` kept them), the activation applied in place between them."""

    def __init__(self, layers: nn.ModuleList, activation: str) -> None:
        super().__init__()
        from weightlab.models.mlp import ACTIVATIONS

        self.layers = layers
        self.activation = activation
        # in place where torch has it: each product is a fresh tensor of our own
        self._act = _IN_PLACE.get(activation, ACTIVATIONS[activation])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xt = x.flatten(1).T.contiguous()
        layers = self._modules["layers"]._modules
        last = len(layers) - 1
        act = self._act
        for i, layer in enumerate(layers.values()):
            if type(layer) is CSRLinear:  # inlined: ~3 us of the ~60 at batch 60
                buffers = layer._buffers
                weight, bias = buffers["weight"], buffers["bias_column"]
                xt = torch.mm(weight, xt) if bias is None else torch.addmm(bias, weight, xt)
            else:
                xt = _forward_t(layer, xt)
            if i < last:
                xt = act(xt)
        return xt.T


def _feature_major(out: nn.Module) -> nn.Module:
    """``out`` rebuilt as a :class:`CSRMLP` or :class:`CSRSequential` where its structure
    allows the feature-major chain; otherwise ``out`` itself (per-layer CSRLinear calls)."""
    from weightlab.models.mlp import MLP

    if type(out) is MLP:
        return CSRMLP(out.layers, out.activation).train(out.training)
    if type(out) is nn.Sequential and all(
        isinstance(m, (CSRLinear, nn.Linear, *ELEMENTWISE)) for m in out
    ):
        return CSRSequential(OrderedDict(out.named_children())).train(out.training)
    return out


def _check_max_density(max_density: float) -> float:
    d = float(max_density)
    if not 0.0 < d <= 1.0:
        raise ConfigError(f"density must be in (0, 1], got {max_density}")
    return d


def to_csr(
    model: nn.Module, max_density: float = MAX_CSR_DENSITY, *, skip_dense: bool = False
) -> nn.Module:
    """A merged copy of ``model`` with each ``nn.Linear`` replaced by a :class:`CSRLinear`.

    A Linear whose weight density exceeds ``max_density`` is a :class:`ConfigError`
    naming it (CSR is slower than dense there), unless ``skip_dense=True`` keeps it dense.
    The copy is on the CPU (PyTorch's CSR matmul used here is the CPU kernel) in eval mode.
    """
    limit = _check_max_density(max_density)
    out = merged_copy(model).cpu().eval()
    replaced = 0
    for name, module in list(out.named_modules()):
        if not isinstance(module, nn.Linear):
            continue
        w = module.weight.detach()
        dens = float((w != 0).sum()) / w.numel()
        if dens > limit:
            if skip_dense:
                continue
            raise ConfigError(
                f"layer {name!r} has weight density {dens:.1%} > {limit:.0%}: CSR would be "
                "slower than dense; prune it further or pass skip_dense=True to keep it dense"
            )
        parent_name, _, attr = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        csr = CSRLinear(w, module.bias)
        if not parent_name and not attr:
            return csr
        setattr(parent, attr, csr)
        replaced += 1
    if replaced == 0 and not isinstance(out, CSRLinear):
        raise ConfigError(
            f"no Linear layer with density <= {limit:.0%} to export; prune the model first"
        )
    return _feature_major(out)


def semi_structured_unavailable(device: str | torch.device = "cuda") -> str | None:
    """Why 2:4 semi-structured sparsity cannot run on ``device`` here (``None`` if it can)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return (
            f"2:4 semi-structured sparsity needs a CUDA GPU (sparse tensor cores); "
            f"device {dev.type!r} has none"
        )
    if not torch.cuda.is_available():
        return "2:4 semi-structured sparsity needs a CUDA GPU; CUDA is not available here"
    major, _ = torch.cuda.get_device_capability(dev)
    if major < 8:
        return f"2:4 semi-structured sparsity needs compute capability >= 8.0, got {major}.x"
    return None


def is_two_four(weight: torch.Tensor) -> bool:
    """Does every group of 4 consecutive inputs of every row hold at most 2 non-zeros?"""
    if weight.ndim != 2 or weight.shape[1] % 4:
        return False
    return bool(((weight != 0).reshape(weight.shape[0], -1, 4).sum(-1) <= 2).all())


def to_semi_structured(
    model: nn.Module, device: str | torch.device = "cuda", dtype: torch.dtype = torch.float16
) -> nn.Module:
    """A merged copy of ``model`` on ``device`` in ``dtype`` whose 2:4-sparse Linear weights
    are ``torch.sparse.SparseSemiStructuredTensor`` s (others stay dense).

    Raises a one-line :class:`ConfigError` with the reason when the device cannot run it
    (:func:`semi_structured_unavailable`) or no Linear weight is 2:4 sparse."""
    reason = semi_structured_unavailable(device)
    if reason:
        raise ConfigError(reason + "; run on a GPU or use to_csr on the CPU")
    from torch.sparse import to_sparse_semi_structured

    out = merged_copy(model).to(device=device, dtype=dtype).eval()
    converted = 0
    for module in out.modules():
        if isinstance(module, nn.Linear) and is_two_four(module.weight):
            module.weight = nn.Parameter(
                to_sparse_semi_structured(module.weight.detach()), requires_grad=False
            )
            converted += 1
    if converted == 0:
        raise ConfigError(
            "no Linear weight is 2:4 sparse (at most 2 non-zeros in every 4 inputs); "
            "prune with a 2:4 mask first"
        )
    return out


__all__ = [
    "MAX_CSR_DENSITY",
    "CSRLinear",
    "CSRMLP",
    "CSRSequential",
    "is_two_four",
    "merged_copy",
    "semi_structured_unavailable",
    "to_csr",
    "to_semi_structured",
]
