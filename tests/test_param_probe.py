"""param_probe: a probe of the parameters alone, one call for all population members."""

from __future__ import annotations

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.models import MLP, model_factory
from weightlab.population import MemberSpec, Population
from weightlab.train import Probe, train
from weightlab.train.config import OptimConfig, TrainConfig
from weightlab.train.probes import param_probe


def _norms_and_signs(calls: list[int]):
    def fn(params, init, md):
        calls.append(md)
        w = params["layers.0.weight"]
        lead = w.shape[:md]
        return {
            "fro": w.reshape(*lead, -1).norm(dim=-1),
            "moved": (w - init["layers.0.weight"]).reshape(*lead, -1).abs().sum(-1),
            "row_norms": w.norm(dim=-1),  # a vector per member
        }

    return fn


def test_population_calls_it_once_per_step_with_the_loops_values():
    data = load_dataset("teacher_linear", n_train=64, n_val=8, n_test=8, d_in=5, d_out=1)
    factory = model_factory(MLP, [5, 4, 1])
    specs = [MemberSpec(seed=s) for s in (0, 1, 2)]
    cfg = TrainConfig(epochs=6, batch_size=64, eval_every=3, optim=OptimConfig("sgd", lr=0.1))
    pop_calls, loop_calls = [], []
    pop = Population(factory, specs, dtype=torch.float64)
    probe = param_probe("w", 2, _norms_and_signs(pop_calls))
    rows = [r.probes for r in pop.fit(data, cfg, probes=(probe,))]
    assert pop_calls == [1, 1, 1, 1]  # steps 0, 2, 4, 6: once for all three members
    for spec, prow in zip(specs, rows, strict=True):
        loop_probe = param_probe("w", 2, _norms_and_signs(loop_calls))
        res = train(
            factory(spec.seed),
            data,
            cfg,
            0,
            seed=spec.seed,
            probes=(loop_probe,),
            dtype=torch.float64,
        )
        assert [r["step"] for r in prow] == [r["step"] for r in res.probes] == [0, 2, 4, 6]
        for a, b in zip(prow, res.probes, strict=True):
            assert a["w/fro"] == pytest.approx(b["w/fro"], rel=1e-12)
            assert a["w/moved"] == pytest.approx(b["w/moved"], rel=1e-9, abs=1e-12)
            assert len(a["w/row_norms"]) == 4
            assert a["w/row_norms"] == pytest.approx(b["w/row_norms"], rel=1e-12)
    assert set(loop_calls) == {0}
    assert rows[0][0]["w/moved"] == 0.0 and rows[0][-1]["w/moved"] > 0


def test_a_params_probe_needs_its_stacked_function():
    with pytest.raises(ConfigError, match="param_probe"):
        Probe("p", 1, lambda m, c: 0.0, "params")
    with pytest.raises(ConfigError, match="param_probe"):
        Probe("p", 1, lambda m, c: 0.0, "user", stacked=lambda p, i, d: 0.0)
