"""The checkpoint loader returns tensors and never runs what a pickle asks for."""

from __future__ import annotations

import builtins
import collections
import importlib.util
import io
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

from engine.errors import CorruptCheckpoint, ModelFileMissing, UnsafeCheckpoint, UserError
from engine.models import unpickler
from engine.models.checkpoint import check_checkpoint, load_checkpoint
from engine.models.unpickler import Placeholder

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


def _zip_with(tmp_path: Path, name: str, pkl: bytes, *, deflate: bool = False) -> Path:
    """A real torch.save archive (one 4-byte tensor record, data/0) with data.pkl replaced."""
    import zipfile

    src = _save({"w": torch.ones(1)}, tmp_path / "src.pt")
    with zipfile.ZipFile(src) as zf:
        records = {n: zf.read(n) for n in zf.namelist()}
    out = tmp_path / name
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for n, data in records.items():
            if n.endswith("/data.pkl"):
                zf.writestr(n, pkl, compress_type=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
            else:
                zf.writestr(n, data)
    return out


def _raw_pickle(tmp_path: Path, build) -> Path:  # type: ignore[no-untyped-def]
    """A zip checkpoint whose data.pkl is replaced by hand-written opcodes."""
    return _zip_with(tmp_path, "hand.pt", build())


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
    for (module, name), obj in unpickler.ALLOWED.items():
        assert module.split(".")[0] in {"torch", "collections", "builtins", "_codecs", "numpy"}, (
            module,
            name,
        )
        assert obj not in dangerous, (module, name)
        assert getattr(obj, "__module__", "") not in bad_modules, (module, name)
        assert not isinstance(obj, types.ModuleType)
    builtin_names = {n for m, n in unpickler.ALLOWED if m == "builtins"}
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


def test_safetensors_is_known_by_its_content_too(tmp_path: Path) -> None:
    # A download being verified is still called NAME.part.
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors.part"
    save_file({"a": torch.ones(2)}, str(path))
    assert torch.equal(load_checkpoint(path)["a"], torch.ones(2))


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
    assert unpickler.SafeUnpickler is not pickle.Unpickler
    assert issubclass(unpickler.SafeUnpickler, pickle._Unpickler)  # type: ignore[attr-defined]


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


# -- issue #10: files that are not what they seem -------------------------------------------------


class _FileWriter(torch.nn.Module):
    """Its TorchScript __setstate__, which torch.jit.load runs, creates the file it names."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.w = torch.ones(1)

    @torch.jit.export
    def __getstate__(self) -> tuple[str, torch.Tensor, bool]:
        return (self.path, self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor, bool]) -> None:
        self.path = state[0]
        self.w = torch.from_file(state[0], shared=True, size=8)
        self.training = state[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_torchscript_with_trailing_bytes_is_refused_before_it_runs(tmp_path: Path) -> None:
    # A TorchScript archive plus 4 bytes is no zip to zipfile.is_zipfile, but torch.load still
    # reads it as one and hands it to torch.jit.load, which runs its __setstate__.
    marker = tmp_path / "PWNED"
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(_FileWriter(str(marker))), str(scripted))
    evil = tmp_path / "last.ckpt"
    evil.write_bytes(scripted.read_bytes() + b"PK\x05\x06")

    with pytest.raises(UserError, match="last.ckpt"):
        load_checkpoint(evil)
    assert not marker.exists()

    torch.jit.load(str(scripted))  # the payload is real: loading it as torch does writes the file
    assert marker.exists()


def test_zip_with_a_code_folder_is_torchscript(tmp_path: Path) -> None:
    # torch.jit.save writes code/ and constants.pkl; either one marks TorchScript.
    path = _save({"w": torch.ones(1)}, tmp_path / "w.pt")
    import zipfile

    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(zf.namelist()[0].split("/")[0] + "/code/__torch__.py", "def f(): pass\n")
    with pytest.raises(UnsafeCheckpoint, match="TorchScript"):
        load_checkpoint(path)


def _evil_numpy_pickle() -> bytes:
    """dtype("V8") BUILT with an object field and its flags cleared but for "holds references",
    then an array of it from raw bytes: numpy frees 0x4141414141414141 as an object pointer."""
    return (
        b"\x80\x02}X\x03\x00\x00\x00arr"
        b"cnumpy\ndtype\nX\x02\x00\x00\x00V8\x89\x88\x87Rq\x00"
        b"(K\x03X\x01\x00\x00\x00|NX\x01\x00\x00\x00f\x85}X\x01\x00\x00\x00f"
        b"cnumpy\ndtype\nX\x02\x00\x00\x00O8\x89\x88\x87RK\x00\x86sK\x08K\x01K\x01tb0"  # flags: refcount only
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R"
        b"(K\x01K\x01\x85h\x00\x89C\x08AAAAAAAAtb"
        b"s."
    )


def test_numpy_object_dtype_from_raw_bytes_cannot_touch_memory(tmp_path: Path) -> None:
    path = _raw_pickle(tmp_path, _evil_numpy_pickle)
    with pytest.raises(pickle.UnpicklingError):  # torch's weights_only refuses it too
        torch.load(path, weights_only=True)
    # In a child process, so that a crash fails this test instead of killing pytest.
    script = textwrap.dedent(
        f"""
        import sys
        from engine.errors import UserError
        from engine.models.checkpoint import load_checkpoint
        try:
            load_checkpoint({str(path)!r})
        except UserError as e:
            print(e, file=sys.stderr)
            sys.exit(2)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-500:])
    assert str(path) in proc.stderr and "Traceback" not in proc.stderr


