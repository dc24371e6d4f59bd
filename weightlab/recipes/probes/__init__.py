"""Recipes of the ``probes`` family. Reading representations and weights (the 'representation' category).

Every module in this package that defines a named
:class:`~weightlab.recipes.base.Recipe` subclass is registered automatically
(:mod:`weightlab.recipes.registry`); there is no list to edit.
"""
