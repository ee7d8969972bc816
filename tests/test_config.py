"""Bad configuration fails before training, naming the field, the value and the allowed values."""

from __future__ import annotations

import pytest

from selective_sharing.core.config import (ConfigError, RunConfig, config_from_dict,
                                           make_config)


@pytest.mark.parametrize(
    "kwargs,overrides,message",
    [
        ({"method": "ss_magic"}, {}, "invalid method='ss_magic': method must be one of ['stl', "),
        ({}, {"strategy": "nearest"}, "invalid strategy='nearest': strategy must be one of ["),
        ({}, {"distance": "euclid"}, "invalid distance='euclid': distance must be one of ["),
        ({}, {"train.steps": 0}, "invalid steps=0: steps must be a positive integer"),
        ({}, {"batch_size": -4}, "invalid batch_size=-4: batch_size must be a positive integer"),
        ({}, {"threshold": 2.5}, "invalid threshold=2.5: threshold must be None or a distance "
                                 "in [0, 2]"),
        ({}, {"threshold": -0.1}, "invalid threshold=-0.1"),
        ({}, {"min_silhouette": 3}, "invalid min_silhouette=3: min_silhouette must be in [-1, 1]"),
        ({}, {"max_group_size": 0}, "invalid max_group_size=0: max_group_size must be None or a "
                                    "positive integer"),
        ({}, {"signal": "last_layer"}, "invalid signal='last_layer': signal must be one of "
                                       "['first_layer', 'all_params']"),
        ({}, {"merge": "mean"}, "invalid merge='mean': merge must be one of ['average', 'best', "
                                "'first']"),
        ({}, {"branch_init": "random"}, "invalid branch_init='random'"),
        ({"profile": "huge"}, {}, "invalid profile='huge': profile must be one of ['quick', "
                                  "'full']"),
        ({}, {"warmup_steps": 500}, "invalid warmup_steps=500: warmup_steps must be smaller "
                                    "than train.steps"),
        ({}, {"model.depth": 3}, "invalid --set model.depth=3"),
    ],
)
def test_bad_values_fail_with_field_value_and_allowed(kwargs, overrides, message) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(**{"dataset": "synthetic", **kwargs}, overrides=overrides)
    assert message in str(err.value)


def test_set_values_are_parsed_and_routed_to_their_section() -> None:
    cfg = make_config("synthetic", "ss_variance", 2, overrides={
        "distance": "cosine", "train.steps": "120", "noise": "0.5", "threshold": "null",
        "estimator_hidden": "[16, 8]"})
    assert cfg.grouping.distance == "cosine" and cfg.grouping.strategy == "variance"
    assert cfg.train.steps == 120 and cfg.grouping.threshold is None
    assert cfg.model.estimator_hidden == (16, 8)
    assert cfg.data.options == {"noise": 0.5}
    assert cfg.out == "runs/synthetic/ss_variance/seed2"


def test_config_round_trips_through_a_dict() -> None:
    cfg = make_config("synthetic", "ss_kmeans", 1, overrides={"estimator_hidden": "[16, 8]"})
    assert config_from_dict(cfg.to_dict()) == cfg
    assert isinstance(RunConfig().to_dict()["grouping"], dict)
