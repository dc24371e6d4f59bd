"""Size accounting and packed export of quantized models (issue 21, Deliver 6).

**Size accounting** (:func:`size_report`, :func:`file_size_report`). A quantized weight of
``N`` entries with ``b``-bit level indices and ``S`` scale groups costs

- index bits: ``b = ceil(log2(#levels))`` per weight (:func:`~weightlab.quant.levels.
  bits_per_weight`), or the container's ``4``/``8``/``16`` bits in the packed file;
- overhead bits per weight: ``(32·S + b·Z + M)/N``: 32 bits per scale (scales are stored
  in the weight's dtype: 32 for float32), ``Z`` zero points (asymmetric grids: one per
  group, at the index width) and ``M = N`` mask bits when a mask is attached;
- bits per weight = index bits + overhead (both reported), so model bytes follow from the
  bit width: ``N·(b + overhead)/8`` per quantized weight, plus every other tensor at its own
  dtype. The compression ratio is the FP32 size (4 bytes per element of every
  floating-point tensor; integer and bool tensors as stored) divided by that. Two sizes
  are reported: ``ideal`` (``b``-bit indices, densely packed) and ``packed`` (the file's
  containers).

**Packed export** (:func:`pack`, :func:`save_packed`, :func:`load_packed`,
:func:`unpack_into`). Level indices are stored in the smallest container of PyTorch's
integer types: int4 two per byte (``b ≤ 4``, a ``uint8`` tensor, low nibble first), int8
(``b ≤ 8``) or int16 (``b ≤ 16``), as ``v = q − offset`` where ``offset`` is 0 when the grid
``[qmin, qmax]`` already fits the signed container (the symmetric uniform grids: int8
weights are the level indices themselves) and ``qmin + 2^(C−1)`` otherwise (asymmetric and
table grids). Scales (in the weight's dtype, as the quantizer applies them), zero points
(same container as the indices) and a mask (one bit per weight, ``numpy.packbits`` order)
travel beside them in ONE safetensors file whose metadata key ``weightlab_quant`` holds a
JSON header: per quantized weight its shape, dtype,
:class:`~weightlab.quant.quantizer.QuantSpec` (level set, bits, exponent, granularity:
enough to decode non-uniform level sets), container and offset. Every other tensor of the
model (biases, unquantized layers, adapter factors) is stored as is. Decoding runs the
quantizer's own ``dequantize_levels`` on the same ``(A, G, g)`` view and dtype, so a
loaded weight equals the eval-mode fake-quantized weight bit for bit (the issue's parity
test), up to the sign of zero: an integer index decodes to +0.0 where a fake-quant path
that never passes through integers may produce −0.0. Export always rounds to nearest: a
stochastic-rounding quantizer is exported at its nearest-rounding levels, with its
eval-mode scale (``stats`` re-estimated as its forward does).

Only a quantizer followed by masks is packed; a weight whose quantizer is followed by
another transform (a LoRA delta) is refused: merge the adapter first
(:func:`weightlab.quant.qlora.merge_quantized_adapter`) or export
:func:`dequantized_module`.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from weightlab.core.mask import Mask
from weightlab.core.transforms import _resolve, merge, parametrized_names
from weightlab.errors import ConfigError, RunFileError
from weightlab.quant.fake import dequantize_levels, quantize_levels
from weightlab.quant.granularity import group_view, grouped_shape
from weightlab.quant.levels import LevelSet, bits_per_weight
from weightlab.quant.quantizer import Quantizer, QuantSpec, quantizers
from weightlab.runs.files import atomic_write_bytes

FORMAT = "weightlab-quant-pack"
VERSION = 1
META_KEY = "weightlab_quant"
SCALE_BITS = 32


# -- containers ----------------------------------------------------------------------------
def container_bits(bits: int) -> int:
    """The packed file's index width for ``bits``-bit indices: 4, 8 or 16."""
    return 4 if bits <= 4 else 8 if bits <= 8 else 16


def index_offset(levels: LevelSet) -> int:
    """``offset`` in ``v = q − offset``: 0 if ``[qmin, qmax]`` fits the signed container."""
    c = container_bits(bits_per_weight(levels))
    lo, hi = -(2 ** (c - 1)), 2 ** (c - 1) - 1
    if lo <= levels.qmin and levels.qmax <= hi:
        return 0
    return levels.qmin - lo


