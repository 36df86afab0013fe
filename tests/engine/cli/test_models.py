"""``python -m engine models`` as the lead wires it: parse, then ``run(args, cfg)``.

The mirrors are a loopback HTTP server serving tiny VQGANs in the real file formats, so a
download goes through the same checks a real one does.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from engine.cli import models as cli_models
from engine.config import Config, ModelsConfig
from engine.models import fetch as fetch_mod
from engine.models import registry
from engine.models.registry import Preset, RemoteFile
from engine.models.vqgan import load_vqgan
from tests.tinymodels import write_tiny_vqgan


@dataclass
class Served:
    body: bytes
    content_type: str = "application/octet-stream"
    cut_without_length: bool = False  # no Content-Length, and the connection closes halfway


@dataclass
class Mirror:
    base: str
    config: Path  # the tiny preset's config, on disk as a preset's ships with the package
    files: dict[str, Served] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A tiny VQGAN's YAML and checkpoint, a second checkpoint of the same model (another
    training run), and one of another model (other codebook size)."""
    folder = tmp_path_factory.mktemp("tiny_vqgan")
    yaml_path, ckpt_path = write_tiny_vqgan(folder / "a", seed=0)
    _, ckpt2_path = write_tiny_vqgan(folder / "b", seed=1)
    other = torch.load(ckpt_path, weights_only=False)
    other["state_dict"]["quantize.embedding.weight"] = torch.zeros(32, 8)  # 32 codes, not 64
    torch.save(other, folder / "other.ckpt")
    return {
        "yaml": yaml_path.read_bytes(),
        "ckpt": ckpt_path.read_bytes(),
        "ckpt2": ckpt2_path.read_bytes(),
        "other": (folder / "other.ckpt").read_bytes(),
    }


@pytest.fixture
def tiny_config(tiny_files: dict[str, bytes], tmp_path: Path) -> Path:
    """The tiny preset's architecture, as a real preset's ``model_configs/<name>.yaml``."""
    path = tmp_path / "model_configs" / "tiny.yaml"
    path.parent.mkdir()
    path.write_bytes(tiny_files["yaml"])
    return path


