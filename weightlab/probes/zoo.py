"""Model zoos: hyperparameter grids × seeds trained as populations, stored without pickle.

A zoo in the sense of Schürholt, Taskiran, Knyazev, Giró-i-Nieto & Borth (2022), "Model
Zoos: A Dataset of Diverse Populations of Neural Network Models", and of the phase-structured
zoos of "A Model Zoo on Phase Transitions in Neural Networks" (row [#36]): every point of a
grid of widths × learning rates × batch sizes is trained from each seed, so that metrics of
the trained weights (loss-landscape metrics such as the Hessian trace or the interpolation
barrier between seeds) can be read as phase diagrams over two grid axes. The SGD
*temperature* of a member is ``lr / batch_size`` (the noise scale of SGD).

Training: one :class:`~weightlab.population.Population` per batch size (a population shares
one data order and batch size); the learning rate varies within it through each member's
``MemberSpec.optim``; members of different widths are bucketed with
:meth:`Population.sweep`. Every member trains as
``weightlab.train.train(MLP(widths), data, TrainConfig(epochs, b, optim=sgd(lr)),
data_seed=seed, seed=seed)`` would.

On disk (``folder``)::

    zoo.json                    grid, seeds, data name, member ids (the zoo's contents)
    members/<id>.safetensors    the member's weights (plain state_dict names)
    members/<id>.json           manifest: hyperparameters, metrics, sha256 of the weights
    metrics.parquet             one row per member: hyperparameters and metrics

Every file is written atomically, the manifest after its weights: a member whose manifest
exists is complete, and :func:`build_zoo` does not retrain it (nor a population whose members
are all complete). :func:`load_zoo` reads safetensors and JSON only, never pickle; a missing
or corrupt member is a one-line :class:`~weightlab.errors.DataError` naming the file and the
fix.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from weightlab.data.task import TaskData
from weightlab.errors import ConfigError, DataError
from weightlab.runs.files import atomic_write_bytes, atomic_write_json, save_tensors

__all__ = [
    "Zoo",
    "ZooGrid",
    "ZooMember",
    "build_zoo",
    "load_zoo",
    "member_id",
    "phase_diagram",
]

ZOO_FORMAT = 1
GRID_AXES = ("width", "lr", "batch_size", "temperature", "seed")


@dataclass(frozen=True)
class ZooGrid:
    """The zoo's hyperparameter grid: every ``width`` × ``lr`` × ``batch_size`` point, each
    an MLP ``[in, width × depth, classes]`` (``activation``) trained ``epochs`` epochs with
    SGD (``momentum``)."""

    widths: tuple[int, ...]
    lrs: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    depth: int = 2
    epochs: int = 10
    activation: str = "relu"
    momentum: float = 0.0

    def __post_init__(self) -> None:
        for name in ("widths", "lrs", "batch_sizes"):
            vals = tuple(getattr(self, name))
            if not vals or len(set(vals)) != len(vals):
                raise ConfigError(f"zoo grid {name} must be non-empty and distinct, got {vals}")
            object.__setattr__(self, name, vals)
        if any(int(w) != w or w < 1 for w in self.widths):
            raise ConfigError(f"zoo widths must be positive integers, got {self.widths}")
        if any(int(b) != b or b < 1 for b in self.batch_sizes):
            raise ConfigError(f"zoo batch sizes must be positive integers, got {self.batch_sizes}")
        if any(not (math.isfinite(lr) and lr > 0) for lr in self.lrs):
            raise ConfigError(f"zoo learning rates must be finite and > 0, got {self.lrs}")
        if self.depth < 1 or self.epochs < 1:
            raise ConfigError(f"zoo depth and epochs must be >= 1, got {self.depth}, {self.epochs}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"zoo momentum must be in [0, 1), got {self.momentum}")

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def member_id(width: int, lr: float, batch_size: int, seed: int) -> str:
    """The file stem of a member: ``w{width}-lr{lr:g}-b{batch}-s{seed}``."""
    return f"w{int(width)}-lr{lr:g}-b{int(batch_size)}-s{int(seed)}"


@dataclass(frozen=True)
class ZooMember:
    """One stored member: its ``id``, hyperparameters (``width``, ``lr``, ``batch_size``,
    ``temperature = lr / batch_size``, ``seed``), MLP ``widths`` and ``activation``, and
    ``metrics`` (final train loss, test loss and accuracy, divergence)."""

    id: str
    width: int
    lr: float
    batch_size: int
    temperature: float
    seed: int
    widths: tuple[int, ...]
    activation: str
    metrics: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


@dataclass
class Zoo:
    """A loaded zoo: ``members`` (manifest order), their ``states`` (id -> weights) and the
    metrics ``table`` (column -> list, from ``metrics.parquet``)."""

    folder: Path
    grid: ZooGrid
    seeds: tuple[int, ...]
    data: str
    members: list[ZooMember]
    states: dict[str, dict[str, torch.Tensor]]
    table: dict[str, list]

    def model(self, member: ZooMember | str) -> nn.Module:
        """Member ``member`` (or its id) as an eval-mode MLP with its stored weights."""
        from weightlab.models.mlp import MLP

        m = member if isinstance(member, ZooMember) else self.get(member)
        net = MLP(list(m.widths), m.activation)
        net.load_state_dict(self.states[m.id])
        return net.eval()

    def get(self, mid: str) -> ZooMember:
        for m in self.members:
            if m.id == mid:
                return m
        raise ConfigError(f"no zoo member {mid!r}; members look like {self.members[0].id!r}")

    def select(self, **where) -> list[ZooMember]:
        """Members whose hyperparameters equal every ``where`` value (e.g. ``width=32``)."""
        bad = set(where) - set(GRID_AXES)
        if bad:
            raise ConfigError(f"unknown zoo axis {sorted(bad)}; choose from {', '.join(GRID_AXES)}")
        return [m for m in self.members if all(getattr(m, k) == v for k, v in where.items())]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _members_dir(folder: Path) -> Path:
    return Path(folder) / "members"


def _complete(folder: Path, mid: str) -> bool:
    d = _members_dir(folder)
    return (d / f"{mid}.json").is_file() and (d / f"{mid}.safetensors").is_file()


def _write_member(folder: Path, member: ZooMember, state: dict[str, torch.Tensor]) -> None:
    d = _members_dir(folder)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{member.id}.safetensors"
    save_tensors(path, state, metadata={"zoo_member": member.id})
    manifest = {"format": ZOO_FORMAT, **member.to_dict(), "sha256": _sha256(path.read_bytes())}
    atomic_write_json(d / f"{member.id}.json", manifest)  # last: marks the member complete


def build_zoo(
    folder: str | Path,
    grid: ZooGrid,
    seeds: Sequence[int],
    data: TaskData,
    *,
    data_name: str = "data",
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Zoo:
    """Train every ``grid`` point from every seed and store it under ``folder`` (module
    docstring); members already on disk are kept, not retrained. Returns :func:`load_zoo`.

    One population per batch size, members bucketed by width, the learning rate per member.
    Member ``(w, lr, b, s)`` uses ``s`` as both its init seed and its data-order seed.

    Raises:
        ConfigError: before anything is written, for no seeds, repeated seeds, a batch size
            above the training split, or a regression task.
        DataError: ``folder`` holds a zoo with another grid, seeds or data.
    """
    from weightlab.models.factory import model_factory
    from weightlab.models.mlp import MLP
    from weightlab.population import MemberSpec, Population
    from weightlab.progress import progress_bar
    from weightlab.train.config import OptimConfig, TrainConfig

    folder = Path(folder)
    seeds = tuple(int(s) for s in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"build_zoo needs distinct seeds, got {list(seeds)}; e.g. seeds=[0, 1]")
    if not isinstance(grid, ZooGrid):
        raise ConfigError("build_zoo needs grid=ZooGrid(widths=..., lrs=..., batch_sizes=...)")
    if data.kind != "classification":
        raise ConfigError(f"build_zoo trains classifiers; {data_name} is a {data.kind} task")
    n_train = len(data.train)
    if max(grid.batch_sizes) > n_train:
        raise ConfigError(
            f"zoo batch size {max(grid.batch_sizes)} exceeds the {n_train} training examples; "
            "use smaller batch sizes"
        )
    d_in, classes = data.train.x[0].numel(), data.num_classes
    header = {
        "format": ZOO_FORMAT,
        "grid": grid.to_dict(),
        "seeds": list(seeds),
        "data": data_name,
        "in_features": d_in,
        "classes": classes,
    }
    zoo_json = folder / "zoo.json"
    if zoo_json.exists():
        old = _read_json(zoo_json, "the zoo header")
        if {k: old.get(k) for k in header} != json.loads(json.dumps(header)):
            raise DataError(
                f"{folder} holds a zoo with another grid, seeds or data; choose another folder"
            )
    points = [
        (w, lr, b, s)
        for b in grid.batch_sizes
        for w in grid.widths
        for lr in grid.lrs
        for s in seeds
    ]
    header["members"] = [member_id(*p) for p in points]
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(zoo_json, header)

    def widths_of(w: int) -> list[int]:
        return [d_in, *[w] * grid.depth, classes]

    factories = {
        w: model_factory(MLP, widths_of(w), activation=grid.activation) for w in grid.widths
    }
    bar = progress_bar(len(grid.batch_sizes), "build_zoo", "population", progress, True)
    for b in grid.batch_sizes:
        todo = [p for p in points if p[2] == b and not _complete(folder, member_id(*p))]
        if todo:
            members = [
                (
                    w,
                    MemberSpec(
                        seed=s, data_seed=s, optim=OptimConfig("sgd", lr=lr, momentum=grid.momentum)
                    ),
                )
                for w, lr, _, s in todo
            ]
            pop = Population.sweep(factories, members, device=device)
            cfg = TrainConfig(grid.epochs, b, 0, OptimConfig("sgd", lr=grid.lrs[0]))
            results = pop.fit(data, cfg, progress=progress)
            for i, ((w, lr, _, s), r) in enumerate(zip(todo, results, strict=True)):
                state = {k: v.detach().cpu() for k, v in pop.state(i).items()}
                finite = all(bool(torch.isfinite(v).all()) for v in state.values())
                last = r.final
                metrics = {
                    "train_loss": float(last.train_loss),
                    "test_loss": float(last.test_loss),
                    "test_acc": 100.0 * float(last.test_acc),
                    "diverged": bool(r.diverged or not finite),
                    "steps": int(last.step),
                }
                member = ZooMember(
                    member_id(w, lr, b, s),
                    w,
                    float(lr),
                    b,
                    lr / b,
                    s,
                    tuple(widths_of(w)),
                    grid.activation,
                    metrics,
                )
                _write_member(folder, member, state)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    zoo = load_zoo(folder, table=False)
    _write_table(folder, zoo.members)
    zoo.table = _read_table(folder)
    return zoo


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(
            f"{what} {path} is unreadable or corrupt ({type(e).__name__}); delete it and "
            "re-run build_zoo to rebuild it"
        ) from e


def _row(m: ZooMember) -> dict:
    row = {k: getattr(m, k) for k in ("id", "width", "lr", "batch_size", "temperature", "seed")}
    row.update(m.metrics)
    return row


def _write_table(folder: Path, members: list[ZooMember]) -> None:
    """All members' hyperparameters and metrics as one Parquet table (pyarrow)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [_row(m) for m in members]
    cols = list(dict.fromkeys(k for r in rows for k in r))
    table = pa.table({c: [r.get(c) for r in rows] for c in cols})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(Path(folder) / "metrics.parquet", sink.getvalue().to_pybytes())


