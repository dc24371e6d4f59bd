"""Recipes of the ``adapters`` family. Parameter-efficient fine-tuning (the 'peft' category): LoRA and relatives.

Every module in this package that defines a named
:class:`~weightlab.recipes.base.Recipe` subclass is registered automatically
(:mod:`weightlab.recipes.registry`); there is no list to edit.
"""
