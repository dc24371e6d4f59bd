"""Datasets: MNIST-1D generated offline and cached, scikit-learn digits, fixed splits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from weightlab.data import DATASETS, TaskData, load_dataset
from weightlab.data.mnist1d import load_mnist1d_arrays
from weightlab.errors import DataError

# Blocks every network access of the process it is loaded into (as sitecustomize).
_NO_NETWORK = """
import socket

def _blocked(*args, **kwargs):
    raise OSError("network access blocked by the weightlab test suite")

socket.socket.connect = _blocked
socket.socket.connect_ex = _blocked
socket.create_connection = _blocked
socket.getaddrinfo = _blocked
"""

# Runs in the network-less subprocess; prints one JSON report.
_PROBE = """
import json, random, socket
import numpy as np
from weightlab.data import load_dataset
from weightlab.data.cache import cache_dir

report = {}
try:
    socket.create_connection(("example.com", 80), timeout=1)
    report["network"] = "open"
except OSError as e:
    report["network"] = str(e)

np.random.seed(123)
random.seed(456)
np_before, py_before = np.random.get_state(), random.getstate()
report["cache_before"] = sorted(p.name for p in cache_dir().glob("*")) if cache_dir().exists() else []

d1 = load_dataset("mnist1d")
np_after, py_after = np.random.get_state(), random.getstate()
report["numpy_rng_unchanged"] = bool(
    np_before[0] == np_after[0] and (np_before[1] == np_after[1]).all() and np_before[2:] == np_after[2:]
)
report["python_rng_unchanged"] = py_before == py_after
report["cache_after"] = sorted(p.name for p in cache_dir().glob("*"))
report["shapes"] = {s: [list(getattr(d1, s).x.shape), list(getattr(d1, s).y.shape)] for s in ("train", "val", "test")}
report["dtypes"] = [str(d1.train.x.dtype), str(d1.train.y.dtype)]
report["num_classes"] = d1.num_classes
report["labels"] = sorted(set(d1.train.y.tolist()) | set(d1.test.y.tolist()))

def same(a, b):
    return all(torch.equal(getattr(a, s).x, getattr(b, s).x) and torch.equal(getattr(a, s).y, getattr(b, s).y)
               for s in ("train", "val", "test"))

import torch
npz = [p for p in cache_dir().glob("*.npz")][0]
mtime = npz.stat().st_mtime_ns
d2 = load_dataset("mnist1d")
report["second_load_equal"] = same(d1, d2)
report["second_load_used_cache"] = npz.stat().st_mtime_ns == mtime

npz.write_bytes(npz.read_bytes()[:1000])  # truncated cache file (np.load: BadZipFile)
d3 = load_dataset("mnist1d")
report["after_truncation_equal"] = same(d1, d3)
with np.load(npz, allow_pickle=False) as f:
    report["cache_keys"] = sorted(f.files)
report["leftover_tmp"] = sorted(p.name for p in cache_dir().glob("*.tmp"))
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def offline_report(tmp_path_factory):
    """Generate MNIST-1D in a fresh process with no network and an empty cache."""
    root = tmp_path_factory.mktemp("offline")
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(_NO_NETWORK))
    cache = root / "cache"
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "WEIGHTLAB_CACHE": str(cache),
        "OMP_NUM_THREADS": "1",
    }
    p = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_network_really_was_blocked(offline_report):
    assert "blocked by the weightlab test suite" in offline_report["network"]


def test_mnist1d_generated_offline_with_fixed_shapes(offline_report):
    r = offline_report
    assert r["cache_before"] == []
    assert r["shapes"] == {
        "train": [[3500, 40], [3500]],
        "val": [[500, 40], [500]],
        "test": [[1000, 40], [1000]],
    }
    assert r["dtypes"] == ["torch.float32", "torch.int64"]
    assert r["num_classes"] == 10
    assert r["labels"] == list(range(10))


def test_mnist1d_is_cached_as_npz_and_reloaded(offline_report):
    r = offline_report
    assert len(r["cache_after"]) == 1 and r["cache_after"][0].endswith(".npz")
    assert r["cache_keys"] == ["x", "x_test", "y", "y_test"]
    assert r["second_load_equal"] and r["second_load_used_cache"]


def test_corrupt_mnist1d_cache_is_regenerated(offline_report):
    assert offline_report["after_truncation_equal"]
    assert offline_report["leftover_tmp"] == []


def test_mnist1d_generation_leaves_global_rngs_alone(offline_report):
    """mnist1d seeds NumPy's and Python's global RNGs; weightlab must restore both."""
    assert offline_report["numpy_rng_unchanged"]
    assert offline_report["python_rng_unchanged"]


