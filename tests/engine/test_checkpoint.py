"""The checkpoint loader returns tensors and never runs what a pickle asks for."""

from __future__ import annotations

import builtins
import collections
import importlib.util
import io
import os
import pickle
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

from engine.errors import ModelFileMissing, UnsafeCheckpoint, UserError
from engine.models import checkpoint
from engine.models.checkpoint import CorruptCheckpoint, Placeholder, load_checkpoint

FORMATS = [pytest.param(True, id="zip"), pytest.param(False, id="legacy")]


def _save(obj: object, path: Path, zip_format: bool = True) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    return path


def _state_dict() -> collections.OrderedDict[str, torch.Tensor]:
    sd = collections.OrderedDict(
        [
            ("encoder.weight", torch.arange(6, dtype=torch.float32).reshape(2, 3)),
            ("quantize.embedding", torch.ones(4)),
        ]
    )
    sd._metadata = {"": {"version": 1}}  # type: ignore[attr-defined]
    return sd


class _Payload:
    """Pickles as ``func(*args)``: what a malicious checkpoint would contain."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def _lightning_like(tmp_path: Path, zip_format: bool) -> Path:
    """A checkpoint whose callbacks are instances (and dict keys) of a class nobody can import."""
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    (mod_dir / "fake_lightning_cb.py").write_text(
        textwrap.dedent(
            """
            class ModelCheckpoint:
                def __init__(self):
                    self.best_model_path = "/somewhere/best.ckpt"
                    self.monitor = "val/rec_loss"

            class EarlyStopping:
                pass
            """
        )
    )
    spec = importlib.util.spec_from_file_location("fake_lightning_cb", mod_dir / "fake_lightning_cb.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fake_lightning_cb"] = mod
    try:
        spec.loader.exec_module(mod)
        ckpt = {
            "epoch": 3,
            "global_step": 1234,
            "pytorch-lightning_version": "1.0.8",
            "callbacks": {mod.ModelCheckpoint: {"best": torch.tensor(0.5)}, mod.EarlyStopping: {"wait": 1}},
            "hparams": mod.ModelCheckpoint(),
            "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(2)}}, "param_groups": [{"lr": 1e-4}]}],
            "lr_schedulers": [],
            "state_dict": _state_dict(),
            "misc": {"a_set": {1, 2}, "a_bytes": b"\x00\xffabc", "a_slice": slice(1, 5), "a_complex": 1 + 2j},
        }
        path = _save(ckpt, tmp_path / "lightning.ckpt", zip_format)
    finally:
        del sys.modules["fake_lightning_cb"]
    return path


@pytest.mark.parametrize("zip_format", FORMATS)
def test_lightning_checkpoint_with_unimportable_classes_loads_tensors(
    tmp_path: Path, zip_format: bool
) -> None:
    path = _lightning_like(tmp_path, zip_format)
    # A plain torch.load can't: the class is gone.
    with pytest.raises(Exception):  # noqa: B017
        torch.load(path, weights_only=False)

    ckpt = load_checkpoint(path)

    sd = ckpt["state_dict"]
    assert torch.equal(sd["encoder.weight"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert torch.equal(sd["quantize.embedding"], torch.ones(4))
    assert sd._metadata == {"": {"version": 1}}
    assert ckpt["global_step"] == 1234
    assert isinstance(ckpt["hparams"], Placeholder)
    keys = list(ckpt["callbacks"])
    assert len(keys) == 2 and all(issubclass(k, Placeholder) for k in keys)  # two classes stay two keys
    assert {k._pickled_name for k in keys} == {
        "fake_lightning_cb.ModelCheckpoint",
        "fake_lightning_cb.EarlyStopping",
    }
    assert ckpt["optimizer_states"][0]["state"][0]["exp_avg"].shape == (2,)
    assert ckpt["misc"] == {
        "a_set": {1, 2},
        "a_bytes": b"\x00\xffabc",
        "a_slice": slice(1, 5),
        "a_complex": 1 + 2j,
    }


@pytest.mark.parametrize("zip_format", FORMATS)
@pytest.mark.parametrize(
    "make_payload",
    [
        pytest.param(lambda f: _Payload(os.system, f"touch {f}"), id="os.system"),
        pytest.param(lambda f: _Payload(builtins.open, str(f), "w"), id="builtins.open"),
        pytest.param(lambda f: _Payload(builtins.exec, f"open({str(f)!r}, 'w')"), id="builtins.exec"),
        pytest.param(lambda f: _Payload(builtins.eval, f"open({str(f)!r}, 'w')"), id="builtins.eval"),
        pytest.param(lambda f: _Payload(subprocess.Popen, ["touch", str(f)]), id="subprocess.Popen"),
        pytest.param(
            lambda f: _Payload(pickle.loads, pickle.dumps(_Payload(os.system, f"touch {f}"), protocol=2)),
            id="nested-pickle.loads",
        ),
    ],
)
def test_malicious_pickle_is_inert(tmp_path: Path, zip_format: bool, make_payload) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "PWNED"
    ckpt = {"state_dict": _state_dict(), "callbacks": make_payload(marker), "other": [make_payload(marker)]}
    path = _save(ckpt, tmp_path / "evil.ckpt", zip_format)

    loaded = load_checkpoint(path)

    assert not marker.exists()
    assert isinstance(loaded["callbacks"], Placeholder)
    assert torch.equal(loaded["state_dict"]["quantize.embedding"], torch.ones(4))


@pytest.mark.parametrize("zip_format", FORMATS)
def test_checkpoint_with_only_a_payload_is_refused(tmp_path: Path, zip_format: bool) -> None:
    marker = tmp_path / "PWNED"
    path = _save({"model": _Payload(os.system, f"touch {marker}")}, tmp_path / "evil.pt", zip_format)
    with pytest.raises(UnsafeCheckpoint, match="no tensors"):
        load_checkpoint(path)
    assert not marker.exists()

    path = _save(_Payload(os.system, f"touch {marker}"), tmp_path / "evil2.pt", zip_format)
    with pytest.raises(UnsafeCheckpoint):
        load_checkpoint(path)
    assert not marker.exists()


def _raw_pickle(tmp_path: Path, build) -> Path:  # type: ignore[no-untyped-def]
    """A zip checkpoint whose data.pkl is replaced by hand-written opcodes."""
    path = _save({"w": torch.ones(1)}, tmp_path / "hand.pt")
    import zipfile

    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        records = {n: zf.read(n) for n in names}
    pkl = next(n for n in names if n.endswith("/data.pkl"))
    records[pkl] = build()
    out = tmp_path / "hand2.pt"
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for n in names:
            zf.writestr(n, records[n])
    return out


def test_build_cannot_patch_a_whitelisted_class(tmp_path: Path) -> None:
    # Parameter (a Python class), then BUILD with slot-state {"__repr__": None}: would patch it globally.
    def build() -> bytes:
        return b"\x80\x02ctorch.nn.parameter\nParameter\nN}X\x08\x00\x00\x00__repr__Ns\x86b."

    before = torch.nn.Parameter.__repr__
    with pytest.raises(CorruptCheckpoint, match="refusing"):
        load_checkpoint(_raw_pickle(tmp_path, build))
    assert torch.nn.Parameter.__repr__ is before


def test_setitem_on_a_class_is_refused(tmp_path: Path) -> None:
    def build() -> bytes:  # torch.Tensor, then SETITEM 0 -> 1 onto it
        return b"\x80\x02ctorch\nTensor\nK\x00K\x01s."

    with pytest.raises(CorruptCheckpoint, match="refusing"):
        load_checkpoint(_raw_pickle(tmp_path, build))


def test_whitelist_holds_nothing_dangerous() -> None:
    bad_modules = {
        "os",
        "posix",
        "nt",
        "subprocess",
        "sys",
        "builtins.eval",
        "importlib",
        "shutil",
        "socket",
        "pickle",
    }
    dangerous = {
        builtins.eval,
        builtins.exec,
        builtins.open,
        builtins.getattr,
        builtins.setattr,
        builtins.__import__,
        builtins.compile,
        os.system,
        subprocess.Popen,
        importlib.import_module,
    }
    for (module, name), obj in checkpoint._ALLOWED.items():
        assert module.split(".")[0] in {"torch", "collections", "builtins", "_codecs", "numpy"}, (
            module,
            name,
        )
        assert obj not in dangerous, (module, name)
        assert getattr(obj, "__module__", "") not in bad_modules, (module, name)
        assert not isinstance(obj, types.ModuleType)
    builtin_names = {n for m, n in checkpoint._ALLOWED if m == "builtins"}
    assert builtin_names <= {"set", "frozenset", "slice", "complex", "bytearray"}


def test_codecs_encode_only_does_latin1(tmp_path: Path) -> None:
    def build() -> bytes:  # _codecs.encode("x", "rot13")
        return b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R."

    with pytest.raises(CorruptCheckpoint, match="latin1"):
        load_checkpoint(_raw_pickle(tmp_path, build))


def test_torchscript_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(UnsafeCheckpoint, match="TorchScript"):
        load_checkpoint(path)


def test_safetensors_round_trip(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    loaded = load_checkpoint(path)
    assert set(loaded) == {"a", "b"}
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "last.ckpt"
    with pytest.raises(ModelFileMissing, match=str(path)):
        load_checkpoint(path)


def test_truncated_file_is_a_user_error(tmp_path: Path) -> None:
    path = _save({"state_dict": _state_dict()}, tmp_path / "full.ckpt")
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="cut.ckpt"):
        load_checkpoint(cut)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="garbage.ckpt"):
        load_checkpoint(garbage)


def test_numpy_scalars_load_and_arrays_become_placeholders(tmp_path: Path) -> None:
    # What Lightning leaves in callbacks/optimizer state: numpy scalars and dtypes. Arrays are not
    # needed (and their raw bytes could hold pointers), so they are inert, as are object dtypes.
    import numpy as np

    obj = {
        "w": torch.ones(2, dtype=torch.float16),
        "step": np.int64(7),
        "score": np.float64(0.25),
        "flag": np.bool_(True),
        "dt": np.dtype("f4"),
        "arr": np.arange(3),
        "objects": np.array([None, "x"], dtype=object),
    }
    loaded = load_checkpoint(_save(obj, tmp_path / "np.pt"))
    assert loaded["w"].dtype == torch.float16
    assert loaded["step"] == 7 and type(loaded["step"]) is np.int64
    assert loaded["score"] == 0.25 and loaded["flag"] is np.True_ and loaded["dt"] == np.dtype("f4")
    assert isinstance(loaded["arr"], Placeholder) and isinstance(loaded["objects"], Placeholder)


def test_parameters_and_views_survive(tmp_path: Path) -> None:
    base = torch.arange(10.0)
    obj = {"p": torch.nn.Parameter(torch.ones(3)), "view": base[2:5], "base": base}
    loaded = load_checkpoint(_save(obj, tmp_path / "p.pt"))
    assert isinstance(loaded["p"], torch.nn.Parameter)
    assert torch.equal(loaded["view"], torch.tensor([2.0, 3.0, 4.0]))


def test_pickle_protocols(tmp_path: Path) -> None:
    for proto in (2, 4, 5):
        buf = io.BytesIO()
        torch.save({"w": torch.ones(1), "s": {1}}, buf, pickle_protocol=proto)
        path = tmp_path / f"p{proto}.pt"
        path.write_bytes(buf.getvalue())
        assert load_checkpoint(path)["s"] == {1}


def test_unpickler_is_not_the_real_one() -> None:
    # Guard against someone "simplifying" to pickle.Unpickler or torch.load.
    assert checkpoint._SafeUnpickler is not pickle.Unpickler
    assert issubclass(checkpoint._SafeUnpickler, pickle._Unpickler)  # type: ignore[attr-defined]


@pytest.mark.parametrize("zip_format", FORMATS)
def test_whole_pickled_module_is_refused_with_a_hint(tmp_path: Path, zip_format: bool) -> None:
    path = _save(torch.nn.Linear(2, 2), tmp_path / "module.pt", zip_format)
    with pytest.raises(UnsafeCheckpoint, match="torch.nn.modules.linear.Linear.*state_dict"):
        load_checkpoint(path)


def test_forced_weights_only_env_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The loader never calls torch.load on a pickle, so torch's switches cannot loosen or break it.
    path = _save({"w": torch.ones(1)}, tmp_path / "w.pt")
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(1))
