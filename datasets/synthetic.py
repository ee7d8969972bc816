"""Synthetic regression with planted task groups (Kang, Grauman & Sha 2011 recipe).

``variant="kang"``: ``n_groups`` groups of tasks; group ``g`` draws a weight direction
``w_g ~ N(0, I)``; task ``t`` of group ``g`` uses ``w_t = s_t * w_g + e_t`` with a scale
``s_t ~ U(0.5, 1.5)`` and a perturbation ``e_t ~ N(0, task_spread^2 I)``. Related tasks therefore
share a weight *direction*, not a scale (what cosine distances detect).

``variant="overlap"`` (GO-MTL style, Kumar & Daume 2012): ``n_groups`` latent basis tasks
``L`` of shape ``(n_features, n_groups)``; each task is a sparse combination ``w_t = L s_t + e_t``
of its dominant basis (weight ``U(0.8, 1.2)``) and, with probability 1/2, one other basis
(weight ``U(0.2, 0.5)``). The true group is the dominant basis.

Every task has its OWN samples ``x ~ N(0, I)`` (each sample labelled for exactly one task) and
``y = x . w_t + noise * ||w_t|| * N(0, 1)``: ``noise`` is relative to the task's signal std
(``||w_t||`` for standard normal inputs). Inputs are standardized with training statistics, and
the targets globally (one offset and scale for all tasks; ``extras["target_scale"]`` and
``extras["target_offset"]`` map back to generator units).

``val_fraction > 0`` carves a validation split out of the training samples *per task* (each task
has its own samples, so this is one-dataset-per-task data: every task keeps the same share), from
a random stream of its own; the statistics above are computed on the whole training part
(train + val) first, so no array changes with ``val_fraction`` beyond the rows' move.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .arrays import carve_validation, one_task_splits, standardize
from .base import MTLData, TaskSpec
from .options import VAL_FRACTION, Int, OneOf, Real, check_option, check_options
from .registry import register_dataset

GENERATORS = ("kang", "overlap")


@register_dataset("synthetic")
def load_synthetic(
    *,
    profile: str = "quick",
    seed: int = 0,
    data_root=None,
    allow_substitute: bool = False,
    variant: str = "kang",
    n_tasks: int = 30,
    n_groups: int = 3,
    n_features: int = 21,
    samples_per_task: int = 50,
    test_per_task: int = 100,
    noise: float = 0.1,
    task_spread: float = 0.1,
    val_fraction: float = 0.0,
) -> MTLData:
    """Generate the synthetic grouped regression problem.

    Parameters
    ----------
    profile, data_root, allow_substitute
        Unused: the data is generated; both profiles use the same sizes (the prototype in
        the method's description recovered the groups with 50 samples per task; 15 was too noisy).
    seed : int
        Seeds weights, inputs and noise.
    variant : {"kang", "overlap"}
        Disjoint groups sharing a direction, or GO-MTL-style overlapping combinations.
    n_tasks, n_groups, n_features : int
        30 tasks in 3 groups with 21 features by default (Kang et al. 2011: 20 + bias).
    samples_per_task, test_per_task : int
        Training and test samples of each task (each task has its own samples).
    noise : float
        Label noise std as a fraction of each task's signal std (default 0.1).
    task_spread : float
        Std of each task's weight perturbation around its group's direction (weights have unit
        variance per coordinate); larger values blur the groups.
    val_fraction : float
        Share of each task's training samples held out as the validation split, in [0, 0.5]:
        ``round(val_fraction * samples_per_task)`` per task, at least 1 when > 0 (and always
        leaving one), drawn from ``default_rng([seed, VAL_STREAM])``. Standardization and the
        target offset/scale use the whole training part (train + val). 0 (default): no
        validation split. The test split never depends on it; ``provenance["val_fraction"]``
        records it when > 0.

    Returns
    -------
    MTLData
        ``x`` shape ``(n_tasks * samples_per_task, n_features)``; ``groups`` the planted
        groups ``(n_tasks,)``; ``extras["true_weights"]`` ``(n_tasks, n_features)`` in
        generator units; ``extras["basis_codes"]`` ``(n_tasks, n_groups)``: each task's
        weights on the group directions / basis tasks (one nonzero per row for ``kang``).
    """
    options = check_options(
        "synthetic",
        variant=(variant, OneOf(GENERATORS)),
        n_tasks=(n_tasks, Int(2)),
        n_groups=(n_groups, Int(1, n_tasks)),  # reached only once n_tasks passed
        n_features=(n_features, Int(1)),
        samples_per_task=(samples_per_task, Int(2)),
        test_per_task=(test_per_task, Int(1)),
        noise=(noise, Real(0.0)),
        task_spread=(task_spread, Real(0.0)),
    )
    val_fraction = check_option("val_fraction", val_fraction, VAL_FRACTION, "synthetic")
    return carve_validation(_generate(seed, options), val_fraction, seed, per_task=True)


def _generate(seed: int, options: dict[str, Any]) -> MTLData:
    """:func:`load_synthetic` on its checked ``options``, recorded in the provenance."""
    n_tasks, n_groups, noise = options["n_tasks"], options["n_groups"], options["noise"]
    rng = np.random.default_rng(seed)
    # Contiguous, balanced blocks: task t belongs to group floor(t * G / T).
    groups = np.arange(n_tasks) * n_groups // n_tasks
    make = _kang_weights if options["variant"] == "kang" else _overlap_weights
    weights, codes = make(rng, groups, n_groups, options["n_features"], options["task_spread"])
    x_tr, y_tr, t_tr = _sample(rng, weights, options["samples_per_task"], noise)
    x_te, y_te, t_te = _sample(rng, weights, options["test_per_task"], noise)
    x_tr, x_te, _, _ = standardize(x_tr, x_te)
    offset, scale = float(y_tr.mean()), float(y_tr.std())
    data = MTLData(
        name="synthetic",
        **one_task_splits((x_tr, (y_tr - offset) / scale, t_tr),
                          (x_te, (y_te - offset) / scale, t_te), n_tasks),
        tasks=[TaskSpec(f"task_{t:02d}", "regression") for t in range(n_tasks)],
        groups=groups.astype(np.int64),
        provenance={"name": "synthetic", "variant": "synthetic", "seed": seed,
                    "generator": options},
        main_metric="rmse",
        extras={
            "true_weights": weights.astype(np.float32),
            "basis_codes": codes.astype(np.float32),
            "target_offset": offset,
            "target_scale": scale,
        },
    )
    return data.validate()


def _kang_weights(rng, groups, n_groups, n_features, spread) -> np.ndarray:
    directions = rng.standard_normal((n_groups, n_features))
    scales = rng.uniform(0.5, 1.5, size=(len(groups), 1))
    perturbation = spread * rng.standard_normal((len(groups), n_features))
    codes = np.zeros((len(groups), n_groups))
    codes[np.arange(len(groups)), groups] = scales[:, 0]
    return codes @ directions + perturbation, codes


def _overlap_weights(rng, groups, n_groups, n_features, spread) -> np.ndarray:
    basis = rng.standard_normal((n_groups, n_features))
    codes = np.zeros((len(groups), n_groups))
    codes[np.arange(len(groups)), groups] = rng.uniform(0.8, 1.2, size=len(groups))
    if n_groups > 1:
        # A secondary basis, never the dominant one: shift by 1..G-1 modulo G.
        other = (groups + rng.integers(1, n_groups, size=len(groups))) % n_groups
        share = rng.uniform(0.2, 0.5, size=len(groups)) * (rng.random(len(groups)) < 0.5)
        codes[np.arange(len(groups)), other] = share
    perturbation = spread * rng.standard_normal((len(groups), n_features))
    return codes @ basis + perturbation, codes


def _sample(rng, weights: np.ndarray, per_task: int, noise: float):
    """Inputs ``(T * per_task, d)``, targets ``(T * per_task,)`` and task index, task-major."""
    n_tasks, n_features = weights.shape
    task = np.repeat(np.arange(n_tasks), per_task)
    x = rng.standard_normal((task.size, n_features))
    signal = np.einsum("nd,nd->n", x, weights[task])
    y = signal + noise * np.linalg.norm(weights, axis=1)[task] * rng.standard_normal(task.size)
    return x, y, task
