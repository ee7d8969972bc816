"""The one error every store read and write raises, and the schema version check."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .schema import SCHEMA_VERSION


class StoreError(RuntimeError):
    """A store file is missing, truncated, corrupted, of another schema version or inconsistent.

    The message always starts with the file's path; ``path`` and ``problem`` are attributes.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # pickles across processes (Dask workers) despite the 2-arg init
        return type(self), (self.path, self.problem)


def check_version(path: str | os.PathLike, found: object) -> None:
    """Raise :class:`StoreError` naming ``path`` unless ``found`` is :data:`SCHEMA_VERSION`."""
    if found is None:
        raise StoreError(
            path,
            "has no schema_version: not a selective_sharing store file "
            f"(expected schema_version {SCHEMA_VERSION})",
        )
    if isinstance(found, np.generic):  # netCDF attributes come back as numpy scalars
        found = found.item()
    if found != SCHEMA_VERSION:
        raise StoreError(
            path,
            f"schema_version {found!r} found, expected {SCHEMA_VERSION}: "
            "written by another version of selective_sharing; read it with that "
            "version or re-run",
        )