def test_numpy_scalar_needs_a_plain_dtype_and_exact_bytes(tmp_path: Path) -> None:
    import numpy as np

    def build() -> bytes:  # {"ok": scalar(float64, 8 bytes), "short": scalar(float64, 2 bytes), "obj": scalar(O8, ...)}
        f64 = b"cnumpy\ndtype\nX\x02\x00\x00\x00f8\x89\x88\x87R"
        return (
            b"\x80\x02}(X\x02\x00\x00\x00ok" b"cnumpy.core.multiarray\nscalar\n" + f64
            + b"C\x08\x00\x00\x00\x00\x00\x00\xf0?\x86R"
            b"X\x05\x00\x00\x00short" b"cnumpy.core.multiarray\nscalar\n" + f64 + b"C\x02AA\x86R"
            b"X\x03\x00\x00\x00obj" b"cnumpy.core.multiarray\nscalar\ncnumpy\ndtype\nX\x02\x00\x00\x00O8\x89\x88\x87R"
            b"C\x08AAAAAAAA\x86R"
            b"X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n"
            b"((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00"
            b"0X\x03\x00\x00\x00cpuK\x01tQK\x00K\x01\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR"
            b"u."
        )

    loaded = load_checkpoint(_raw_pickle(tmp_path, build))
    assert loaded["ok"] == 1.0 and type(loaded["ok"]) is np.float64
    assert isinstance(loaded["short"], Placeholder) and isinstance(loaded["obj"], Placeholder)
    assert torch.equal(loaded["w"], torch.ones(1))


def _tensor_pickle(numel: int, size: int, stride: int) -> bytes:
    """{"w": _rebuild_tensor_v2(<FloatStorage "0" of numel>, 0, (size,), (stride,), False, OrderedDict())}"""
    return (
        b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n"
        b"((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00"
        b"0X\x03\x00\x00\x00cpu\x8a\x08" + numel.to_bytes(8, "little") + b"tQ"
        b"K\x00\x8a\x08" + size.to_bytes(8, "little") + b"\x85K" + bytes([stride]) + b"\x85"
        b"\x89ccollections\nOrderedDict\n)RtRs."
    )


def _broken_files(tmp_path: Path) -> dict[str, Path]:
    fake_end = tmp_path / "fake_end.ckpt"  # a local header, then an end record pointing nowhere
    fake_end.write_bytes(
        b"PK\x03\x04" + bytes(26) + b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, 46, 1000, 0)
    )
    return {
        "fake end-of-zip record": fake_end,
        "text persistent id": _zip_with(tmp_path, "text_pid.ckpt", b"\x80\x02}X\x01\x00\x00\x00wP0\ns."),
        "bytearray(2**70)": _zip_with(
            tmp_path, "bytearray.ckpt",
            b"\x80\x02}X\x01\x00\x00\x00wcbuiltins\nbytearray\n\x8a\x09" + (2**70).to_bytes(9, "little")
            + b"\x85Rs.",
        ),
        "deflate bomb": _zip_with(tmp_path, "bomb.ckpt", _tensor_pickle(1, 1, 1) + bytes(64 << 20), deflate=True),
        "declares 4 TiB": _zip_with(tmp_path, "huge.ckpt", _tensor_pickle(2**40, 1, 1)),
        "zero-stride giant": _zip_with(tmp_path, "stride0.ckpt", _tensor_pickle(1, 2**40, 0)),
    }


def test_hand_written_tensor_pickle_is_a_valid_checkpoint(tmp_path: Path) -> None:
    # So that the broken files below are refused for what is broken in them, not for a typo.
    assert torch.equal(load_checkpoint(_zip_with(tmp_path, "fine.ckpt", _tensor_pickle(1, 1, 1)))["w"], torch.ones(1))


BROKEN = {  # what is wrong -> what the one line says about it
    "fake end-of-zip record": "BadZipFile",
    "text persistent id": "unexpected storage reference",
    "bytearray(2**70)": "bytearray is allowed only",
    "deflate bomb": "compressed record",
    "declares 4 TiB": "declared as 4398046511104 bytes but the file holds 4",
    "zero-stride giant": "larger than its data",
}


