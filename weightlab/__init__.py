"""weightlab: the science and engineering of layer weights."""

from weightlab.errors import WeightlabError
from weightlab.malloc import tune_on_import

tune_on_import()  # glibc keeps freed tensor memory for reuse (weightlab.malloc)

__version__ = "0.1.0"
__all__ = ["WeightlabError", "__version__"]
