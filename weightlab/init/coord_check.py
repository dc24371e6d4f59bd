"""Coordinate check: activation scale per layer against width over the first steps.

Yang et al. 2021 ("Tensor Programs V", Sec. 5 and Fig. 5) check a parametrization by
training models of several widths for a few steps and plotting, for every layer, the
mean absolute coordinate of its output against width: under μP the curves are flat
(log-log slope ≈ 0) at every step; under SP the hidden and output coordinates blow up
with width once training starts (slope ≈ 1 under Adam). :func:`coord_check` trains each
width with :func:`weightlab.train.train` (a step callback records the activations on one
fixed batch after every update) and fits each layer's slope of
``log mean|h|`` against ``log width``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.train import TrainConfig, train
from weightlab.train.callbacks import StepContext


@dataclass(frozen=True)
class CoordCheck:
    """``scale[width][step][layer]`` = mean |coordinate| of that layer's output on the
    fixed batch after ``step`` updates (step 0 = init); ``slopes[step][layer]`` its
    log-log slope against width."""

    widths: tuple[int, ...]
    layers: tuple[str, ...]
    scale: dict[int, list[dict[str, float]]]
    slopes: list[dict[str, float]]

    def max_abs_slope(self, steps: Sequence[int]) -> float:
        return max(abs(self.slopes[t][n]) for t in steps for n in self.layers)

    def to_dict(self) -> dict:
        return {
            "widths": list(self.widths),
            "layers": list(self.layers),
            "scale": {str(w): v for w, v in self.scale.items()},
            "slopes": self.slopes,
        }


def loglog_slope(widths: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of ``log v`` on ``log w`` (nan if any value is not > 0)."""
    if any(not (v > 0 and math.isfinite(v)) for v in values):
        return math.nan
    x = torch.tensor([math.log(w) for w in widths], dtype=torch.float64)
    y = torch.tensor([math.log(v) for v in values], dtype=torch.float64)
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())


def _leaf_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)
    ]


@torch.no_grad()
def _scales(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    out: dict[str, float] = {}
    handles = []
    for name, m in _leaf_layers(model):

        def hook(_m, _i, o, name=name):
            out[name] = float(o.abs().mean())

        handles.append(m.register_forward_hook(hook))
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return out


def coord_check(
    build: Callable[[int], tuple[nn.Module, TrainConfig]],
    widths: Sequence[int],
    data: TaskData,
    steps: int = 5,
    batch: int = 64,
    seed: int = 0,
) -> CoordCheck:
    """For each width, ``build(width) -> (model, cfg)`` (the parametrized model and its
    training config, lr groups included); train ``steps`` updates with the one loop and
    record every layer's mean |output| on the first ``batch`` training inputs.

    Raises:
        ConfigError: fewer than two widths (no slope), ``steps < 1``.
    """
    widths = tuple(int(w) for w in widths)
    if len(set(widths)) < 2:
        raise ConfigError(f"a width sweep needs at least two widths, got {list(widths)}")
    if steps < 1:
        raise ConfigError(f"coord_check needs steps >= 1, got {steps}")
    x = data.train.x[:batch]
    scale: dict[int, list[dict[str, float]]] = {}
    names: tuple[str, ...] = ()
    for w in widths:
        model, cfg = build(w)
        names = tuple(n for n, _ in _leaf_layers(model))
        rows = [_scales(model, x)]

        def cb(m: nn.Module, ctx: StepContext, rows=rows) -> None:
            if ctx.step <= steps:
                rows.append(_scales(m, x))

        need = steps * cfg.batch_size  # one epoch of exactly `steps` updates
        if len(data.train) < need:
            raise ConfigError(
                f"coord_check needs {need} training examples for {steps} steps of "
                f"{cfg.batch_size}; the task has {len(data.train)}"
            )
        sub = replace(data, train=Split(data.train.x[:need], data.train.y[:need]))
        train(model, sub, replace(cfg, epochs=1, eval_every=0), seed, seed=seed, callbacks=[cb])
        scale[w] = rows[: steps + 1]
    slopes = [
        {n: loglog_slope(widths, [scale[w][t][n] for w in widths]) for n in names}
        for t in range(steps + 1)
    ]
    return CoordCheck(widths, names, scale, slopes)


def plot_coord_check(cc: CoordCheck, path: str, title: str = "") -> None:
    """One panel per step: mean |h| vs width (log-log), one line per layer, slope in the
    legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = len(cc.slopes)
    fig, axes = plt.subplots(1, steps, figsize=(2.6 * steps, 2.6), sharey=True)
    for t, ax in enumerate(axes if steps > 1 else [axes]):
        for n in cc.layers:
            ax.plot(
                cc.widths,
                [cc.scale[w][t][n] for w in cc.widths],
                "o-",
                ms=3,
                label=f"{n} ({cc.slopes[t][n]:+.2f})",
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"step {t}", fontsize=8)
        ax.set_xlabel("width", fontsize=8)
        ax.legend(fontsize=5)
    fig.suptitle(title, fontsize=9)
    from weightlab.figures import save_figure

    save_figure(fig, path, dpi=110)
