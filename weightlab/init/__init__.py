"""Weight initializers that draw from an explicit generator."""

from weightlab.init.schemes import INIT_SCHEMES, init_module_

__all__ = ["INIT_SCHEMES", "init_module_"]
