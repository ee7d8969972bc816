"""Tiny training runs shared by the analysis tests (tests/test_analysis_*.py), and their sanity.

:func:`make_run` trains a run once per test session (in-process, one thread) and caches its
directory: other test files import it (``from test_analysis_runs import make_run``), and since
this module is imported once, every file shares the cache. Methods under test are discovered
from the method registry (``core.methods``: every method with a grouping strategy), not listed
by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from selective_sharing.core import store
from selective_sharing.core.methods import methods_where

SS_METHODS = list(methods_where(is_selective=True))
IMAGE_DATASET = "mnist_context"

# Small enough to train in about a second of CPU each, large enough for several events. The
# synthetic runs pin min_silhouette so that ss_similarity merges some tasks and not others
# (the tests need both kinds of pair) whatever the default becomes.
OVERRIDES = {
    "synthetic": {
        "train.steps": 40,
        "warmup_steps": 10,
        "regroup_every": 10,
        "samples_per_task": 40,
        "n_tasks": 12,
        "n_groups": 3,
        "sketch_dim": 32,
        "window_bins": 8,
        "min_silhouette": 0.1,
        "train.threads": 1,
    },
    IMAGE_DATASET: {
        "train.steps": 12,
        "warmup_steps": 6,
        "regroup_every": 3,
        "n_train": 128,
        "n_test": 64,
        "probe_size": 32,
        "batch_size": 32,
        "conv_channels": (4, 8),
        "representation_dim": 16,
        "estimator_hidden": (16, 8),
        "sketch_dim": 32,
        "window_bins": 4,
        "train.threads": 1,
    },
}
_CACHE: dict[tuple[str, str], Path] = {}


def make_run(tmp_path_factory: pytest.TempPathFactory, dataset: str, method: str) -> Path:
    """Directory of a finished tiny run of ``method`` on ``dataset`` (trained once a session)."""
    key = (dataset, method)
    if key not in _CACHE:
        from selective_sharing.core.config import make_config
        from selective_sharing.core.training import train

        out = tmp_path_factory.getbasetemp() / "analysis_runs" / f"{dataset}_{method}"
        config = make_config(dataset, method, 0, overrides=OVERRIDES[dataset], out=str(out))
        train(config, progress=False)
        _CACHE[key] = out
    return _CACHE[key]


@pytest.mark.parametrize("method", SS_METHODS)
def test_synthetic_runs_have_several_events(tmp_path_factory, method):
    run = make_run(tmp_path_factory, "synthetic", method)
    manifest = store.read_manifest(run)
    assert manifest["status"] == "complete"
    assert len(store.list_events(run)) == 3  # events at steps 10, 20, 30 of 40
    if method == "ss_similarity":  # explain() needs merged and never-merged pairs
        n_groups = int(store.read_metrics(run)["n_groups"])
        assert 1 < n_groups < 12
