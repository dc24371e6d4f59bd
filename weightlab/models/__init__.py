"""Small reference models; every constructor takes an explicit seed."""

from weightlab.models.cnn1d import CNN1D
from weightlab.models.factory import build, model_factory
from weightlab.models.mlp import MLP

__all__ = ["CNN1D", "MLP", "build", "model_factory"]
