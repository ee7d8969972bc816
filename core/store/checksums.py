"""Per-variable SHA-256 checksums: written with every NetCDF file, verified on every read.

A file carries ``content_sha256``, JSON ``{variable: sha256}``, over a canonical form of each
variable's values that survives the NetCDF round trip, so a value changed after the write (a
flipped bit, a hand edit) is an error naming the file and the variable. Files written before
checksums existed carry none and are read unchecked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import numpy as np
import xarray as xr

from .errors import StoreError

#: Global attribute holding ``{variable: sha256}`` of every variable's values (JSON).
CHECKSUM_ATTR = "content_sha256"


def _canonical(values: object) -> tuple[str, bytes | memoryview]:
    """A dtype tag and bytes of ``values`` that survive the NetCDF round trip unchanged
    (strings as UTF-8, booleans as bytes, integers as int64/uint64, little-endian floats).
    Arrays already in that form are not copied: the bytes are a view of their memory."""
    a = np.asarray(values)
    if a.dtype.kind in "OUS":
        text = "\x1f".join(str(v) for v in a.ravel().tolist())
        return "str", text.encode("utf-8", "surrogatepass")
    if a.dtype.kind == "b":
        a = a.view(np.uint8)
    elif a.dtype.kind in "iu":
        a = a.astype("<i8" if a.dtype.kind == "i" else "<u8", copy=False)
    else:
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return a.dtype.str, memoryview(np.ascontiguousarray(a).reshape(-1))


def variable_digest(values: object) -> str:
    """SHA-256 (hex) of an array's shape, dtype family and values (see :func:`_canonical`)."""
    tag, data = _canonical(values)
    digest = hashlib.sha256(f"{tag}|{np.shape(values)}|".encode())
    digest.update(data)
    return digest.hexdigest()


def content_checksums(ds: xr.Dataset) -> str:
    """The :data:`CHECKSUM_ATTR` value of ``ds``: JSON ``{variable: sha256}``, sorted."""
    return json.dumps({str(n): variable_digest(v.values) for n, v in sorted(ds.variables.items())})


def pop_checksums(ds: xr.Dataset, source: object = None) -> dict[str, str]:
    """Remove :data:`CHECKSUM_ATTR` from ``ds.attrs`` (in place) and return it parsed; ``{}``
    for files written before checksums existed. A damaged attribute is a StoreError."""
    where = source or ds.encoding.get("source", "<in-memory dataset>")
    return parse_checksums(ds.attrs.pop(CHECKSUM_ATTR, None), where)


def parse_checksums(raw: object, source: object) -> dict[str, str]:
    """The :data:`CHECKSUM_ATTR` value ``raw`` parsed (``{}`` for None: a file written before
    checksums existed); a damaged value is a StoreError naming ``source``."""
    if raw is None:
        return {}
    try:
        found = json.loads(raw)
    except ValueError as exc:
        found = exc
    if not isinstance(found, dict):
        raise StoreError(
            source,
            f"damaged {CHECKSUM_ATTR} attribute ({found!r:.80}): the file was modified or "
            "corrupted after it was written",
        )
    return {str(k): str(v) for k, v in found.items()}


def verify_variable(source: object, name: str, values: object, checksums: Mapping) -> None:
    """Raise StoreError naming ``source`` when ``values`` of ``name`` differ from the checksum
    written with the file (no check when the file carries none for ``name``)."""
    expected = checksums.get(str(name))
    if expected is not None and variable_digest(values) != expected:
        raise StoreError(
            source,
            f"content checksum mismatch in variable {name!r}: the file was modified or "
            "corrupted after it was written; restore it from a copy, or delete the run and "
            "train it again",
        )