@pytest.mark.parametrize("what", list(BROKEN))
def test_every_broken_file_is_one_line_naming_it(tmp_path: Path, what: str) -> None:
    path = _broken_files(tmp_path)[what]
    with pytest.raises(CorruptCheckpoint) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and BROKEN[what] in message, message
    assert "download it again" in message and "\n" not in message, message


@pytest.mark.parametrize("what", list(BROKEN))
def test_broken_checkpoint_on_the_command_line_exits_2(
    tiny_config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    from engine.cli import main

    path = _broken_files(tmp_path)[what]
    yaml_path = next(tiny_config_path.parent.glob("models/*.yaml"))
    code = main(["imagine", "x", "-o", str(tmp_path / "out.png"), "--steps", "1", "--config", str(tiny_config_path),
                 "--vqgan-config", str(yaml_path), "--vqgan-checkpoint", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(path) in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


async def test_broken_checkpoint_fails_the_bot_job_with_that_line(tiny_config_path: Path, tmp_path: Path) -> None:
    # The bot shows a job's failure reason as it is: it must be the file's line, not "the engine failed".
    import asyncio

    from engine.config import load_config
    from engine.jobs.events import Failed
    from engine.queue import JobQueue
    from engine.spec.request import Request

    bad = _broken_files(tmp_path)["text persistent id"]
    cfg = load_config(tiny_config_path)
    cfg = cfg.model_copy(update={
        "models": cfg.models.model_copy(update={"vqgan_checkpoint": str(bad)}),
        "queue": cfg.queue.model_copy(update={"db_path": str(tmp_path / "jobs.sqlite3"),
                                              "results_dir": str(tmp_path / "results")}),
    })
    queue = JobQueue(cfg)
    events: list[object] = []
    queue.subscribe(events.append)
    await queue.start()
    try:
        job, _ = await queue.submit(Request.from_config(cfg, prompt="a red apple", steps=1, seed=1), "alice")
        for _ in range(1000):
            failed = [e for e in events if isinstance(e, Failed) and e.job.id == job.id]
            if failed:
                break
            await asyncio.sleep(0.01)
    finally:
        await queue.close()
    assert failed, events
    assert failed[0].reason.startswith(f"{bad}: ") and "engine failed" not in failed[0].reason


def test_declared_data_beyond_the_file_is_refused_before_allocating(tmp_path: Path) -> None:
    # Legacy format: storages are allocated while unpickling and filled afterwards, so the size
    # the pickle declares must be checked against the file first.
    buf = io.BytesIO()
    torch.save({"w": torch.arange(6.0)}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    six = b"X\x03\x00\x00\x00cpuq\x06K\x06N"  # location "cpu", numel 6, no view
    assert data.count(six) == 1
    huge = tmp_path / "legacy_huge.ckpt"
    huge.write_bytes(data.replace(six, six[:-3] + b"\x8a\x08" + (2**40).to_bytes(8, "little") + b"N"))
    with pytest.raises(CorruptCheckpoint, match="legacy_huge.ckpt: declares more tensor data"):
        load_checkpoint(huge)

    # The caller can cap it lower still, e.g. at a preset's size.
    good = tmp_path / "legacy.ckpt"
    good.write_bytes(data)
    assert torch.equal(load_checkpoint(good)["w"], torch.arange(6.0))
    with pytest.raises(CorruptCheckpoint, match="declares more tensor data"):
        load_checkpoint(good, max_bytes=16)


def test_pickle_that_copies_one_string_over_and_over_is_refused(tmp_path: Path) -> None:
    # A 1 MiB string once, then _codecs.encode of it n times: n MiB of memory from a 1 MiB file.
    def copies(n: int) -> Path:
        big = b"X" + (1 << 20).to_bytes(4, "little") + b"a" * (1 << 20) + b"q\x01"
        encode = b"h\x02h\x01X\x06\x00\x00\x00latin1\x86R"
        return _zip_with(tmp_path, f"copies{n}.ckpt", (
            b"\x80\x02}(X\x01\x00\x00\x00s" + big
            + b"X\x04\x00\x00\x00many]c_codecs\nencode\nq\x020(" + encode * n + b"e"
            + _tensor_pickle(1, 1, 1)[3:-2] + b"u."
        ))

    assert len(load_checkpoint(copies(3))["many"]) == 3
    with pytest.raises(CorruptCheckpoint, match="builds far more data than it holds"):
        load_checkpoint(copies(200))


def test_check_checkpoint_returns_the_weight_names(tmp_path: Path) -> None:
    path = _lightning_like(tmp_path, zip_format=True)
    assert check_checkpoint(path) == ["encoder.weight", "quantize.embedding"]
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptCheckpoint, match="cut.ckpt"):
        check_checkpoint(cut)
