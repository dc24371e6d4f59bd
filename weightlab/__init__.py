"""weightlab: the science and engineering of layer weights."""

from weightlab.errors import WeightlabError

__version__ = "0.1.0"
__all__ = ["WeightlabError", "__version__"]
