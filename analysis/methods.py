"""What a run's method meant, read from its manifest.

Runs record the resolved :class:`~selective_sharing.core.methods.MethodSpec` of their method in
``manifest["method_spec"]``; analysis reads that instead of comparing method names (and
instead of importing the registry, which lives with the training code analysis must not
import). Manifests written before the spec was recorded get it derived from the method name,
here and nowhere else in analysis/: the rules below are those the registry held when such
runs were written, and tests/test_methods.py checks they still agree with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _legacy_spec(method: str) -> dict[str, Any]:
    """The spec of ``method`` for a manifest without ``method_spec`` (written before it was
    recorded), from the method's name."""
    partitions = {"random_groups": "random_sizes", "cosine_groups": "cosine_affinity",
                  "tag": "lookahead_affinity", "oracle": "true_groups"}
    partition = partitions.get(method)
    needs = None if partition is None else (
        "true_groups" if partition == "true_groups" else "reference_run")
    return {
        "name": method,
        "trunks": "per_task" if method == "stl" else "shared",
        "initial_partition": "shared" if method == "mtl_full" else "per_task",
        "strategy": method[3:] if method.startswith("ss_") else None,
        "partition": partition,
        "needs": needs,
    }


def run_method_spec(manifest: dict) -> dict[str, Any]:
    """The method spec a run recorded (``manifest["method_spec"]``), or for an older manifest
    the one derived from ``manifest["method"]``: keys ``name``, ``trunks``,
    ``initial_partition``, ``strategy``, ``partition``, ``needs``."""
    recorded = manifest.get("method_spec")
    if recorded is not None:
        return dict(recorded)
    return _legacy_spec(str(manifest.get("method", "")))


def initial_assignment(manifest: dict, n_tasks: int) -> np.ndarray:
    """(n_tasks,) int64: each task's estimator when the run started (before any event)."""
    if run_method_spec(manifest)["initial_partition"] == "shared":
        return np.zeros(n_tasks, np.int64)
    return np.arange(n_tasks, dtype=np.int64)


def trunk_per_task(manifest: dict) -> bool:
    """True when the run trained one trunk per task (``stl``), whose activation snapshot then
    concatenates the trunks' representations."""
    return run_method_spec(manifest)["trunks"] == "per_task"
