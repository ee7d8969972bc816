"""The method registry (core.methods): every registered method is checked here, generated from
the registry (timm's habit), and what analysis/ derives for manifests written before the spec
was recorded must agree with the registry."""

from __future__ import annotations

import numpy as np
import pytest
from selective_sharing.analysis.methods import initial_assignment, run_method_spec
from selective_sharing.core import make_config
from selective_sharing.core.config import METHODS, ConfigError
from selective_sharing.core.grouping.registry import STRATEGY_USES
from selective_sharing.core.methods import METHOD_SPECS, MethodSpec, method_spec, methods_where

ALL = list(METHOD_SPECS)


def test_config_methods_are_the_registry_in_table_order() -> None:
    assert METHODS == tuple(METHOD_SPECS)
    assert METHODS[:3] == ("stl", "mtl", "mtl_full")


@pytest.mark.parametrize("method", ALL)
def test_legacy_manifest_gives_the_registered_spec(method: str) -> None:
    spec = method_spec(method)
    assert run_method_spec({"method": method}) == spec.to_dict()
    assert run_method_spec({"method": "x", "method_spec": spec.to_dict()}) == spec.to_dict()
    for manifest in ({"method": method}, {"method_spec": spec.to_dict()}):
        np.testing.assert_array_equal(initial_assignment(manifest, 5), spec.initial_assignment(5))


@pytest.mark.parametrize("method", ALL)
def test_config_follows_the_spec(method: str) -> None:
    spec = method_spec(method)
    config = make_config("synthetic", method, 0)
    assert config.is_selective == spec.is_selective
    if spec.is_selective:
        assert config.grouping.strategy == spec.strategy
        assert spec.strategy in STRATEGY_USES  # a strategy core.grouping knows
    assert spec.trunk_copies(4) == (4 if method == "stl" else 1)
    assert spec.initial_assignment(4).dtype == np.int64


def test_spec_shapes_per_family() -> None:
    assert methods_where(is_selective=True) == ("ss_similarity", "ss_variance", "ss_kmeans")
    assert methods_where(needs="reference_run") == ("random_groups", "cosine_groups", "tag")
    assert methods_where(needs="true_groups") == ("oracle",)
    assert methods_where(records_affinity=True) == ("cosine_groups", "tag")
    np.testing.assert_array_equal(method_spec("mtl_full").initial_assignment(3), [0, 0, 0])
    np.testing.assert_array_equal(method_spec("mtl").initial_assignment(3), [0, 1, 2])


def test_unknown_method_and_bad_spec_fail_with_the_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"invalid method='nope': method must be one of \['stl'"):
        method_spec("nope")
    with pytest.raises(ValueError, match=r"trunks='two': trunks must be one of \['shared', 'per_task'\]"):
        MethodSpec("x", "bad", trunks="two")
    with pytest.raises(ValueError, match="not both"):
        MethodSpec("x", "bad", strategy="similarity", partition="true_groups")


@pytest.mark.parametrize("method", ALL)
def test_new_manifest_records_the_resolved_spec(method: str) -> None:
    from selective_sharing.core.rundir import load_data, new_manifest

    config = make_config("synthetic", method, 0, overrides={"samples_per_task": 10})
    manifest = new_manifest(config, load_data(config, None), threads=1)
    assert manifest["method_spec"] == method_spec(method).to_dict()
    assert "summary" not in manifest["method_spec"]
