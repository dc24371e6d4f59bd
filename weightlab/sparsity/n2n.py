"""N2N: network-to-network compression by policy gradients (Ashok et al. 2018,
"N2N Learning: Network to Network Compression via Policy Gradient Reinforcement
Learning", arXiv:1709.06030), for chains of Linear layers (:class:`weightlab.models.MLP`).

- **Stage 1, layer removal**: a bidirectional LSTM reads one feature vector per teacher
  layer and outputs keep/remove probabilities per layer (Sec. 3.2);
  :class:`RemovalPolicy`.
- **Stage 2, layer shrinkage**: a unidirectional LSTM, fed its previous action, outputs a
  discrete shrink fraction per remaining layer (Sec. 3.2); :class:`ShrinkPolicy`. The
  output layer keeps its classes.
- **Students** (:func:`student_widths`, :func:`inherit_state`): the kept layers form a
  smaller chain ``in → ... → out``. A student layer whose full (unshrunk) shape equals its
  teacher layer's starts from the teacher's weights (shrunk layers keep the units with the
  largest L1 norm of incoming weights, Li et al. 2017; the next layer keeps the matching
  columns); a layer whose shape changed (a new first or last layer) is freshly drawn.
  Students are then distilled from the teacher (:mod:`weightlab.sparsity.distill`).
- **Reward** (Sec. 3.3): ``R = R_c · R_a`` with ``R_a = A_student / A_teacher`` and
  ``R_c = C (2 − C)``, ``C = 1 − #params_student / #params_teacher``;
  :func:`n2n_reward`. An empty student (every layer removed) gets :data:`INVALID_REWARD`
  (the authors' code gives invalid architectures −1).
- **REINFORCE** (Williams 1992; N2N Eq. 2–3): ``∇J ≈ (1/m) Σ_i Σ_t ∇ log π(a_t) (R_i − b)``
  with ``b`` a moving average of earlier rewards (:class:`MovingBaseline`);
  :func:`reinforce_loss`.

Every draw takes an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from weightlab.errors import ConfigError

__all__ = [
    "INVALID_REWARD",
    "SHRINK_FRACTIONS",
    "MovingBaseline",
    "PolicyOptimizer",
    "RemovalPolicy",
    "ShrinkPolicy",
    "compression",
    "inherit_state",
    "layer_features",
    "mlp_params",
    "n2n_reward",
    "random_removal",
    "random_shrink",
    "reinforce_loss",
    "student_widths",
]

INVALID_REWARD = -1.0
SHRINK_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
N_FEATURES = 4


def mlp_params(widths: Sequence[int]) -> int:
    """Parameters (weights and biases) of an MLP with ``widths = [in, h1, ..., out]``."""
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))


def compression(params_student: int, params_teacher: int) -> float:
    """``C = 1 − #params_student / #params_teacher``: the share of parameters removed."""
    return 1.0 - params_student / params_teacher


def n2n_reward(
    acc_student: float, acc_teacher: float, params_student: int, params_teacher: int
) -> float:
    """N2N's reward (Ashok et al. 2018, Sec. 3.3): ``C (2 − C) · A_student / A_teacher``.

    ``C (2 − C)`` is concave in the compression ``C`` (0 at ``C = 0``, 1 at ``C = 1``), so
    early gains in compression pay most; the accuracy ratio keeps accuracy in play.
    """
    if not acc_teacher > 0:
        raise ConfigError(f"the teacher's accuracy must be > 0 for the reward, got {acc_teacher}")
    c = compression(params_student, params_teacher)
    return c * (2.0 - c) * acc_student / acc_teacher


def layer_features(widths: Sequence[int]) -> torch.Tensor:
    """One feature vector per Linear layer of an MLP ``[in, h1, ..., out]``: in and out
    features and parameters, each relative to the largest, and the relative depth
    (N2N's per-layer state holds type, kernel, stride, padding and outputs; for a chain
    of Linear layers only the sizes and the position vary). Shape ``(L, 4)``."""
    pairs = list(zip(widths[:-1], widths[1:], strict=True))
    big = max(widths)
    most = max(a * b + b for a, b in pairs)
    n = len(pairs)
    rows = [
        [a / big, b / big, (a * b + b) / most, i / max(1, n - 1)] for i, (a, b) in enumerate(pairs)
    ]
    return torch.tensor(rows, dtype=torch.float32)


