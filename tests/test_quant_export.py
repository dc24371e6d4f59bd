"""Size accounting and packed export (issue 21, Deliver 6 and the parity "An int8 export
dequantizes bitwise to the fake-quantized model's weights")."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from weightlab.core import apply_masks, merge
from weightlab.errors import ConfigError, RunFileError
from weightlab.quant.export import (
    META_KEY,
    container_bits,
    dequantized_module,
    file_size_report,
    independent_copy,
    index_offset,
    load_packed,
    pack,
    pack_int,
    read_packed,
    save_packed,
    size_report,
    unpack_int,
    unpack_into,
)
from weightlab.quant.levels import make_levels
from weightlab.quant.qlora import add_quantized_adapters, merge_quantized_adapter
from weightlab.quant.quantizer import QuantSpec, quantize, quantizers


def _model(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Linear(128, 33), nn.ReLU(), nn.Linear(33, 5))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return m


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.int32)


def _bitwise(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equal float32 tensors, except the sign of a zero: level indices are
    integers and decode to +0.0, while a fake quantizer that rounds ``-0.3`` to ``-0.0``
    (and not through an integer, as PyTorch's kernel does) may give ``-0.0``."""
    a, b = a.detach(), b.detach()
    nz = (a != 0) | (b != 0)
    return torch.equal(a, b) and torch.equal(_bits(a)[nz], _bits(b)[nz])


SPECS = [
    QuantSpec(8, "uniform", "minmax", granularity="channel"),
    QuantSpec(8, "uniform", "mse", granularity="tensor"),
    QuantSpec(8, "uniform_asym", "minmax", granularity="channel"),
    QuantSpec(4, "uniform", "percentile", granularity="channel"),
    QuantSpec(3, "uniform_asym", "minmax", granularity="tensor"),
    QuantSpec(4, "uniform_full", "lsq", granularity="channel"),
    QuantSpec(3, "power", "mse", granularity="channel", exponent=0.45),
    QuantSpec(3, "shift", "minmax", granularity="channel"),
    QuantSpec(3, "shift_zero", "minmax", granularity="channel"),
    QuantSpec(2, "midrise", "stats", granularity="channel"),
    QuantSpec(1, "binary", "meanabs", granularity="channel"),
    QuantSpec(12, "uniform", "minmax", granularity="channel"),
]


def test_int4_packs_two_per_byte_and_round_trips():
    v = torch.tensor([-8, 7, 0, -1, 3, 5, -3])
    p = pack_int(v, 4)
    assert p.dtype == torch.uint8 and p.numel() == 4
    # low nibble first: -8 -> 0x8, 7 -> 0x7: byte 0x78
    assert int(p[0]) == 0x78 and int(p[1]) == (0x0 | (0xF << 4))
    assert torch.equal(unpack_int(p, 4, 7), v)
    for c, dt in ((8, torch.int8), (16, torch.int16)):
        w = torch.arange(-(2 ** (c - 1)), 2 ** (c - 1), 7)
        assert pack_int(w, c).dtype == dt
        assert torch.equal(unpack_int(pack_int(w, c), c, w.numel()), w)
    with pytest.raises(ConfigError, match="int4 range"):
        pack_int(torch.tensor([8]), 4)


def test_containers_and_offsets_follow_the_bit_width():
    assert [container_bits(b) for b in (1, 2, 3, 4, 5, 8, 9, 16)] == [4, 4, 4, 4, 8, 8, 16, 16]
    # symmetric uniform grids are stored as the level indices themselves
    assert index_offset(make_levels("uniform", 8)) == 0
    assert index_offset(make_levels("uniform_full", 4)) == 0
    # asymmetric 0..255 and table grids 0..n-1 are shifted into the signed container
    assert index_offset(make_levels("uniform_asym", 8)) == 128
    assert index_offset(make_levels("uniform_asym", 4)) == 8  # 0..15 -> -8..7 in int4
    assert index_offset(make_levels("shift", 4)) == 8  # 16 levels 0..15
    assert index_offset(make_levels("shift", 3)) == 0  # 0..7 fits int4
    assert index_offset(make_levels("binary", 1)) == 0


def test_int8_export_dequantizes_bitwise_to_the_fake_quantized_weights(tmp_path):
    """The issue's parity test: int8 per channel, min-max, through PyTorch's fused kernel."""
    m = _model()
    quantize(m, QuantSpec(8, "uniform", "minmax", granularity="channel"))
    m.eval()
    path = save_packed(m, tmp_path / "m.safetensors")
    raw = load_file(path)
    assert raw["qweight:0.weight"].dtype == torch.int8
    assert raw["scale:0.weight"].shape == (33,)
    loaded = load_packed(path)
    for name in ("0.weight", "2.weight"):
        layer = m.get_submodule(name.partition(".")[0])
        assert _bitwise(loaded[name], layer.weight), name
        q = quantizers(m)[name]
        # the stored integers are the level indices
        idx = read_packed(path).indices(name)
        assert torch.equal(idx, q.level_indices(layer.parametrizations.weight.original).long())
        assert int(idx.abs().max()) == 127
    for name in ("0.bias", "2.bias"):
        assert torch.equal(loaded[name], m.get_parameter(name))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe())
