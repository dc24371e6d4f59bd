"""Paper claims reproduced as one-command recipes."""

from weightlab.recipes.base import ClaimResult, Recipe, RecipeConfig
from weightlab.recipes.registry import RECIPES, get_recipe
from weightlab.recipes.runner import run_recipe

__all__ = ["RECIPES", "ClaimResult", "Recipe", "RecipeConfig", "get_recipe", "run_recipe"]
