"""The file layer: atomic writes and checked reads of NetCDF4 files, eager or lazy.

Files are written atomically (temp file in the same directory, fsync, rename), so a crash
leaves either the old or the new file, never a torn one. Every read checks the HDF5 signature,
``schema_version``, ``store_kind`` and the per-variable checksums (:mod:`.checksums`).
"""

from __future__ import annotations

import math
import os
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from xarray.backends import NetCDF4DataStore
from xarray.conventions import decode_cf_variables

from .checksums import (
    CHECKSUM_ATTR,
    content_checksums,
    parse_checksums,
    pop_checksums,
    verify_variable,
)
from .errors import StoreError, check_version
from .schema import CHUNK_BYTES, COMPLEVEL, SCHEMA_VERSION
from .writer import replace

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

#: Every NetCDF open, read and write of this package holds this lock: HDF5 is not thread-safe,
#: and a lazy (dask) read still running in a worker thread after a failed compute must not
#: overlap a read in the main thread (that crashed the process, not just the read).
HDF5_LOCK = threading.RLock()


# ----------------------------------------------------------------------------- atomic writes


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; skipped where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _free_bytes(directory: Path) -> int | str:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return "unknown"


def _atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temp file beside ``path``, fsync it, rename it over ``path``.

    Readers see the old file or the new one, never a torn one; on any failure the temp file
    is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "r+b") as f:
            os.fsync(f.fileno())
        replace(tmp, path)  # on the background writer: renamed by the training thread
    except StoreError:
        tmp.unlink(missing_ok=True)
        raise
    except (OSError, RuntimeError) as err:  # netCDF4 reports HDF5 I/O failures as RuntimeError
        tmp.unlink(missing_ok=True)
        raise StoreError(path, f"could not be written ({type(err).__name__}: {err}; "
                         f"{_free_bytes(path.parent)} bytes free on that disk); the previous "
                         "version, if any, is intact: free space or fix permissions and "
                         "--resume") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


_WARM: list[bool] = []