def pack_int(v: torch.Tensor, cbits: int) -> torch.Tensor:
    """Signed integers ``v`` (any shape) → a flat container tensor: uint8 with two int4
    nibbles per byte (low nibble first, an odd count padded with 0), int8 or int16."""
    flat = v.reshape(-1).to(torch.int64)
    lo, hi = -(2 ** (cbits - 1)), 2 ** (cbits - 1) - 1
    if flat.numel() and (int(flat.min()) < lo or int(flat.max()) > hi):
        raise ConfigError(f"level index out of the int{cbits} range [{lo}, {hi}]")
    if cbits == 8:
        return flat.to(torch.int8)
    if cbits == 16:
        return flat.to(torch.int16)
    nib = (flat & 0xF).to(torch.uint8)
    if nib.numel() % 2:
        nib = torch.cat([nib, nib.new_zeros(1)])
    return nib[0::2] | (nib[1::2] << 4)


def unpack_int(packed: torch.Tensor, cbits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_int`: the first ``count`` signed integers (int64)."""
    if cbits in (8, 16):
        return packed.reshape(-1)[:count].to(torch.int64)
    b = packed.reshape(-1).to(torch.int64)
    nib = torch.stack([b & 0xF, b >> 4], dim=1).reshape(-1)[:count]
    return torch.where(nib >= 8, nib - 16, nib)


def _packed_len(count: int, cbits: int) -> int:
    return (count + 1) // 2 if cbits == 4 else count


# -- one quantized weight --------------------------------------------------------------------
@dataclass
class _Entry:
    """One quantized weight: its spec, integer indices, scale, zero point and mask."""

    name: str
    spec: QuantSpec
    levels: LevelSet
    shape: tuple[int, ...]
    dtype: torch.dtype
    q: torch.Tensor  # (A, G, g) float clamped level indices (zero point included)
    scale: torch.Tensor  # (A, G, 1)
    zero_point: torch.Tensor | None
    mask: torch.Tensor | None  # the weight's shape, 0/1, or None

    def dequantized(self) -> torch.Tensor:
        out = dequantize_levels(self.q, self.levels, self.scale, self.zero_point)
        out = out.reshape(self.shape)
        if self.mask is not None:
            out = Mask(self.mask).to(out.device)(out)
        return out


def _entry(name: str, quantizer: Quantizer, weight: torch.Tensor, masks: list[Mask]) -> _Entry:
    """The nearest-rounded level indices of ``weight`` under ``quantizer``'s eval-mode
    scale (``stats`` re-estimated as its forward does)."""
    spec = quantizer.spec
    with torch.no_grad():
        wv = group_view(weight.detach(), spec.granularity)
        was = quantizer.training
        quantizer.eval()
        try:
            scale, zp = quantizer.current_scale(wv)
        finally:
            quantizer.train(was)
        levels = quantizer.levels
        scale = scale.detach().to(wv.dtype)
        if zp is not None and levels.affine:
            zp = zp.detach().to(wv.dtype)
        else:
            zp = None
        _, q = quantize_levels(wv, levels, scale, zp)
    mask = None
    if masks:
        mask = masks[0].mask.detach().clone()
        for m in masks[1:]:
            mask = mask * m.mask
    return _Entry(name, spec, levels, tuple(weight.shape), weight.dtype, q, scale, zp, mask)


def _quantized_entries(model: nn.Module) -> dict[str, _Entry]:
    out = {}
    for name, quantizer in quantizers(model).items():
        module, attr = _resolve(model, name)
        chain = list(module.parametrizations[attr])
        if chain[0] is not quantizer:
            raise ConfigError(
                f"weight {name!r} has a transform before its quantizer; attach quantizers "
                "with weightlab.quant.quantize (it puts them first)"
            )
        rest = chain[1:]
        other = [type(t).__name__ for t in rest if not isinstance(t, Mask)]
        if other:
            raise ConfigError(
                f"weight {name!r} has {', '.join(other)} after its quantizer, which a packed "
                "file cannot hold; merge it first (weightlab.quant.qlora."
                "merge_quantized_adapter) or export dequantized_module(model)"
            )
        weight = module.parametrizations[attr].original
        out[name] = _entry(name, quantizer, weight, rest)
    return out


def _float_tensors(model: nn.Module, skip: set[str]) -> dict[str, torch.Tensor]:
    """Every other tensor by plain name: parameters and persistent buffers, with any
    transforms on unquantized weights baked (their effective value)."""
    out: dict[str, torch.Tensor] = {}
    for key, t in model.state_dict().items():
        if "parametrizations." in key:
            continue
        out[key] = t.detach()
    for name in parametrized_names(model):
        if name in skip:
            continue
        module, attr = _resolve(model, name)
        with torch.no_grad():
            out[name] = getattr(module, attr).detach().clone()
    return out


# -- packing ---------------------------------------------------------------------------------
def _entry_tensors(e: _Entry) -> tuple[dict[str, torch.Tensor], dict]:
    b = bits_per_weight(e.levels)
    cbits = container_bits(b)
    offset = index_offset(e.levels)
    if not bool(torch.isfinite(e.q).all()):
        raise ConfigError(f"weight {e.name!r} has non-finite values or scales; it cannot be packed")
    t = {
        f"qweight:{e.name}": pack_int(e.q.to(torch.int64) - offset, cbits),
        f"scale:{e.name}": e.scale.reshape(-1).contiguous(),
    }
    if e.zero_point is not None:
        t[f"zero_point:{e.name}"] = pack_int(e.zero_point.to(torch.int64) - offset, cbits)
    if e.mask is not None:
        bits = np.packbits(e.mask.reshape(-1).to(torch.uint8).cpu().numpy())
        t[f"mask:{e.name}"] = torch.from_numpy(bits)
    meta = {
        "shape": list(e.shape),
        "dtype": str(e.dtype).removeprefix("torch."),
        "spec": e.spec.to_dict(),
        "levels": e.levels.describe(),
        "index_bits": b,
        "container": cbits,
        "offset": offset,
        "groups": int(e.scale.numel()),
        "zero_point": e.zero_point is not None,
        "mask": e.mask is not None,
    }
    return t, meta


def _pack_entries(
    entries: dict[str, _Entry], floats: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors: dict[str, torch.Tensor] = {}
    header: dict = {"format": FORMAT, "version": VERSION, "quantized": {}, "float": []}
    for name, e in entries.items():
        t, meta = _entry_tensors(e)
        tensors.update(t)
        header["quantized"][name] = meta
    for name, t in floats.items():
        tensors[f"float:{name}"] = t
        header["float"].append(name)
    return tensors, {META_KEY: json.dumps(header, sort_keys=True)}


def pack(model: nn.Module) -> dict[str, torch.Tensor]:
    """The packed tensors of a quantized model (see the module doc): ``qweight:NAME``
    (level indices in int4/int8/int16 containers), ``scale:NAME``, ``zero_point:NAME``,
    ``mask:NAME`` for each quantized weight, ``float:NAME`` for every other tensor.
    :func:`save_packed` writes them with their JSON header."""
    return pack_with_header(model)[0]


def pack_with_header(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, safetensors metadata)`` of :func:`pack`."""
    entries = _quantized_entries(model)
    if not entries:
        raise ConfigError("the model has no quantizer; attach some with weightlab.quant.quantize")
    return _pack_entries(entries, _float_tensors(model, set(entries)))


def pack_state_dict(
    state: dict[str, torch.Tensor], spec: QuantSpec
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Quantize every 2-D floating-point tensor of a plain state dict with ``spec`` (scales
    estimated from it) and pack it; other tensors are stored as is. Checks every tensor
    before quantizing any (a group size that does not divide a row names the tensor)."""
    targets = {k: v for k, v in state.items() if v.dim() == 2 and v.is_floating_point()}
    if not targets:
        raise ConfigError("the state dict has no 2-D floating-point tensor to quantize")
    for name, w in targets.items():
        try:
            grouped_shape(tuple(w.shape), spec.granularity)
        except ConfigError as e:
            raise ConfigError(f"tensor {name!r}: {e}") from None
    entries = {
        name: _entry(name, Quantizer(spec, w, name=name), w, []) for name, w in targets.items()
    }
    floats = {k: v.detach() for k, v in state.items() if k not in targets}
    return _pack_entries(entries, floats)


def _write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    from safetensors.torch import save

    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(Path(path), save(clean, metadata=metadata))


def save_packed(model: nn.Module, path: str | Path) -> Path:
    """Write :func:`pack` ``(model)`` and its JSON header as ONE safetensors file,
    atomically (a temporary file renamed into place). Returns the path."""
    tensors, meta = pack_with_header(model)
    _write(Path(path), tensors, meta)
    return Path(path)


def save_packed_state_dict(
    state: dict[str, torch.Tensor], spec: QuantSpec, path: str | Path
) -> Path:
    """:func:`pack_state_dict` written to ``path`` (the CLI's ``weightlab quant pack``)."""
    tensors, meta = pack_state_dict(state, spec)
    _write(Path(path), tensors, meta)
    return Path(path)


# -- loading ---------------------------------------------------------------------------------
@dataclass
class PackedFile:
    """A packed file read back: its header and raw tensors (:func:`read_packed`)."""

    path: Path
    header: dict
    tensors: dict[str, torch.Tensor] = field(repr=False)

    def decode(self, name: str) -> torch.Tensor:
        """One quantized weight, dequantized (the float weight it stands for)."""
        return _decode(self, name)

    def indices(self, name: str) -> torch.Tensor:
        """One quantized weight's integer level indices ``q`` (int64, its shape)."""
        meta = self.header["quantized"][name]
        count = math.prod(meta["shape"])
        v = unpack_int(self.tensors[f"qweight:{name}"], meta["container"], count)
        return (v + meta["offset"]).reshape(meta["shape"])


def _bad(path: Path, what: str) -> RunFileError:
    return RunFileError(
        f"packed file {path} {what}; re-export it (weightlab quant pack, or "
        "weightlab.quant.export.save_packed)"
    )


def read_packed(path: str | Path) -> PackedFile:
    """Read and check a packed file (header and every tensor it names); nothing is
    unpickled. A missing file, a corrupt header, a missing scale, index or zero-point
    tensor, or one of the wrong size raises a one-line :class:`RunFileError` naming the
    file and what is missing."""
    from safetensors import safe_open
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"packed file {path} does not exist; check the path")
    try:
        data = path.read_bytes()
        tensors = load(data)
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise _bad(path, f"is unreadable or not safetensors ({type(e).__name__})") from None
    if META_KEY not in raw_meta:
        raise _bad(path, f"has no {META_KEY!r} metadata header (not a weightlab packed file)")
    try:
        header = json.loads(raw_meta[META_KEY])
    except json.JSONDecodeError:
        raise _bad(path, f"has a corrupt {META_KEY!r} header (invalid JSON)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _bad(path, f"has a header that is not {FORMAT!r}")
    if header.get("version") != VERSION:
        raise _bad(path, f"has format version {header.get('version')!r}, expected {VERSION}")
    quantized, floats = header.get("quantized"), header.get("float")
    if not isinstance(quantized, dict) or not isinstance(floats, list):
        raise _bad(path, "has an incomplete header (no 'quantized' or 'float' table)")
    pf = PackedFile(path, header, tensors)
    for name, meta in quantized.items():
        _check_entry(pf, name, meta)
    for name in floats:
        if f"float:{name}" not in tensors:
            raise _bad(path, f"is missing the tensor 'float:{name}'")
    return pf


_FIELDS = ("shape", "dtype", "spec", "container", "offset", "groups", "zero_point", "mask")


def _check_entry(pf: PackedFile, name: str, meta: dict) -> None:
    path, t = pf.path, pf.tensors
    missing = [k for k in _FIELDS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise _bad(path, f"has an incomplete header entry for {name!r} (no {', '.join(missing)})")
    if f"scale:{name}" not in t:
        raise _bad(path, f"is missing the scales of {name!r} (tensor 'scale:{name}')")
    if f"qweight:{name}" not in t:
        raise _bad(path, f"is missing the level indices of {name!r} (tensor 'qweight:{name}')")
    if meta["zero_point"] and f"zero_point:{name}" not in t:
        raise _bad(path, f"is missing the zero points of {name!r} (tensor 'zero_point:{name}')")
    if meta["mask"] and f"mask:{name}" not in t:
        raise _bad(path, f"is missing the mask of {name!r} (tensor 'mask:{name}')")
    try:
        spec = QuantSpec.from_dict(meta["spec"])
        a, g, _ = grouped_shape(tuple(meta["shape"]), spec.granularity)
        getattr(torch, meta["dtype"])
    except Exception as e:
        raise _bad(path, f"has an invalid header entry for {name!r} ({e})") from None
    count = math.prod(meta["shape"])
    if t[f"scale:{name}"].numel() != a * g or meta["groups"] != a * g:
        raise _bad(path, f"has {t[f'scale:{name}'].numel()} scales for {name!r}, expected {a * g}")
    n = _packed_len(count, meta["container"])
    if t[f"qweight:{name}"].numel() != n:
        raise _bad(
            path, f"has {t[f'qweight:{name}'].numel()} index entries for {name!r}, expected {n}"
        )
    if meta["mask"] and t[f"mask:{name}"].numel() != (count + 7) // 8:
        raise _bad(path, f"has a mask of the wrong size for {name!r}")


def _decode(pf: PackedFile, name: str) -> torch.Tensor:
    meta = pf.header["quantized"][name]
    spec = QuantSpec.from_dict(meta["spec"])
    levels = spec.level_set()
    dtype = getattr(torch, meta["dtype"])
    shape = tuple(meta["shape"])
    a, g, n = grouped_shape(shape, spec.granularity)
    q = pf.indices(name).to(dtype).reshape(a, g, n)
    scale = pf.tensors[f"scale:{name}"].to(dtype).reshape(a, g, 1)
    zp = None
    if meta["zero_point"]:
        z = unpack_int(pf.tensors[f"zero_point:{name}"], meta["container"], a * g)
        zp = (z + meta["offset"]).to(dtype).reshape(a, g, 1)
    out = dequantize_levels(q, levels, scale, zp).reshape(shape)
    if meta["mask"]:
        count = math.prod(shape)
        bits = np.unpackbits(pf.tensors[f"mask:{name}"].numpy(), count=count)
        mask = torch.from_numpy(bits.astype(np.float32)).reshape(shape)
        out = Mask(mask)(out)
    return out


def load_packed(path: str | Path) -> dict[str, torch.Tensor]:
    """``{plain name: tensor}`` of a packed file: quantized weights dequantized (equal bit
    for bit to the fake-quantized model's weights), every other tensor as stored."""
    pf = read_packed(path)
    out = {name: pf.decode(name) for name in pf.header["quantized"]}
    for name in pf.header["float"]:
        out[name] = pf.tensors[f"float:{name}"]
    return out


@torch.no_grad()
def unpack_into(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a packed file's dequantized weights into a plain module of the same
    architecture (e.g. a fresh build), in place; every key must match both ways."""
    state = load_packed(path)
    names = set(parametrized_names(model))
    if names:
        raise ConfigError(
            f"unpack_into needs a plain module, but {sorted(names)[0]!r} has transforms; use a "
            "fresh build of the architecture or dequantized_module(model)"
        )
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ConfigError(
            f"packed file {path} does not fit the model: missing {missing[:3]}, unexpected "
            f"{extra[:3]}; unpack into the architecture it was exported from"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ConfigError(
                f"packed file {path}: {k!r} has shape {tuple(v.shape)}, the model's is "
                f"{tuple(own[k].shape)}; unpack into the architecture it was exported from"
            )
    model.load_state_dict(state, strict=True)
    return model


# -- a plain dequantized copy ------------------------------------------------------------------
@torch.no_grad()
def bake_quantizers(model: nn.Module) -> nn.Module:
    """Replace each quantizer, in place, by its nearest-rounded dequantized weight (the
    stored weight becomes ``dequant(Q(W₀))``); transforms after it stay attached."""
    for name, quantizer in quantizers(model).items():
        module, attr = _resolve(model, name)
        chain = list(module.parametrizations[attr])
        weight = module.parametrizations[attr].original
        e = _entry(name, quantizer, weight, [])
        value = e.dequantized().to(weight.dtype)
        parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
        getattr(module, attr).copy_(value)
        for t in chain:
            if t is not quantizer:
                parametrize.register_parametrization(module, attr, t, unsafe=True)
    return model


def independent_copy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)`` that is safe to :func:`~weightlab.core.merge`.

    ``torch.nn.utils.parametrize`` gives a parametrized module a generated class holding one
    property per parametrized tensor, and ``copy.deepcopy`` keeps that class shared between
    the original and the copy; removing a parametrization deletes the property from the
    class, so merging a plain deep copy breaks the original (``module.weight`` disappears).
    Here every parametrized module of the copy gets its own class."""
    out = copy.deepcopy(model)
    for m in out.modules():
        if parametrize.is_parametrized(m):
            cls = type(m)
            body = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
            m.__class__ = type(cls.__name__, cls.__bases__, body)
    return out


def dequantized_module(model: nn.Module) -> nn.Module:
    """A deep copy with quantized weights baked (nearest rounding, the same values
    :func:`load_packed` gives) and every other transform baked too (masks, LoRA deltas):
    plain parameters, ``state_dict`` keys of the untransformed architecture. Activation-path
    LoRA wrappers stay (their base layers are baked). ``model`` is not changed."""
    out = independent_copy(model)
    was = out.training
    out.eval()
    bake_quantizers(out)
    merge(out)
    out.train(was)
    return out


# -- size accounting ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SizeRow:
    """One tensor's size. ``index_bits`` is 0 for a float tensor (stored at ``float_bits``)."""

    name: str
    numel: int
    index_bits: int
    container_bits: int
    groups: int
    zero_points: int
    masked: bool
    float_bits: int
    describe: str
    scale_bits: int = SCALE_BITS
    floating: bool = True  # False for integer / bool tensors (counted at their own size)

    @property
    def quantized(self) -> bool:
        return self.index_bits > 0

    def overhead_bits(self, packed: bool = False) -> float:
        """Scale, zero-point and mask bits per weight."""
        if not self.quantized:
            return 0.0
        zbits = self.container_bits if packed else self.index_bits
        extra = self.scale_bits * self.groups + zbits * self.zero_points
        extra += self.numel if self.masked else 0
        return extra / self.numel

    def bits_per_weight(self, packed: bool = False) -> float:
        if not self.quantized:
            return float(self.float_bits)
        idx = self.container_bits if packed else self.index_bits
        return idx + self.overhead_bits(packed)

    def bytes(self, packed: bool = False) -> int:
        """Bytes of this tensor: ideal (dense ``b``-bit packing, rounded up to whole
        bytes) or as the packed file stores it."""
        if not self.quantized:
            return self.numel * self.float_bits // 8
        if packed:
            idx = (
                _packed_len(self.numel, 4)
                if self.container_bits == 4
                else self.numel * self.container_bits // 8
            )
            z = (
                _packed_len(self.zero_points, 4)
                if self.container_bits == 4
                else self.zero_points * self.container_bits // 8
            )
            m = (self.numel + 7) // 8 if self.masked else 0
            return idx + self.scale_bits // 8 * self.groups + z + m
        total = self.numel * self.index_bits + self.zero_points * self.index_bits
        total += self.scale_bits * self.groups + (self.numel if self.masked else 0)
        return math.ceil(total / 8)


@dataclass(frozen=True)
class SizeReport:
    """Per-tensor :class:`SizeRow` s and totals (see the module doc)."""

    rows: tuple[SizeRow, ...]

    @property
    def fp32_bytes(self) -> int:
        """Floating-point tensors at 4 bytes an element; integer and bool tensors as stored."""
        return sum(r.numel * 4 if r.floating else r.bytes() for r in self.rows)

    def model_bytes(self, packed: bool = False) -> int:
        return sum(r.bytes(packed) for r in self.rows)

    def compression(self, packed: bool = False) -> float:
        """The FP32 size (:attr:`fp32_bytes`) divided by the model's bytes."""
        return self.fp32_bytes / max(1, self.model_bytes(packed))

    def quantized_bits_per_weight(self, packed: bool = False) -> float:
        """Mean bits per quantized weight (indices + overhead), weighted by size."""
        q = [r for r in self.rows if r.quantized]
        n = sum(r.numel for r in q)
        return sum(r.bits_per_weight(packed) * r.numel for r in q) / max(1, n)

    def to_dict(self) -> dict:
        return {
            "tensors": [
                {
                    "name": r.name,
                    "numel": r.numel,
                    "quantizer": r.describe,
                    "index_bits": r.index_bits,
                    "container_bits": r.container_bits,
                    "overhead_bits": r.overhead_bits(),
                    "bits_per_weight": r.bits_per_weight(),
                    "packed_bits_per_weight": r.bits_per_weight(True),
                    "bytes": r.bytes(),
                    "packed_bytes": r.bytes(True),
                }
                for r in self.rows
            ],
            "fp32_bytes": self.fp32_bytes,
            "model_bytes": self.model_bytes(),
            "packed_bytes": self.model_bytes(True),
            "compression": self.compression(),
            "packed_compression": self.compression(True),
        }

    def format(self) -> str:
        """A printable table: one row per quantized weight, one for the float rest, totals."""
        head = ("tensor", "quantizer", "weights", "index", "overhead", "bits/w", "packed b/w")
        rows = [head]
        for r in self.rows:
            if r.quantized:
                rows.append(
                    (
                        r.name,
                        r.describe,
                        f"{r.numel:,}",
                        f"{r.index_bits}",
                        f"{r.overhead_bits():.3f}",
                        f"{r.bits_per_weight():.3f}",
                        f"{r.bits_per_weight(True):.3f}",
                    )
                )
        rest = [r for r in self.rows if not r.quantized]
        if rest:
            n = sum(r.numel for r in rest)
            rows.append(("(other tensors)", "as stored", f"{n:,}", "", "", "", ""))
        widths = [max(len(x[i]) for x in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(x, widths, strict=True)) for x in rows]
        lines.append(
            f"FP32 {self.fp32_bytes:,} B; quantized {self.model_bytes():,} B "
            f"({self.compression():.2f}x); packed file payload {self.model_bytes(True):,} B "
            f"({self.compression(True):.2f}x)"
        )
        return "\n".join(lines)


def _float_row(name: str, t: torch.Tensor) -> SizeRow:
    kind = "float" if t.is_floating_point() else str(t.dtype).removeprefix("torch.")
    bits = t.element_size() * 8
    return SizeRow(name, t.numel(), 0, 0, 0, 0, False, bits, kind, floating=t.is_floating_point())


def _row(
    name: str,
    spec: QuantSpec,
    levels: LevelSet,
    numel: int,
    groups: int,
    zp: bool,
    masked: bool,
    scale_bits: int,
) -> SizeRow:
    b = bits_per_weight(levels)
    return SizeRow(
        name,
        numel,
        b,
        container_bits(b),
        groups,
        groups if zp else 0,
        masked,
        32,
        spec.describe(),
        scale_bits,
    )


def size_report(model: nn.Module) -> SizeReport:
    """Bits per weight (index + overhead), model bytes and compression vs FP32 of a
    quantized model (see the module doc); the model is not changed."""
    entries = {}
    for name, quantizer in quantizers(model).items():
        module, attr = _resolve(model, name)
        masks = [t for t in module.parametrizations[attr] if isinstance(t, Mask)]
        entries[name] = (quantizer, masks)
    rows = []
    for name, (quantizer, masks) in entries.items():
        module, attr = _resolve(model, name)
        w = module.parametrizations[attr].original
        levels = quantizer.levels
        rows.append(
            _row(
                name,
                quantizer.spec,
                levels,
                w.numel(),
                quantizer.scale.numel(),
                levels.affine,
                bool(masks),
                w.element_size() * 8,
            )
        )
    for name, t in _float_tensors(model, set(entries)).items():
        rows.append(_float_row(name, t))
    return SizeReport(tuple(rows))


def file_size_report(path: str | Path) -> SizeReport:
    """:func:`size_report` of a packed file (checked by :func:`read_packed`)."""
    pf = read_packed(path)
    rows = []
    for name, meta in pf.header["quantized"].items():
        spec = QuantSpec.from_dict(meta["spec"])
        rows.append(
            _row(
                name,
                spec,
                spec.level_set(),
                math.prod(meta["shape"]),
                meta["groups"],
                meta["zero_point"],
                meta["mask"],
                pf.tensors[f"scale:{name}"].element_size() * 8,
            )
        )
    for name in pf.header["float"]:
        rows.append(_float_row(name, pf.tensors[f"float:{name}"]))
    return SizeReport(tuple(rows))