def _rows(x: torch.Tensor) -> list[bytes]:
    return sorted(r.tobytes() for r in x.numpy())


def test_mnist1d_splits_partition_the_generated_data():
    d = load_dataset("mnist1d")
    raw = load_mnist1d_arrays()
    assert raw["x"].shape == (4000, 40) and raw["x_test"].shape == (1000, 40)
    # train + val are exactly the package's 4000 training samples, with no overlap
    train_val = torch.cat([d.train.x, d.val.x])
    assert _rows(train_val) == _rows(torch.as_tensor(raw["x"], dtype=torch.float32))
    assert len(set(_rows(d.train.x)) & set(_rows(d.val.x))) == 0
    assert len(set(_rows(train_val)) & set(_rows(d.test.x))) == 0
    assert torch.equal(d.test.x, torch.as_tensor(raw["x_test"], dtype=torch.float32))
    assert torch.equal(d.test.y, torch.as_tensor(raw["y_test"]).long())
    # labels follow their inputs through the split
    lookup = {
        row.tobytes(): int(y) for row, y in zip(raw["x"].astype(np.float32), raw["y"], strict=True)
    }
    assert all(lookup[r.tobytes()] == int(y) for r, y in zip(d.val.x.numpy(), d.val.y, strict=True))
    assert sorted(set(d.val.y.tolist())) == list(range(10))


def test_mnist1d_is_deterministic():
    a, b = load_dataset("mnist1d"), load_dataset("mnist1d")
    for s in ("train", "val", "test"):
        assert torch.equal(getattr(a, s).x, getattr(b, s).x)
        assert torch.equal(getattr(a, s).y, getattr(b, s).y)


def test_digits_shapes_and_values():
    d = load_dataset("digits")
    assert isinstance(d, TaskData) and d.name == "digits"
    assert tuple(d.train.x.shape) == (1257, 64)
    assert tuple(d.val.x.shape) == (180, 64)
    assert tuple(d.test.x.shape) == (360, 64)
    assert d.input_shape == (64,) and d.num_classes == 10
    assert d.train.x.dtype == torch.float32 and d.train.y.dtype == torch.int64
    for s in (d.train, d.val, d.test):
        assert float(s.x.min()) >= 0.0 and float(s.x.max()) <= 1.0
        assert sorted(set(s.y.tolist())) == list(range(10))


def test_digits_splits_partition_the_dataset_and_are_deterministic():
    from sklearn.datasets import load_digits

    full = load_digits()
    x = torch.as_tensor(full.data / 16.0, dtype=torch.float32)
    a, b = load_dataset("digits"), load_dataset("digits")
    for s in ("train", "val", "test"):
        assert torch.equal(getattr(a, s).x, getattr(b, s).x)
        assert torch.equal(getattr(a, s).y, getattr(b, s).y)

    def pairs(xs, ys):
        return sorted((r.tobytes(), int(y)) for r, y in zip(xs.numpy(), ys, strict=True))

    allx = torch.cat([a.train.x, a.val.x, a.test.x])
    ally = torch.cat([a.train.y, a.val.y, a.test.y])
    # together the splits are the 1797 images with their labels, each exactly once
    assert pairs(allx, ally) == pairs(x, torch.as_tensor(full.target))


def test_digits_generation_leaves_global_rngs_alone():
    torch.manual_seed(7)
    np.random.seed(7)
    t_state, n_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    load_dataset("digits")
    load_dataset("mnist1d")
    assert torch.equal(torch.random.get_rng_state(), t_state)
    assert (np.random.get_state()[1] == n_state).all()


def test_unknown_dataset():
    with pytest.raises(DataError, match=r"unknown task 'nope'; choose one of: .*digits.*mnist1d"):
        load_dataset("nope")
    assert set(DATASETS) >= {"mnist1d", "digits"}


def test_to_device_keeps_values():
    d = load_dataset("digits", "cpu")
    assert d.device == torch.device("cpu")
    e = d.to("cpu")
    assert torch.equal(e.train.x, d.train.x) and e.num_classes == 10


@pytest.mark.parametrize("content", [b"", b"not an npz file", b"PK\x03\x04 truncated zip"])
def test_corrupt_npz_cache_reads_as_absent_and_is_deleted(tmp_path, content):
    from weightlab.data.cache import load_npz, save_npz_atomic

    p = tmp_path / "c.npz"
    p.write_bytes(content)
    assert load_npz(p, ("x",)) is None
    assert not p.exists()
    save_npz_atomic(p, x=np.arange(3))
    assert load_npz(p, ("x",))["x"].tolist() == [0, 1, 2]
    assert load_npz(p, ("y",)) is None  # a cache missing a key is stale: regenerate
    assert [q.name for q in tmp_path.iterdir()] == []
