"""Recipes of the ``sparsity`` family. Pruning and sparse training: masks, lottery tickets, random pruning.

Every module in this package that defines a named
:class:`~weightlab.recipes.base.Recipe` subclass is registered automatically
(:mod:`weightlab.recipes.registry`); there is no list to edit.
"""
