"""Run directories and their files: atomic writes, pickle-free tensors, config hashes,
unit-level resume and config checks."""

from __future__ import annotations

import ast
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch
from conftest import temp_files

import weightlab
from weightlab.errors import RunFileError
from weightlab.recipes.runner import make_config
from weightlab.recipes.sparsity.lottery_ticket import LotteryTicket, LotteryTicketConfig
from weightlab.runs import (
    RunDir,
    atomic_write_json,
    config_hash,
    default_run_dir,
    load_tensors,
    non_default_fields,
    read_json,
    save_tensors,
)
from weightlab.runs import files as files_mod
from weightlab.runs.files import atomic_write_bytes, remove_stale_temp_files


@dataclass(frozen=True)
class TinyConfig:
    seeds: int = 3
    lr: float = 0.1
    name: str = "a"
    widths: tuple = field(default=(4, 2))


# -- atomic writes ----------------------------------------------------------------------


def test_atomic_write_json_writes_sorted_json_and_leaves_no_temp_file(tmp_path):
    p = tmp_path / "sub" / "x.json"
    atomic_write_json(p, {"b": 1, "a": [1.5, "s"], "c": (1, 2)})
    assert json.loads(p.read_text()) == {"a": [1.5, "s"], "b": 1, "c": [1, 2]}
    assert p.read_text().index('"a"') < p.read_text().index('"b"')
    assert temp_files(tmp_path) == []


def test_atomic_write_json_stores_non_finite_floats_as_null(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"nan": math.nan, "inf": [math.inf, -math.inf], "ok": 2.0})
    text = p.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"nan": None, "inf": [None, None], "ok": 2.0}


def test_atomic_write_overwrites(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"v": 1})
    atomic_write_json(p, {"v": 2})
    assert read_json(p) == {"v": 2}
    assert sorted(q.name for q in tmp_path.iterdir()) == ["x.json"]


@pytest.mark.parametrize("fail_in", ["fsync", "replace"])
def test_failed_write_keeps_old_content_and_leaves_no_temp_file(tmp_path, monkeypatch, fail_in):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"v": "old"})

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files_mod.os, fail_in, boom)
    with pytest.raises(OSError, match="No space"):
        atomic_write_json(p, {"v": "new" * 1000})
    monkeypatch.undo()
    assert read_json(p) == {"v": "old"}
    assert sorted(q.name for q in tmp_path.iterdir()) == ["x.json"]


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    # a pid that cannot be alive: a finished child process's pid
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = int(child.stdout)
    stale = tmp_path / f".round-00.json.{dead}.tmp"
    mine = tmp_path / f".round-01.json.{os.getpid()}.tmp"
    live_other = tmp_path / f".round-02.json.{os.getppid()}.tmp"
    keep = tmp_path / "notes.tmp"
    for f in (stale, mine, live_other, keep):
        f.write_text("partial")
    remove_stale_temp_files(tmp_path)
    assert not stale.exists()
    assert mine.exists() and live_other.exists() and keep.exists()


def test_rundir_open_removes_temp_files_left_by_a_killed_run(tmp_path):
    cfg = TinyConfig()
    rd = RunDir(tmp_path / "run", "tiny", cfg).open()
    leftover = rd.units_dir / ".u.safetensors.999999999.tmp"
    leftover.write_bytes(b"half")
    RunDir(tmp_path / "run", "tiny", cfg).open()
    assert temp_files(tmp_path) == []


# -- read_json --------------------------------------------------------------------------


def test_read_json_missing(tmp_path):
    with pytest.raises(RunFileError, match=r"run summary .*nope\.json is missing"):
        read_json(tmp_path / "nope.json", "run summary")


@pytest.mark.parametrize("content", [b"", b'{"a": 1', b"\xff\xfe\x00", b"{'single': 'quotes'}"])
def test_read_json_corrupt(tmp_path, content):
    p = tmp_path / "bad.json"
    p.write_bytes(content)
    with pytest.raises(RunFileError) as exc:
        read_json(p, "unit file")
    msg = str(exc.value)
    assert str(p) in msg and "corrupt" in msg and "delete it and re-run" in msg
    assert "\n" not in msg


# -- tensors ----------------------------------------------------------------------------


def test_save_load_tensors_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "mask": torch.rand(5, 7, generator=g) > 0.5,
        "weight": torch.randn(5, 7, generator=g),
        "bias64": torch.randn(3, generator=g, dtype=torch.float64),
        "steps": torch.arange(4),
        "view": torch.randn(6, 4, generator=g).t(),  # non-contiguous
    }
    p = tmp_path / "t.safetensors"
    save_tensors(p, tensors)
    back = load_tensors(p)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype, k
        assert torch.equal(back[k], v), k
    assert back["mask"].dtype == torch.bool
    assert temp_files(tmp_path) == []
    # it is a real safetensors file (readable by the reference loader)
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(p))["weight"], tensors["weight"])


