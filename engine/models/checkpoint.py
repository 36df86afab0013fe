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

Every pickle goes through ``_SafeUnpickler``, the pure-Python ``pickle._Unpickler`` with

* ``find_class`` looking names up in a fixed table (``_ALLOWED``: tensor rebuild functions, dtypes,
  ``torch.Size``, ``OrderedDict``, ``set``, numpy scalars...) - never importing anything - and
  turning every other name (``os.system``, ``builtins.exec``, Lightning callbacks, numpy arrays,
  ``argparse.Namespace``...) into an inert ``Placeholder`` subclass;
* calls (REDUCE, NEWOBJ, INST/OBJ) going only through ``_CALLS``: checked versions of the few
  callables a checkpoint needs. Nothing that allocates a size the file chooses is callable
  (``torch.FloatTensor(2**40)``, ``bytearray(2**40)``), and numpy gets only ``dtype`` from a
  plain type string and ``scalar`` from exactly ``itemsize`` bytes - no object dtypes, no
  arrays (their raw bytes could hold pointers) - which is no looser than ``weights_only=True``;
* BUILD (``__setstate__``) only on tensors, ``OrderedDict`` (attributes that shadow nothing) and a
  numpy dtype whose state is the one it already has; SETITEM/APPEND/ADDITEMS only on fresh dicts,
  lists and sets. ``Placeholder`` swallows everything.

