"""Recipes of the ``data`` family. Data-centric methods: scoring, pruning and distilling training examples.

Every module in this package that defines a named
:class:`~weightlab.recipes.base.Recipe` subclass is registered automatically
(:mod:`weightlab.recipes.registry`); there is no list to edit.
"""
