"""Paper claims reproduced as one-command recipes, in family subpackages
(``sparsity``, ``init``, ``kernels``, ``adapters``, ``probes``, ``quant``, ``growth``,
``dynamics``, ``data``); the registry discovers them (:mod:`weightlab.recipes.registry`)."""

from weightlab.recipes.base import FAMILIES, ClaimResult, Recipe, RecipeConfig
from weightlab.recipes.registry import all_recipes, get_recipe, recipes_by_family
from weightlab.recipes.runner import run_recipe

__all__ = [
    "FAMILIES",
    "RECIPES",
    "ClaimResult",
    "Recipe",
    "RecipeConfig",
    "all_recipes",
    "get_recipe",
    "recipes_by_family",
    "run_recipe",
]


def __getattr__(attr: str):
    if attr == "RECIPES":  # discovered on first use
        return all_recipes()
    raise AttributeError(attr)