@pytest.fixture
def mirror(tiny_files: dict[str, bytes], tiny_config: Path) -> Iterator[Mirror]:
    state = Mirror("", tiny_config, {"/tiny.ckpt": Served(tiny_files["ckpt"])})

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            served = state.files.get(self.path)
            if served is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", served.content_type)
            if served.cut_without_length:
                self.end_headers()
                self.wfile.write(served.body[: len(served.body) // 2])
                self.close_connection = True
                return
            self.send_header("Content-Length", str(len(served.body)))
            self.end_headers()
            self.wfile.write(served.body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="engine")
    sub = parser.add_subparsers(dest="command")
    cli_models.add_parser(sub)
    args = parser.parse_args(list(argv))
    assert args.command == "models"
    return args


def _cfg(tmp_path: Path, **models: str) -> Config:
    return Config(models=ModelsConfig(cache_dir=str(tmp_path / "cache"), **models))


def _tiny(base: str, config: Path, ckpt_path: str = "/tiny.ckpt", published: bytes | None = None) -> Preset:
    """A preset whose checkpoint is on the loopback mirror; ``published``: the bytes whose
    sha256/size it publishes (as no real preset does), else none, as for the real ones."""
    sha = hashlib.sha256(published).hexdigest() if published else None
    size = len(published) if published else None
    # like the real presets' approximate sizes (the download cap is twice that): a tiny checkpoint is ~3 MB
    return Preset("tiny", "test preset", config, RemoteFile("tiny.ckpt", (base + ckpt_path,), sha, size, 4_000_000))


def _fetch_tiny(cfg: Config, *extra: str) -> int:
    return cli_models.run(_parse("models", "fetch", "tiny", "--quiet", *extra), cfg)


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line on stderr; any other lines are the "recorded sha256" warnings of
    files that were installed before the failure."""
    *before, last = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("warning: ") and "recorded" in line for line in before), before
    assert last.startswith("error: ")
    return last


@pytest.fixture(autouse=True)
def _short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_mod, "TIMEOUT_S", 5.0)


def test_list_shows_presets_and_clip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path)
    _, ckpt = registry.preset_paths("gumbel_f8_8192", tmp_path / "cache")
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")

    assert cli_models.run(_parse("models"), cfg) == 0

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert str(tmp_path / "cache") in lines[0]
    for name in registry.PRESETS:
        assert name in out
    default = next(line for line in lines if "imagenet_f16_16384" in line)
    assert default.lstrip().startswith("* ") and "980 MB" in default and "cached: no" in default
    gumbel = next(line for line in lines if "gumbel_f8_8192" in line)
    assert f"cached: yes  {ckpt.parent}" in gumbel
    assert "ViT-B-32 / openai" in out and "timm/vit_base_patch32_clip_224.openai" in out


def test_list_marks_partial_downloads_and_custom_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, ckpt = registry.preset_paths("wikiart_16384", tmp_path / "cache")
    ckpt.parent.mkdir(parents=True)
    ckpt.with_name("last.ckpt.part").write_bytes(b"half")
    cfg = _cfg(
        tmp_path, vqgan_checkpoint=str(tmp_path / "mine.ckpt"), vqgan_config=str(tmp_path / "mine.yaml")
    )
    assert cli_models.run(_parse("models"), cfg) == 0
    out = capsys.readouterr().out
    assert "partial" in next(line for line in out.splitlines() if "wikiart_16384" in line)
    assert f"custom VQGAN: {tmp_path / 'mine.yaml'} + {tmp_path / 'mine.ckpt'} (MISSING)" in out
    assert not any(line.startswith("* ") for line in out.splitlines() if "imagenet" in line)


def test_fetch_downloads_and_prints_paths(
    tmp_path: Path, mirror: Mirror, tiny_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(registry.PRESETS, "tiny", _tiny(mirror.base, mirror.config, published=tiny_files["ckpt"]))
    cfg = _cfg(tmp_path)

    assert _fetch_tiny(cfg) == 0

    config, ckpt = registry.preset_paths("tiny", tmp_path / "cache")
    assert config == mirror.config and ckpt.read_bytes() == tiny_files["ckpt"]
    assert list((tmp_path / "cache" / "tiny").glob("*.yaml")) == []  # only weights are downloaded
    out = capsys.readouterr().out
    assert f"tiny: config {config} (ships with the package)" in out and str(ckpt) in out
    assert load_vqgan(config, ckpt).n_embed == 64  # what was installed opens as the model

    assert cli_models.run(_parse("models"), cfg) == 0
    assert "cached: yes" in next(line for line in capsys.readouterr().out.splitlines() if "tiny" in line)


def test_fetch_defaults_to_the_configured_preset(
    tmp_path: Path, mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.PRESETS, "tiny", _tiny(mirror.base, mirror.config))
    assert cli_models.run(_parse("models", "fetch", "--quiet"), _cfg(tmp_path, vqgan="tiny")) == 0
    assert registry.preset_paths("tiny", tmp_path / "cache")[1].exists()


def test_fetch_failure_is_one_line_and_exit_2(
    tmp_path: Path, mirror: Mirror, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(registry.PRESETS, "tiny", _tiny(mirror.base, mirror.config, ckpt_path="/gone.ckpt"))

    assert _fetch_tiny(_cfg(tmp_path)) == 2

    err = _error_line(capsys)
    ckpt = registry.preset_paths("tiny", tmp_path / "cache")[1]
    assert err.startswith("error: could not download tiny.ckpt from ")
    assert f"{mirror.base}/gone.ckpt (HTTP 404)" in err and str(ckpt) in err


def test_fetch_without_network(
    tmp_path: Path, tiny_config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(registry.PRESETS, "tiny", _tiny(f"http://127.0.0.1:{port}", tiny_config))
    assert _fetch_tiny(_cfg(tmp_path)) == 2
    assert "no network?" in capsys.readouterr().err


def test_unknown_preset_lists_the_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_models.run(_parse("models", "fetch", "nope"), _cfg(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "imagenet_f16_16384" in err and "wikiart_16384" in err


def test_registry_shape() -> None:
    assert registry.DEFAULT_PRESET == "imagenet_f16_16384" == ModelsConfig().vqgan
    assert set(registry.PRESETS) == {
        "imagenet_f16_16384",
        "imagenet_f16_1024",
        "gumbel_f8_8192",
        "wikiart_16384",
    }
    for p in registry.PRESETS.values():
        assert p.checkpoint.urls and p.description
        assert p.config == registry.MODEL_CONFIGS / f"{p.name}.yaml" and p.config.is_file()
        assert p.checkpoint.urls[0].startswith("https://")
        assert p.checkpoint.approx_size > 100_000_000
        assert p.checkpoint.sha256 is None or len(p.checkpoint.sha256) == 64
    with pytest.raises(Exception, match="known: imagenet_f16_16384"):
        registry.get_preset("imagenet")


@pytest.mark.parametrize(("name", "factor", "codes", "gumbel"), [
    ("imagenet_f16_16384", 16, 16384, False),
    ("imagenet_f16_1024", 16, 1024, False),
    ("gumbel_f8_8192", 8, 8192, True),
    ("wikiart_16384", 16, 16384, False),
])
def test_each_preset_is_a_shipped_config_plus_weights_to_fetch(
    name: str, factor: int, codes: int, gumbel: bool, tmp_path: Path
) -> None:
    """The architecture comes with the package: the model a preset names can be built with no
    download, and the checkpoint is the only file the cache is asked for."""
    config, ckpt = registry.preset_paths(name, tmp_path / "cache")
    assert config.is_relative_to(registry.MODEL_CONFIGS) and ckpt.is_relative_to(tmp_path / "cache")
    model = registry.model_of(config)  # on the meta device: shapes only, no memory
    assert (model.factor, model.n_embed, model.embed_dim, model.gumbel) == (factor, codes, 256, gumbel)
    assert model.decoder.conv_in.in_channels == 256
    assert registry.get_preset(name).approx_size == registry.get_preset(name).checkpoint.approx_size


def test_list_finds_clip_weights_in_the_open_clip_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The layout huggingface_hub writes under the cache_dir the loader gives open_clip.
    repo = tmp_path / "cache" / "open_clip" / "models--timm--vit_base_patch32_clip_224.openai"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"x")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")

    assert cli_models.run(_parse("models"), _cfg(tmp_path)) == 0

    clip_line = next(line for line in capsys.readouterr().out.splitlines() if "ViT-B-32" in line)
    assert f"cached: yes  {snap / 'open_clip_model.safetensors'}" in clip_line


# --- With no published checksum, only a whole file that opens as the preset's model is
# installed, and what was installed is recorded and shown. ---


def _refused(
    tmp_path: Path, mirror: Mirror, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """Fetch the tiny preset, which must fail with one line, installing and recording nothing."""
    monkeypatch.setitem(registry.PRESETS, "tiny", _tiny(mirror.base, mirror.config))
    cfg = _cfg(tmp_path)
    assert _fetch_tiny(cfg) == 2
    err = _error_line(capsys)
    assert err.startswith("error: could not download tiny.")
    assert cli_models.run(_parse("models"), cfg) == 0
    listing = capsys.readouterr().out
    assert "cached: no" in next(line for line in listing.splitlines() if "tiny" in line)
    assert "tiny/last.ckpt" not in listing  # no sha256 shown for it: nothing was recorded
    assert not list((tmp_path / "cache" / "tiny").glob("last.ckpt*.sha256"))
    return err


def test_html_page_served_as_octet_stream_is_refused(
    tmp_path: Path, mirror: Mirror, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror.files["/tiny.ckpt"] = Served(b"<!DOCTYPE html><html><body>Please sign in</body></html>\n" * 40)
    err = _refused(tmp_path, mirror, monkeypatch, capsys)
    assert f"{mirror.url('/tiny.ckpt')} (not a readable zip/pickle checkpoint" in err


def test_body_without_length_cut_off_halfway_is_refused(
    tmp_path: Path, mirror: Mirror, tiny_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mirror.files["/tiny.ckpt"] = Served(tiny_files["ckpt"], cut_without_length=True)
    err = _refused(tmp_path, mirror, monkeypatch, capsys)
    assert f"{mirror.url('/tiny.ckpt')} (not a readable zip/pickle checkpoint" in err


def test_checkpoint_of_another_model_is_refused(
    tmp_path: Path, mirror: Mirror, tiny_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mirror.files["/tiny.ckpt"] = Served(tiny_files["other"])
    err = _refused(tmp_path, mirror, monkeypatch, capsys)
    assert "weight quantize.embedding.weight has shape [32, 8], the config says [64, 8]" in err


def test_checkpoint_missing_weights_is_refused(
    tmp_path: Path, mirror: Mirror, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tiny_files: dict[str, bytes],
) -> None:
    folder = tmp_path / "made"
    folder.mkdir()
    ckpt = torch.load(__import__("io").BytesIO(tiny_files["ckpt"]), weights_only=False)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("decoder.")}
    torch.save(ckpt, folder / "encoder_only.ckpt")
    mirror.files["/tiny.ckpt"] = Served((folder / "encoder_only.ckpt").read_bytes())
    err = _refused(tmp_path, mirror, monkeypatch, capsys)
    assert "its state_dict lacks" in err and "weights the config names, e.g. decoder." in err


def _sha_lines(out: str) -> dict[str, str]:
    """The ``file  sha256`` rows ``python -m engine models`` prints for the tiny preset."""
    return {ln.split()[0]: ln.split()[1] for ln in out.splitlines() if ln.strip().startswith("tiny/")}


def test_models_shows_the_recorded_sha256_and_force_downloads_again(
    tmp_path: Path, mirror: Mirror, tiny_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(registry.PRESETS, "tiny", _tiny(mirror.base, mirror.config))
    cfg = _cfg(tmp_path)
    config, ckpt = registry.preset_paths("tiny", tmp_path / "cache")
    assert _fetch_tiny(cfg) == 0
    capsys.readouterr()

    assert cli_models.run(_parse("models"), cfg) == 0
    first = {"tiny/last.ckpt": hashlib.sha256(tiny_files["ckpt"]).hexdigest()}
    assert _sha_lines(capsys.readouterr().out) == first

    # The mirror now has another checkpoint (a fixed re-upload, say); a plain fetch keeps
    # what is installed, --force downloads it again and records the new hash.
    mirror.files["/tiny.ckpt"] = Served(tiny_files["ckpt2"])
    assert _fetch_tiny(cfg) == 0
    assert ckpt.read_bytes() == tiny_files["ckpt"]
    assert _fetch_tiny(cfg, "--force") == 0
    assert ckpt.read_bytes() == tiny_files["ckpt2"]
    out = capsys.readouterr().out
    new_sha = hashlib.sha256(tiny_files["ckpt2"]).hexdigest()
    assert f"tiny: checkpoint {ckpt}  sha256 {new_sha}" in out

    assert cli_models.run(_parse("models"), cfg) == 0
    assert _sha_lines(capsys.readouterr().out) == {**first, "tiny/last.ckpt": new_sha}
    load_vqgan(config, ckpt)


def test_first_paint_refuses_a_wrong_checkpoint_and_installs_nothing(
    tmp_path: Path, mirror: Mirror, tiny_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The download a first ``imagine`` makes is checked as ``models fetch`` checks it: a mirror's
    checkpoint of another model is not installed (so the next run tries again)."""
    from engine.cli import main
    from tests.tinymodels import write_tiny_clip

    mirror.files["/tiny.ckpt"] = Served(tiny_files["other"])
    monkeypatch.setitem(registry.PRESETS, "tiny", _tiny(mirror.base, mirror.config))
    clip_json, clip_weights = write_tiny_clip(tmp_path / "clip")
    toml = tmp_path / "config.toml"
    toml.write_text(f'[models]\nvqgan = "tiny"\ncache_dir = "{tmp_path / "cache"}"\ndevice = "cpu"\n'
                    f'clip_config = "{clip_json}"\nclip_checkpoint = "{clip_weights}"\n')

    assert main(["imagine", "a forest", "-o", str(tmp_path / "o.png"), "--steps", "1",
                 "--config", str(toml)]) == 2

    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the download's progress bar
    assert err.startswith("error: could not download tiny.ckpt from ")
    assert "weight quantize.embedding.weight has shape [32, 8], the config says [64, 8]" in err
    assert not registry.preset_paths("tiny", tmp_path / "cache")[1].exists()
    assert not (tmp_path / "o.png").exists()
