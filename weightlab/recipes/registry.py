"""The recipe registry."""

from __future__ import annotations

from weightlab.errors import ConfigError
from weightlab.recipes.base import Recipe
from weightlab.recipes.lottery_ticket import LotteryTicket

RECIPES: dict[str, type[Recipe]] = {r.name: r for r in (LotteryTicket,)}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(
            f"unknown recipe {name!r}; choose one of: {', '.join(sorted(RECIPES))} (see 'weightlab recipes')"
        )
    return RECIPES[name]()
