"""The task registry: every generated task's shapes, determinism, splits and known answers;
user data (.npz, IDX) round trips; one-line DataErrors for bad input."""

from __future__ import annotations

import gzip
import random

import numpy as np
import pytest
import torch

from weightlab.data import (
    DATASETS,
    TASKS,
    is_user_data,
    load_dataset,
    task_names,
    task_param_specs,
    task_params,
)
from weightlab.data.idx import read_idx
from weightlab.data.modular import apply_op
from weightlab.data.signals import area_matrix, china_gray
from weightlab.data.teacher import mlp_forward
from weightlab.errors import DataError

SPLITS = ("train", "val", "test")
# small, fast parameters for every generated task
SMALL = {
    "iris": {},
    "wine": {},
    "breast_cancer": {},
    "digits": {},
    "teacher_linear": {"n_train": 50, "n_val": 20, "n_test": 30, "d_in": 6, "d_out": 3},
    "teacher_mlp": {"n_train": 50, "n_val": 20, "n_test": 30, "d_in": 6, "widths": "8,5"},
    "teacher_sparse": {"n_train": 50, "n_val": 20, "n_test": 30, "d_in": 10, "k": 3, "s": 2},
    "deep_linear": {"n_train": 50, "n_val": 20, "n_test": 30, "d_in": 7, "d_out": 5},
    "modular": {"p": 13, "op": "mul", "train_fraction": 0.4},
    "xor": {"n_train": 40, "n_val": 50, "n_test": 60, "d": 30},
    "sbm": {"n_nodes": 60, "n_classes": 3, "train_per_class": 5, "val_size": 10},
    "signal1d": {"n": 64, "f_lo": 3, "f_hi": 10},
    "signal2d": {"n": 16, "f_lo": 2, "f_hi": 5},
    "image": {"size": 16},
    "sentences": {"model": "tiny", "n_train": 8, "n_val": 4, "n_test": 4},
    "mnist1d_binary": {"n_train": 64, "n_val": 20},
    "teacher_poly": {"d": 6, "n_train": 50, "n_val": 20, "n_test": 30},
    "vader_words": {"tokenizer": "tiny"},
    "vader_sentences": {"tokenizer": "tiny"},
    "mnist1d_shift": {"part": "B"},
    "binary_gaussian": {"n_train": 30, "n_val": 10, "n_test": 20, "d": 4},
    "latent_factors": {"n_train": 30, "n_val": 10, "n_test": 20, "n_unlabeled": 40, "d": 6, "r": 2},
    "latent_mixture": {"n_train": 30, "n_val": 10, "n_test": 20, "n_unlabeled": 40, "d": 6, "r": 3},
    "hebbian": {"n": 30, "k": 4, "dilution": 0.2, "n_train": 20, "n_val": 8, "n_test": 12},
    "teacher_relu": {"n_train": 50, "n_val": 20, "n_test": 30, "d": 6},
    "teacher_logistic": {"n_train": 30, "n_val": 10, "n_test": 20, "d": 4},
    "dsd": {"k": 3, "d": 4, "n_train": 30, "n_val": 10, "n_test": 20},
    "conv_teacher": {"k": 3, "p": 4, "n_train": 30, "n_val": 10, "n_test": 20},
}
TOKEN_TASKS = ("sentences", "vader_words", "vader_sentences")  # packed int64 token ids
SEEDED = [n for n, p in TASKS.items() if "seed" in {q.name for q in p.params}]


def _equal(a, b) -> bool:
    return all(
        torch.equal(getattr(a, s).x, getattr(b, s).x)
        and torch.equal(getattr(a, s).y, getattr(b, s).y)
        for s in SPLITS
    )


def _rows(x: torch.Tensor) -> list[bytes]:
    return sorted(r.tobytes() for r in x.numpy())


# ---------------------------------------------------------------- registry and params


