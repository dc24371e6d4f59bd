"""The Dynamic Signal Distribution (DSD) task of Lahoti, Karp, Winston, Singh & Li 2024,
"Role of Locality and Weight Sharing in Image-Based Tasks: A Sample Complexity Separation
between CNNs, LCNs, and FCNs" (row [#32]): an "image" of ``k`` patches of dimension ``d``,
"the label is determined by a d-sparse signal vector that can freely appear in any one of
the k patches".

``x = (x_1, …, x_k)``, ``x_j ~ N(0, I_d)`` independently, then one patch ``j*`` drawn
uniformly gets ``+ y·s·w*``: ``w*`` a unit vector fixed by the task's seed, ``y = ±1``
with equal probability, ``s > 0`` the signal strength. Inputs are flattened to ``k·d``
(patch ``j`` is ``x[j·d:(j+1)·d]``); labels are stored as classes ``(y + 1) / 2 ∈ {0, 1}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weightlab.data.params import Param
from weightlab.data.task import Split, TaskData
from weightlab.errors import DataError
from weightlab.seeding import derive_seed, generator

__all__ = ["PARAMS", "DSDTask", "load_dsd"]

PARAMS = (
    Param("k", "int", 4, "number of patches", min=1),
    Param("d", "int", 8, "dimension of one patch", min=1),
    Param("s", "float", 6.0, "signal strength (the signal is y·s·w*, ‖w*‖ = 1)", gt=0),
    Param("n_train", "int", 256, "training examples", min=1),
    Param("n_val", "int", 0, "validation examples (0: none)", min=0),
    Param("n_test", "int", 2000, "test examples", min=1),
    Param("seed", "int", 0, "seed of w* and of every split", min=0),
)


@dataclass(frozen=True)
class DSDTask:
    """The DSD generator: ``k`` patches of ``N(0, I_d)``, one (uniform) plus ``y·s·w*``.

    ``w*`` is ``generator(derive_seed("dsd", "w", seed))``'s normal vector, normalized.
    """

    k: int
    d: int
    s: float = 6.0
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.k) != self.k or self.k < 1:
            raise DataError(f"DSD needs k >= 1 patches; got k={self.k} (pass an integer >= 1)")
        if int(self.d) != self.d or self.d < 1:
            raise DataError(f"DSD needs patch dimension d >= 1; got d={self.d}")
        if not (float(self.s) > 0 and float(self.s) < float("inf")):
            raise DataError(f"DSD needs a signal strength s > 0 (finite); got s={self.s}")

    @property
    def w_star(self) -> torch.Tensor:
        """The unit signal vector ``w* ∈ R^d`` (float32)."""
        g = generator(derive_seed("dsd", "w", self.seed))
        w = torch.randn(self.d, generator=g, dtype=torch.float64)
        return (w / w.norm()).float()

    def sample(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` examples from ``g``: inputs ``(n, k·d)`` float32, labels ``y ∈ {0, 1}``
        (int64; the sign is ``2y − 1``) and the signal patch ``j* ∈ [0, k)`` of each."""
        if n < 0:
            raise DataError(f"DSD sample size must be >= 0, got {n}")
        x = torch.randn(n, self.k, self.d, generator=g)
        y = torch.randint(0, 2, (n,), generator=g)
        j = torch.randint(0, self.k, (n,), generator=g)
        sign = (2 * y - 1).float()
        x[torch.arange(n), j] += self.s * sign[:, None] * self.w_star
        return x.reshape(n, self.k * self.d), y, j

    def split(self, n: int, part: str) -> Split:
        """Split ``part`` (``"train"``, ``"val"``, ``"test"``) of size ``n``, drawn from
        ``derive_seed("dsd", part, seed)``."""
        x, y, _ = self.sample(n, generator(derive_seed("dsd", part, self.seed)))
        return Split(x, y)


def load_dsd(
    k: int = 4,
    d: int = 8,
    s: float = 6.0,
    n_train: int = 256,
    n_val: int = 0,
    n_test: int = 2000,
    seed: int = 0,
) -> TaskData:
    """The registered task ``dsd``: :class:`DSDTask` splits, binary classification."""
    task = DSDTask(k, d, s, seed)
    val = task.split(n_val, "val")
    return TaskData(
        "dsd",
        task.split(n_train, "train"),
        val,
        task.split(n_test, "test"),
        2,
        info={"k": k, "d": d, "s": s, "seed": seed, "w_star": task.w_star},
    )
