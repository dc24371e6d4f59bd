"""Linear probe: multinomial logistic regression on frozen features, as scikit-learn fits it.

The evaluator of "Random Teachers are Good Teachers" (Sarnthein et al. 2023, row [#33]):
"a strong improvement of the distilled student over its teacher in terms of probing
accuracy". A probe reads a representation's quality by the test accuracy of a linear
classifier trained on it.

Features are standardized with the *training* split's mean and (population, ``ddof = 0``)
standard deviation, a constant feature keeping scale 1 (scikit-learn's ``StandardScaler``).
The classifier minimizes scikit-learn's ``LogisticRegression`` objective with ``C = 1``:

    ½‖W‖²_F + C · Σ_i −log softmax(W x_i + b)_{y_i},

the intercept ``b`` unpenalized. With ``K > 2`` classes ``W`` is ``K × d`` (the symmetric
multinomial parametrization); with two classes it is ``1 × d`` and the loss is the binary
logistic loss of ``wᵀx + b`` (scikit-learn's ``coef_`` shapes). Solved by L-BFGS with a
backtracking line search (written here, with the closed-form gradient: ``torch.optim``'s
first use imports ``torch._dynamo``, seconds) in float64, the objective divided by the
number of examples for conditioning (same minimizer). The problem is strictly convex in
``W``, so the minimizer is unique and scikit-learn's coefficients are the reference
(``tests/test_probes_linear_probe.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from weightlab.errors import ConfigError, DataError

__all__ = ["TOL", "LinearProbe", "fit_logistic", "linear_probe", "standardize"]

#: L-BFGS stops when the objective's gradient (÷ n) has max-norm below this. On digits
#: (64 features, 10 classes) 1e-7 leaves the coefficients within 5e-5 of scikit-learn's
#: fully converged ones (1e-6: 4e-4; 1e-8: 7e-6 at 3x the evaluations).
TOL = 1e-7


@dataclass(frozen=True)
class LinearProbe:
    """A fitted probe.

    Attributes:
        accuracy: test accuracy (fraction) of the probe.
        train_accuracy: its accuracy on the training features.
        coef: ``(K, d)`` (``(1, d)`` for two classes) float64 coefficients, on the
            standardized features.
        intercept: ``(K,)`` (``(1,)``) float64 intercepts.
        mean, scale: the training statistics the features were standardized with.
        iterations: L-BFGS function evaluations used.
        grad_norm: the max-norm of the final gradient of the objective (÷ n).
    """

    accuracy: float
    train_accuracy: float
    coef: Tensor
    intercept: Tensor
    mean: Tensor
    scale: Tensor
    iterations: int
    grad_norm: float

    def predict(self, x: Tensor) -> Tensor:
        """Class predictions for raw (unstandardized) features ``x``."""
        z = (_as_features(x, "x") - self.mean) / self.scale
        return _predict(z, self.coef, self.intercept)


def _as_features(x: Tensor, name: str) -> Tensor:
    if x.dim() != 2:
        raise DataError(f"linear probe: {name} must be (n, d) features; got shape {tuple(x.shape)}")
    x = x.detach().to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise DataError(
            f"linear probe: {name} has non-finite values in {bad} row(s); the representation "
            "diverged or overflowed: probe a finite model"
        )
    return x


def standardize(train: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """``(train_z, *others_z, mean, scale)``: every array standardized with the training
    mean and population std (a zero std kept at 1, as scikit-learn's ``StandardScaler``)."""
    mean = train.mean(0)
    scale = train.std(0, correction=0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return ((train - mean) / scale, *((o - mean) / scale for o in others), mean, scale)


def _predict(z: Tensor, coef: Tensor, intercept: Tensor) -> Tensor:
    logits = z @ coef.T + intercept
    if coef.shape[0] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(1)


def _objective(
    w: Tensor, x1: Tensor, y: Tensor, onehot: Tensor | None, C: float, d: int
) -> tuple[float, Tensor]:
    """``(f, ∇f)`` of ``(C Σ log-loss + ½‖W‖²) / n`` at ``w = [W | b]`` (closed-form
    gradient: ``C (P − Y)ᵀ [X 1] + [W 0]``, all ÷ n)."""
    n = x1.shape[0]
    logits = x1 @ w.T
    if onehot is None:  # binary: one row, loss log(1 + e^{−(2y−1) z})
        z = logits[:, 0]
        loss = torch.nn.functional.softplus(z).sum() - (y * z).sum()
        resid = (torch.sigmoid(z) - y)[:, None]
    else:
        lse = torch.logsumexp(logits, 1)
        loss = (lse - (logits * onehot).sum(1)).sum()
        resid = torch.exp(logits - lse[:, None]) - onehot
    grad = C * resid.T @ x1
    grad[:, :d] += w[:, :d]
    f = (C * float(loss) + 0.5 * float((w[:, :d] ** 2).sum())) / n
    return f, grad / n


def _lbfgs(fun, w0: Tensor, max_iter: int, tol: float, history: int = 20):
    """L-BFGS (Nocedal & Wright 2006, Alg. 7.4/7.5: two-loop recursion) with a
    backtracking Armijo line search (c₁ = 1e-4), curvature pairs kept only when
    ``sᵀy > 0``. Returns ``(w, evaluations, final gradient max-norm)``."""
    w = w0.clone()
    f, g = fun(w)
    evals, ss, ys = 1, [], []
    for _ in range(max_iter):
        if float(g.abs().max()) < tol:
            break
        q = g.clone()
        alphas = []
        for s, y in zip(reversed(ss), reversed(ys), strict=True):
            a = float((s * q).sum()) / float((y * s).sum())
            alphas.append(a)
            q -= a * y
        if ss:
            q *= float((ss[-1] * ys[-1]).sum()) / float((ys[-1] * ys[-1]).sum())
        else:
            q /= max(float(g.norm()), 1.0)
        for (s, y), a in zip(zip(ss, ys, strict=True), reversed(alphas), strict=True):
            b = float((y * q).sum()) / float((y * s).sum())
            q += (a - b) * s
        direction = -q
        slope = float((g * direction).sum())
        if slope >= 0:  # not a descent direction: restart from steepest descent
            ss, ys = [], []
            direction, slope = -g, -float((g * g).sum())
        step = 1.0
        while True:
            w_new = w + step * direction
            f_new, g_new = fun(w_new)
            evals += 1
            if f_new <= f + 1e-4 * step * slope or step < 1e-20:
                break
            step *= 0.5
        s, y = w_new - w, g_new - g
        if float((s * y).sum()) > 1e-16:
            ss.append(s)
            ys.append(y)
            if len(ss) > history:
                ss.pop(0)
                ys.pop(0)
        if step < 1e-20:
            break
        w, f, g = w_new, f_new, g_new
    return w, evals, float(g.abs().max())


def fit_logistic(
    x: Tensor,
    y: Tensor,
    num_classes: int | None = None,
    C: float = 1.0,
    max_iter: int = 2000,
    tol: float = TOL,
) -> tuple[Tensor, Tensor, int, float]:
    """Minimize ``½‖W‖² + C Σ_i log-loss(W x_i + b, y_i)`` (module docstring) by float64
    L-BFGS; returns ``(coef, intercept, evaluations, final gradient max-norm ÷ n)``.

    Args:
        x: ``(n, d)`` features (used as given: standardize first for a probe).
        y: ``(n,)`` integer labels in ``[0, num_classes)``.
        num_classes: ``K`` (default ``max(y) + 1``); ``K = 2`` fits one coefficient row.
        C: inverse regularization strength (scikit-learn's ``C``), > 0.
        max_iter: L-BFGS iterations; tol: gradient max-norm at which it stops.
    """
    if not C > 0:
        raise ConfigError(f"logistic regression: C must be > 0; got {C}")
    x = _as_features(x, "x").cpu()
    y = y.detach().reshape(-1).long().cpu()
    n, d = x.shape
    if y.numel() != n:
        raise DataError(f"linear probe: {n} feature rows but {y.numel()} labels; pass one per row")
    k = int(num_classes if num_classes is not None else int(y.max()) + 1)
    if k < 2 or int(y.min()) < 0 or int(y.max()) >= k:
        raise DataError(f"linear probe: labels must lie in [0, {k}) with >= 2 classes")
    rows = 1 if k == 2 else k
    x1 = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1)
    onehot = None if rows == 1 else torch.nn.functional.one_hot(y, k).to(torch.float64)
    yf = y.to(torch.float64)

    def fun(w: Tensor) -> tuple[float, Tensor]:
        return _objective(w, x1, yf, onehot, C, d)

    w0 = torch.zeros(rows, d + 1, dtype=torch.float64)
    w, evals, gmax = _lbfgs(fun, w0, max_iter, tol)
    return w[:, :d].clone(), w[:, d].clone(), evals, gmax


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int | None = None,
    C: float = 1.0,
    max_iter: int = 2000,
    tol: float = TOL,
) -> LinearProbe:
    """Fit the probe on standardized training features, report its test accuracy.

    Non-finite features (a diverged representation) are a one-line
    :class:`~weightlab.errors.DataError`.
    """
    xtr, xte = _as_features(train_x, "train features"), _as_features(test_x, "test features")
    if xtr.shape[1] != xte.shape[1]:
        raise DataError(
            f"linear probe: train features have {xtr.shape[1]} columns, test {xte.shape[1]}"
        )
    ytr, yte = train_y.detach().reshape(-1).long().cpu(), test_y.detach().reshape(-1).long().cpu()
    k = num_classes if num_classes is not None else int(max(int(ytr.max()), int(yte.max()))) + 1
    ztr, zte, mean, scale = standardize(xtr.cpu(), xte.cpu())
    coef, intercept, evals, gnorm = fit_logistic(ztr, ytr, k, C=C, max_iter=max_iter, tol=tol)
    acc = float((_predict(zte, coef, intercept) == yte).double().mean())
    tr_acc = float((_predict(ztr, coef, intercept) == ytr).double().mean())
    return LinearProbe(acc, tr_acc, coef, intercept, mean, scale, evals, gnorm)