The storage bytes a file declares are checked against what it holds before anything is allocated.
Whatever goes wrong while reading ends as one ``CorruptCheckpoint`` (or ``UnsafeCheckpoint``) line
naming the file and what to do. ``.safetensors`` files hold no code and go through
``safetensors.torch.load_file``, which checks its header against the file.
"""

from __future__ import annotations

import collections
import functools
import io
import logging
import os
import pickle
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, cast

import torch

from engine.errors import ModelFileMissing, UnsafeCheckpoint, UserError

__all__ = ["load_checkpoint", "check_checkpoint", "Placeholder", "CorruptCheckpoint"]

log = logging.getLogger(__name__)

_ZIP_MAGIC = b"PK\x03\x04"  # torch.serialization._is_zipfile: these first bytes mean "zip" to torch.load
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION
_REDOWNLOAD = "delete it and download it again"


class CorruptCheckpoint(UserError):
    """The file is not a readable checkpoint (truncated download, wrong format, impossible sizes)."""


class Placeholder:
    """Stands in for any class the pickle names that is not whitelisted; does nothing."""

    _pickled_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def add(self, item: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<Placeholder for {self._pickled_name}>"


_placeholders: dict[tuple[str, str], type[Placeholder]] = {}


def _placeholder(module: str, name: str) -> type[Placeholder]:
    """One class per pickled name, so e.g. two callback classes used as dict keys stay apart."""
    key = (module, name)
    cls = _placeholders.get(key)
    if cls is None:
        cls = type(
            "Placeholder", (Placeholder,), {"_pickled_name": f"{module}.{name}", "__module__": __name__}
        )
        _placeholders[key] = cls
    return cls


# --- what a pickle may name, and what it may call -------------------------------------------------

_LATIN1 = ("latin1", "latin-1")


def _latin1_encode(obj: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """Protocol-2 pickles store ``bytes`` as ``_codecs.encode(str, "latin1")``; allow only that."""
    if not isinstance(obj, str) or encoding not in _LATIN1 or errors != "strict":
        raise pickle.UnpicklingError("_codecs.encode is allowed only for latin1 bytes")
    return obj.encode("latin1")


def _bytearray(source: Any = b"", encoding: str | None = None) -> bytearray:
    """``bytearray`` from bytes or a latin1 string only: ``bytearray(2**40)`` would allocate."""
    if isinstance(source, str) and encoding in _LATIN1:
        return bytearray(source, "latin1")
    if isinstance(source, bytes | bytearray) and encoding is None:
        return bytearray(source)
    raise pickle.UnpicklingError("bytearray is allowed only from bytes or a latin1 string")


def _parameter(data: Any = None, requires_grad: bool = True) -> torch.nn.Parameter:
    if not isinstance(data, torch.Tensor) or not isinstance(requires_grad, bool):
        raise pickle.UnpicklingError("Parameter is allowed only around a tensor")
    return torch.nn.Parameter(data, requires_grad)


def _rebuild_parameter_with_state(data: Any, requires_grad: Any, backward_hooks: Any, state: Any) -> Any:
    """Python attributes pickled with a tensor are dropped: they could shadow its methods."""
    return torch._utils._rebuild_parameter(data, requires_grad, backward_hooks)


_TENSOR_REBUILDERS: tuple[Callable[..., Any], ...] = (
    torch._utils._rebuild_tensor,
    torch._utils._rebuild_tensor_v2,
    torch._utils._rebuild_tensor_v3,
    torch._utils._rebuild_parameter,
    torch._utils._rebuild_parameter_with_state,
)


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    """``torch._tensor._rebuild_from_type_v2`` calls ``func(*args)``: only a tensor rebuilder, and
    without the pickled attribute state (see ``_rebuild_parameter_with_state``)."""
    if not any(func is f for f in _TENSOR_REBUILDERS) or not (new_type is torch.Tensor or new_type is torch.nn.Parameter):
        raise pickle.UnpicklingError("_rebuild_from_type_v2 is allowed only for plain tensors")
    return torch._tensor._rebuild_from_type_v2(_CALLS[id(func)], new_type, tuple(args), None)


@functools.cache
def _numpy() -> tuple[Any, Any] | None:
    """(numpy, its multiarray module), or None where numpy is missing: its names become placeholders."""
    try:
        import numpy as np

        core = getattr(np, "_core", None) or np.core
        return np, core.multiarray
    except Exception:
        return None


def _plain_dtype(dt: Any) -> bool:
    """A numpy dtype whose bytes are only numbers or characters: no object fields, no structure."""
    np = _numpy()
    return (
        np is not None
        and isinstance(dt, np[0].dtype)
        and not dt.hasobject
        and dt.fields is None
        and dt.subdtype is None
    )


def _np_dtype(spec: Any, align: Any = False, copy: Any = True) -> Any:
    """``numpy.dtype`` from a short type string ("f8", "<i8", "U3"); anything else is a placeholder."""
    np = _numpy()
    if np is not None and isinstance(spec, str) and len(spec) <= 16:
        try:
            dt = np[0].dtype(spec)
        except (TypeError, ValueError):
            dt = None
        if dt is not None and _plain_dtype(dt):
            return dt
    return _placeholder("numpy", "dtype")()


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    """A numpy scalar from a plain dtype and exactly its ``itemsize`` bytes; else a placeholder."""
    np = _numpy()
    if np is not None and _plain_dtype(dtype) and isinstance(data, bytes) and len(data) == dtype.itemsize:
        return np[1].scalar(dtype, data)
    return _placeholder("numpy", "scalar")()


def _allowed_globals() -> tuple[dict[tuple[str, str], Any], dict[int, Callable[..., Any]]]:
    """The (module, name) pairs a checkpoint may reference, mapped to the real objects, and the
    checked callables (by ``id`` of the object the pickle names) that REDUCE/NEWOBJ may use."""
    names: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("builtins", "complex"): complex,
        ("builtins", "bytearray"): bytearray,
        ("_codecs", "encode"): _latin1_encode,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch", "Tensor"): torch.Tensor,
        ("torch._tensor", "Tensor"): torch.Tensor,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("torch.serialization", "_get_layout"): torch.serialization._get_layout,
        ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
    }
    # Dense CPU-tensor rebuilders only: sparse/quantized/nested/meta/device/numpy ones are left out
    # (malformed sparse indices are a known memory-safety hazard; VQGAN files never use them).
    for fn in _TENSOR_REBUILDERS:
        names[("torch._utils", fn.__name__)] = fn
    for value in vars(torch).values():
        if isinstance(value, torch.dtype | torch.layout | torch.memory_format | torch.qscheme):
            names[("torch", str(value).removeprefix("torch."))] = value
    for tensor_cls in torch._tensor_classes:  # torch.FloatTensor etc. (as names only); not the sparse or CUDA ones
        if tensor_cls.__module__ == "torch":
            names[(tensor_cls.__module__, tensor_cls.__name__)] = tensor_cls
    for storage in (torch.storage.UntypedStorage, torch.storage.TypedStorage):
        names[("torch.storage", storage.__name__)] = storage
        names[("torch", storage.__name__)] = storage
    for legacy in torch._storage_classes:  # legacy torch.FloatStorage & co., as torch.load maps them
        if legacy not in (torch.storage.UntypedStorage, torch.storage.TypedStorage):
            names[(legacy.__module__, legacy.__name__)] = torch.serialization.StorageType(legacy.__name__)

    calls: dict[int, Callable[..., Any]] = {
        id(obj): obj
        for obj in (collections.OrderedDict, set, frozenset, slice, complex, torch.Size, torch.device,
                    torch.serialization._get_layout, _latin1_encode, *_TENSOR_REBUILDERS)
    }
    calls[id(bytearray)] = _bytearray
    calls[id(torch.nn.Parameter)] = _parameter
    calls[id(torch._utils._rebuild_parameter_with_state)] = _rebuild_parameter_with_state
    calls[id(torch._tensor._rebuild_from_type_v2)] = _rebuild_from_type_v2

    np = _numpy()
    if np is not None:
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
            names[(mod, "scalar")] = np[1].scalar
        names[("numpy", "dtype")] = np[0].dtype
        calls[id(np[1].scalar)] = _np_scalar
        calls[id(np[0].dtype)] = _np_dtype
    return names, calls


_ALLOWED, _CALLS = _allowed_globals()
_ALLOWED_IDS: frozenset[int] = frozenset(id(v) for v in _ALLOWED.values())
# NEWOBJ runs ``cls.__new__(cls, *args)``: only for classes whose __new__ allocates nothing sized.
_NEWOBJ_OK: frozenset[int] = frozenset(
    id(c) for c in (collections.OrderedDict, set, frozenset, complex, bytearray, torch.Size)
)


def _is_placeholder_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, Placeholder)


if TYPE_CHECKING:

    class _PurePythonUnpickler(pickle.Unpickler):
        """What typeshed leaves out of ``pickle._Unpickler``, the pure-Python unpickler whose
        opcodes are methods in a ``dispatch`` table (the C one cannot be overridden per opcode)."""

        dispatch: ClassVar[dict[int, Callable[[Any], None]]]
        stack: list[Any]
        proto: int
        fix_imports: bool

        def append(self, obj: Any, /) -> None: ...
        def pop_mark(self) -> list[Any]: ...

else:
    _PurePythonUnpickler = pickle._Unpickler


class _SafeUnpickler(_PurePythonUnpickler):
    """Pure-Python unpickler (so single opcodes can be overridden) that never imports or calls
    anything outside the whitelist."""

    dispatch = dict(_PurePythonUnpickler.dispatch)

    def __init__(
        self, file: IO[bytes], persistent_load: Callable[[Any], Any] | None = None, size: int = 0
    ) -> None:
        super().__init__(file, encoding="utf-8")  # what torch.load passes for Python 2 pickles
        self._persistent_load = persistent_load
        # Calls may copy what the memo holds (``_codecs.encode`` of one string a million times):
        # what they make, in bytes or items, may not outgrow the pickle by much.
        self._may_make = 8 * size + (1 << 20)

    def _made(self, obj: Any) -> Any:
        if isinstance(obj, bytes | bytearray | str | tuple | list | dict | set | frozenset):
            self._may_make -= len(obj)
            if self._may_make < 0:
                raise pickle.UnpicklingError("its pickle builds far more data than it holds")
        return obj

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent_load is None:
            raise pickle.UnpicklingError("unexpected storage reference")
        return self._persistent_load(pid)

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:
            import _compat_pickle

            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        if module == "torch.tensor":  # renamed torch._tensor in 1.8, as torch.load maps it
            module = "torch._tensor"
        if isinstance(name, str) and name.endswith("Storage") and (module, name) not in _ALLOWED:
            try:  # e.g. torch.cuda.FloatStorage in old files: an inert type tag, as torch.load maps it
                return torch.serialization.StorageType(name)
            except (KeyError, AttributeError):
                pass
        obj = _ALLOWED.get((module, name))
        return obj if obj is not None else _placeholder(module, name)

    def _call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
        if _is_placeholder_class(func):
            return func()
        checked = _CALLS.get(id(func)) if id(func) in _ALLOWED_IDS else None
        if checked is None:
            raise pickle.UnpicklingError(f"refusing to call {type(func).__name__} object from a checkpoint")
        return self._made(checked(*args, **(kwargs or {})))

    def _new(self, cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
        if _is_placeholder_class(cls):
            return cls()
        if cls is torch.nn.Parameter:
            return _parameter(*args, **(kwargs or {}))
        if isinstance(cls, type) and id(cls) in _NEWOBJ_OK:
            return self._made(cls.__new__(cls, *args, **(kwargs or {})))
        raise pickle.UnpicklingError(f"refusing to create {cls!r} from a checkpoint")

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], tuple(args))

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, tuple(args)))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, tuple(args), dict(kwargs)))

    def _instantiate(self, klass: Any, args: list[Any]) -> None:  # INST and OBJ (protocols 0/1)
        self.append(self._call(klass, tuple(args)))

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, Placeholder):
            return
        if type(inst) in (torch.Tensor, torch.nn.Parameter):
            inst.__setstate__(state)  # very old tensor pickles: (storage, offset, size, stride) etc.
        elif type(inst) is collections.OrderedDict:
            if isinstance(state, tuple) and len(state) == 2:
                state = state[0]
            if isinstance(state, dict):  # e.g. state_dict._metadata; never a name OrderedDict has
                inst.__dict__.update(
                    {k: v for k, v in state.items() if isinstance(k, str) and not hasattr(inst, k)}
                )
        elif _plain_dtype(inst):
            # A numpy dtype's state can add object fields and clear its flags, after which numpy
            # reads pointers from the file's bytes: accept only the state the dtype already has.
            if state != inst.__reduce__()[2]:
                raise pickle.UnpicklingError("refusing to change a numpy dtype from a checkpoint")
        else:
            raise pickle.UnpicklingError(f"refusing to set state on {type(inst).__name__} from a checkpoint")

    def load_append(self) -> None:
        value = self.stack.pop()
        target = self.stack[-1]
        if type(target) is list:
            target.append(value)
        elif not isinstance(target, Placeholder):
            raise pickle.UnpicklingError(f"refusing APPEND to {type(target).__name__}")

    def load_appends(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is list:
            target.extend(items)
        elif not isinstance(target, Placeholder):
            raise pickle.UnpicklingError(f"refusing APPENDS to {type(target).__name__}")

    def _setitems(self, pairs: list[Any]) -> None:
        target = self.stack[-1]
        if isinstance(target, Placeholder):
            return
        if type(target) not in (dict, collections.OrderedDict):
            raise pickle.UnpicklingError(f"refusing SETITEM on {type(target).__name__}")
        for i in range(0, len(pairs), 2):
            target[pairs[i]] = pairs[i + 1]

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._setitems([key, value])

    def load_setitems(self) -> None:
        self._setitems(self.pop_mark())

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is set:
            target.update(items)
        elif not isinstance(target, Placeholder):
            raise pickle.UnpicklingError(f"refusing ADDITEMS on {type(target).__name__}")

    for _op, _fn in (
        (pickle.REDUCE, load_reduce),
        (pickle.NEWOBJ, load_newobj),
        (pickle.NEWOBJ_EX, load_newobj_ex),
        (pickle.BUILD, load_build),
        (pickle.APPEND, load_append),
        (pickle.APPENDS, load_appends),
        (pickle.SETITEM, load_setitem),
        (pickle.SETITEMS, load_setitems),
        (pickle.ADDITEMS, load_additems),
    ):
        dispatch[_op[0]] = _fn
    del _op, _fn


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
        return _SafeUnpickler(io.BytesIO(pickled), persistent_load, len(pickled)).load()


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
        return _SafeUnpickler(stream, size=size).load()

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

    result = _SafeUnpickler(stream, persistent_load, size).load()
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
