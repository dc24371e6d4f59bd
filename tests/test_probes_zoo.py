"""Model zoo (weightlab.probes.zoo): members equal the single-model loop, resumable builds,
pickle-free loading, one-line errors for missing or corrupt members, the Parquet table and
phase diagrams."""

import json
import pickle

import pyarrow.parquet as pq
import pytest
import torch

from weightlab.data import load_dataset
from weightlab.errors import ConfigError, DataError
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP
from weightlab.population import Population
from weightlab.probes.zoo import (
    ZooGrid,
    _cell_values,
    build_zoo,
    load_zoo,
    member_id,
    phase_diagram,
)
from weightlab.train import train
from weightlab.train.config import OptimConfig, TrainConfig

GRID = ZooGrid(widths=(3, 5), lrs=(0.05, 0.2), batch_sizes=(10, 30), depth=1, epochs=2)
SEEDS = (0, 7)


@pytest.fixture(scope="module")
def iris():
    return load_dataset("iris", "cpu")


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory, iris):
    folder = tmp_path_factory.mktemp("zoo")
    build_zoo(folder, GRID, SEEDS, iris, data_name="iris")
    return folder


def test_members_equal_the_single_model_loop(zoo_dir, iris):
    zoo = load_zoo(zoo_dir)
    assert len(zoo.members) == 2 * 2 * 2 * 2
    for w, lr, b, s in ((5, 0.2, 10, 7), (3, 0.05, 30, 0)):
        model = model_factory(MLP, [4, w, 3])(s)
        res = train(model, iris, TrainConfig(2, b, 0, OptimConfig("sgd", lr=lr)), s, seed=s)
        got = zoo.states[member_id(w, lr, b, s)]
        for k, v in model.state_dict().items():
            torch.testing.assert_close(got[k], v, atol=1e-6, rtol=1e-5)
        m = zoo.get(member_id(w, lr, b, s))
        assert m.temperature == pytest.approx(lr / b) and m.widths == (4, w, 3)
        assert m.metrics["test_acc"] == pytest.approx(100 * res.final.test_acc)
        assert m.metrics["train_loss"] == pytest.approx(res.final.train_loss, rel=1e-5)
        net = zoo.model(m)
        assert not net.training
        torch.testing.assert_close(net(iris.test.x), model.eval()(iris.test.x), atol=1e-6, rtol=0)


def test_parquet_table_holds_every_member(zoo_dir):
    table = pq.read_table(zoo_dir / "metrics.parquet").to_pydict()
    zoo = load_zoo(zoo_dir)
    assert table == zoo.table
    assert table["id"] == [m.id for m in zoo.members]
    for col in ("width", "lr", "batch_size", "temperature", "seed", "test_acc", "diverged"):
        assert len(table[col]) == 16
    assert sorted(set(table["temperature"])) == sorted(
        {lr / b for lr in GRID.lrs for b in (10, 30)}
    )
    man = json.loads((zoo_dir / "members" / f"{table['id'][0]}.json").read_text())
    assert man["metrics"]["test_acc"] == table["test_acc"][0]
    assert len(man["sha256"]) == 64 and man["lr"] == table["lr"][0]


def test_rebuild_trains_nothing_and_a_removed_member_alone_is_retrained(
    tmp_path, iris, monkeypatch
):
    grid = ZooGrid((3, 4), (0.1,), (15, 30), depth=1, epochs=1)
    build_zoo(tmp_path, grid, (1, 2), iris)
    before = load_zoo(tmp_path)
    calls = []
    real = Population.sweep

    def spy(factories, members, **kw):
        calls.append([(k, s.seed, s.optim.lr) for k, s in members])
        return real(factories, members, **kw)

    monkeypatch.setattr(Population, "sweep", staticmethod(spy))
    build_zoo(tmp_path, grid, (1, 2), iris)
    assert calls == []
    gone = member_id(4, 0.1, 30, 2)
    (tmp_path / "members" / f"{gone}.json").unlink()
    after = build_zoo(tmp_path, grid, (1, 2), iris)
    assert calls == [[(4, 2, 0.1)]]
    for mid, st in before.states.items():  # retrained bit-for-bit: same seed, same data order
        for k, v in st.items():
            torch.testing.assert_close(after.states[mid][k], v, atol=1e-6, rtol=1e-5)