def test_registry_names_params_and_aliases():
    assert DATASETS is TASKS
    assert set(task_names()) == set(SMALL) | {"mnist1d"}
    assert task_names() == sorted(task_names())
    assert task_params("modular") == {"p": 97, "op": "add", "train_fraction": 0.5, "seed": 0}
    assert task_params("digits") == {}
    assert task_params("data.npz") == {"seed": 0} and task_params("idx:/x") == {"seed": 0}
    assert is_user_data("a/b.npz") and is_user_data("idx:mnist") and not is_user_data("digits")
    specs = {p.name: p for p in task_param_specs("modular")}
    assert specs["op"].checks() == {"choices": ("add", "sub", "mul", "div")}
    assert specs["train_fraction"].checks() == {"gt": 0, "lt": 1}
    assert all(p.help for n in task_names() for p in task_param_specs(n))
    # every default passes its own checks
    for n in task_names():
        for p in task_param_specs(n):
            p.parse(p.default)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        (
            "modular",
            {"q": 3},
            r"task 'modular' has no parameter 'q'; its parameters \(defaults\) "
            r"are: p=97, op='add', train_fraction=0.5, seed=0",
        ),
        ("modular", {"op": "pow"}, r"parameter op must be one of add, sub, mul, div; got 'pow'"),
        ("modular", {"p": 1}, r"parameter p must be >= 2; got 1.*parameters \(defaults\)"),
        ("modular", {"p": 2.5}, r"parameter p must be an integer; got 2.5"),
        ("modular", {"train_fraction": 1.0}, r"train_fraction must be < 1; got 1.0"),
        ("teacher_linear", {"noise": -0.1}, r"noise must be >= 0"),
        ("teacher_linear", {"noise": float("nan")}, r"noise must be a finite number"),
        ("teacher_linear", {"n_train": True}, r"n_train must be an integer; got True"),
        ("teacher_mlp", {"widths": "8,x"}, r"widths must be an integer; got 'x'"),
        ("teacher_mlp", {"widths": "8,0"}, r"widths must be >= 1; got 0"),
        ("digits", {"seed": 1}, r"task 'digits' takes no parameters; got seed=1"),
        ("data.npz", {"noise": 1}, r"task 'data.npz' has no parameter 'noise'.*seed=0"),
        ("signal1d", {"n": 64, "f_hi": 32}, r"f_hi=32 is not below .* n/2 = 32; lower f_hi"),
        ("signal2d", {"f_lo": 9, "f_hi": 3}, r"f_lo=9 is above f_hi=3; give f_lo <= f_hi"),
        ("teacher_sparse", {"d_in": 3, "s": 4}, r"s=4 nonzero .* cannot exceed d_in=3"),
        ("deep_linear", {"d_in": 2, "singular_values": "3,2,1"}, r"3 singular values .* at most 2"),
        ("xor", {"d": 10**6, "n_val": 10**3}, r"too large"),
    ],
)
def test_bad_params_give_one_line_errors(name, params, match):
    with pytest.raises(DataError, match=match) as e:
        load_dataset(name, **params)
    assert "\n" not in str(e.value)


def test_unknown_task_lists_the_names():
    with pytest.raises(DataError) as e:
        load_dataset("mnist2d")
    msg = str(e.value)
    assert msg.startswith(
        "unknown task 'mnist2d'; choose one of: binary_gaussian, breast_cancer, conv_teacher, "
        "deep_linear"
    )
    assert "FILE.npz or idx:DIR" in msg and "\n" not in msg
    with pytest.raises(DataError, match="unknown task"):
        task_params("mnist2d")


def test_params_accept_strings_and_sequences():
    a = load_dataset("teacher_mlp", **{**SMALL["teacher_mlp"], "widths": [8, 5]})
    b = load_dataset("teacher_mlp", **{**SMALL["teacher_mlp"], "widths": " 8, 5 "})
    c = load_dataset("teacher_mlp", **{**SMALL["teacher_mlp"], "n_train": "50", "noise": "0.1"})
    assert _equal(a, b) and _equal(a, c)
    assert [tuple(w.shape) for w in a.info["weights"]] == [(6, 8), (8, 5), (5, 1)]


# ---------------------------------------------------------------- every task


