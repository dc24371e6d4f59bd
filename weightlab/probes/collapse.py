"""Neural-collapse metrics NC1–NC4 and the imbalanced-MSE orthogonal-frame geometry [#73].

Definitions follow Papyan, Han & Donoho (2020), "Prevalence of neural collapse during the
terminal phase of deep learning training" (PNAS), Sec. 3, for features ``h_i`` of the
last layer's input, labels ``y_i`` in ``K`` classes and the last layer's weight ``W``
(``K × d``):

- class means ``μ_k = mean_{y_i = k} h_i``, global mean ``μ_G = mean_i h_i``;
  within-class covariance ``Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ``, between-class
  covariance ``Σ_B = (1/K) Σ_k (μ_k − μ_G)(μ_k − μ_G)ᵀ``;
- **NC1** (variability collapse): ``tr(Σ_W Σ_B⁺) / K`` (Σ_B⁺ the Moore–Penrose pseudo-inverse);
- **NC2** (convergence to a simplex ETF): for the centred means ``m_k = μ_k − μ_G``,
  equinorm ``std_k ||m_k|| / mean_k ||m_k||``, equiangularity: the mean and std over
  pairs ``k ≠ l`` of ``cos(m_k, m_l)``, whose ETF value is ``−1/(K−1)``; and the distance
  ``|| MᵀM/||MᵀM||_F − (I − 11ᵀ/K)/||I − 11ᵀ/K||_F ||_F`` to the simplex ETF Gram matrix
  (Zhu et al. 2021, Eq. 8);
- **NC3** (self-duality): ``|| W/||W||_F − Mᵀ/||M||_F ||_F`` with ``M = [m_1 … m_K]``;
- **NC4** (nearest class centre): the fraction of examples whose classifier prediction
  ``argmax_k (W h + b)_k`` equals ``argmin_k ||h − μ_k||``.

Imbalanced MSE, bias-free (Dang et al. 2023, "Neural Collapse in Deep Linear Networks: From
Balanced to Imbalanced Data", the abstract: "convergence of the last-layer features and
classifiers to a geometry consisting of orthogonal vectors, whose lengths depend on the
amount of data in their corresponding classes"): the *uncentred* class means ``μ_k`` form an
orthogonal frame with class-size-dependent norms. :func:`orthogonal_frame` reports the mean
``|cos(μ_k, μ_l)|`` over pairs, the distance ``|| G/||G||_F − D/||D||_F ||_F`` of their Gram
matrix ``G = [μ_kᵀ μ_l]`` to the orthogonal frame with the same norms (``D = diag(G)``),
and the Spearman correlation between ``||μ_k||`` and the class sizes ``n_k``. (The paper's
closed-form lengths depend on the weight decay and depth; the probe compares with the
nearest orthogonal frame instead, so it needs no training hyperparameters.)

Every metric is computed in float64 on detached tensors; nothing here touches a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from weightlab.errors import DataError


def _check(features: torch.Tensor, labels: torch.Tensor, num_classes: int | None) -> int:
    if features.ndim != 2:
        raise DataError(
            f"features must be (examples, dim); got shape {tuple(features.shape)}: flatten "
            "or pool them first"
        )
    if labels.ndim != 1 or len(labels) != len(features):
        raise DataError(
            f"labels must be ({len(features)},) class indices, got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point():
        raise DataError("labels must be integer class indices, got floats")
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    counts = torch.bincount(labels.long().cpu(), minlength=k)
    if len(counts) > k or k < 2:
        raise DataError(f"labels must lie in [0, {k}) with >= 2 classes; pass num_classes")
    empty = [i for i, c in enumerate(counts.tolist()) if c == 0]
    if empty:
        raise DataError(
            f"class(es) {empty} have no examples; neural-collapse metrics need every class"
        )
    return k


def class_means(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means ``(K, d)`` and class sizes ``(K,)`` in float64."""
    k = _check(features, labels, num_classes)
    h = features.detach().to(torch.float64)
    y = labels.long().to(h.device)
    counts = torch.bincount(y, minlength=k).to(torch.float64)
    sums = torch.zeros(k, h.shape[1], dtype=torch.float64, device=h.device).index_add_(0, y, h)
    return sums / counts[:, None], counts


def _offdiag(c: torch.Tensor) -> torch.Tensor:
    k = c.shape[0]
    return c[~torch.eye(k, dtype=torch.bool, device=c.device)]


def _cosines(m: torch.Tensor) -> torch.Tensor:
    u = m / m.norm(dim=1, keepdim=True).clamp_min(torch.finfo(m.dtype).tiny)
    return u @ u.T


@dataclass(frozen=True)
class CollapseMetrics:
    """NC1–NC4 of one layer's features (module docstring). ``nc4`` is None without a
    classifier; ``nc3`` is None without the classifier's weight."""

    name: str
    num_classes: int
    nc1: float
    equinorm: float  # std/mean of the centred class-mean norms
    cos_mean: float  # mean pairwise cosine of centred class means (ETF: -1/(K-1))
    cos_std: float
    etf_distance: float
    nc3: float | None
    nc4: float | None

    @property
    def etf_cosine(self) -> float:
        return -1.0 / (self.num_classes - 1)

    def to_dict(self) -> dict:
        return {**asdict(self), "etf_cosine": self.etf_cosine}


