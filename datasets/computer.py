"""Computer survey (Lenk, DeSarbo, Green & Young 1996): 180 persons rate 20 computer profiles.

``lenk_data.mat`` holds ``Traindata`` (2880 x 15) and ``Testdata`` (720 x 15), person-major:
person ``p`` owns train rows ``16p .. 16p+15`` and test rows ``4p .. 4p+3``. Column 0 is a bias,
columns 1-13 are binary attributes coded +-1 (kept as +-1: already centred and on one scale),
column 14 is the rating 0-10. One ``rank`` task per person: its items are the person's labelled
rows and the target is the rating, standardized with the mean and standard deviation of all
training ratings (``extras["target_offset"]`` / ``extras["target_scale"]`` map it back to rating
units, in which RMSE and NDCG's gains are computed). The split is the file's own protocol.
The main metric is the rating RMSE over all test ratings (``pooled_rmse``), as published.
``computer_8`` is the same survey with the first 8 training items per person.
With ``val_fraction > 0`` each person's validation items are drawn from that person's training
items (the 16, or the first 8 with ``n_train_items=8``), after everything computed from the
training part, so no array changes with ``val_fraction`` beyond the rows' move.

The substitute (only with ``allow_substitute=True`` when the file is missing) is a GENERATED
survey of the same shape whose persons belong to latent segments: there ``groups`` holds the
segments; the real data has no known groups.
"""

from __future__ import annotations

import numpy as np

from .arrays import carve_validation, one_task_splits
from .base import DatasetError, MTLData, TaskSpec
from .options import VAL_FRACTION, Int, OneOf, check_option
from .paths import DataFileNotFoundError, find_data_file, verify_sha256
from .registry import register_dataset

FILENAME = "lenk_data.mat"
SHA256 = "e6cc1029fa15ba8135dfca0f6a4bfa75599b4d43fe77224ce6b07bf9cdeb3e0b"
SOURCE = (
    "the Computer Survey data of Lenk et al. (1996), lenk_data.mat as distributed with "
    "multi-task learning code (e.g. Argyriou, Evgeniou & Pontil's MTL feature learning)"
)
N_PERSONS, N_TRAIN_ITEMS, N_TEST_ITEMS, N_ATTRIBUTES = 180, 16, 4, 13


@register_dataset("computer")
def load_computer(
    *,
    profile: str = "quick",
    seed: int = 0,
    data_root=None,
    allow_substitute: bool = False,
    n_train_items: int = 16,
    n_segments: int = 3,
    val_fraction: float = 0.0,
) -> MTLData:
    """Load the Computer survey (real file) or, if asked and missing, a generated substitute.

    Parameters
    ----------
    profile : {"quick", "full"}
        Unused: the data is small.
    seed : int
        Seeds the substitute and the validation split; the real data's train/test split is the
        file's (fixed).
    data_root : str or path-like, optional
        Folder holding ``lenk_data.mat``.
    allow_substitute : bool
        Return the generated substitute when the file is missing, instead of raising.
    n_train_items : {16, 8}
        Training items per person: the file's 16, or the first 8 of them.
    n_segments : int
        Latent segments of the substitute (its true groups); ignored for the real data.
    val_fraction : float
        Share of each person's training items held out as the validation split, in [0, 0.5]:
        ``round(val_fraction * n_train_items)`` per person (at least 1 when > 0, always leaving
        one), drawn from ``default_rng([seed, VAL_STREAM])``. 0 (default): no validation split;
        ``provenance["val_fraction"]`` records it when > 0.

    Returns
    -------
    MTLData
        ``x`` ``(180 * n_train_items, 13)`` and ``(720, 13)``; 180 ``rank`` tasks.
    """
    return _load("computer", seed, data_root, allow_substitute, n_train_items, n_segments,
                 val_fraction)


def _load(dataset: str, seed: int, data_root, allow_substitute: bool, n_train_items: int,
          n_segments: int, val_fraction: float) -> MTLData:
    """:func:`load_computer`'s body; ``dataset`` names the registered dataset in errors."""
    check_option("n_train_items", n_train_items, OneOf((16, 8)), dataset)
    n_segments = check_option("n_segments", n_segments, Int(1, N_PERSONS), dataset)
    val_fraction = check_option("val_fraction", val_fraction, VAL_FRACTION, dataset)
    groups = None
    try:
        path = find_data_file(FILENAME, data_root, source_hint=SOURCE)
    except DataFileNotFoundError as err:
        if not allow_substitute:
            raise
        train, test, groups = _substitute(seed, n_segments)
        provenance = {
            "name": "computer",
            "variant": "substitute",
            "description": "generated survey of the same shape, NOT the real Computer data",
            "reason": str(err),
            "seed": seed,
            "n_segments": n_segments,
        }
    else:
        digest = verify_sha256(path, SHA256)
        train, test = _read(path)
        provenance = {"name": "computer", "variant": "real", "file": str(path), "sha256": digest}
    provenance["n_train_items"] = n_train_items
    data = _build(train, test, n_train_items, groups, provenance)
    return carve_validation(data, val_fraction, seed, per_task=True)


