"""The unpickler of checkpoints: it never imports or calls anything a file names outside a fixed table.

Every pickle goes through ``SafeUnpickler``, the pure-Python ``pickle._Unpickler`` with

* ``find_class`` looking names up in a fixed table (``ALLOWED``: tensor rebuild functions, dtypes,
  ``torch.Size``, ``OrderedDict``, ``set``, numpy scalars...) - never importing anything - and
  turning every other name (``os.system``, ``builtins.exec``, Lightning callbacks, numpy arrays,
  ``argparse.Namespace``...) into an inert ``Placeholder`` subclass;
* calls (REDUCE, NEWOBJ, INST/OBJ) going only through ``CALLS``: checked versions of the few
  callables a checkpoint needs. Nothing that allocates a size the file chooses is callable
  (``torch.FloatTensor(2**40)``, ``bytearray(2**40)``), and numpy gets only ``dtype`` from a
  plain type string and ``scalar`` from exactly ``itemsize`` bytes - no object dtypes, no
  arrays (their raw bytes could hold pointers) - which is no looser than ``weights_only=True``;
* BUILD (``__setstate__``) only on tensors, ``OrderedDict`` (attributes that shadow nothing) and a
  numpy dtype whose state is the one it already has; SETITEM/APPEND/ADDITEMS only on fresh dicts,
  lists and sets. ``Placeholder`` swallows everything.
"""

from __future__ import annotations

import collections
import functools
import pickle
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, ClassVar

import torch

__all__ = ["SafeUnpickler", "Placeholder", "ALLOWED"]


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
    return torch._tensor._rebuild_from_type_v2(CALLS[id(func)], new_type, tuple(args), None)


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


ALLOWED, CALLS = _allowed_globals()
_ALLOWED_IDS: frozenset[int] = frozenset(id(v) for v in ALLOWED.values())
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


class SafeUnpickler(_PurePythonUnpickler):
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
        if isinstance(name, str) and name.endswith("Storage") and (module, name) not in ALLOWED:
            try:  # e.g. torch.cuda.FloatStorage in old files: an inert type tag, as torch.load maps it
                return torch.serialization.StorageType(name)
            except (KeyError, AttributeError):
                pass
        obj = ALLOWED.get((module, name))
        return obj if obj is not None else _placeholder(module, name)

    def _call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
        if _is_placeholder_class(func):
            return func()
        checked = CALLS.get(id(func)) if id(func) in _ALLOWED_IDS else None
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