@pytest.mark.parametrize("name", sorted(SMALL))
def test_shapes_kinds_and_determinism(name):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    states = (torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    a = load_dataset(name, **SMALL[name])
    b = load_dataset(name, **SMALL[name])
    assert torch.equal(torch.random.get_rng_state(), states[0])
    assert (np.random.get_state()[1] == states[1]).all() and random.getstate() == states[2]
    assert _equal(a, b)
    assert a.name == name and a.kind == TASKS[name].kind
    for s in SPLITS:
        sp = getattr(a, s)
        want = torch.int64 if name in TOKEN_TASKS else torch.float32  # token ids stay ints
        assert len(sp) > 0 and sp.x.dtype == want and sp.x.shape[0] == len(sp)
        assert sp.x.shape[1:] == a.train.x.shape[1:]
        assert torch.isfinite(sp.x).all()
        if a.kind == "classification":
            assert sp.y.dtype == torch.int64 and sp.y.dim() == 1
            assert int(sp.y.min()) >= 0 and int(sp.y.max()) < a.num_classes
            assert a.output_shape == (a.num_classes,)
        else:
            assert sp.y.dtype == torch.float32 and a.num_classes == 0
            assert tuple(sp.y.shape[1:]) == a.output_shape and torch.isfinite(sp.y).all()


@pytest.mark.parametrize("name", SEEDED)
def test_seed_changes_the_draw(name):
    params = {k: v for k, v in SMALL[name].items()}
    a = load_dataset(name, **params, seed=0)
    b = load_dataset(name, **params, seed=1)
    assert not _equal(a, b)


# ---------------------------------------------------------------- tabular


@pytest.mark.parametrize(
    ("name", "n", "classes"), [("iris", 150, 3), ("wine", 178, 3), ("breast_cancer", 569, 2)]
)
def test_tabular_stratified_split_and_train_standardization(name, n, classes):
    import sklearn.datasets as skd

    bunch = getattr(skd, f"load_{name}")()
    raw_y = np.asarray(bunch.target)
    d = load_dataset(name)
    assert d.num_classes == classes
    assert sum(len(getattr(d, s)) for s in SPLITS) == n
    for c in range(classes):
        n_c = int((raw_y == c).sum())
        counts = [int((getattr(d, s).y == c).sum()) for s in SPLITS]
        assert counts[0] == round(0.6 * n_c) and counts[1] == round(0.2 * n_c)
        assert counts[2] == n_c - counts[0] - counts[1]
    # train statistics only: train is standardized exactly, val/test are not
    assert torch.allclose(d.train.x.mean(0), torch.zeros(d.input_shape), atol=1e-5)
    assert torch.allclose(d.train.x.std(0, unbiased=False), torch.ones(d.input_shape), atol=1e-4)
    assert not torch.allclose(d.val.x.mean(0), torch.zeros(d.input_shape), atol=1e-3)
    # undoing the scaling gives back the original rows, each once, with their labels
    mean, std = d.info["mean"].double().numpy(), d.info["std"].double().numpy()
    raw = np.asarray(bunch.data, dtype=np.float64)
    scale = np.abs(raw).max(0) + 1e-12
    matched = {}
    for s in SPLITS:
        back = getattr(d, s).x.double().numpy() * std + mean
        dist = np.abs((back[:, None, :] - raw[None, :, :]) / scale).max(-1)
        assert (dist.min(1) < 1e-5).all()
        matched[s] = raw[dist.argmin(1)]  # the original row (duplicates are equal anyway)
    labels = torch.cat([getattr(d, s).y for s in SPLITS]).numpy()
    got = sorted(
        (r.tobytes(), int(y))
        for r, y in zip(np.concatenate([matched[s] for s in SPLITS]), labels, strict=True)
    )
    assert got == sorted((r.tobytes(), int(y)) for r, y in zip(raw, raw_y, strict=True))
    assert np.allclose(mean, matched["train"].mean(0), rtol=1e-5, atol=1e-6)
    assert np.allclose(std, matched["train"].std(0), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- teacher-student


def _teacher(name, info):
    if name in ("teacher_linear", "deep_linear"):
        return lambda x: x @ info["weight"]
    if name == "teacher_mlp":
        return lambda x: mlp_forward(x, info["weights"])
    return lambda x: torch.relu(x @ info["w1"]) @ info["w2"]


@pytest.mark.parametrize("name", ["teacher_linear", "teacher_mlp", "teacher_sparse", "deep_linear"])
def test_teacher_info_reproduces_clean_targets_and_noise_level(name):
    clean = load_dataset(name, **{**SMALL[name], "noise": 0.0})
    f = _teacher(name, clean.info)
    for s in SPLITS:
        sp = getattr(clean, s)
        assert torch.allclose(sp.y, f(sp.x), atol=1e-6)
        assert float(sp.y.std()) > 0.1
    noisy = load_dataset(name, **{**SMALL[name], "noise": 0.5, "n_train": 4000})
    f = _teacher(name, noisy.info)
    resid = noisy.train.y - f(noisy.train.x)
    assert abs(float(resid.std()) - 0.5) < 0.02 and abs(float(resid.mean())) < 0.02
    # the teacher and the val/test sets do not depend on n_train
    for k, v in clean.info.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, noisy.info[k])
    assert torch.equal(clean.test.x, noisy.test.x) and torch.equal(clean.val.x, noisy.val.x)


def test_teacher_inputs_are_standard_normal():
    d = load_dataset("teacher_linear", n_train=20000, d_in=4)
    assert torch.allclose(d.train.x.mean(0), torch.zeros(4), atol=0.03)
    assert torch.allclose(torch.cov(d.train.x.T), torch.eye(4), atol=0.04)


def test_sparse_teacher_support():
    d = load_dataset("teacher_sparse", d_in=30, k=5, s=4, n_train=10)
    sup, w1 = d.info["support"], d.info["w1"]
    assert sup.dtype == torch.bool and tuple(sup.shape) == (30, 5)
    assert int(sup.sum()) == 5 * 4 and sup.sum(0).tolist() == [4] * 5
    assert torch.equal(w1 != 0, sup) and int((w1 != 0).sum()) == 20
    assert tuple(d.info["w2"].shape) == (5, 1)


def test_deep_linear_singular_values_and_orthogonal_factors():
    d = load_dataset("deep_linear", d_in=9, d_out=6, singular_values="5,3,2,1", n_train=10)
    w, u, v, s = (d.info[k].double() for k in ("weight", "U", "V", "singular_values"))
    assert tuple(w.shape) == (9, 6) and tuple(u.shape) == (9, 6) and tuple(v.shape) == (6, 6)
    assert s.tolist() == [5, 3, 2, 1, 0, 0]
    assert torch.allclose(torch.linalg.svdvals(w), s, atol=1e-5)
    assert torch.allclose(u.T @ u, torch.eye(6, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(v.T @ v, torch.eye(6, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(u @ torch.diag(s) @ v.T, w, atol=1e-5)
    # each mode maps its input direction onto its output direction with gain s_i
    assert torch.allclose(u.T @ w @ v, torch.diag(s), atol=1e-5)


# ---------------------------------------------------------------- modular


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_modular_labels_splits_and_pairs(op):
    p = 11
    d = load_dataset("modular", p=p, op=op, train_fraction=0.3, seed=4)
    n = p * (p - 1) if op == "div" else p * p
    sizes = [len(getattr(d, s)) for s in SPLITS]
    assert sizes[0] == round(0.3 * n) and sizes[1] == (n - sizes[0]) // 2 and sum(sizes) == n
    assert d.num_classes == p and d.input_shape == (2 * p,)
    seen = set()
    gen = np.random.default_rng(0)
    for s in SPLITS:
        sp = getattr(d, s)
        assert torch.equal(sp.x.sum(1), torch.full((len(sp),), 2.0))
        a, b = sp.x[:, :p].argmax(1).numpy(), sp.x[:, p:].argmax(1).numpy()
        assert np.array_equal(np.stack([a, b], 1), d.info[f"{s}_pairs"].numpy())
        seen |= set(zip(a.tolist(), b.tolist(), strict=True))
        y = sp.y.numpy()
        for i in gen.choice(len(sp), size=min(25, len(sp)), replace=False):
            if op == "add":
                want = (a[i] + b[i]) % p
            elif op == "sub":
                want = (a[i] - b[i]) % p
            elif op == "mul":
                want = (a[i] * b[i]) % p
            else:  # the c with c * b = a (mod p), found by search, not by Fermat
                want = next(c for c in range(p) if (c * b[i]) % p == a[i])
            assert y[i] == want
        if op == "div":
            assert (b != 0).all() and ((y * b) % p == a).all()
    assert len(seen) == n  # every pair exactly once


def test_modular_division_needs_a_prime():
    with pytest.raises(DataError, match=r"op=div needs a prime p.*p=12 is not prime; use p=13"):
        load_dataset("modular", p=12, op="div")
    assert apply_op(np.array([6]), np.array([3]), "div", 7).tolist() == [2]
    load_dataset("modular", p=12, op="mul")  # composite p is fine for the other ops


# ---------------------------------------------------------------- xor


def test_xor_clusters_and_label_flips():
    d = load_dataset("xor", n_train=4000, n_val=500, n_test=500, d=50, mu=8.0, flip=0.2)
    info = d.info
    assert info["mu1"][0] == 8.0 and info["mu2"][1] == 8.0 and float(info["mu1"] @ info["mu2"]) == 0
    x = d.train.x
    # clean label: the axis whose mean the example sits on (mu=8: no ambiguity here)
    axis = (x[:, 1].abs() > x[:, 0].abs()).long()
    assert torch.equal(axis, info["train_clean_y"])
    assert torch.equal(d.train.y, torch.where(info["train_flipped"], 1 - axis, axis))
    assert abs(float(info["train_flipped"].float().mean()) - 0.2) < 0.03
    # all four clusters are used, about equally; the rest of the coordinates are N(0, 1)
    on = x[torch.arange(len(x)), axis]
    assert abs(float((on > 0).float().mean()) - 0.5) < 0.05
    assert abs(float(x[:, 2:].std()) - 1.0) < 0.02
    # val/test labels are clean by default, flipped with eval_flip
    for sp in (d.val, d.test):
        assert torch.equal(sp.y, (sp.x[:, 1].abs() > sp.x[:, 0].abs()).long())
    e = load_dataset("xor", n_train=40, n_val=300, n_test=300, d=50, mu=8.0, eval_flip=1.0)
    assert torch.equal(e.test.y, (e.test.x[:, 1].abs() <= e.test.x[:, 0].abs()).long())
    # XOR: no linear direction separates the classes (the class means coincide)
    m0, m1 = x[info["train_clean_y"] == 0].mean(0), x[info["train_clean_y"] == 1].mean(0)
    assert float((m0 - m1).abs().max()) < 0.5


# ---------------------------------------------------------------- signals


def _fine_1d(d):
    xs = torch.cat([getattr(d, s).x[:, 0] for s in SPLITS])
    ys = torch.cat([getattr(d, s).y[:, 0] for s in SPLITS])
    order = torch.argsort(xs)
    return xs[order].double().numpy(), ys[order].double().numpy()


def test_signal1d_band_and_interleaved_split():
    n, f_lo, f_hi = 128, 5, 20
    d = load_dataset("signal1d", n=n, f_lo=f_lo, f_hi=f_hi, seed=2)
    m = 2 * n
    assert [len(getattr(d, s)) for s in SPLITS] == [n, n // 2, n // 2]
    t, y = _fine_1d(d)
    assert np.allclose(t, -1 + 2 * np.arange(m) / m)  # the fine grid, each point once
    assert np.allclose(y, d.info["signal"].double().numpy())
    assert np.allclose(d.train.x[:, 0].numpy(), t[::2])  # train: every other point
    assert np.allclose(d.val.x[:, 0].numpy(), t[1::4]) and np.allclose(
        d.test.x[:, 0].numpy(), t[3::4]
    )
    assert abs(np.abs(y).max() - 1.0) < 1e-6
    power = np.abs(np.fft.rfft(y)) ** 2
    k = np.arange(len(power))
    inside = (k >= f_lo) & (k <= f_hi)
    assert power[~inside].sum() < 1e-10 * power.sum()
    assert (power[inside] > 0).all()
    assert d.info["band"] == (f_lo, f_hi)


def test_signal2d_radial_band_and_split():
    n, f_lo, f_hi = 24, 3, 9
    d = load_dataset("signal2d", n=n, f_lo=f_lo, f_hi=f_hi)
    m = 2 * n
    assert [len(getattr(d, s)) for s in SPLITS] == [n * n, 3 * n * n // 2, 3 * n * n // 2]
    grid = np.full((m, m), np.nan)
    t = d.info["coords"].double().numpy()
    assert np.allclose(t, -1 + 2 * np.arange(m) / m)
    for s in SPLITS:
        sp = getattr(d, s)
        idx = np.rint((sp.x.double().numpy() + 1) * m / 2).astype(int)
        assert np.isnan(grid[idx[:, 0], idx[:, 1]]).all()
        grid[idx[:, 0], idx[:, 1]] = sp.y[:, 0].numpy()
        if s == "train":
            assert (idx % 2 == 0).all()
        else:
            assert ((idx % 2 == 1).any(1)).all()
    assert not np.isnan(grid).any()
    assert np.allclose(grid, d.info["signal"].double().numpy())
    power = np.abs(np.fft.fft2(grid)) ** 2
    k = np.fft.fftfreq(m, 1 / m)
    r = np.hypot(k[:, None], k[None, :])
    inside = (r >= f_lo) & (r <= f_hi)
    assert power[~inside].sum() < 1e-10 * power.sum() and (power[inside] > 0).all()


def test_image_is_area_averaged_grayscale_china():
    a = area_matrix(12, 4)
    assert np.allclose(a, np.kron(np.eye(4), np.full((1, 3), 1 / 3)))  # integer ratio: block mean
    b = area_matrix(5, 2)
    assert np.allclose(b, [[0.4, 0.4, 0.2, 0, 0], [0, 0, 0.2, 0.4, 0.4]])
    d = load_dataset("image", size=32)
    fine = d.info["signal"].double().numpy()
    assert fine.shape == (64, 64) and fine.min() >= -1 and fine.max() <= 1
    assert [len(getattr(d, s)) for s in SPLITS] == [32 * 32, 1536, 1536]
    gray = china_gray()
    assert gray.shape == (427, 640)
    crop = gray[:, 106:533]
    # area averaging keeps the mean; a fine pixel is the mean of the crop region it covers
    assert abs((fine.mean() + 1) / 2 - crop.mean()) < 1e-6
    # fine pixel (0, 0) covers 427 / 64 = 6.671875 crop pixels a side
    w = np.array([1, 1, 1, 1, 1, 1, 0.671875])
    assert abs((fine[0, 0] + 1) / 2 - w @ crop[:7, :7] @ w / w.sum() ** 2) < 1e-6
    assert torch.equal(d.train.x[0], torch.tensor([-1 + 1 / 64, -1 + 1 / 64]))


# ---------------------------------------------------------------- user data: .npz


def _npz(tmp_path, name="data.npz", **arrays):
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


def test_npz_classification_with_given_splits(tmp_path):
    gen = np.random.default_rng(0)
    arrs = {
        "x": gen.normal(size=(30, 3, 2)),
        "y": gen.integers(0, 4, 30),
        "x_val": gen.normal(size=(5, 3, 2)),
        "y_val": np.array([0, 1, 2, 3, 5]),
        "x_test": gen.normal(size=(7, 3, 2)),
        "y_test": gen.integers(0, 4, 7).astype(np.uint8),
    }
    p = _npz(tmp_path, **arrs)
    d = load_dataset(str(p))
    assert d.kind == "classification" and d.num_classes == 6
    assert torch.equal(d.train.x, torch.as_tensor(arrs["x"], dtype=torch.float32))
    assert torch.equal(d.val.y, torch.as_tensor(arrs["y_val"]))
    assert d.test.y.dtype == torch.int64 and d.input_shape == (3, 2)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["data.npz"]  # nothing written


def test_npz_regression_carves_a_seeded_80_10_10_split(tmp_path):
    gen = np.random.default_rng(1)
    x, y = gen.normal(size=(50, 4)), gen.normal(size=50).astype(np.float32)
    p = _npz(tmp_path, x=x, y=y)
    d, e = load_dataset(str(p)), load_dataset(str(p))
    assert _equal(d, e) and d.kind == "regression" and d.output_shape == (1,)
    assert [len(getattr(d, s)) for s in SPLITS] == [40, 5, 5]
    all_x = torch.cat([getattr(d, s).x for s in SPLITS])
    assert _rows(all_x) == _rows(torch.as_tensor(x, dtype=torch.float32))
    lookup = {r.tobytes(): v for r, v in zip(x.astype(np.float32), y, strict=True)}
    assert all(
        lookup[r.tobytes()] == v
        for r, v in zip(d.val.x.numpy(), d.val.y[:, 0].numpy(), strict=True)
    )
    f = load_dataset(str(p), seed=1)
    assert not torch.equal(f.val.x, d.val.x)
    # only the missing split is carved
    g = load_dataset(str(_npz(tmp_path, "t.npz", x=x, y=y, x_test=x[:3], y_test=y[:3])))
    assert [len(getattr(g, s)) for s in SPLITS] == [45, 5, 3]


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.zeros((3, 2))}, r"has no 'y' array \(it holds: x\); save it with np.savez"),
        ({"y": np.zeros(3)}, r"has no 'x' array"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(3)}, r"'x' has 4 rows but 'y' has 3"),
        ({"x": np.array([["a", "b"]] * 3), "y": np.zeros(3)}, r"'x' has dtype <U1, .*not numeric"),
        ({"x": np.zeros((3, 2)), "y": np.array(["a", "b", "c"])}, r"'y' has dtype <U1"),
        (
            {"x": np.zeros((3, 2)), "y": np.array([1, None, 2], dtype=object)},
            r"'y' has a non-numeric",
        ),
        ({"x": np.zeros((20, 2)), "y": np.arange(20) - 1}, r"negative label \(-1\)"),
        (
            {"x": np.zeros((20, 2)), "y": np.ones(20), "x_val": np.zeros((2, 2))},
            r"has 'x_val' but no 'y_val'; store both or neither",
        ),
        (
            {
                "x": np.zeros((20, 2)),
                "y": np.ones(20),
                "x_val": np.zeros((2, 3)),
                "y_val": np.ones(2),
            },
            r"'x_val' rows have shape \(3,\) but 'x' rows have \(2,\)",
        ),
        (
            {
                "x": np.zeros((20, 2)),
                "y": np.arange(20),
                "x_val": np.zeros((2, 2)),
                "y_val": np.ones(2),
            },
            r"mix integer and float",
        ),
        ({"x": np.full((20, 2), np.nan), "y": np.arange(20)}, r"'x' holds NaN"),
        ({"x": np.zeros((2, 2)), "y": np.arange(2)}, r"2 rows are too few"),
        ({"x": np.zeros((20, 2)), "y": np.zeros((20, 2), dtype=int)}, r"one label per row"),
    ],
)
def test_bad_npz_files(tmp_path, arrays, match):
    p = _npz(tmp_path, **arrays)
    with pytest.raises(DataError, match=match) as e:
        load_dataset(str(p))
    assert "\n" not in str(e.value) and str(p) in str(e.value)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["data.npz"]


def test_npz_unreadable_files(tmp_path):
    with pytest.raises(DataError, match=r"does not exist; give the path of a .npz file"):
        load_dataset(str(tmp_path / "missing.npz"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"cannot read .* as a .npz archive"):
        load_dataset(str(bad))
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError, match=r"single .npy array, not a .npz archive"):
        load_dataset(str(single))


# ---------------------------------------------------------------- user data: IDX


def _idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype("u1"): 0x08, np.dtype("i2"): 0x0B, np.dtype("f4"): 0x0D}[arr.dtype]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write_idx(folder, images, labels, test_images, test_labels, gz=False, dot=False):
    folder.mkdir(parents=True, exist_ok=True)
    sep = "." if dot else "-"
    files = {
        f"train-images{sep}idx3-ubyte": images,
        f"train-labels{sep}idx1-ubyte": labels,
        f"t10k-images{sep}idx3-ubyte": test_images,
        f"t10k-labels{sep}idx1-ubyte": test_labels,
    }
    for name, arr in files.items():
        raw = _idx_bytes(arr)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return folder


def _mnist_like(n=40, n_test=12, seed=0):
    gen = np.random.default_rng(seed)
    return (
        gen.integers(0, 256, (n, 5, 4)).astype(np.uint8),
        gen.integers(0, 10, n).astype(np.uint8),
        gen.integers(0, 256, (n_test, 5, 4)).astype(np.uint8),
        gen.integers(0, 10, n_test).astype(np.uint8),
    )


@pytest.mark.parametrize(("gz", "dot"), [(False, False), (True, False), (True, True)])
def test_idx_round_trip(tmp_path, gz, dot):
    imgs, labs, timgs, tlabs = _mnist_like()
    folder = _write_idx(tmp_path / "mnist", imgs, labs, timgs, tlabs, gz=gz, dot=dot)
    d = load_dataset(f"idx:{folder}")
    assert d.name == f"idx:{folder}" and d.kind == "classification"
    assert d.num_classes == int(max(labs.max(), tlabs.max())) + 1
    assert d.info["image_shape"] == (5, 4) and d.input_shape == (20,)
    assert [len(getattr(d, s)) for s in SPLITS] == [36, 4, 12]
    flat = torch.as_tensor(imgs.reshape(40, 20) / 255.0, dtype=torch.float32)
    assert torch.equal(
        d.test.x, torch.as_tensor(timgs.reshape(12, 20) / 255.0, dtype=torch.float32)
    )
    assert torch.equal(d.test.y, torch.as_tensor(tlabs, dtype=torch.int64))
    assert _rows(torch.cat([d.train.x, d.val.x])) == _rows(flat)
    lookup = {r.tobytes(): int(y) for r, y in zip(flat.numpy(), labs, strict=True)}
    assert all(lookup[r.tobytes()] == int(y) for r, y in zip(d.val.x.numpy(), d.val.y, strict=True))
    assert float(d.train.x.max()) <= 1.0 and float(d.train.x.min()) >= 0.0
    assert _equal(d, load_dataset(f"idx:{folder}"))
    assert not torch.equal(d.val.x, load_dataset(f"idx:{folder}", seed=5).val.x)


def test_read_idx_dtypes(tmp_path):
    for arr in (
        np.arange(-6, 6, dtype=np.int16).reshape(3, 4),
        np.linspace(0, 1, 6, dtype=np.float32),
    ):
        (tmp_path / "a").write_bytes(_idx_bytes(arr))
        out = read_idx(tmp_path / "a")
        assert out.dtype.isnative and np.array_equal(out, arr)


def test_idx_plain_file_wins_over_its_gz(tmp_path):
    imgs, labs, timgs, tlabs = _mnist_like()
    folder = _write_idx(tmp_path / "m", imgs, labs, timgs, tlabs)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"stale")
    assert len(load_dataset(f"idx:{folder}").train) == 36


