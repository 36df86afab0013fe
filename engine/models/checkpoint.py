"""Load model checkpoints without ever running code from a pickle, or letting a file choose memory.

VQGAN checkpoints are PyTorch Lightning ``.ckpt`` files: besides ``state_dict`` they pickle
callback classes, hyper-parameter objects, numpy scalars and so on. ``torch.load(weights_only=True)``
rejects them outright (a callback *class* is a dict key), and ``weights_only=False`` would import
and call whatever the pickle names. So this module reads both ``torch.save`` formats itself and
never hands a pickle-based file to ``torch.load``:

* **zip** (torch >= 1.6; torch's own rule: the file starts with ``PK\\x03\\x04``): read with
  Python's ``zipfile``. An archive with TorchScript records (``code/`` or ``constants.pkl``:
  ``torch.load`` would pass it to ``torch.jit.load``, which runs its code) is refused, and so is
  one ``zipfile`` cannot read cleanly (e.g. bytes appended after it), one with compressed records
  (``torch.save`` never compresses; deflate bombs) and one whose records disagree with the sizes
  its pickle declares.
* **legacy** (``_use_new_zipfile_serialization=False``): magic number, pickle, storage keys, raw
  storages, read in that order with every declared size checked against the bytes left in the file.
* the pre-2018 **tar** format is refused (torch extracts its members to disk).

Every pickle goes through ``engine.models.unpickler.SafeUnpickler`` (see there).

The storage bytes a file declares are checked against what it holds before anything is allocated.
Whatever goes wrong while reading ends as one ``CorruptCheckpoint`` (or ``UnsafeCheckpoint``) line
naming the file and what to do. ``.safetensors`` files hold no code and go through
``safetensors.torch.load_file``, which checks its header against the file.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import pickle
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import IO, Any, cast

import torch

from engine.errors import CorruptCheckpoint, ModelFileMissing, UnsafeCheckpoint, UserError
from engine.models.unpickler import Placeholder, SafeUnpickler

__all__ = ["load_checkpoint", "check_checkpoint"]

log = logging.getLogger(__name__)

_ZIP_MAGIC = b"PK\x03\x04"  # torch.serialization._is_zipfile: these first bytes mean "zip" to torch.load
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION
_REDOWNLOAD = "delete it and download it again"


# --- reading the two torch.save formats ------------------------------------------------------------


class _Budget:
    """Storage bytes a file may still declare: never more than the file holds (or ``max_bytes``)."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path, self.limit, self.left = path, limit, limit

    def take(self, nbytes: int) -> None:
        if nbytes > self.left:
            raise CorruptCheckpoint(
                f"{self.path}: declares more tensor data than its {self.limit} bytes hold; "
                f"not loaded ({_REDOWNLOAD})"
            )
        self.left -= nbytes


def _storage_dtype(storage_type: Any) -> torch.dtype:
    if storage_type is torch.UntypedStorage:
        return torch.uint8
    if isinstance(storage_type, torch.serialization.StorageType):
        return storage_type.dtype
    raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")


def _storage_id(pid: Any, length: int) -> tuple[Any, ...]:
    """Check a ``('storage', type, key, location, numel, ...)`` persistent id's shape."""
    if not isinstance(pid, tuple) or len(pid) != length or pid[0] not in ("storage", b"storage"):
        raise pickle.UnpicklingError(f"unexpected storage reference {str(pid)[:60]!r}")
    numel = pid[4]
    if type(numel) is not int or numel < 0 or not isinstance(pid[2], str):
        raise pickle.UnpicklingError("storage reference with an invalid key or size")
    return pid


def _typed(buf: bytearray, dtype: torch.dtype) -> torch.storage.TypedStorage:
    untyped = torch.frombuffer(buf, dtype=torch.uint8).untyped_storage() if buf else torch.UntypedStorage(0)
    return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def _read_exactly(f: io.BufferedIOBase, buf: bytearray) -> None:
    view, done = memoryview(buf), 0
    while done < len(buf):
        n = f.readinto(view[done:])
        if not n:
            raise EOFError("file ends inside tensor data")
        done += n


