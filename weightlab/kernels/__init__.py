"""Kernels and infinite width, natively in PyTorch: the empirical NTK of any module, analytic
NNGP/NTK recursions, kernel and GP regression, and random-feature models."""