def _read_table(folder: Path) -> dict[str, list]:
    import pyarrow.parquet as pq

    path = Path(folder) / "metrics.parquet"
    if not path.is_file():
        raise DataError(f"zoo table {path} is missing; re-run build_zoo on {folder} to write it")
    try:
        return pq.read_table(path).to_pydict()
    except Exception as e:  # pyarrow raises ArrowInvalid and OSError for damaged files
        raise DataError(
            f"zoo table {path} is corrupt ({type(e).__name__}); delete it and re-run build_zoo"
        ) from e


def load_zoo(folder: str | Path, *, table: bool = True) -> Zoo:
    """Read the zoo in ``folder``: JSON manifests, safetensors weights (checked against the
    manifest's sha256) and, with ``table``, the Parquet metrics table. Never unpickles.

    Raises:
        DataError: no zoo in ``folder``, or a member (manifest or weights) missing or
            corrupt, naming the file and the fix.
    """
    from safetensors.torch import load

    folder = Path(folder)
    zoo_json = folder / "zoo.json"
    if not zoo_json.is_file():
        raise DataError(
            f"{folder} holds no zoo (no zoo.json); build one with build_zoo(folder, ...)"
        )
    head = _read_json(zoo_json, "the zoo header")
    try:
        g = head["grid"]
        grid = ZooGrid(
            tuple(g["widths"]),
            tuple(g["lrs"]),
            tuple(g["batch_sizes"]),
            g["depth"],
            g["epochs"],
            g["activation"],
            g["momentum"],
        )
        ids, seeds, data = list(head["members"]), tuple(head["seeds"]), str(head["data"])
    except (KeyError, TypeError, ConfigError) as e:
        raise DataError(
            f"the zoo header {zoo_json} is malformed ({type(e).__name__}: {e}); delete it and "
            "re-run build_zoo"
        ) from e
    d = _members_dir(folder)
    fix = "re-run build_zoo on this folder to retrain it"
    members, states = [], {}
    for mid in ids:
        mpath, tpath = d / f"{mid}.json", d / f"{mid}.safetensors"
        for p in (mpath, tpath):
            if not p.is_file():
                raise DataError(f"zoo member file {p} is missing; {fix}")
        man = _read_json(mpath, "zoo member manifest")
        raw = tpath.read_bytes()
        if man.get("sha256") != _sha256(raw):
            raise DataError(
                f"zoo member file {tpath} is corrupt (sha256 differs from its manifest); delete "
                f"it and {mpath.name}, then {fix}"
            )
        try:
            state = load(raw)
            member = ZooMember(
                man["id"],
                int(man["width"]),
                float(man["lr"]),
                int(man["batch_size"]),
                float(man["temperature"]),
                int(man["seed"]),
                tuple(man["widths"]),
                str(man["activation"]),
                dict(man["metrics"]),
            )
        except Exception as e:  # safetensors header errors, missing manifest keys
            raise DataError(
                f"zoo member {tpath} is corrupt ({type(e).__name__}); delete it and "
                f"{mpath.name}, then {fix}"
            ) from e
        members.append(member)
        states[mid] = state
    tab = _read_table(folder) if table else {}
    return Zoo(folder, grid, seeds, data, members, states, tab)


