"""Computer survey (Lenk, DeSarbo, Green & Young 1996): 180 persons rate 20 computer profiles.

``lenk_data.mat`` holds ``Traindata`` (2880 x 15) and ``Testdata`` (720 x 15), person-major:
person ``p`` owns train rows ``16p .. 16p+15`` and test rows ``4p .. 4p+3``. Column 0 is a bias,
columns 1-13 are binary attributes coded +-1 (kept as +-1: already centred and on one scale),
column 14 is the rating 0-10. One ``rank`` task per person: its items are the person's labelled
rows and the target is the rating (kept in rating units). The split is the file's own protocol.

The substitute (only with ``allow_substitute=True`` when the file is missing) is a GENERATED
survey of the same shape whose persons belong to latent segments: there ``groups`` holds the
segments; the real data has no known groups.
"""

from __future__ import annotations

import numpy as np

from .arrays import one_task_splits
from .base import DatasetError, MTLData, TaskSpec
from .options import Int, OneOf, check_option
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
) -> MTLData:
    """Load the Computer survey (real file) or, if asked and missing, a generated substitute.

    Parameters
    ----------
    profile : {"quick", "full"}
        Unused: the data is small.
    seed : int
        Unused for the real data (fixed split); seeds the substitute.
    data_root : str or path-like, optional
        Folder holding ``lenk_data.mat``.
    allow_substitute : bool
        Return the generated substitute when the file is missing, instead of raising.
    n_train_items : {16, 8}
        Training items per person: the file's 16, or the first 8 of them.
    n_segments : int
        Latent segments of the substitute (its true groups); ignored for the real data.

    Returns
    -------
    MTLData
        ``x`` ``(180 * n_train_items, 13)`` and ``(720, 13)``; 180 ``rank`` tasks.
    """
    check_option("n_train_items", n_train_items, OneOf((16, 8)), "computer")
    n_segments = check_option("n_segments", n_segments, Int(1, N_PERSONS), "computer")
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
    return _build(train, test, n_train_items, groups, provenance)


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
    data = MTLData(
        name="computer",
        **one_task_splits((train[:, attributes].astype(np.float32), train[:, -1], person_tr),
                          (test[:, attributes].astype(np.float32), test[:, -1], person_te),
                          N_PERSONS),
        tasks=[TaskSpec(f"person_{p:03d}", "rank") for p in range(N_PERSONS)],
        groups=groups,
        provenance=provenance,
        main_metric="ndcg",
        extras={
            "target_offset": 0.0,  # ratings stay in rating units
            "target_scale": 1.0,
        },
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