def test_every_level_set_round_trips_bit_exactly(tmp_path, spec):
    m = _model(1)
    quantize(m, spec)
    m.eval()
    with torch.no_grad():
        want = {n: m.get_submodule(n[0]).weight.clone() for n in ("0.weight", "2.weight")}
    path = save_packed(m, tmp_path / "m.safetensors")
    loaded = load_packed(path)
    pf = read_packed(path)
    for name, w in want.items():
        assert _bitwise(loaded[name], w), name
        q = quantizers(m)[name]
        stored = m.get_submodule(name[0]).parametrizations.weight.original
        assert torch.equal(pf.indices(name), q.level_indices(stored).long())
    meta = pf.header["quantized"]["0.weight"]
    assert meta["container"] == container_bits(meta["index_bits"])
    assert meta["spec"] == spec.to_dict()


def test_masks_travel_as_bits_and_pruned_weights_stay_zero(tmp_path):
    m = _model()
    mask = (torch.rand(33, 128, generator=torch.Generator().manual_seed(3)) > 0.4).float()
    apply_masks(m, {"0.weight": mask})
    quantize(m, QuantSpec(3, "shift", "stats", granularity="channel"))  # zero-free levels
    m.eval()
    path = save_packed(m, tmp_path / "m.safetensors")
    raw = load_file(path)
    assert raw["mask:0.weight"].dtype == torch.uint8
    assert raw["mask:0.weight"].numel() == math.ceil(33 * 128 / 8)
    loaded = load_packed(path)
    assert _bitwise(loaded["0.weight"], m[0].weight)
    assert bool((loaded["0.weight"][mask == 0] == 0).all())
    assert size_report(m).rows[0].masked


def test_size_report_follows_the_bit_width(tmp_path):
    m = _model()
    quantize(m, QuantSpec(4, "uniform", "minmax", granularity=32), ["0"])
    rep = size_report(m)
    row = {r.name: r for r in rep.rows}["0.weight"]
    n = 33 * 128
    groups = 33 * 4
    assert (row.index_bits, row.container_bits, row.groups) == (4, 4, groups)
    assert row.overhead_bits() == pytest.approx(32 * groups / n)  # one float32 scale per 32
    assert row.bits_per_weight() == pytest.approx(4 + 1.0)
    floats = 33 + 33 * 5 + 5  # bias 0, the unquantized layer 2, bias 2
    assert rep.fp32_bytes == 4 * (n + floats)
    assert rep.model_bytes() == n * 5 // 8 + 4 * floats
    assert rep.compression() == pytest.approx(rep.fp32_bytes / rep.model_bytes())
    # the packed file's payload is exactly what the report says
    path = save_packed(m, tmp_path / "m.safetensors")
    raw = load_file(path)
    payload = sum(t.numel() * t.element_size() for t in raw.values())
    assert payload == rep.model_bytes(packed=True) == file_size_report(path).model_bytes(True)
    assert file_size_report(path).to_dict() == rep.to_dict()
    text = rep.format()
    assert "uniform4 × minmax × nearest × group32" in text and "x)" in text


def test_size_report_counts_zero_points_and_containers():
    m = _model()
    quantize(m, QuantSpec(3, "uniform_asym", "minmax", granularity="channel"), ["0"])
    row = size_report(m).rows[0]
    assert (row.index_bits, row.container_bits, row.zero_points) == (3, 4, 33)
    assert row.overhead_bits() == pytest.approx((32 + 3) / 128)
    assert row.bits_per_weight(packed=True) == pytest.approx(4 + (32 + 4) / 128)
    # 8 bits per channel: compression of the weight alone approaches 32/8
    m8 = nn.Sequential(nn.Linear(1024, 64, bias=False))
    quantize(m8, QuantSpec(8, "uniform", "minmax", granularity="channel"))
    assert size_report(m8).compression() == pytest.approx(32 / (8 + 32 / 1024))


