"""Name -> loader registry (timm-style): every registered dataset is picked up by the tests.

A loader is a function taking only keyword arguments: the common ones ``profile``, ``seed``,
``data_root`` and ``allow_substitute``, plus its own options with defaults (e.g. synthetic's
``noise``). Its options are read from its signature, so an unknown option fails before any
data is read, naming the allowed ones.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from .base import DatasetError, MTLData
from .options import Int, OneOf, check_option

DatasetFn = Callable[..., MTLData]
DATASETS: dict[str, DatasetFn] = {}
PROFILES: tuple[str, ...] = ("quick", "full")
COMMON_ARGS: tuple[str, ...] = ("profile", "seed", "data_root", "allow_substitute")


def register_dataset(name: str) -> Callable[[DatasetFn], DatasetFn]:
    """Decorator registering a loader under ``name``.

    The loader must accept the keyword arguments ``profile``, ``seed``, ``data_root`` and
    ``allow_substitute``; its other keyword arguments are its options.

    Examples
    --------
    >>> @register_dataset("my_data")  # doctest: +SKIP
    ... def load_my_data(*, profile="quick", seed=0, data_root=None, allow_substitute=False,
    ...                  size=10):
    ...     ...
    """

    def decorator(fn: DatasetFn) -> DatasetFn:
        params = inspect.signature(fn).parameters
        missing = [a for a in COMMON_ARGS if a not in params]
        if missing:
            raise TypeError(
                f"dataset loader {fn.__qualname__} registered as {name!r} lacks the keyword "
                f"arguments {missing}; every loader takes {COMMON_ARGS} plus its options"
            )
        old = DATASETS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (
            fn.__module__,
            fn.__qualname__,
        ):
            raise ValueError(
                f"dataset name {name!r} is already registered by {old.__module__}."
                f"{old.__qualname__}; choose another name"
            )
        DATASETS[name] = fn
        return fn

    return decorator


def list_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(DATASETS)


def dataset_options(name: str) -> dict[str, Any]:
    """The options of dataset ``name`` (beyond the common arguments) with their defaults.

    A default of ``None`` usually means "depends on the profile"; see the loader's docstring.
    """
    fn = _get(name)
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.name not in COMMON_ARGS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def load_dataset(
    name: str,
    *,
    profile: str = "quick",
    seed: int = 0,
    data_root: str | os.PathLike | None = None,
    allow_substitute: bool = False,
    **options: Any,
) -> MTLData:
    """Load a registered dataset.

    Parameters
    ----------
    name : str
        A name in :func:`list_datasets`.
    profile : {"quick", "full"}
        ``quick`` sizes finish Table 2 on 2 CPU cores in minutes; ``full`` the paper's sizes.
    seed : int
        Seeds generation, splits and subsampling. Same seed, same arrays.
    data_root : str or path-like, optional
        Folder holding real data files (else ``$SELECTIVE_SHARING_DATA``, else
        ``../shared/data`` beside the checkout).
    allow_substitute : bool
        When a real file is missing, return the dataset's labelled substitute
        (``provenance["variant"] == "substitute"``) instead of raising.
    **options
        Loader options, see :func:`dataset_options`.

    Returns
    -------
    MTLData
        Validated; ``provenance`` also records ``profile`` and ``seed``.
    """
    fn = _get(name)
    check_option("profile", profile, OneOf(PROFILES, "{option} must be one of {allowed}"))
    seed = check_option("seed", seed, Int())
    allowed = dataset_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DatasetError(
            f"unknown option(s) {unknown} for dataset {name!r}; allowed options: "
            f"{sorted(allowed)} (plus {list(COMMON_ARGS)})"
        )
    data = fn(
        profile=profile,
        seed=seed,
        data_root=data_root,
        allow_substitute=allow_substitute,
        **options,
    )
    from .items import StreamedMTLData

    if not isinstance(data, (MTLData, StreamedMTLData)):
        raise TypeError(f"dataset loader for {name!r} returned {type(data).__name__}, not MTLData "
                        "or StreamedMTLData")
    data.provenance.setdefault("profile", profile)
    data.provenance.setdefault("seed", seed)
    return data


def _get(name: str) -> DatasetFn:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset {name!r}; registered datasets: {list_datasets()}"
        ) from None
