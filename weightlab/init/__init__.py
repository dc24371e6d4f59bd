"""Weight initializers that draw from an explicit generator, and the stacked drawer that
replays them for a whole population at once."""

from weightlab.init.schemes import INIT_SCHEMES, init_module_, init_plan
from weightlab.init.stacked import draw_stacked

__all__ = ["INIT_SCHEMES", "draw_stacked", "init_module_", "init_plan"]