def warm_up() -> None:
    """Do the one-time work of a process's first NetCDF write now, in the calling thread.

    The first ``to_netcdf`` of a process imports netCDF4 and, through xarray's check for a dask
    scheduler, ``dask.distributed`` with its dependencies (about 370 modules, 0.2-0.3 s), and
    initialises HDF5. On the background writer that happened during the first event's writes,
    and the imports held the GIL while the training thread stepped: the step after the first
    event took 150-320 ms instead of 8 (issue 16; one stall per process, but 3-6% of a
    300-step benchmark, and in a data-parallel run every rank waits for the stalled one).
    ``SharingScheduler`` calls this when it is given a run directory, before training starts.

    It writes one tiny file through the store's own write path into a temporary directory and
    deletes it; only the first call in a process does anything. Where no temporary directory
    can be written it returns quietly: the first real write then pays the cost, as before.
    """
    if _WARM:
        return
    import tempfile

    ds = xr.Dataset({"x": ("d", np.zeros(2, np.float32))})
    try:
        with tempfile.TemporaryDirectory(prefix="selective-sharing-warm-up-") as tmp:
            with HDF5_LOCK:
                ds.to_netcdf(Path(tmp) / "warm_up.nc", engine="netcdf4", format="NETCDF4",
                             encoding=netcdf_encoding(ds))
    except (OSError, RuntimeError):  # netCDF4 reports HDF5 failures as RuntimeError
        return
    _WARM.append(True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    return _atomic(path, lambda tmp: tmp.write_bytes(data))


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunk shape of at most about ``CHUNK_BYTES``, splitting leading dims first."""
    chunks = list(shape)
    for i in range(len(chunks)):
        if math.prod(chunks) * itemsize <= CHUNK_BYTES:
            break
        rest = math.prod(chunks[i + 1 :]) * itemsize
        chunks[i] = max(1, min(chunks[i], CHUNK_BYTES // max(rest, 1)))
    return tuple(chunks)


def netcdf_encoding(ds: xr.Dataset) -> dict[str, dict]:
    """Per-variable NetCDF4 encoding: zlib level 4 for arrays, chunks where large, no fill value.

    ``_FillValue=None`` keeps xarray from masking any stored value on read: a NaN, or an
    integer that happens to equal a default fill value, comes back exactly as written.
    """
    encoding = {}
    for name, var in ds.variables.items():
        if var.dtype.kind not in "fiub":
            continue  # strings: netCDF4 variable-length strings, stored as they are
        enc: dict = {"_FillValue": None}
        if var.ndim and var.size:
            enc.update(zlib=True, complevel=COMPLEVEL, shuffle=True)
            if var.nbytes > CHUNK_BYTES:
                enc["chunksizes"] = _chunks(var.shape, var.dtype.itemsize)
        encoding[name] = enc
    return encoding


def atomic_write_dataset(path: str | os.PathLike, ds: xr.Dataset) -> Path:
    """Write a store dataset as NetCDF4 to ``path`` atomically (zlib, chunked, no fill values).

    Encodings carried by ``ds`` (e.g. from the file it was read from) are ignored; the store's
    own (:func:`netcdf_encoding`) is used, and the checksums are computed afresh.
    """
    if ds.attrs.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(
            path,
            f"refusing to write a dataset with schema_version={ds.attrs.get('schema_version')!r};"
            f" expected {SCHEMA_VERSION} (build it with an encode_* function of this module)",
        )
    clean = ds.copy(deep=False)
    clean.encoding = {}
    for var in clean.variables.values():
        var.encoding = {}
    clean.attrs = {**ds.attrs, CHECKSUM_ATTR: content_checksums(clean)}
    encoding = netcdf_encoding(clean)

    def write(tmp: Path) -> None:
        with HDF5_LOCK:
            clean.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding)

    return _atomic(path, write)


# ----------------------------------------------------------------------------- reading


def _check_file(path: Path) -> None:
    """A StoreError unless ``path`` is a file starting with a NetCDF signature."""
    if not path.is_file():
        raise StoreError(path, "no such file")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise StoreError(path, "empty file (0 bytes): truncated or not a NetCDF file")
    if head != _HDF5_SIGNATURE and not head.startswith(b"CDF"):
        raise StoreError(
            path,
            f"not a NetCDF file (starts with {head!r}; expected the NetCDF4/HDF5 signature "
            f"{_HDF5_SIGNATURE!r})",
        )


def _check_header(path: Path, attrs: Mapping, kind: str | None) -> None:
    check_version(path, attrs.get("schema_version"))
    if kind is not None and attrs.get("store_kind") != kind:
        raise StoreError(path, f"store_kind {attrs.get('store_kind')!r} found, expected {kind!r}")


def _corrupted(path: Path, exc: Exception) -> StoreError:
    return StoreError(path, f"truncated or corrupted NetCDF ({type(exc).__name__}: {exc})")


def open_store_dataset(
    path: str | os.PathLike, kind: str | None = None, drop: Sequence[str] = (), *,
    lazy: bool = False,
) -> xr.Dataset:
    """Open a store file with its schema checked: the store's one way to read a file.

    Parameters
    ----------
    path : path-like
        The NetCDF file.
    kind : str, optional
        Expected ``store_kind`` (``"event"``, ``"history"``, ``"metrics"``, ``"activations"``,
        ``"affinity"``).
    drop : sequence of str
        Variables not to read at all (they are dropped before loading).
    lazy : bool
        False: load everything into memory and close the file, checksums verified now.
        True: coordinates now, each data variable as a dask array read (and verified) when
        computed; see :func:`_open_lazy`.

    Raises
    ------
    StoreError
        Missing, not NetCDF, truncated or corrupted, another schema_version, another kind, a
        checksum mismatch (lazy: corruption inside array data is found when it is computed).
    """
    path = Path(path)
    _check_file(path)
    if lazy:
        return _open_lazy(path, kind, drop)
    try:
        with HDF5_LOCK, xr.open_dataset(path, engine="netcdf4") as ds:
            _check_header(path, ds.attrs, kind)
            loaded = ds.drop_vars(list(drop), errors="ignore").load()
    except StoreError:
        raise
    except Exception as exc:  # netCDF4/HDF5 raise OSError, RuntimeError, ValueError, ...
        raise _corrupted(path, exc) from exc
    checksums = pop_checksums(loaded, path)
    for name, var in loaded.variables.items():
        verify_variable(path, name, var.values, checksums)
    return loaded


#: The CF decoding :func:`read_store_arrays` needs: booleans and strings. The store writes no fill
#: values or scale factors (:func:`netcdf_encoding`) and no time units, and the ``coordinates``
#: attribute only moves attributes about, so those decoders (half the decoding time of a small
#: file) are off; a test holds the values and dtypes equal to ``xarray.open_dataset``'s.
_AS_WRITTEN = dict(mask_and_scale=False, decode_times=False, decode_timedelta=False,
                   decode_coords=False)


def _eager_variable(var: object) -> xr.Variable:
    """A netCDF4 variable read whole, raw (no masking, scaling or char-to-string), as the
    undecoded ``xarray.Variable`` that ``NetCDF4DataStore.open_store_variable`` describes, for
    xarray's CF decoding. Its lazy wrapper re-acquired the file through xarray's file cache
    for every access: 4 of the 14 ms that reading one event file took (issue 16)."""
    var.set_auto_maskandscale(False)
    var.set_auto_chartostring(False)
    attrs = {k: var.getncattr(k) for k in var.ncattrs()}
    return xr.Variable(var.dimensions, np.asarray(var[...]), attrs, {"dtype": var.dtype})


def read_store_arrays(
    path: str | os.PathLike, kind: str, names: Sequence[str]
) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """The global attributes and the variables ``names`` of a store file, as plain arrays: the
    quick way to read a few variables of many files (a run's events, to replay them).

    Checked as :func:`open_store_dataset` checks (signature, ``schema_version``, ``store_kind``,
    the checksum of every array returned; the same errors) and read through the same xarray
    netcdf4 backend with xarray's CF decoding, the same values and dtypes as the variables of
    :func:`open_store_dataset` (a test holds them equal on every file kind), but without
    building an ``xarray.Dataset`` (coordinates, indexes, lazy wrappers: they cost more than
    reading a small file) and without touching the file's other variables. A name the file
    lacks is left out (the decoder that needs it reports it). The returned attributes lack
    :data:`~.checksums.CHECKSUM_ATTR`, as a dataset's from :func:`open_store_dataset` do.
    """
    path = Path(path)
    _check_file(path)
    try:
        with HDF5_LOCK:
            nc = NetCDF4DataStore.open(str(path), mode="r")
            try:
                attrs = dict(nc.get_attrs())
                _check_header(path, attrs, kind)
                found = nc.ds.variables  # the file handle, acquired once for every name
                raw = {n: _eager_variable(found[n]) for n in names if n in found}
                decoded, _, _ = decode_cf_variables(raw, attrs, **_AS_WRITTEN)
                arrays = {n: np.asarray(var.values) for n, var in decoded.items()}
            finally:
                nc.close()
    except StoreError:
        raise
    except Exception as exc:  # netCDF4/HDF5 raise OSError, RuntimeError, ValueError, ...
        raise _corrupted(path, exc) from exc
    checksums = parse_checksums(attrs.pop(CHECKSUM_ATTR, None), path)
    for name, values in arrays.items():
        verify_variable(path, name, values, checksums)
    return attrs, arrays


def _read_variable(path: str, name: str, checksums: dict[str, str]) -> np.ndarray:
    """Read one variable (open, read, close; checksum verified): no file handle outlives the
    read."""
    with HDF5_LOCK:
        try:
            with xr.open_dataset(path, engine="netcdf4") as ds:
                values = ds[name].values
        except Exception as exc:
            raise StoreError(path, f"cannot read {name!r} ({type(exc).__name__}: {exc})") from exc
    verify_variable(path, name, values, checksums)
    return values


def _open_lazy(path: Path, kind: str | None, drop: Sequence[str]) -> xr.Dataset:
    """A store file as a dask-backed dataset: header and schema checked now, arrays read later.

    Each variable is read by its own open-read-close when computed, instead of through a file
    handle kept open by xarray's file cache: such handles are closed by the garbage collector
    from whichever thread runs it, which crashed HDF5 (segfault) while another thread read.
    Every NetCDF access of this package holds :data:`HDF5_LOCK` (HDF5 is not thread-safe);
    after a failed threaded compute dask may still run other read tasks, so code that opens
    store files with xarray directly meanwhile should hold that lock too.
    """
    import dask
    import dask.array as da

    try:
        with HDF5_LOCK, xr.open_dataset(path, engine="netcdf4") as ds:
            _check_header(path, ds.attrs, kind)
            checksums = pop_checksums(ds, path)  # verified as each variable is read
            variables = {}
            for name, var in ds.data_vars.items():
                if name in drop:
                    continue
                data = dask.delayed(_read_variable, pure=True)(str(path), name, checksums)
                lazy = da.from_delayed(data, shape=var.shape, dtype=var.dtype,
                                       name=f"{path}:{name}")
                variables[name] = xr.Variable(var.dims, lazy, dict(var.attrs))
            coords = {k: ds[k].variable.load().copy() for k in ds.coords}
            out = xr.Dataset(variables, coords=coords, attrs=dict(ds.attrs))
    except StoreError:
        raise
    except Exception as exc:  # netCDF4/HDF5 raise OSError, RuntimeError, ValueError, ...
        raise _corrupted(path, exc) from exc
    for name, coord in coords.items():
        verify_variable(path, name, coord.values, checksums)
    out.encoding["source"] = str(path)
    return out
