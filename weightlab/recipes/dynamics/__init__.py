"""Recipes of the ``dynamics`` family. Training dynamics: learning curves, weight movement, sharpness.

Every module in this package that defines a named
:class:`~weightlab.recipes.base.Recipe` subclass is registered automatically
(:mod:`weightlab.recipes.registry`); there is no list to edit.
"""
