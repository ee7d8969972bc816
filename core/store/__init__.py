"""The run store: the one package that reads and writes a run directory.

core/ writes only through it and analysis/ reads only through it; it imports xarray, numpy and
the standard library only (never torch, never the grouping rule). Every file is plain NetCDF4
(readable with ``xarray.open_dataset(path)`` alone) carrying the global attributes
``schema_version``, ``store_kind`` and ``content_sha256`` (a SHA-256 per variable, checked on
every read and removed from what is returned; files written before it existed are read
unchecked).

Layers, bottom up:

- :mod:`.schema`: what each file holds (the variable tables), pure data;
- :mod:`.records` and the codecs (:mod:`.event_codec`, :mod:`.codecs`): a typed record per file
  kind and its exact encode/decode to an ``xarray.Dataset``;
- :mod:`.io`: atomic writes and checked reads (eager or dask-lazy) of one file;
- :mod:`.kinds`: the table of file kinds, with the generic :func:`write` / :func:`decode`;
- :mod:`.paths` and :mod:`.manifest`: the run directory's layout and its ``manifest.json``;
- :mod:`.writer`: writes off the training step, in order, on one background thread.
"""

from .checksums import CHECKSUM_ATTR
from .coding import Record, json_default
from .errors import StoreError, check_version
from .event_codec import decode_event
from .io import (
    HDF5_LOCK,
    atomic_write_bytes,
    atomic_write_dataset,
    netcdf_encoding,
    open_store_dataset,
    warm_up,
)
from .kinds import (
    KINDS,
    FileKind,
    decode,
    encode,
    encode_activations,
    encode_affinity,
    encode_event,
    encode_history,
    encode_metrics,
    has_history,
    join_history,
    kind_of,
    read_activations,
    read_affinity,
    read_event,
    read_history,
    read_metrics,
    remove_history_parts,
    shelve_history,
    trim_history,
    write,
    write_activations,
    write_affinity,
    write_event,
    write_history,
    write_metrics,
)
from .manifest import read_manifest, update_manifest, write_manifest
from .paths import (
    RunPaths,
    event_index,
    list_activations,
    list_events,
    list_history_parts,
    remove_stale_temp_files,
)
from .records import CONTEXT_FIELDS, DECISION_FIELDS, Activations, Affinity, Event, History, Metrics
from .schema import (
    ACTIVATION_VARS,
    AFFINITY_VARS,
    EVENT_VARS,
    HISTORY_VARS,
    METRICS_VARS,
    SCHEMA_VERSION,
    STATUSES,
    VarSpec,
)
from .writer import BackgroundWriter, replace

__all__ = [
    "ACTIVATION_VARS",
    "AFFINITY_VARS",
    "CHECKSUM_ATTR",
    "CONTEXT_FIELDS",
    "DECISION_FIELDS",
    "EVENT_VARS",
    "HDF5_LOCK",
    "HISTORY_VARS",
    "KINDS",
    "METRICS_VARS",
    "SCHEMA_VERSION",
    "STATUSES",
    "Activations",
    "BackgroundWriter",
    "Affinity",
    "Event",
    "FileKind",
    "History",
    "Metrics",
    "Record",
    "RunPaths",
    "StoreError",
    "VarSpec",
    "atomic_write_bytes",
    "atomic_write_dataset",
    "check_version",
    "decode",
    "decode_event",
    "encode",
    "encode_activations",
    "encode_affinity",
    "encode_event",
    "encode_history",
    "encode_metrics",
    "event_index",
    "has_history",
    "join_history",
    "json_default",
    "kind_of",
    "list_activations",
    "list_events",
    "list_history_parts",
    "netcdf_encoding",
    "open_store_dataset",
    "read_activations",
    "read_affinity",
    "read_event",
    "read_history",
    "read_manifest",
    "read_metrics",
    "remove_history_parts",
    "remove_stale_temp_files",
    "replace",
    "shelve_history",
    "trim_history",
    "update_manifest",
    "warm_up",
    "write",
    "write_activations",
    "write_affinity",
    "write_event",
    "write_history",
    "write_manifest",
    "write_metrics",
]
