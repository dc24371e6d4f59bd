"""Recipes: a paper's headline claim, reproduced by one command.

A recipe has a typed config (a frozen dataclass; every field defaulted, documented in
its ``metadata["help"]``, so the CLI flags come from it), a ``run`` that trains and
measures through a :class:`~weightlab.runs.RunDir` (so it resumes), and claims: each
quotes the paper, checks the measured numbers over seeds and reports ``held`` /
``did not hold`` / ``not tested`` with the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from weightlab.data.params import check_value
from weightlab.errors import ConfigError
from weightlab.figures import figure_png  # noqa: F401 - re-exported for the recipes
from weightlab.runs.rundir import RunDir


def opt(default: Any, help: str, **checks: Any) -> Any:
    """A documented config field. ``checks`` may hold ``min``, ``max`` (inclusive),
    ``gt``/``lt`` (exclusive) and ``choices``; they are enforced by :func:`validate`."""
    return field(default=default, metadata={"help": help, **checks})


@dataclass(frozen=True)
class RecipeConfig:
    """Fields every recipe has."""

    seeds: int = opt(3, "number of independent seeds (error bars are over seeds)", min=1, max=1000)
    data: str = opt(
        "mnist1d",
        "task: one the recipe supports (see --help), or user data FILE.npz or idx:DIR",
    )
    device: str = opt("cpu", "device to train on", choices=("cpu", "cuda"))

    def __post_init__(self) -> None:
        validate(self)


def validate(cfg: Any) -> None:
    """Check every field against its metadata (:func:`~weightlab.data.params.check_value`,
    the check task parameters use); raise a one-line :class:`ConfigError`."""
    from dataclasses import fields

    for f in fields(cfg):
        problem = check_value(getattr(cfg, f.name), f.metadata)
        if problem:
            raise ConfigError(f"--{f.name.replace('_', '-')} {problem}")
    if getattr(cfg, "device", "cpu") == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was asked for but CUDA is not available here; use --device cpu"
        )


@dataclass
class ClaimResult:
    """The verdict on one claim. ``held`` is None when the run could not test it."""

    id: str
    quote: str
    statement: str
    held: bool | None
    detail: str
    evidence: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return {True: "held", False: "did not hold", None: "not tested"}[self.held]

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "quote": self.quote,
            "statement": self.statement,
            "held": self.held,
            "verdict": self.verdict,
            "detail": self.detail,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class Figure:
    filename: str
    title: str
    png: bytes


FAMILIES = (
    "sparsity",
    "init",
    "kernels",
    "adapters",
    "probes",
    "quant",
    "growth",
    "dynamics",
    "data",
)
SMOKE_BUDGET_S = 5.0  # a smoke run should take at most this long on 2 cores


class Recipe:
    """Base class. Subclasses set the class attributes and implement ``run`` (and usually
    ``tables`` and ``figures``).

    Class attributes:
        name: the CLI name (``weightlab run NAME``); a subclass without its own ``name``
            is not registered (use that for shared bases).
        family: one of :data:`FAMILIES`; the module must live in ``weightlab/recipes/<family>/``.
        row: the method's row number ``[#N]`` in the project's list of papers.
        paper, claim: shown by ``weightlab recipes`` and in the report.
        Config: the frozen config dataclass (CLI flags are generated from it).
        tasks: task names ``--data`` accepts (the first is the default); user data
            (``FILE.npz``, ``idx:DIR``) is accepted when its kind is in ``kinds``.
        kinds: task kinds the recipe handles (``"classification"``, ``"regression"``).
        task_fields: config fields passed to the task loader as task parameters.
        smoke: config overrides for ``--smoke`` (a run of a few seconds).
        broken: config overrides that wreck training (applied on top of ``smoke``); on such
            a run no claim may read "held". Ignored when ``trains`` is false.
        trains: false for recipes that train nothing (e.g. analytic kernels).
        smoke_seconds: the smoke run's measured wall time on 2 cores; the conformance
            test marks a recipe over :data:`SMOKE_BUDGET_S` as ``slow``.
        member_fields: config fields that change only what each population member gets
            (its optimizer settings, its init via ``init_state``, the number of seeds): a
            sweep batches runs that differ only in these into one population per
            ``train_members`` call (``weightlab sweep``). Empty: never batched.
    """

    name: ClassVar[str]
    family: ClassVar[str]
    row: ClassVar[int]
    paper: ClassVar[str]
    claim: ClassVar[str]
    Config: ClassVar[type]
    tasks: ClassVar[tuple[str, ...]] = ()
    kinds: ClassVar[tuple[str, ...]] = ("classification",)
    task_fields: ClassVar[tuple[str, ...]] = ()
    smoke: ClassVar[dict[str, Any]] = {}
    broken: ClassVar[dict[str, Any]] = {}
    trains: ClassVar[bool] = True
    smoke_seconds: ClassVar[float | None] = None
    member_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self._data_cache: dict[tuple, Any] = {}

    # -- data ------------------------------------------------------------------------
    def task_params(self, cfg: Any) -> dict[str, Any]:
        """The task parameters this run passes to the loader (from ``task_fields``)."""
        return {f: getattr(cfg, f) for f in self.task_fields}

    def load_data(self, cfg: Any):
        """The run's task (checked against ``tasks`` / ``kinds``), loaded once per instance."""
        from weightlab.recipes.tasks import load_task

        key = (cfg.data, cfg.device, tuple(sorted(self.task_params(cfg).items())))
        if key not in self._data_cache:
            self._data_cache[key] = load_task(self, cfg.data, cfg.device, self.task_params(cfg))
        return self._data_cache[key]

    def validate(self, cfg: Any, data_sizes: dict[str, int]) -> None:
        """Checks that need the data's sizes (e.g. a step count against the run's length);
        runs before the run directory is opened, so a rejected config writes nothing.
        ``data_sizes`` maps ``train``/``val``/``test`` to their numbers of examples.
        Raise a one-line :class:`~weightlab.errors.ConfigError`."""

    def run(self, cfg: Any, rd: RunDir, progress: bool = False) -> dict:
        """Train and measure; return the summary dict (written to ``summary.json``)."""
        raise NotImplementedError

    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        """``(title, header, rows)`` tables for the report."""
        return []

    def figures(self, summary: dict) -> list[Figure]:
        """PNG figures for the report."""
        return []

    def measurements(self) -> list[tuple[str, list[str], list[list[str]]]]:
        """Machine-dependent numbers the last :meth:`run` measured (e.g. time per step), as
        ``(title, header, rows)`` tables. They go to ``timing.json``, never to
        ``summary.json``, so two runs of one config still give byte-identical summaries; the
        report shows them in a section of their own. A recipe sets ``self._measurements``
        in ``run`` (read back from its units, so a resumed run reports them too)."""
        return list(getattr(self, "_measurements", []))

    def members_per_call(self, cfg: Any) -> int:
        """The most members one of this run's ``train_members`` calls holds (a sweep's
        batch groups are packed up to ``--batch-members`` by it). Default: ``cfg.seeds``."""
        return int(getattr(cfg, "seeds", 1))

    def metrics(self, summary: dict) -> dict[str, float]:
        """The flat numbers this run's claims decide on, ``{name: value}`` (written to
        ``summary["metrics"]``). Default: every claim's numeric evidence,
        :func:`weightlab.recipes.metrics.claim_metrics`."""
        from weightlab.recipes.metrics import claim_metrics

        return claim_metrics(summary["claims"])