def _corrupt(folder, name, data: bytes):
    (folder / name).write_bytes(data)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda f: (f / "t10k-labels-idx1-ubyte").unlink(),
            r"has no file matching t10k-labels\*; the folder needs train-images-",
        ),
        (
            lambda f: _corrupt(
                f, "train-images-idx3-ubyte", (f / "train-images-idx3-ubyte").read_bytes()[:300]
            ),
            r"train-images-idx3-ubyte is truncated: its header declares shape \(40, 5, 4\) "
            r"\(800 bytes of data\) but only 284 bytes follow",
        ),
        (
            lambda f: _corrupt(
                f, "train-labels-idx1-ubyte", (f / "train-labels-idx1-ubyte").read_bytes()[:6]
            ),
            r"truncated inside its header",
        ),
        (
            lambda f: _corrupt(f, "train-labels-idx1-ubyte", _idx_bytes(np.zeros(39, np.uint8))),
            r"train-images-idx3-ubyte has 40 images but train-labels-idx1-ubyte has 39 labels",
        ),
        (
            lambda f: _corrupt(f, "t10k-images-idx3-ubyte", b"\x1f\x8b\x08\x03" + bytes(20)),
            r"is not an IDX file \(magic number 0x1f8b0803",
        ),
        (
            lambda f: _corrupt(f, "t10k-images-idx3-ubyte", bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5])),
            r"unknown IDX dtype code 0x07",
        ),
        (
            lambda f: _corrupt(
                f, "t10k-images-idx3-ubyte", _idx_bytes(np.zeros((12, 4, 5), np.uint8))
            ),
            r"images of shape \(5, 4\) but t10k-images-idx3-ubyte has \(4, 5\)",
        ),
        (
            lambda f: _corrupt(
                f, "train-labels-idx1-ubyte", _idx_bytes(np.zeros(40, np.uint8)) + b"x"
            ),
            r"1 bytes after the data",
        ),
        (
            lambda f: _corrupt(f, "train-labels.idx1-ubyte", b"junk"),
            r"several files matching train-labels\* \(train-labels-idx1-ubyte, "
            r"train-labels.idx1-ubyte\); keep one of them",
        ),
    ],
)
def test_bad_idx_folders(tmp_path, change, match):
    folder = _write_idx(tmp_path / "m", *_mnist_like())
    change(folder)
    before = sorted(q.name for q in folder.iterdir())
    with pytest.raises(DataError, match=match) as e:
        load_dataset(f"idx:{folder}")
    assert "\n" not in str(e.value)
    assert sorted(q.name for q in folder.iterdir()) == before


def test_truncated_gz_idx_and_missing_folder(tmp_path):
    imgs, labs, timgs, tlabs = _mnist_like()
    folder = _write_idx(tmp_path / "g", imgs, labs, timgs, tlabs, gz=True)
    gz = folder / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:40])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz is not a complete gzip file"):
        load_dataset(f"idx:{folder}")
    with pytest.raises(DataError, match=r"no such directory; give idx:DIR"):
        load_dataset(f"idx:{tmp_path / 'nope'}")
