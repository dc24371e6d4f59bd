"""Recipes of the ``kernels`` family. Random features, NTK and other kernel views of wide networks.

Every module in this package that defines a named
:class:`~weightlab.recipes.base.Recipe` subclass is registered automatically
(:mod:`weightlab.recipes.registry`); there is no list to edit.
"""
