"""Load model checkpoints without ever running code from a pickle.

VQGAN checkpoints are PyTorch Lightning ``.ckpt`` files: besides ``state_dict`` they pickle
callback classes, hyper-parameter objects and so on. ``torch.load(weights_only=True)`` rejects
them outright (a callback *class* is a dict key), and ``weights_only=False`` would import and
call whatever the pickle names. So there is one path for every pickle-based file:

``torch.load(path, map_location="cpu", weights_only=False, pickle_module=_SAFE_PICKLE)``, where
``_SAFE_PICKLE.Unpickler`` is the pure-Python ``pickle._Unpickler`` with

* ``find_class`` looking names up in a fixed table (tensor/storage rebuild functions, dtypes,
  ``torch.Size``, ``OrderedDict``, ``set``... see ``_allowed_globals``) - never importing
  anything - and turning every other name (``os.system``, ``builtins.exec``, Lightning
  callbacks, ``argparse.Namespace``...) into an inert ``Placeholder`` subclass;
* the opcodes that call or mutate objects (REDUCE, NEWOBJ, INST/OBJ, BUILD, APPEND(S),
  SETITEM(S), ADDITEMS) checked: only whitelisted callables are called, only fresh data
  objects are mutated, ``Placeholder`` swallows everything.

One path, not "weights_only first, then fall back": the fallback would be taken for every VQGAN
checkpoint anyway, so it is the real safety boundary and the one that must be tested. The
whitelist holds no callable that can reach the file system, the network, imports or eval
(``test_checkpoint.py`` checks that). TorchScript archives (``torch.jit.load`` runs their code)
and the pre-2018 tar format (extracts members to disk) are refused. ``.safetensors`` files
hold no code and go through ``safetensors.torch.load_file``.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import tarfile
import types
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from engine.errors import ModelFileMissing, UnsafeCheckpoint, UserError

__all__ = ["load_checkpoint", "Placeholder", "CorruptCheckpoint"]


class CorruptCheckpoint(UserError):
    """The file is not a readable checkpoint (truncated download, wrong format)."""


class Placeholder:
    """Stands in for any class the pickle names that is not whitelisted; does nothing."""

    _pickled_name = "?"
    dump_patches = False  # read by torch's legacy loader for pickled nn.Module classes

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


def _latin1_encode(obj: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """Protocol-2 pickles store ``bytes`` as ``_codecs.encode(str, "latin1")``; allow only that."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("_codecs.encode is allowed only for latin1 bytes")
    return obj.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The (module, name) pairs a checkpoint may reference, mapped to the real objects."""
    allowed: dict[tuple[str, str], Any] = {
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
    # Dense-tensor rebuilders only: sparse/quantized/nested/wrapper-subclass ones are left out
    # (malformed sparse indices are a known memory-safety hazard; VQGAN files never use them).
    for fn in (
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_rebuild_device_tensor_from_cpu_tensor",
        "_rebuild_device_tensor_from_numpy",
        "_rebuild_meta_tensor_no_storage",
    ):
        if hasattr(torch._utils, fn):
            allowed[("torch._utils", fn)] = getattr(torch._utils, fn)
    for value in vars(torch).values():
        if isinstance(value, torch.dtype | torch.layout | torch.memory_format | torch.qscheme):
            allowed[("torch", str(value).removeprefix("torch."))] = value
    for cls in torch._tensor_classes:  # torch.FloatTensor etc.; not the sparse or CUDA ones
        if cls.__module__ == "torch":
            allowed[(cls.__module__, cls.__name__)] = cls
    for cls in (torch.storage.UntypedStorage, torch.storage.TypedStorage):
        allowed[("torch.storage", cls.__name__)] = cls
        allowed[("torch", cls.__name__)] = cls
    for cls in torch._storage_classes:  # legacy torch.FloatStorage & co., as torch.load maps them
        if cls not in (torch.storage.UntypedStorage, torch.storage.TypedStorage):
            allowed[(cls.__module__, cls.__name__)] = torch.serialization.StorageType(cls.__name__)
    try:
        import numpy as np

        core = getattr(np, "_core", None) or np.core
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed[(mod, "scalar")] = core.multiarray.scalar
            allowed[(mod, "_reconstruct")] = core.multiarray._reconstruct
        allowed[("numpy", "dtype")] = np.dtype
        allowed[("numpy", "ndarray")] = np.ndarray
    except Exception:  # numpy missing or reorganised: its objects become placeholders
        pass
    return allowed


_ALLOWED: dict[tuple[str, str], Any] = _allowed_globals()
_ALLOWED_IDS: frozenset[int] = frozenset(id(v) for v in _ALLOWED.values())


def _is_allowed(obj: Any) -> bool:
    return id(obj) in _ALLOWED_IDS


def _is_placeholder_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, Placeholder)


def _may_build(inst: Any) -> bool:
    """BUILD (``__setstate__``/``__dict__`` update) only on fresh data objects, never on a
    class, function or module - that would let a pickle patch global state."""
    if isinstance(inst, type | types.FunctionType | types.BuiltinFunctionType | types.ModuleType):
        return False
    if _is_allowed(inst):
        return False
    return (
        isinstance(inst, torch.Tensor | collections.OrderedDict)
        or _is_allowed(type(inst))
        or type(inst).__module__.split(".")[0] == "numpy"
    )


class _SafeUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Pure-Python unpickler (so single opcodes can be overridden) that never imports or calls
    anything outside the whitelist."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:
            import _compat_pickle

            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        obj = _ALLOWED.get((module, name))
        return obj if obj is not None else _placeholder(module, name)

    def _call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
        if _is_placeholder_class(func):
            return func()
        if _is_allowed(func):
            return func(*args, **(kwargs or {}))
        raise pickle.UnpicklingError(f"refusing to call {type(func).__name__} object from a checkpoint")

    def _new(self, cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
        if _is_placeholder_class(cls):
            return cls()
        if isinstance(cls, type) and _is_allowed(cls):
            return cls.__new__(cls, *args, **(kwargs or {}))
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
        if not _may_build(inst):
            raise pickle.UnpicklingError(f"refusing to set state on {type(inst).__name__} from a checkpoint")
        if type(inst) is torch.Tensor and isinstance(state, tuple) and len(state) == 4:
            inst.set_(*state)  # very old tensor pickles: (storage, offset, size, stride)
        elif isinstance(inst, collections.OrderedDict):
            if isinstance(state, tuple) and len(state) == 2:
                state = state[0]
            if isinstance(state, dict):
                inst.__dict__.update(state)  # e.g. state_dict._metadata
        else:
            inst.__setstate__(state)

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


def _safe_load(file: Any, **kwargs: Any) -> Any:
    return _SafeUnpickler(file, **kwargs).load()


# What torch.load needs from ``pickle_module``: ``Unpickler``, ``load`` and ``__name__``.
_SAFE_PICKLE = types.ModuleType("engine.models.checkpoint.safe_pickle")
_SAFE_PICKLE.Unpickler = _SafeUnpickler  # type: ignore[attr-defined]
_SAFE_PICKLE.load = _safe_load  # type: ignore[attr-defined]
_SAFE_PICKLE.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]


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


def _refuse_unsafe_formats(path: Path) -> None:
    """Formats whose torch.load path runs code or writes files before any unpickling."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in zf.namelist()):
                raise UnsafeCheckpoint(f"{path}: a TorchScript archive, which can run code; not loaded")
    elif tarfile.is_tarfile(path):
        raise UnsafeCheckpoint(
            f"{path}: the pre-2018 torch tar format is not supported; re-save it with torch.save"
        )


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``.ckpt``/``.pt``/``.pth``/``.bin`` or ``.safetensors`` file onto the CPU.

    Unknown pickled objects come back as ``Placeholder`` instances; tensors come back intact.
    Raises ``ModelFileMissing`` (no file), ``UnsafeCheckpoint`` (nothing loadable / refused
    format) or ``CorruptCheckpoint`` (unreadable).
    """
    p = Path(path)
    if not p.is_file():
        raise ModelFileMissing(f"model file not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            data: Any = load_file(str(p), device="cpu")
        except Exception as e:
            raise CorruptCheckpoint(
                f"{p}: not a readable safetensors file ({e}); delete it and fetch it again"
            ) from None
    else:
        _refuse_unsafe_formats(p)
        if os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "").lower() in ("1", "y", "yes", "true"):
            raise UserError(
                "TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, which makes torch reject this (already safe) loader; unset it"
            )
        try:
            with warnings.catch_warnings():  # legacy files: "source of class Placeholder has changed"
                warnings.simplefilter("ignore", torch.serialization.SourceChangeWarning)
                data = torch.load(p, map_location="cpu", weights_only=False, pickle_module=_SAFE_PICKLE)
        except (
            pickle.UnpicklingError,
            EOFError,
            RuntimeError,
            ValueError,
            TypeError,
            AttributeError,
            KeyError,
            IndexError,
            OSError,
            io.UnsupportedOperation,
            zipfile.BadZipFile,
        ) as e:
            raise CorruptCheckpoint(
                f"{p}: not a readable checkpoint ({type(e).__name__}: {e}); delete it and fetch it again"
            ) from None
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
    for t in tensors:  # hooks pickled with a tensor would be called during backward
        if getattr(t, "_backward_hooks", None):
            t._backward_hooks = collections.OrderedDict()
    return data