def test_load_never_unpickles(zoo_dir, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    zoo = load_zoo(zoo_dir)
    assert len(zoo.states) == 16
    assert not list(zoo_dir.rglob("*.pt")) and not list(zoo_dir.rglob("*.pkl"))


def test_missing_or_corrupt_member_is_a_one_line_data_error(tmp_path, iris):
    grid = ZooGrid((3,), (0.1,), (30,), depth=1, epochs=1)
    build_zoo(tmp_path, grid, (0, 1), iris)
    d = tmp_path / "members"
    w = d / f"{member_id(3, 0.1, 30, 1)}.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-3] ^= 0xFF
    w.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt") as e:
        load_zoo(tmp_path)
    assert "\n" not in str(e.value) and w.name in str(e.value) and "build_zoo" in str(e.value)
    w.unlink()
    with pytest.raises(DataError, match="missing") as e:
        load_zoo(tmp_path)
    assert w.name in str(e.value) and "\n" not in str(e.value)
    build_zoo(tmp_path, grid, (0, 1), iris)  # the fix the message names: retrains member 1
    assert len(load_zoo(tmp_path).members) == 2
    m = d / f"{member_id(3, 0.1, 30, 0)}.json"
    m.write_text("{not json")
    with pytest.raises(DataError, match="corrupt") as e:
        load_zoo(tmp_path)
    assert m.name in str(e.value) and "delete it" in str(e.value)
    m.unlink()
    assert len(build_zoo(tmp_path, grid, (0, 1), iris).members) == 2
    with pytest.raises(DataError, match="no zoo"):
        load_zoo(tmp_path / "nothing")


def test_bad_input_is_refused_before_anything_is_written(tmp_path, iris):
    with pytest.raises(ConfigError, match="batch size 200 exceeds"):
        build_zoo(tmp_path / "a", ZooGrid((3,), (0.1,), (200,)), (0,), iris)
    with pytest.raises(ConfigError, match="distinct seeds"):
        build_zoo(tmp_path / "a", ZooGrid((3,), (0.1,), (10,)), (0, 0), iris)
    assert not (tmp_path / "a").exists()
    for bad in (
        {"widths": ()},
        {"widths": (0,)},
        {"lrs": (-1.0,)},
        {"batch_sizes": (10, 10)},
        {"momentum": 1.0},
    ):
        kw = {"widths": (3,), "lrs": (0.1,), "batch_sizes": (10,), **bad}
        with pytest.raises(ConfigError):
            ZooGrid(**kw)
    build_zoo(tmp_path / "b", ZooGrid((3,), (0.1,), (30,), depth=1, epochs=1), (0,), iris)
    with pytest.raises(DataError, match="another grid"):
        build_zoo(tmp_path / "b", ZooGrid((4,), (0.1,), (30,), depth=1, epochs=1), (0,), iris)


def test_phase_diagram_averages_each_cell(zoo_dir):
    table = {
        "temperature": [0.1, 0.1, 0.2, 0.2, 0.1],
        "width": [8, 8, 8, 16, 16],
        "m": [1.0, 3.0, 5.0, 7.0, float("nan")],
    }
    xs, ys, grid = _cell_values(table, "m", "temperature", "width")
    assert xs == [0.1, 0.2] and ys == [8, 16]
    assert grid[0] == [2.0, 5.0] and grid[1][1] == 7.0 and grid[1][0] != grid[1][0]
    fig = phase_diagram(table, "m", title="t")
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"2", "5", "7", "—"} <= texts
    fig = phase_diagram(load_zoo(zoo_dir), "test_acc", "lr", "width", log=True)
    assert fig.axes[0].get_xlabel() == "lr"
    with pytest.raises(ConfigError, match="no column 'nope'"):
        phase_diagram(table, "nope")
