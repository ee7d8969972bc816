"""Datasets for Selective Sharing: one data model, a registry, generators and loaders.

Imports numpy/scipy/file readers only; torch only inside the torch adapter, lazily
(``MTLTorchDataset`` is resolved on first access). Never imports core, analysis or reproduce.

>>> from selective_sharing.datasets import load_dataset, list_datasets
>>> data = load_dataset("synthetic", seed=0)  # doctest: +SKIP
"""

from . import (  # noqa: F401  (importing a loader module registers it)
    celeba,
    computer,
    mnist_context,
    omniart,
    school,
    shapes_context,
    synthetic,
)
from .arrays import from_arrays
from .base import TASK_TYPES, VARIANTS, DatasetError, MTLData, TaskSpec
from .fixtures import write_celeba_fixture, write_omniart_fixture
from .items import (
    ArrayItems,
    ImageFileItems,
    StreamedMTLData,
    SubsetItems,
    from_datasets,
    stream,
)
from .paths import ENV_VAR, DataFileNotFoundError, find_data_file, resolve_data_root, sha256
from .registry import DATASETS, dataset_options, list_datasets, load_dataset, register_dataset
from .validation import validate_mtl_data

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "TASK_TYPES",
    "VARIANTS",
    "ArrayItems",
    "DataFileNotFoundError",
    "DatasetError",
    "ImageFileItems",
    "MTLData",
    "MTLTorchDataset",
    "StreamedMTLData",
    "SubsetItems",
    "TaskSpec",
    "as_tensors",
    "dataset_options",
    "find_data_file",
    "from_arrays",
    "from_datasets",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "resolve_data_root",
    "sha256",
    "stream",
    "validate_mtl_data",
    "write_celeba_fixture",
    "write_omniart_fixture",
]


def __getattr__(name: str):
    # torch is heavy and optional for analysis/: resolve the adapter only when asked for.
    if name in ("MTLTorchDataset", "as_tensors"):
        from . import torch_adapter

        return getattr(torch_adapter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
