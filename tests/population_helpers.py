"""Helpers of the population-vs-loop equivalence tests (``test_population*.py``).

A population member must equal the same member trained alone by
:func:`weightlab.train.train`: in float64 at non-chaotic settings, weights and every
evaluation and probe value within ``rtol=RTOL, atol=ATOL``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from weightlab.core import take_snapshot
from weightlab.population import MemberSpec, Population, build_member
from weightlab.seeding import generator
from weightlab.train import train

RTOL, ATOL = 1e-4, 1e-6
F64 = torch.float64


def random_mask(shape, seed: int, density: float = 0.5) -> torch.Tensor:
    return (torch.rand(shape, generator=generator(seed)) < density).float()


def solo(factory, spec: MemberSpec, data, cfg, pop_seed: int = 0, **kw):
    """``(model, result)``: the member trained alone by the single-model loop in float64
    (``kw`` go to :func:`train`, e.g. ``probes``)."""
    model = build_member(factory, spec)
    if spec.optim is not None:
        cfg = replace(cfg, optim=spec.optim)
    ds = spec.data_seed if spec.data_seed is not None else pop_seed
    return model, train(model, data, cfg, data_seed=ds, seed=spec.seed, dtype=F64, **kw)


def close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, list):
        return torch.allclose(torch.tensor(a, dtype=F64), torch.tensor(b, dtype=F64), RTOL, ATOL)
    if math.isnan(a) and math.isnan(b):
        return True
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)


def assert_result_close(got, want) -> None:
    """Same evaluation steps, every :class:`EvalPoint` field, divergence and probe rows."""
    assert [p.step for p in got.history] == [p.step for p in want.history]
    for a, b in zip(got.history, want.history, strict=True):
        for f, va in a.to_dict().items():
            assert close(va, getattr(b, f)), (f, va, getattr(b, f))
        assert set(a.to_dict()) == set(b.to_dict())
    assert (got.diverged, got.diverged_step) == (want.diverged, want.diverged_step)
    assert [r["step"] for r in got.probes] == [r["step"] for r in want.probes]
    for ra, rb in zip(got.probes, want.probes, strict=True):
        assert set(ra) == set(rb)
        for k in ra:
            assert close(ra[k], rb[k]), (ra["step"], k, ra[k], rb[k])


def assert_state_close(got: dict, want: dict) -> None:
    """Same names; every tensor close, with the same dtype."""
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=RTOL, atol=ATOL, msg=k)


def check(factory, specs, data, cfg, pop_seed: int = 0, probes=(), **kw):
    """Population (float64) vs the loop, member by member: weights, results, pruned
    weights exactly zero. Returns ``(population, results, solo results)``."""
    pop = Population(factory, specs, data_seed=pop_seed, dtype=F64, **kw)
    results = pop.fit(data, cfg, probes=probes)
    solos = []
    for i, spec in enumerate(specs):
        model, ref = solo(factory, spec, data, cfg, pop_seed, probes=probes)
        if not ref.diverged:  # a diverged member's frozen weights hold inf/NaN
            assert_state_close(pop.state(i), take_snapshot(model))
        assert_result_close(results[i], ref)
        for name, mask in (spec.masks or {}).items():
            assert torch.all(pop.state(i)[name][mask == 0] == 0), name
        solos.append(ref)
    return pop, results, solos
