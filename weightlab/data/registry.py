"""Task registry: ``load_dataset(name, device, **params)``.

``name`` is a registered task (``TASKS``; ``task_names()``) or user data: a path ending
in ``.npz`` (:mod:`weightlab.data.user`) or ``idx:DIR`` (:mod:`weightlab.data.idx`).
Registered tasks take keyword parameters with defaults (``task_params(name)``;
``task_param_specs(name)`` gives help lines and range checks for recipe config fields);
every parameter is validated before anything is generated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from weightlab.data import (
    gaussian,
    graphs,
    hebbian,
    latent,
    mnist1d_shift,
    modular,
    sentences,
    signals,
    single_index,
    teacher,
    vader,
    xor,
)
from weightlab.data.conv_teacher import PARAMS as CONV_TEACHER_PARAMS
from weightlab.data.conv_teacher import load_conv_teacher
from weightlab.data.digits import load_digits
from weightlab.data.dsd import PARAMS as DSD_PARAMS
from weightlab.data.dsd import load_dsd
from weightlab.data.idx import load_idx_task
from weightlab.data.logistic_teacher import PARAMS as LOGISTIC_TEACHER_PARAMS
from weightlab.data.logistic_teacher import load_teacher_logistic
from weightlab.data.mnist1d import BINARY_PARAMS, load_mnist1d, load_mnist1d_binary
from weightlab.data.params import Param, check_params
from weightlab.data.tabular import load_breast_cancer, load_iris, load_wine
from weightlab.data.task import TaskData
from weightlab.data.user import load_npz_task
from weightlab.errors import DataError


@dataclass(frozen=True)
class Task:
    """A registered task: ``task(**params) -> TaskData`` (on the CPU), params checked."""

    name: str
    loader: Callable[..., TaskData]
    params: tuple[Param, ...] = ()
    kind: str = "classification"
    summary: str = ""

    def __call__(self, **params: Any) -> TaskData:
        return self.loader(**check_params(self.name, self.params, params))


def _tasks(*tasks: Task) -> dict[str, Task]:
    return {t.name: t for t in tasks}


TASKS: dict[str, Task] = _tasks(
    Task("mnist1d", load_mnist1d, summary="MNIST-1D (Greydanus 2020), 40 features, 10 classes"),
    Task(
        "mnist1d_binary",
        load_mnist1d_binary,
        BINARY_PARAMS,
        summary="MNIST-1D digits 0-4 vs 5-9, P drawn class-balanced from its 4000 train+val",
    ),
    Task("digits", load_digits, summary="scikit-learn 8x8 digits, 64 features, 10 classes"),
    Task("iris", load_iris, summary="scikit-learn iris, 4 features, 3 classes"),
    Task("wine", load_wine, summary="scikit-learn wine, 13 features, 3 classes"),
    Task("breast_cancer", load_breast_cancer, summary="scikit-learn breast cancer, 30 features"),
    Task(
        "teacher_linear",
        teacher.load_teacher_linear,
        teacher.LINEAR_PARAMS,
        "regression",
        "noisy linear teacher y = x W",
    ),
    Task(
        "teacher_mlp",
        teacher.load_teacher_mlp,
        teacher.MLP_PARAMS,
        "regression",
        "random ReLU MLP teacher",
    ),
    Task(
        "teacher_sparse",
        teacher.load_teacher_sparse,
        teacher.SPARSE_PARAMS,
        "regression",
        "planted sparse two-layer ReLU teacher (k units, s inputs each)",
    ),
    Task(
        "deep_linear",
        teacher.load_deep_linear,
        teacher.DEEP_LINEAR_PARAMS,
        "regression",
        "linear teacher W = U diag(s) V^T with chosen singular values",
    ),
    Task(
        "teacher_poly",
        teacher.load_teacher_poly,
        teacher.POLY_PARAMS,
        "regression",
        "monomial target y = x1*x2 (default) on Gaussian inputs",
    ),
    Task("modular", modular.load_modular, modular.PARAMS, summary="a o b mod p, p classes"),
    Task("xor", xor.load_xor, xor.PARAMS, summary="XOR Gaussian clusters with label flips"),
    Task(
        "teacher_logistic",
        load_teacher_logistic,
        LOGISTIC_TEACHER_PARAMS,
        summary="logistic teacher P(y = 1 | x) = σ(β w*ᵀx), x ~ N(0, I_d) [#26]",
    ),
    Task(
        "teacher_relu",
        single_index.load_teacher_relu,
        single_index.PARAMS,
        "regression",
        "centred single-ReLU teacher y = ReLU(w*ᵀx) − 1/√(2π) + noise [#98]",
    ),
    Task(
        "binary_gaussian",
        gaussian.load_binary_gaussian,
        gaussian.PARAMS,
        summary="two Gaussian classes N(±mu e1, I), no validation split",
    ),
    Task("dsd", load_dsd, DSD_PARAMS, summary="DSD: k Gaussian patches, one carries y*s*w*"),
    Task(
        "conv_teacher",
        load_conv_teacher,
        CONV_TEACHER_PARAMS,
        "regression",
        "conv residual teacher: sum_j a*_j ReLU(Z_j v*/|v*|), v* = 1/sqrt(p) + w*",
    ),
    Task(
        "hebbian",
        hebbian.load_hebbian,
        hebbian.PARAMS,
        summary="K ±1 patterns (diluted or not), cues with flipped spins -> pattern index",
    ),
    Task("sbm", graphs.load_sbm, graphs.SBM_PARAMS, summary="SBM graph, Gaussian node features"),
    Task(
        "signal1d",
        signals.load_signal1d,
        signals.SIGNAL1D_PARAMS,
        "regression",
        "band-limited 1-D noise over [-1, 1)",
    ),
    Task(
        "signal2d",
        signals.load_signal2d,
        signals.SIGNAL2D_PARAMS,
        "regression",
        "band-limited 2-D noise over [-1, 1)^2",
    ),
    Task(
        "image",
        signals.load_image,
        signals.IMAGE_PARAMS,
        "regression",
        "scikit-learn china.jpg, grayscale, pixel value over coordinates",
    ),
    Task(
        "sentences",
        sentences.load_sentence_embeddings,
        sentences.PARAMS,
        "regression",
        "templated sentences -> a BERT encoder's own mean-pooled embeddings (MiniLM or tiny)",
    ),
    Task(
        "vader_words",
        vader.load_vader_words,
        vader.WORDS_PARAMS,
        "regression",
        "VADER lexicon: 7,209 alphabetic words -> mean human rating, stem-grouped split",
    ),
    Task(
        "vader_sentences",
        vader.load_vader_sentences,
        vader.SENTENCES_PARAMS,
        "regression",
        "templated sentences labelled by VADER's rules (not people), stem-grouped split",
    ),
    Task(
        "latent_factors",
        latent.load_latent_factors,
        latent.FACTOR_PARAMS,
        summary="factor model x = Az + σε, label 1[wᵀz > 0], unlabeled pool in info [#37]",
    ),
    Task(
        "latent_mixture",
        latent.load_latent_mixture,
        latent.MIXTURE_PARAMS,
        summary="Gaussian mixture x = μ_z + σε, label per component, unlabeled pool [#37]",
    ),
    Task(
        "mnist1d_shift",
        mnist1d_shift.load_mnist1d_shift,
        mnist1d_shift.PARAMS,
        summary="MNIST-1D (part A) or its 40 positions fixed-permuted (part B)",
    ),
)
DATASETS = TASKS  # the name used before tasks took parameters

USER_PARAMS = (Param("seed", "int", 0, "seed of the splits carved from user data", min=0),)
USER_DATA_FORMS = "FILE.npz or idx:DIR"


def task_names() -> list[str]:
    """The registered task names, sorted."""
    return sorted(TASKS)


def is_user_data(name: str) -> bool:
    """``name`` is user data (``FILE.npz`` or ``idx:DIR``), not a registered task."""
    return name.endswith(".npz") or name.startswith("idx:")


def task_param_specs(name: str) -> tuple[Param, ...]:
    """The declared parameters of a task (help, default, range checks)."""
    if is_user_data(name):
        return USER_PARAMS
    if name not in TASKS:
        raise DataError(
            f"unknown task {name!r}; choose one of: {', '.join(task_names())}, "
            f"or give user data as {USER_DATA_FORMS}"
        )
    return TASKS[name].params


def task_params(name: str) -> dict[str, Any]:
    """``{param: default}`` of a task (``{"seed": 0}`` for user data)."""
    return {p.name: p.default for p in task_param_specs(name)}


def load_dataset(name: str, device: torch.device | str = "cpu", **params: Any) -> TaskData:
    """Load a task with its deterministic splits, as tensors on ``device``.

    Args:
        name: a registered task (see :func:`task_names`), ``PATH.npz`` or ``idx:DIR``.
        params: the task's keyword parameters (see :func:`task_params`); unknown keys and
            bad values raise a one-line :class:`~weightlab.errors.DataError`.
    """
    if is_user_data(name):
        p = check_params(name, USER_PARAMS, params)
        if name.startswith("idx:"):
            data = load_idx_task(name[len("idx:") :], seed=p["seed"])
        else:
            data = load_npz_task(name, seed=p["seed"])
    else:
        task_param_specs(name)  # an unknown name is a one-line DataError
        data = TASKS[name](**params)
    return data.to(device)


def describe_tasks() -> Mapping[str, str]:
    """``{name: one-line summary}`` of the registered tasks."""
    return {n: TASKS[n].summary for n in task_names()}
