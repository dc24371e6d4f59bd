"""Recipes of the ``init`` family. Initialization schemes and what they do to training.

Every module in this package that defines a named
:class:`~weightlab.recipes.base.Recipe` subclass is registered automatically
(:mod:`weightlab.recipes.registry`); there is no list to edit.
"""