def test_load_tensors_keeps_the_saved_key_order_and_owns_aligned_storage(tmp_path):
    # safetensors hands keys back in a per-process random order; a sum over a unit's
    # tensors then rounded differently on resume (NeuMeta's fields unit drifted 1e-7)
    names = [f"layer{i}.{kind}" for i in (7, 3, 11, 0, 5, 9, 1) for kind in ("w", "b")]
    tensors = {n: torch.full((3,), float(i)) for i, n in enumerate(names)}
    p = tmp_path / "t.safetensors"
    save_tensors(p, tensors, metadata={"note": "kept"})
    back = load_tensors(p)
    assert list(back) == names
    assert all(v.data_ptr() % 64 == 0 for v in back.values())
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as f:
        assert f.metadata()["note"] == "kept"
    # a file written without the order (another writer) loads in sorted key order
    from safetensors.torch import save_file

    save_file({n: tensors[n] for n in names}, str(tmp_path / "plain.safetensors"))
    assert list(load_tensors(tmp_path / "plain.safetensors")) == sorted(names)


def test_a_computed_unit_returns_its_tensors_as_a_resumed_run_reads_them(tmp_path):
    names = [f"t{i}" for i in (5, 2, 9, 0, 7, 3, 8, 1)]
    made = {n: torch.arange(12.0).reshape(3, 4)[:, 1:3] + i for i, n in enumerate(names)}
    rd = RunDir(tmp_path / "run", "tiny", TinyConfig()).open()
    _, fresh = rd.unit("u", lambda: ({}, made))
    _, resumed = RunDir(tmp_path / "run", "tiny", TinyConfig()).open().unit("u", lambda: 1 / 0)
    assert list(fresh) == list(resumed) == names
    for n in names:
        assert torch.equal(fresh[n], resumed[n]) and fresh[n].is_contiguous()
        assert fresh[n].data_ptr() != made[n].data_ptr()  # not the caller's (view) storage


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json header", None],
    ids=["empty", "garbage", "bad-header", "truncated"],
)
def test_corrupt_safetensors_raise_runfileerror(tmp_path, content):
    p = tmp_path / "t.safetensors"
    if content is None:
        save_tensors(p, {"w": torch.ones(100, 100)})
        content = p.read_bytes()[: len(p.read_bytes()) // 2]
    p.write_bytes(content)
    with pytest.raises(RunFileError, match="unreadable or corrupt") as exc:
        load_tensors(p)
    assert str(p) in str(exc.value)


def test_missing_safetensors_raise_runfileerror(tmp_path):
    with pytest.raises(RunFileError, match="missing"):
        load_tensors(tmp_path / "nope.safetensors")


# -- config hash and names --------------------------------------------------------------


def test_config_hash_depends_only_on_non_default_fields():
    default = LotteryTicketConfig()
    assert non_default_fields(default) == {}
    assert config_hash("lottery-ticket", default) == config_hash(
        "lottery-ticket", LotteryTicketConfig()
    )
    smoke = make_config("lottery-ticket", smoke=True)
    assert non_default_fields(smoke) == LotteryTicket.smoke
    hashes = {
        config_hash("lottery-ticket", c)
        for c in (
            default,
            smoke,
            replace(default, seeds=4),
            replace(default, lr=0.01),
            replace(default, engine="loop"),
            replace(smoke, data="digits"),
        )
    }
    assert len(hashes) == 6
    # the same values reached in a different order give the same hash
    a = replace(replace(default, seeds=2), epochs=2)
    b = replace(replace(default, epochs=2), seeds=2)
    assert config_hash("lottery-ticket", a) == config_hash("lottery-ticket", b)
    # setting a field to its default value is not a change
    assert config_hash("lottery-ticket", replace(default, seeds=3)) == config_hash(
        "lottery-ticket", default
    )
    # the recipe name is part of the hash
    assert config_hash("other", default) != config_hash("lottery-ticket", default)
    assert all(len(h) == 10 and int(h, 16) >= 0 for h in hashes)


def test_default_run_dir_name():
    cfg = make_config("lottery-ticket")
    # pinned: changing the hash would orphan every existing run directory
    assert config_hash("lottery-ticket", cfg) == "d49e36f1d1"
    assert default_run_dir(Path("runs"), "lottery-ticket", cfg) == Path(
        "runs/lottery-ticket-d49e36f1d1"
    )


def test_config_hash_is_the_same_in_another_process():
    code = (
        "from weightlab.recipes.runner import make_config; from weightlab.runs import config_hash; "
        "print(config_hash('lottery-ticket', make_config('lottery-ticket', smoke=True, lr=0.01)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        check=True,
    ).stdout.strip()
    assert out == config_hash("lottery-ticket", make_config("lottery-ticket", smoke=True, lr=0.01))


# -- RunDir -----------------------------------------------------------------------------


def test_open_writes_config_record(tmp_path):
    cfg = TinyConfig(seeds=5)
    rd = RunDir(tmp_path / "run", "tiny", cfg).open()
    rec = read_json(rd.path / "config.json")
    assert rec == {
        "recipe": "tiny",
        "config": {"seeds": 5, "lr": 0.1, "name": "a", "widths": [4, 2]},
        "non_default": {"seeds": 5},
    }
    assert rd.units_dir.is_dir()


def test_unit_computes_once_then_loads(tmp_path):
    cfg = TinyConfig()
    calls = []
    weights = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    mask = weights > 0

    def compute():
        calls.append(1)
        return {"acc": 0.5, "loss": math.nan, "pair": (1, 2)}, {"w": weights, "m": mask}

    rd = RunDir(tmp_path / "run", "tiny", cfg).open()
    m1, t1 = rd.unit("round-00", compute)
    assert calls == [1]
    # metrics come back in their JSON form, the same as on resume
    assert m1 == {"acc": 0.5, "loss": None, "pair": [1, 2]}
    assert torch.equal(t1["w"], weights) and torch.equal(t1["m"], mask)
    assert sorted(p.name for p in rd.units_dir.iterdir()) == [
        "round-00.json",
        "round-00.safetensors",
    ]

    def must_not_run():
        raise AssertionError("a finished unit was recomputed")

    rd2 = RunDir(tmp_path / "run", "tiny", cfg).open()
    m2, t2 = rd2.unit("round-00", must_not_run)
    assert m2 == m1
    assert t2["m"].dtype == torch.bool
    assert torch.equal(t2["w"], weights) and torch.equal(t2["m"], mask)
    lines = (rd2.path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [{"unit": "round-00", **m1}]


def test_unit_without_tensors_writes_no_tensor_file(tmp_path):
    rd = RunDir(tmp_path / "run", "tiny", TinyConfig()).open()
    rd.unit("a", lambda: ({"x": 1}, {}))
    rd.unit("b", lambda: ({"x": 2}, {}))
    assert sorted(p.name for p in rd.units_dir.iterdir()) == ["a.json", "b.json"]
    m, t = RunDir(tmp_path / "run", "tiny", TinyConfig()).open().unit("a", lambda: 1 / 0)
    assert m == {"x": 1} and t == {}
    lines = (rd.path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["unit"] for x in lines] == ["a"]  # rebuilt by the new RunDir


def test_unit_with_tensors_but_no_json_is_recomputed(tmp_path):
    """A run killed between writing the tensors and the JSON recomputes the unit."""
    rd = RunDir(tmp_path / "run", "tiny", TinyConfig()).open()
    save_tensors(rd.units_dir / "u.safetensors", {"w": torch.zeros(2)})
    m, t = rd.unit("u", lambda: ({"x": 1}, {"w": torch.ones(2)}))
    assert m == {"x": 1} and torch.equal(t["w"], torch.ones(2))
    assert torch.equal(load_tensors(rd.units_dir / "u.safetensors")["w"], torch.ones(2))


def test_unit_json_without_metrics_is_an_error(tmp_path):
    rd = RunDir(tmp_path / "run", "tiny", TinyConfig()).open()
    (rd.units_dir / "u.json").write_text('{"key": "u"}')
    with pytest.raises(RunFileError, match="no 'metrics'") as exc:
        rd.unit("u", lambda: ({}, {}))
    assert str(rd.units_dir / "u.json") in str(exc.value) and "delete it" in str(exc.value)


def test_unit_with_missing_tensor_file_names_both_files(tmp_path):
    rd = RunDir(tmp_path / "run", "tiny", TinyConfig()).open()
    rd.unit("u", lambda: ({"x": 1}, {"w": torch.ones(2)}))
    (rd.units_dir / "u.safetensors").unlink()
    with pytest.raises(RunFileError) as exc:
        RunDir(tmp_path / "run", "tiny", TinyConfig()).open().unit("u", lambda: 1 / 0)
    msg = str(exc.value)
    assert str(rd.units_dir / "u.json") in msg and str(rd.units_dir / "u.safetensors") in msg


@pytest.mark.parametrize("key", ["", "../escape", "a/b", ".hidden", "sp ace"])
def test_bad_unit_keys_are_rejected(tmp_path, key):
    rd = RunDir(tmp_path / "run", "tiny", TinyConfig()).open()
    with pytest.raises(ValueError, match="bad unit key"):
        rd.unit(key, lambda: ({}, {}))
    assert list(rd.units_dir.iterdir()) == []


@pytest.mark.parametrize(
    "record,problem",
    [
        ({"key": "u", "metrics": [], "has_tensors": False}, "'metrics'] should be an object"),
        (
            {"key": "u", "metrics": {}, "has_tensors": "yes"},
            "'has_tensors'] should be true or false",
        ),
        ([], "is a list, not an object"),
    ],
    ids=["metrics-list", "has-tensors-string", "record-list"],
)
def test_unit_json_of_the_wrong_shape_is_an_error(tmp_path, record, problem):
    rd = RunDir(tmp_path / "run", "tiny", TinyConfig()).open()
    (rd.units_dir / "u.json").write_text(json.dumps(record))
    with pytest.raises(RunFileError) as exc:
        rd.unit("u", lambda: 1 / 0)
    msg = str(exc.value)
    assert problem in msg and str(rd.units_dir / "u.json") in msg and "\n" not in msg


def test_unit_metrics_check_rejects_a_unit_without_members(tmp_path):
    rd = RunDir(tmp_path / "run", "tiny", TinyConfig()).open()
    rd.unit("u", lambda: ({"round": 0}, {}))

    def check(metrics):
        if "members" not in metrics:
            raise ValueError("the metrics have no 'members'")

    with pytest.raises(RunFileError, match="unit file .*u.json is malformed .*no 'members'"):
        RunDir(tmp_path / "run", "tiny", TinyConfig()).open().unit("u", lambda: 1 / 0, check=check)
    assert rd.computed == ["u"]


@pytest.mark.parametrize(
    "content,problem",
    [
        ("[]", "is a list, not an object"),
        ('{"recipe": "tiny"}', "has no 'config'"),
        ('{"recipe": "tiny", "config": [], "non_default": {}}', "'config'] should be an object"),
        ('{"recipe": 3, "config": {}, "non_default": {}}', "'recipe'] should be a string"),
    ],
    ids=["list", "no-config", "config-list", "recipe-number"],
)
def test_config_json_of_the_wrong_shape_is_an_error(tmp_path, content, problem):
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.json").write_text(content)
    with pytest.raises(RunFileError) as exc:
        RunDir(d, "tiny", TinyConfig()).open()
    msg = str(exc.value)
    assert problem in msg and str(d / "config.json") in msg and "--out" in msg
    assert (d / "config.json").read_text() == content


def test_discard_keeps_a_pre_existing_empty_out_dir(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    rd = RunDir(d, "tiny", TinyConfig()).open()
    assert (d / "config.json").exists()
    assert rd.discard_if_empty()
    assert d.is_dir() and list(d.iterdir()) == []  # the user's folder survives, empty


def test_discard_removes_a_dir_it_created_and_never_a_finished_run(tmp_path):
    rd = RunDir(tmp_path / "a" / "run", "tiny", TinyConfig()).open()
    assert rd.discard_if_empty() and not (tmp_path / "a" / "run").exists()
    rd = RunDir(tmp_path / "b", "tiny", TinyConfig()).open()
    rd.unit("u", lambda: ({"x": 1}, {}))
    assert not rd.discard_if_empty() and (tmp_path / "b" / "units" / "u.json").exists()
    # a run this process did not create is never removed
    rd = RunDir(tmp_path / "c", "tiny", TinyConfig()).open()
    again = RunDir(tmp_path / "c", "tiny", TinyConfig()).open()
    assert not again.discard_if_empty() and (tmp_path / "c" / "config.json").exists()
    assert rd.discard_if_empty()


def test_schema_claims_and_summary():
    from weightlab.runs.schema import expect_claim, expect_summary

    good = {
        "id": "a",
        "quote": "q",
        "statement": "s",
        "held": None,
        "verdict": "not tested",
        "detail": "d",
        "evidence": {},
    }
    assert expect_claim(dict(good), "c") == good
    for change, problem in [
        ({"verdict": "maybe"}, "verdict 'maybe'"),
        ({"held": True}, "disagrees"),
        ({"evidence": []}, "'evidence'] should be an object"),
        ({"quote": " "}, "empty quote"),
        ({"held": 1}, "'held'] should be true or false or null"),
    ]:
        with pytest.raises(ValueError, match=re.escape(problem)):
            expect_claim({**good, **change}, "c")
    with pytest.raises(ValueError, match="claims\\[0\\] has no 'detail'"):
        expect_summary(
            {"recipe": "x", "claims": [{k: v for k, v in good.items() if k != "detail"}]}
        )
    with pytest.raises(ValueError, match="diverged_members"):
        expect_summary({"recipe": "x", "claims": [], "diverged_members": [1]})


def test_config_mismatch_is_an_error(tmp_path):
    RunDir(tmp_path / "run", "tiny", TinyConfig()).open()
    before = (tmp_path / "run" / "config.json").read_bytes()
    with pytest.raises(RunFileError, match="another config"):
        RunDir(tmp_path / "run", "tiny", TinyConfig(lr=0.2)).open()
    with pytest.raises(RunFileError, match="another config"):
        RunDir(tmp_path / "run", "other-recipe", TinyConfig()).open()
    assert (tmp_path / "run" / "config.json").read_bytes() == before
    RunDir(tmp_path / "run", "tiny", TinyConfig()).open()  # the same config is fine


def test_non_run_directory_is_refused(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "mine.txt").write_text("x")
    with pytest.raises(RunFileError, match="not a weightlab run directory"):
        RunDir(d, "tiny", TinyConfig()).open()
    assert sorted(p.name for p in d.iterdir()) == ["mine.txt"]


def test_file_as_run_directory_is_refused(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(RunFileError, match="is a file"):
        RunDir(f, "tiny", TinyConfig()).open()


def test_write_bytes_creates_parents(tmp_path):
    atomic_write_bytes(tmp_path / "a" / "b" / "c.bin", b"\x00\x01")
    assert (tmp_path / "a" / "b" / "c.bin").read_bytes() == b"\x00\x01"


# -- nothing is ever unpickled -------------------------------------------------------------

_PICKLE_MODULES = {
    "pickle",
    "cPickle",
    "dill",
    "cloudpickle",
    "joblib",
    "shelve",
    "marshal",
    "_pickle",
}


def _calls_and_imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield "import", a.name.split(".")[0], node
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield "import", node.module.split(".")[0], node
            for a in node.names:
                yield "from-name", a.name, node
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                yield "call", f"{f.value.id}.{f.attr}", node
            elif isinstance(f, ast.Attribute):
                yield "call", f"?.{f.attr}", node
        elif isinstance(node, ast.Attribute) and node.attr == "get_dataset":
            yield "from-name", "get_dataset", node


def _kw(node: ast.Call, name: str):
    for k in node.keywords:
        if k.arg == name and isinstance(k.value, ast.Constant):
            return k.value.value
    return "absent"


def test_weightlab_source_never_unpickles():
    root = Path(weightlab.__file__).parent
    sources = sorted(root.rglob("*.py"))
    assert len(sources) > 20
    problems = []
    for src in sources:
        tree = ast.parse(src.read_text(), filename=str(src))
        for kind, name, node in _calls_and_imports(tree):
            where = f"{src.relative_to(root)}:{node.lineno}"
            if kind == "import" and name in _PICKLE_MODULES:
                problems.append(f"{where} imports {name}")
            if kind == "from-name" and name == "get_dataset":
                problems.append(f"{where} uses mnist1d get_dataset (downloads a pickle)")
            if kind == "call" and name == "torch.load":
                if _kw(node, "weights_only") is not True:
                    problems.append(f"{where} torch.load without weights_only=True")
            if kind == "call" and name.endswith(".load") and _kw(node, "allow_pickle") is True:
                problems.append(f"{where} loads with allow_pickle=True")
            if (
                kind == "call"
                and name.split(".")[-1] in ("loads", "load")
                and name.split(".")[0] in _PICKLE_MODULES
            ):
                problems.append(f"{where} {name}")
    assert problems == []


def test_unpickling_detector_detects(tmp_path):
    """The check above is not vacuous: it flags the patterns it looks for."""
    bad = "import pickle\nimport torch\nx = torch.load('f')\ny = torch.load('f', weights_only=False)\nimport numpy as np\nnp.load('f', allow_pickle=True)\n"
    found = [(k, n) for k, n, _ in _calls_and_imports(ast.parse(bad))]
    assert ("import", "pickle") in found
    calls = [
        node
        for k, n, node in _calls_and_imports(ast.parse(bad))
        if k == "call" and n == "torch.load"
    ]
    assert [_kw(c, "weights_only") for c in calls] == ["absent", False]
    np_calls = [node for k, n, node in _calls_and_imports(ast.parse(bad)) if n == "np.load"]
    assert _kw(np_calls[0], "allow_pickle") is True
