"""Where data files live (README, "Table 2" lists each dataset's files): no code downloads
at run time.

The data root is, in order of precedence: the explicit ``data_root`` argument (the scripts'
``--data-root``), the environment variable ``SELECTIVE_SHARING_DATA``, then ``../shared/data``
beside the checkout (the parent folder of the repository root). The first one that is *set*
wins; the others are not searched, so a file is never picked up silently from an unexpected place.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .base import DatasetError

ENV_VAR = "SELECTIVE_SHARING_DATA"


class DataFileNotFoundError(DatasetError, FileNotFoundError):
    """A data file is missing; the message names the file, its source and the options."""


def default_data_root() -> Path:
    """``../shared/data`` beside the checkout: ``<repo root>/../shared/data``."""
    # datasets/paths.py -> parents[1] is the repository root, parents[2] the folder holding it.
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def resolve_data_root(data_root: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Return the data root and how it was chosen.

    Parameters
    ----------
    data_root : str or path-like, optional
        Explicit root; wins over the environment and the default.

    Returns
    -------
    root : Path
        The data root (it may not exist).
    origin : str
        ``"argument"``, ``"environment"`` or ``"default"``: for error messages.
    """
    if data_root is not None:
        return Path(data_root).expanduser(), "argument"
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser(), "environment"
    return default_data_root(), "default"


def find_data_file(
    filename: str, data_root: str | os.PathLike | None = None, *, source_hint: str
) -> Path:
    """Locate ``filename`` under the data root.

    Parameters
    ----------
    filename : str
        File name (or relative path) inside the data root, e.g. ``"school.mat"``.
    data_root : str or path-like, optional
        Explicit data root (see :func:`resolve_data_root`).
    source_hint : str
        Where the file comes from, quoted in the error so the user can fetch it.

    Returns
    -------
    Path
        The existing file.

    Raises
    ------
    DataFileNotFoundError
        (a :class:`DatasetError` and a :class:`FileNotFoundError`) naming the file, the root
        searched and why it was chosen, the source and the ``--data-root`` /
        ``SELECTIVE_SHARING_DATA`` options.
    """
    root, origin = resolve_data_root(data_root)
    path = root / filename
    if path.is_file():
        return path
    how = {
        "argument": "given as data_root / --data-root",
        "environment": f"from ${ENV_VAR}",
        "default": "the default ../shared/data beside the checkout",
    }[origin]
    raise DataFileNotFoundError(
        f"data file {filename!r} not found at {path} (data root {root}: {how}). "
        f"It comes from {source_hint}. Put it in a folder and pass that folder with "
        f"--data-root DIR (data_root=DIR in Python) or set the environment variable "
        f"{ENV_VAR}=DIR. Nothing is downloaded at run time."
    )


def sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> str:
    """Return the file's hash; raise :class:`DatasetError` naming the file, expected and found
    hashes when they differ (a different or corrupted copy must not produce silent numbers)."""
    found = sha256(path)
    if found != expected:
        raise DatasetError(
            f"data file {path} has sha256 {found}, expected {expected}: it is a different or "
            "corrupted copy. Replace it with the original file."
        )
    return found