def test_unpack_into_a_fresh_architecture_and_dequantized_module(tmp_path):
    m = _model()
    quantize(m, QuantSpec(4, "power", "mse", granularity="channel", exponent=0.6))
    m.eval()
    path = save_packed(m, tmp_path / "m.safetensors")
    x = torch.randn(8, 128, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = m(x)
    fresh = unpack_into(_model(9), path)
    plain = dequantized_module(m)
    assert not quantizers(plain) and quantizers(m)  # the original keeps its quantizers
    assert set(plain.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    with torch.no_grad():
        assert torch.equal(fresh(x), ref)
        assert torch.equal(plain(x), ref)
        assert torch.equal(m(x), ref)  # still works after its copy was baked
    with pytest.raises(ConfigError, match="does not fit the model"):
        unpack_into(nn.Sequential(nn.Linear(128, 33)), path)
    with pytest.raises(ConfigError, match="needs a plain module"):
        unpack_into(m, path)


def test_independent_copy_can_be_merged_without_breaking_the_original():
    m = _model()
    quantize(m, QuantSpec(4))
    c = merge(independent_copy(m))
    assert type(c[0]) is nn.Linear
    assert m[0].weight.shape == (33, 128)  # a plain deepcopy + merge would delete it


def test_qlora_models_export_after_a_merge(tmp_path):
    m = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    add_quantized_adapters(m, ["0", "2"], rank=4, path="transform")
    with pytest.raises(ConfigError, match="LoRADelta after its quantizer"):
        pack(m)
    plain = dequantized_module(m)
    assert set(plain.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    merge_quantized_adapter(m, "requantize")
    m.eval()
    loaded = load_packed(save_packed(m, tmp_path / "q.safetensors"))
    assert _bitwise(loaded["0.weight"], m[0].weight)
    # activation path: the base weights are packed, the adapter factors travel in float
    a = nn.Sequential(nn.Linear(128, 64))
    add_quantized_adapters(a, ["0"], rank=4, path="activation")
    a.eval()
    loaded = load_packed(save_packed(a, tmp_path / "a.safetensors"))
    assert set(loaded) == {"0.base_layer.weight", "0.base_layer.bias", "0.lora_A", "0.lora_B"}
    assert torch.equal(loaded["0.base_layer.weight"], a[0].base_layer.weight)


def _corrupt(src, dst, drop=(), header=None):
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
    tensors = {k: v for k, v in load_file(src).items() if k not in drop}
    if header is not None:
        meta = {META_KEY: header(json.loads(meta[META_KEY]))}
    save_file(tensors, dst, metadata=meta)
    return dst


def test_bad_packed_files_are_one_line_errors(tmp_path):
    m = _model()
    quantize(m, QuantSpec(8, "uniform_asym"))
    good = save_packed(m, tmp_path / "good.safetensors")
    cases = {
        "no_scale": (dict(drop=("scale:0.weight",)), "missing the scales of '0.weight'"),
        "no_index": (dict(drop=("qweight:2.weight",)), "missing the level indices of '2.weight'"),
        "no_zp": (dict(drop=("zero_point:0.weight",)), "missing the zero points"),
        "no_float": (dict(drop=("float:0.bias",)), "missing the tensor 'float:0.bias'"),
        "bad_json": (dict(header=lambda h: "{not json"), "corrupt 'weightlab_quant' header"),
        "no_spec": (
            dict(header=lambda h: json.dumps({**h, "quantized": {"0.weight": {}}})),
            "incomplete header entry for '0.weight'",
        ),
        "bad_version": (dict(header=lambda h: json.dumps({**h, "version": 99})), "version 99"),
    }
    for key, (kw, needle) in cases.items():
        bad = _corrupt(good, tmp_path / f"{key}.safetensors", **kw)
        with pytest.raises(RunFileError) as e:
            load_packed(bad)
        msg = str(e.value)
        assert needle in msg and str(bad) in msg and "\n" not in msg, (key, msg)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2, 2)}, plain)
    with pytest.raises(RunFileError, match="not a weightlab packed file"):
        read_packed(plain)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(RunFileError, match="unreadable"):
        read_packed(tmp_path / "junk.safetensors")
    with pytest.raises(RunFileError, match="does not exist"):
        read_packed(tmp_path / "nope.safetensors")
    with pytest.raises(ConfigError, match="no quantizer"):
        pack(_model())


def test_float64_models_keep_their_scale_dtype(tmp_path):
    m = _model().double()
    quantize(m, QuantSpec(4, "uniform", "mse", granularity=16), ["0"])
    m.eval()
    path = save_packed(m, tmp_path / "d.safetensors")
    assert load_file(path)["scale:0.weight"].dtype == torch.float64
    loaded = load_packed(path)
    assert loaded["0.weight"].dtype == torch.float64
    assert torch.equal(loaded["0.weight"], m[0].weight.detach())
    row = size_report(m).rows[0]
    assert row.scale_bits == 64 and row.overhead_bits() == pytest.approx(64 / 16)
    assert file_size_report(path).to_dict() == size_report(m).to_dict()


def test_non_finite_weights_are_refused_by_name(tmp_path):
    m = _model()
    quantize(m, QuantSpec(8))
    with torch.no_grad():
        m[2].parametrizations.weight.original[0, 0] = float("nan")
    with pytest.raises(ConfigError, match="weight '2.weight' has non-finite values"):
        save_packed(m, tmp_path / "nan.safetensors")
    assert not (tmp_path / "nan.safetensors").exists()


def test_integer_and_bool_tensors_count_at_their_own_size():
    m = _model()
    m.register_buffer("keep", torch.ones(100, dtype=torch.bool))
    m.register_buffer("steps", torch.tensor([7]))
    quantize(m, QuantSpec(8), ["0", "2"])
    rep = size_report(m)
    rows = {r.name: r for r in rep.rows}
    assert not rows["keep"].floating and rows["keep"].bytes() == 100
    assert rows["steps"].bytes() == 8
    floats = 33 + 5  # the two biases
    assert rep.fp32_bytes == 4 * (33 * 128 + 5 * 33 + floats) + 100 + 8