class RemovalPolicy(nn.Module):
    """Stage-1 policy: a bidirectional LSTM over the layers' features, a linear head with
    two logits (remove, keep) per layer. The authors' code uses 2 LSTM layers of 30 units."""

    def __init__(self, n_features: int = N_FEATURES, hidden: int = 30, num_layers: int = 2):
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, num_layers, bidirectional=True)
        self.head = nn.Linear(2 * hidden, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(L, F)`` features -> ``(L, 2)`` logits of (remove, keep)."""
        out, _ = self.lstm(features.unsqueeze(1))
        return self.head(out.squeeze(1))

    def sample(
        self, features: torch.Tensor, generator: torch.Generator
    ) -> tuple[list[bool], torch.Tensor]:
        """Keep/remove actions per layer and their summed log-probability (with grad)."""
        logp = torch.log_softmax(self(features), dim=-1)
        actions = torch.multinomial(logp.detach().exp(), 1, generator=generator).squeeze(1)
        log_prob = logp.gather(1, actions.unsqueeze(1)).sum()
        return [bool(a) for a in actions.tolist()], log_prob


class ShrinkPolicy(nn.Module):
    """Stage-2 policy: a unidirectional LSTM whose input at layer ``t`` is the layer's
    features and the one-hot previous action (autoregressive, as N2N's shrinkage
    controller); a linear head gives logits over ``fractions``."""

    def __init__(
        self,
        fractions: Sequence[float] = SHRINK_FRACTIONS,
        n_features: int = N_FEATURES,
        hidden: int = 30,
        num_layers: int = 2,
    ):
        super().__init__()
        self.fractions = tuple(float(f) for f in fractions)
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ConfigError(f"shrink fractions must lie in (0, 1], got {self.fractions}")
        k = len(self.fractions)
        self.lstm = nn.LSTM(n_features + k, hidden, num_layers)
        self.head = nn.Linear(hidden, k)

    def sample(
        self, features: torch.Tensor, generator: torch.Generator, fixed: Sequence[bool] = ()
    ) -> tuple[list[float], torch.Tensor]:
        """A fraction per layer (``1.0`` where ``fixed[t]``, e.g. the output layer, without
        a draw) and the summed log-probability of the drawn ones."""
        k = len(self.fractions)
        prev = torch.zeros(k)
        state = None
        out, log_prob = [], torch.zeros(())
        for t in range(features.shape[0]):
            x = torch.cat([features[t], prev]).view(1, 1, -1)
            h, state = self.lstm(x, state)
            logp = torch.log_softmax(self.head(h.view(-1)), dim=-1)
            prev = torch.zeros(k)
            if t < len(fixed) and fixed[t]:
                out.append(1.0)
                continue
            a = int(torch.multinomial(logp.detach().exp(), 1, generator=generator))
            log_prob = log_prob + logp[a]
            prev[a] = 1.0
            out.append(self.fractions[a])
        return out, log_prob


def random_removal(n_layers: int, generator: torch.Generator) -> list[bool]:
    """The random-search control of stage 1: keep each layer with probability 1/2."""
    return [bool(b) for b in (torch.rand(n_layers, generator=generator) < 0.5).tolist()]


def random_shrink(
    n_layers: int,
    generator: torch.Generator,
    fractions: Sequence[float] = SHRINK_FRACTIONS,
    fixed: Sequence[bool] = (),
) -> list[float]:
    """The random-search control of stage 2: a uniform fraction per non-fixed layer."""
    picks = torch.randint(len(fractions), (n_layers,), generator=generator).tolist()
    return [
        1.0 if (t < len(fixed) and fixed[t]) else float(fractions[p]) for t, p in enumerate(picks)
    ]


def student_widths(
    widths: Sequence[int], keep: Sequence[bool], fractions: Sequence[float] | None = None
) -> list[int] | None:
    """The student MLP's widths, or ``None`` when every layer is removed.

    ``widths``: the teacher's ``[in, h1, ..., out]``; ``keep``: one flag per teacher layer;
    ``fractions``: one shrink fraction per *kept* layer (the last is ignored: the output
    keeps the teacher's outputs). Kept layer ``i`` outputs ``widths[i + 1]`` units
    (``max(1, round(f · widths[i + 1]))`` when shrunk); the first kept layer reads the
    inputs and the last writes the outputs.
    """
    widths = [int(w) for w in widths]
    if len(keep) != len(widths) - 1:
        raise ConfigError(f"keep has {len(keep)} flags for {len(widths) - 1} layers")
    kept = [i for i, k in enumerate(keep) if k]
    if not kept:
        return None
    outs = [widths[i + 1] for i in kept]
    if fractions is not None:
        if len(fractions) != len(kept):
            raise ConfigError(f"{len(fractions)} shrink fractions for {len(kept)} kept layers")
        outs = [max(1, math.floor(f * w + 0.5)) for f, w in zip(fractions, outs, strict=True)]
    outs[-1] = widths[-1]
    return [widths[0], *outs]


def _top_units(weight: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (ascending) of the ``k`` output units with the largest L1 norm of incoming
    weights (Li et al. 2017); ties go to the lower index."""
    if k >= weight.shape[0]:
        return torch.arange(weight.shape[0])
    norms = weight.abs().sum(1)
    order = sorted(range(weight.shape[0]), key=lambda u: (-float(norms[u]), u))
    return torch.tensor(sorted(order[:k]))


def inherit_state(
    teacher_state: dict[str, torch.Tensor],
    widths: Sequence[int],
    keep: Sequence[bool],
    student: Sequence[int],
    fresh_state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[bool]]:
    """The student's start weights: teacher weights where shapes allow, else fresh.

    Args:
        teacher_state: ``layers.{i}.weight`` / ``.bias`` of the teacher MLP ``widths``.
        widths, keep: the teacher's widths and the keep flags (:func:`student_widths`).
        student: the student's widths.
        fresh_state: a freshly initialized student of widths ``student`` (its
            ``take_snapshot``); used for layers whose full shape changed.

    Returns:
        ``(state, inherited)``: the student's plain-name state and, per student layer,
        whether it came from the teacher. Student layer ``j`` (teacher layer ``i``) is
        inherited when the teacher layer's input width equals the full width feeding it
        in the student (the input, or the previous kept layer's unshrunk outputs) and its
        output width equals the student layer's unshrunk output width.
    """
    kept = [i for i, k in enumerate(keep) if k]
    state = {k: v.clone() for k, v in fresh_state.items()}
    inherited = []
    prev_units: torch.Tensor | None = None  # teacher units feeding student layer j
    prev_full = widths[0]
    for j, i in enumerate(kept):
        last = j == len(kept) - 1
        full_out = widths[-1] if last else widths[i + 1]
        w = teacher_state[f"layers.{i}.weight"]
        b = teacher_state[f"layers.{i}.bias"]
        ok = tuple(w.shape) == (full_out, prev_full)
        units = torch.arange(student[j + 1])
        if ok:
            units = _top_units(w, student[j + 1])
            cols = prev_units if prev_units is not None else torch.arange(w.shape[1])
            state[f"layers.{j}.weight"] = w[units][:, cols].clone()
            state[f"layers.{j}.bias"] = b[units].clone()
        inherited.append(ok)
        prev_units, prev_full = units, full_out
    return state, inherited


def reinforce_loss(log_probs: Sequence[torch.Tensor], advantages: Sequence[float]) -> torch.Tensor:
    """REINFORCE surrogate ``−(1/m) Σ_i (R_i − b) log π(a_i)`` (Williams 1992; N2N Eq. 3):
    its gradient is the policy-gradient estimate, to be minimized."""
    if len(log_probs) != len(advantages) or not log_probs:
        raise ConfigError("reinforce_loss needs one advantage per rollout (and >= 1 rollout)")
    terms = [-float(a) * lp for lp, a in zip(log_probs, advantages, strict=True)]
    return torch.stack(terms).mean()


@dataclass
class MovingBaseline:
    """The REINFORCE baseline ``b``: an exponential moving average of episodes' mean
    rewards, ``b ← decay · b + (1 − decay) · mean(R)``. Before the first episode it has no
    value; the first episode is centred on its own mean."""

    decay: float = 0.8
    value: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.decay < 1:
            raise ConfigError(f"baseline decay must lie in [0, 1), got {self.decay}")

    def advantages(self, rewards: Sequence[float]) -> list[float]:
        b = self.value if self.value is not None else sum(rewards) / len(rewards)
        return [float(r) - b for r in rewards]

    def update(self, rewards: Sequence[float]) -> None:
        m = sum(rewards) / len(rewards)
        self.value = m if self.value is None else self.decay * self.value + (1 - self.decay) * m


class PolicyOptimizer:
    """Adam (Kingma & Ba 2015; the authors' policy optimizer) for a policy's parameters:
    PyTorch's functional Adam (``torch.optim.adam.adam``, the arithmetic of
    ``torch.optim.Adam``) with the moments kept here. One :meth:`step` per episode on the
    REINFORCE surrogate. (Constructing a ``torch.optim`` optimizer imports TorchDynamo,
    ~2 s of CPU, which the recipe's smoke run cannot afford.)"""

    def __init__(
        self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps = float(lr), betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.zeros(()) for _ in self.params]

    def step(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` and update the parameters once."""
        from torch.optim.adam import adam

        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        grads = [
            torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads, strict=True)
        ]
        with torch.no_grad():
            adam(
                self.params,
                grads,
                self.m,
                self.v,
                [],
                self.steps,
                foreach=False,
                amsgrad=False,
                has_complex=False,
                beta1=self.betas[0],
                beta2=self.betas[1],
                lr=self.lr,
                weight_decay=0.0,
                eps=self.eps,
                maximize=False,
            )