@register_dataset("computer_8")
def load_computer_8(
    *,
    profile: str = "quick",
    seed: int = 0,
    data_root=None,
    allow_substitute: bool = False,
    n_segments: int = 3,
    val_fraction: float = 0.0,
) -> MTLData:
    """The Computer survey with the first 8 of each person's 16 training items (the sparse
    setting of the literature's Computer results); otherwise exactly :func:`load_computer`."""
    return _load("computer_8", seed, data_root, allow_substitute, 8, n_segments, val_fraction)


def _read(path) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io  # lazily: scipy.io costs 0.3 s of import time

    mat = scipy.io.loadmat(path)
    expected = {"Traindata": N_PERSONS * N_TRAIN_ITEMS, "Testdata": N_PERSONS * N_TEST_ITEMS}
    for key, rows in expected.items():
        if key not in mat or mat[key].shape != (rows, N_ATTRIBUTES + 2):
            found = mat[key].shape if key in mat else "missing"
            raise DatasetError(f"{path}: {key} is {found}; expected ({rows}, {N_ATTRIBUTES + 2})")
    return mat["Traindata"].astype(np.float64), mat["Testdata"].astype(np.float64)


def _build(train, test, n_train_items, groups, provenance) -> MTLData:
    person_tr = np.repeat(np.arange(N_PERSONS), N_TRAIN_ITEMS)
    keep = np.tile(np.arange(N_TRAIN_ITEMS) < n_train_items, N_PERSONS)
    train, person_tr = train[keep], person_tr[keep]
    person_te = np.repeat(np.arange(N_PERSONS), N_TEST_ITEMS)
    attributes = slice(1, 1 + N_ATTRIBUTES)
    offset, scale = float(train[:, -1].mean()), float(train[:, -1].std())
    name = "computer" if n_train_items == N_TRAIN_ITEMS else f"computer_{n_train_items}"
    provenance["name"] = name  # the 8-item survey is its own dataset: computer_8
    data = MTLData(
        name=name,
        **one_task_splits((train[:, attributes].astype(np.float32),
                           (train[:, -1] - offset) / scale, person_tr),
                          (test[:, attributes].astype(np.float32),
                           (test[:, -1] - offset) / scale, person_te),
                          N_PERSONS),
        tasks=[TaskSpec(f"person_{p:03d}", "rank") for p in range(N_PERSONS)],
        groups=groups,
        provenance=provenance,
        main_metric="pooled_rmse",
        extras={"target_offset": offset, "target_scale": scale},
    )
    return data.validate()


def _substitute(seed: int, n_segments: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Survey rows laid out like the file, plus each person's segment ``(180,)``.

    All persons rate the same 20 random +-1 profiles; a person's part-worths are the segment's
    part-worths plus individual noise; ratings are rounded and clipped to 0-10.
    """
    rng = np.random.default_rng([seed, 11])
    profiles = rng.choice([-1.0, 1.0], size=(N_TRAIN_ITEMS + N_TEST_ITEMS, N_ATTRIBUTES))
    segment = np.arange(N_PERSONS) * n_segments // N_PERSONS
    rng.shuffle(segment)
    centres = rng.normal(0, 0.8, size=(n_segments, N_ATTRIBUTES))
    worths = centres[segment] + rng.normal(0, 0.25, size=(N_PERSONS, N_ATTRIBUTES))
    ratings = 5 + worths @ profiles.T + rng.normal(0, 0.7, size=(N_PERSONS, len(profiles)))
    ratings = np.clip(np.round(ratings), 0, 10)

    def rows(items: slice) -> np.ndarray:
        x = np.tile(profiles[items], (N_PERSONS, 1))
        bias = np.ones((len(x), 1))
        return np.hstack([bias, x, ratings[:, items].reshape(-1, 1)])

    return rows(slice(0, N_TRAIN_ITEMS)), rows(slice(N_TRAIN_ITEMS, None)), segment
