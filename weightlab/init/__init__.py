"""Weight initializers that draw from an explicit generator: the build-time init plans (and
the stacked drawer that replays them for a whole population), and the registry of every
scheme as ``init(shape, ctx)`` applied to any model through selectors."""

from weightlab.init.registry import (
    InitContext,
    Initializer,
    get_initializer,
    initialize,
    register,
    registered_schemes,
)
from weightlab.init.schemes import INIT_SCHEMES, init_module_, init_plan
from weightlab.init.stacked import draw_stacked

__all__ = [
    "INIT_SCHEMES",
    "InitContext",
    "Initializer",
    "draw_stacked",
    "get_initializer",
    "init_module_",
    "init_plan",
    "initialize",
    "register",
    "registered_schemes",
]
