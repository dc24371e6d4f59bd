"""Small reference models; every constructor takes an explicit seed."""

from weightlab.models.cnn1d import CNN1D
from weightlab.models.convnets import ResidualCNN, SmallCNN
from weightlab.models.factory import build, model_factory
from weightlab.models.local import LocallyConnected1d, PatchNet, PatchNetStack
from weightlab.models.mlp import MLP
from weightlab.models.resmlp import ResMLP
from weightlab.models.sequence import SeqCNN, SeqGRU, SeqTransformer

__all__ = [
    "CNN1D",
    "LocallyConnected1d",
    "MLP",
    "PatchNet",
    "PatchNetStack",
    "ResMLP",
    "ResidualCNN",
    "SeqCNN",
    "SeqGRU",
    "SeqTransformer",
    "SmallCNN",
    "build",
    "model_factory",
]