def _load_zip(path: Path, f: IO[bytes], budget: _Budget) -> Any:
    """A ``torch.save`` zip archive, read as torch's own ``_load`` would but with every size checked."""
    with zipfile.ZipFile(f) as zf:
        infos = zf.infolist()
        if not infos:
            raise zipfile.BadZipFile("empty archive")
        prefix = infos[0].filename.split("/", 1)[0] + "/"
        records: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if not info.filename.startswith(prefix):
                raise zipfile.BadZipFile(f"record {info.filename!r} outside the archive folder")
            records[info.filename[len(prefix):]] = info
        if "constants.pkl" in records or any(name.startswith("code/") for name in records):
            raise UnsafeCheckpoint(
                f"{path}: a TorchScript archive, whose code would run on loading; not loaded "
                "(use a checkpoint saved with torch.save)"
            )
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
                raise zipfile.BadZipFile(f"compressed record {info.filename!r} (torch.save never writes one)")
        if "data.pkl" not in records:
            raise zipfile.BadZipFile("no data.pkl record")
        byteorder = zf.read(records["byteorder"]) if "byteorder" in records else b"little"
        if byteorder not in (b"little", b"big"):
            raise ValueError(f"unknown byte order {byteorder[:10]!r}")
        storages: dict[str, torch.storage.TypedStorage] = {}

        def persistent_load(pid: Any) -> torch.storage.TypedStorage:
            _, storage_type, key, _location, numel = _storage_id(pid, 5)
            if key in storages:
                return storages[key]
            dtype = _storage_dtype(storage_type)
            nbytes = numel * dtype.itemsize
            info = records.get(f"data/{key}")
            if info is None:
                raise zipfile.BadZipFile(f"no record for tensor data {key!r}")
            if info.file_size != nbytes:
                raise CorruptCheckpoint(
                    f"{path}: tensor data {key!r} is declared as {nbytes} bytes but the file holds "
                    f"{info.file_size}; not loaded ({_REDOWNLOAD})"
                )
            budget.take(nbytes)
            buf = bytearray(nbytes)
            with zf.open(info) as rec:  # checks the record's CRC as it is read
                # a zipfile.ZipExtFile, a BufferedIOBase (typeshed says only IO[bytes])
                _read_exactly(cast(io.BufferedIOBase, rec), buf)
            storage = _typed(buf, dtype)
            if byteorder.decode() != sys.byteorder and dtype.itemsize > 1:
                storage._untyped_storage.byteswap(dtype)
            storages[key] = storage
            return storage

        pickled = zf.read(records["data.pkl"])
        return SafeUnpickler(io.BytesIO(pickled), persistent_load, len(pickled)).load()


class _Bounded(io.RawIOBase):
    """The rest of a file, so that a pickle's declared lengths never read (allocate) past its end."""

    def __init__(self, f: io.BufferedIOBase, size: int) -> None:
        self._f, self._left = f, size - f.tell()

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf)[: max(self._left, 0)]
        n = self._f.readinto(view) if len(view) else 0
        self._left -= n or 0
        return n or 0


def _load_legacy(path: Path, f: io.BufferedIOBase, size: int, budget: _Budget) -> Any:
    """The pre-1.6 ``torch.save`` stream: magic, protocol, sys info, pickle, storage keys, storages."""
    stream = io.BufferedReader(_Bounded(f, size))

    def header() -> Any:
        return SafeUnpickler(stream, size=size).load()

    if header() != _LEGACY_MAGIC:
        raise pickle.UnpicklingError("not a torch checkpoint (wrong magic number)")
    if header() != _LEGACY_PROTOCOL:
        raise pickle.UnpicklingError("unsupported legacy protocol version")
    sys_info = header()
    if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) is not (sys.byteorder == "little"):
        raise pickle.UnpicklingError("saved on a machine of the other byte order")
    buffers: dict[str, tuple[bytearray, torch.storage.TypedStorage, torch.dtype]] = {}

    def persistent_load(pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) == 4 and pid[0] in ("module", b"module"):
            return pid[1]  # a pickled nn.Module's class (a Placeholder); its source is not checked
        _, storage_type, key, _location, numel, view = _storage_id(pid, 6)
        dtype = _storage_dtype(storage_type)
        if key not in buffers:
            budget.take(numel * dtype.itemsize)
            buf = bytearray(numel * dtype.itemsize)
            buffers[key] = (buf, _typed(buf, dtype), dtype)
        buf, storage, known = buffers[key]
        if known != dtype:
            raise pickle.UnpicklingError(f"storage {key!r} declared with two types")
        if view is not None:  # (view key, offset, size) in elements; written by torch < 1.0
            _key, offset, count = view
            whole = len(buf) // dtype.itemsize
            if not (type(offset) is int and type(count) is int and 0 <= offset <= offset + count <= whole):
                raise pickle.UnpicklingError("storage view outside its storage")
            untyped = storage._untyped_storage[offset * dtype.itemsize:(offset + count) * dtype.itemsize]
            return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        return storage

    result = SafeUnpickler(stream, persistent_load, size).load()
    keys = header()
    if not isinstance(keys, list) or set(keys) != set(buffers):
        raise pickle.UnpicklingError("storage keys do not match the pickle")
    for key in keys:
        buf, _, dtype = buffers[key]
        count = int.from_bytes(stream.read(8), "little", signed=True)
        if count * dtype.itemsize != len(buf):
            raise pickle.UnpicklingError(
                f"storage {key!r} holds {count} elements, its pickle says {len(buf) // dtype.itemsize}"
            )
        _read_exactly(stream, buf)
    return result


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:150]}" if text else type(e).__name__


