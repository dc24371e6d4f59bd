"""Sweeps: grids of a recipe's configs as ordinary run directories, run locally (small runs
batched into shared populations) or on Ray, recorded in ``ROOT/sweeps/<id>.json``."""