@dataclass(frozen=True)
class OrthogonalFrame:
    """The imbalanced-MSE geometry of uncentred class means (module docstring)."""

    name: str
    abs_cos_mean: float
    frame_distance: float
    norms: tuple[float, ...]
    class_sizes: tuple[int, ...]
    norm_size_spearman: float | None  # None when every class has the same size

    def to_dict(self) -> dict:
        d = asdict(self)
        d["norms"], d["class_sizes"] = list(self.norms), list(self.class_sizes)
        return d


def nc1(features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> float:
    """``tr(Σ_W Σ_B⁺) / K`` (Papyan et al. 2020, Sec. 3, NC1)."""
    mu, counts = class_means(features, labels, num_classes)
    h = features.detach().to(torch.float64)
    y = labels.long().to(h.device)
    k = mu.shape[0]
    within = h - mu[y]
    sigma_w = within.T @ within / len(h)
    centred = mu - h.mean(0)
    sigma_b = centred.T @ centred / k
    return float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / k)


def collapse_metrics(
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    *,
    num_classes: int | None = None,
    name: str = "",
) -> CollapseMetrics:
    """NC1–NC4 (module docstring) of ``features`` ``(N, d)`` with ``labels`` ``(N,)``;
    ``weight`` ``(K, d)`` and optional ``bias`` ``(K,)`` of the classifier reading them
    (NC3 and NC4). ``name``: the layer's module path, for the result."""
    mu, _ = class_means(features, labels, num_classes)
    k = mu.shape[0]
    h = features.detach().to(torch.float64)
    m = mu - h.mean(0)
    norms = m.norm(dim=1)
    cos = _offdiag(_cosines(m))
    gram = m @ m.T
    etf = torch.eye(k, dtype=torch.float64, device=h.device) - 1.0 / k
    etf_dist = (gram / gram.norm() - etf / etf.norm()).norm()
    nc3 = nc4 = None
    if weight is not None:
        w = weight.detach().to(torch.float64).to(h.device)
        if w.shape != (k, h.shape[1]):
            raise DataError(
                f"classifier weight must be ({k}, {h.shape[1]}) (classes × feature dim); "
                f"got {tuple(w.shape)}"
            )
        nc3 = float((w / w.norm() - m / m.norm()).norm())
        logits = h @ w.T
        if bias is not None:
            logits = logits + bias.detach().to(torch.float64).to(h.device)
        ncc = torch.cdist(h, mu).argmin(1)
        nc4 = float((logits.argmax(1) == ncc).to(torch.float64).mean())
    return CollapseMetrics(
        name=name,
        num_classes=k,
        nc1=nc1(features, labels, k),
        equinorm=float(norms.std() / norms.mean()),
        cos_mean=float(cos.mean()),
        cos_std=float(cos.std()),
        etf_distance=float(etf_dist),
        nc3=nc3,
        nc4=nc4,
    )


def spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman rank correlation (average ranks for ties); None when either is constant."""
    from scipy.stats import spearmanr

    a, b = a.detach().double().cpu().numpy(), b.detach().double().cpu().numpy()
    if len(set(a.tolist())) < 2 or len(set(b.tolist())) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def orthogonal_frame(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int | None = None,
    name: str = "",
) -> OrthogonalFrame:
    """The imbalanced-MSE NC2 variant (module docstring; Dang et al. 2023): uncentred class
    means' mean ``|cos|``, Gram distance to the orthogonal frame with their norms, and the
    Spearman correlation of norms with class sizes."""
    mu, counts = class_means(features, labels, num_classes)
    gram = mu @ mu.T
    diag = torch.diag(torch.diagonal(gram))
    dist = (gram / gram.norm() - diag / diag.norm()).norm()
    norms = mu.norm(dim=1)
    return OrthogonalFrame(
        name=name,
        abs_cos_mean=float(_offdiag(_cosines(mu)).abs().mean()),
        frame_distance=float(dist),
        norms=tuple(float(v) for v in norms),
        class_sizes=tuple(int(c) for c in counts),
        norm_size_spearman=spearman(norms, counts),
    )


@torch.no_grad()
def classifier_inputs(model: torch.nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """The input of the ``nn.Linear`` at module path ``layer`` when ``model`` reads ``x``
    (one eval-mode forward under ``no_grad`` with a forward pre-hook; the model's mode is
    restored and its weights are untouched)."""
    from weightlab.errors import ConfigError

    modules = dict(model.named_modules())
    if layer not in modules or not isinstance(modules[layer], torch.nn.Linear):
        linears = [n for n, m in modules.items() if isinstance(m, torch.nn.Linear)]
        raise ConfigError(
            f"layer {layer!r} is not a Linear module of this model; its Linear layers are: "
            f"{', '.join(linears) or 'none'}"
        )
    seen: list[torch.Tensor] = []
    handle = modules[layer].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        handle.remove()
        model.train(was_training)
    return seen[0].detach().reshape(len(x), -1)


def collapse_probe(
    model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, layer: str
) -> CollapseMetrics:
    """NC1–NC4 of the features entering the classifier ``layer`` (an ``nn.Linear``; its
    weight and bias give NC3 and NC4) on inputs ``x`` with ``labels``."""
    feats = classifier_inputs(model, x, layer)
    lin = dict(model.named_modules())[layer]
    return collapse_metrics(feats, labels, lin.weight, lin.bias, name=layer)