def _cell_values(
    table: dict[str, list], metric: str, x: str, y: str
) -> tuple[list, list, list[list[float]]]:
    for name in (metric, x, y):
        if name not in table:
            raise ConfigError(f"zoo table has no column {name!r}; columns: {', '.join(table)}")
    xs, ys = sorted(set(table[x])), sorted(set(table[y]))
    sums = [[0.0] * len(xs) for _ in ys]
    counts = [[0] * len(xs) for _ in ys]
    for vx, vy, v in zip(table[x], table[y], table[metric], strict=True):
        if v is None or not math.isfinite(float(v)):
            continue
        i, j = ys.index(vy), xs.index(vx)
        sums[i][j] += float(v)
        counts[i][j] += 1
    grid = [
        [sums[i][j] / counts[i][j] if counts[i][j] else float("nan") for j in range(len(xs))]
        for i in range(len(ys))
    ]
    return xs, ys, grid


def phase_diagram(
    source: Zoo | dict[str, list],
    metric: str,
    x: str = "temperature",
    y: str = "width",
    *,
    title: str | None = None,
    log: bool = False,
):
    """A phase diagram: ``metric`` averaged over the members (seeds and any other axes) of
    each ``(x, y)`` cell of a zoo (or a table of columns -> lists, e.g. ``zoo.table`` plus
    computed metrics), as a heatmap with the cell values written in. ``log`` colours by
    log10 of the metric. Returns the matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = source.table if isinstance(source, Zoo) else source
    xs, ys, grid = _cell_values(table, metric, x, y)
    vals = torch.tensor(grid, dtype=torch.float64)
    shown = vals.clamp_min(1e-12).log10() if log else vals
    fig, ax = plt.subplots(figsize=(1.2 * len(xs) + 2.4, 0.9 * len(ys) + 1.8))
    im = ax.imshow(shown.numpy(), origin="lower", aspect="auto", cmap="viridis")
    for i in range(len(ys)):
        for j in range(len(xs)):
            v = grid[i][j]
            ax.text(
                j,
                i,
                "—" if math.isnan(v) else f"{v:.3g}",
                ha="center",
                va="center",
                fontsize=7,
                color="white",
            )
    ax.set_xticks(range(len(xs)), [f"{v:.3g}" for v in xs], fontsize=7)
    ax.set_yticks(range(len(ys)), [f"{v:.3g}" for v in ys], fontsize=7)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title or f"{metric} over {x} × {y}", fontsize=9)
    fig.colorbar(im, ax=ax, label=f"log10 {metric}" if log else metric)
    fig.tight_layout()
    return fig
