"""OptimConfig serialization (population manifests, run hashes) and Schedule validation."""

from __future__ import annotations

import json

import pytest
from torch import nn

from weightlab.core.selectors import Selector
from weightlab.errors import ConfigError
from weightlab.train import OptimConfig, ParamGroup, Schedule


def test_optim_config_round_trips_through_json_with_groups_and_schedule():
    cfg = OptimConfig(
        "adamw",
        lr=3e-3,
        weight_decay=0.01,
        betas=(0.8, 0.99),
        groups=(
            ParamGroup(("layers.2.*",), lr_mult=0.25),
            ParamGroup(Selector(types=("linear",), param="bias", roles=("hidden",)), wd_mult=0.0),
        ),
        clip_norm=1.0,
        schedule=Schedule("cosine", warmup_steps=10, min_lr_ratio=0.1),
    )
    back = OptimConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and hash(back) == hash(cfg)


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"name": "lion"},
        {"groups": [{}]},
        {"groups": [{"match": {}}]},
        {"groups": ["layers.0.*"]},
        {"schedule": {"nope": 1}},
        {"schedule": {"kind": "step"}},  # a step schedule needs step_size
        {"betas": 3},
    ],
)
def test_malformed_optimizer_settings_are_one_line_config_errors(bad):
    with pytest.raises(ConfigError) as e:
        OptimConfig.from_dict(bad)
    assert "\n" not in str(e.value)


def test_group_selecting_by_module_class_cannot_be_saved():
    cfg = OptimConfig(groups=(ParamGroup(Selector(types=(nn.Linear,)), lr_mult=2.0),))
    with pytest.raises(ConfigError, match="type names"):
        cfg.to_dict()


def test_schedule_rejects_bad_settings_and_warmup_longer_than_the_run():
    with pytest.raises(ConfigError, match="warmup_steps"):
        Schedule(warmup_steps=-1)
    with pytest.raises(ConfigError, match="step_size"):
        Schedule("step")
    with pytest.raises(ConfigError, match="longer than the run"):
        Schedule(warmup_steps=101).check(100)
    Schedule(warmup_steps=100).check(100)
    s = Schedule("step", warmup_steps=2, step_size=3, gamma=0.5)
    assert [s.factor(i, 20) for i in range(8)] == [0.5, 1.0, 1, 1, 1, 0.5, 0.5, 0.5]