def _read_pickled(path: Path, max_bytes: int | None) -> Any:
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        budget = _Budget(path, size if max_bytes is None else min(size, max_bytes))
        try:
            if f.read(4) == _ZIP_MAGIC:
                f.seek(0)
                return _load_zip(path, f, budget)
            f.seek(0)
            if tarfile.is_tarfile(f):
                raise UnsafeCheckpoint(
                    f"{path}: the pre-2018 torch tar format is not supported; re-save it with torch.save"
                )
            f.seek(0)
            return _load_legacy(path, f, size, budget)
        except UserError:
            raise
        except Exception as e:  # a hostile or damaged file can raise anything; it is still only "unreadable"
            log.debug("reading %s failed", path, exc_info=True)
            raise CorruptCheckpoint(
                f"{path}: not a readable checkpoint ({_one_line(e)}); {_REDOWNLOAD}"
            ) from None


def _tensors(obj: Any, seen: set[int] | None = None, depth: int = 0) -> list[torch.Tensor]:
    """All tensors reachable through dicts, lists and tuples."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 50:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    items: Any = ()
    if isinstance(obj, dict):
        items = obj.values()
    elif isinstance(obj, list | tuple):
        items = obj
    found: list[torch.Tensor] = []
    for item in items:
        found.extend(_tensors(item, seen, depth + 1))
    return found


def _looks_like_safetensors(path: Path) -> bool:
    """8 bytes of header length, then the JSON header: no pickle or zip starts like that."""
    with path.open("rb") as f:
        head = f.read(9)
        size = os.fstat(f.fileno()).st_size
    return len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") <= size - 8


def load_checkpoint(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> dict[str, Any]:
    """Read a ``.ckpt``/``.pt``/``.pth``/``.bin`` or ``.safetensors`` file onto the CPU.

    Unknown pickled objects come back as ``Placeholder`` instances; tensors come back intact.
    ``max_bytes`` (e.g. a preset's size) caps the tensor data a pickle-based file may declare; the
    file's own size always does. Raises ``ModelFileMissing`` (no file), ``UnsafeCheckpoint``
    (nothing loadable / refused format) or ``CorruptCheckpoint`` (unreadable); each is one line.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelFileMissing(f"model file not found: {p}")
    if p.suffix == ".safetensors" or _looks_like_safetensors(p):  # by content too: e.g. a download's .part
        from safetensors.torch import load_file

        try:
            data: Any = load_file(str(p), device="cpu")
        except Exception as e:
            raise CorruptCheckpoint(f"{p}: not a readable safetensors file ({_one_line(e)}); {_REDOWNLOAD}") from None
    else:
        data = _read_pickled(p, max_bytes)
    if not isinstance(data, dict):
        what = data._pickled_name if isinstance(data, Placeholder) else type(data).__name__
        raise UnsafeCheckpoint(
            f"{p}: holds a pickled {what}, not a dict of tensors; nothing was loaded (save its state_dict() instead)"
        )
    tensors = _tensors(data)
    if not tensors:
        raise UnsafeCheckpoint(
            f"{p}: no tensors could be loaded (its pickle names only unknown or unsafe objects); not used"
        )
    for t in tensors:
        if t.numel() * t.element_size() > t.untyped_storage().nbytes():  # e.g. zero strides
            raise CorruptCheckpoint(
                f"{p}: a tensor of shape {tuple(t.shape)} is larger than its data; not loaded ({_REDOWNLOAD})"
            )
        if getattr(t, "_backward_hooks", None):  # hooks pickled with a tensor would be called during backward
            t._backward_hooks = collections.OrderedDict()
    return data


def check_checkpoint(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> list[str]:
    """Load ``path`` as ``load_checkpoint`` does and return its weight names (``state_dict`` keys if
    it has one), so a download can be verified before it is used; raises the same one-line errors."""
    data = load_checkpoint(path, max_bytes=max_bytes)
    sd = data.get("state_dict", data)
    if not isinstance(sd, dict):
        raise UnsafeCheckpoint(f"{path}: its state_dict is a {type(sd).__name__}, not a dict of tensors")
    return [k for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)]
