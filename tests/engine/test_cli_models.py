"""``python -m engine models`` as the lead wires it: parse, then ``run(args, cfg)``."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import cli_models
from engine.config import Config, ModelsConfig
from engine.models import fetch as fetch_mod
from engine.models import registry
from engine.models.registry import Preset, RemoteFile

YAML = b"model:\n  target: taming.models.vqgan.VQModel\n"
CKPT = b"\x00fake checkpoint bytes" * 100


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="engine")
    sub = parser.add_subparsers(dest="command")
    cli_models.add_parser(sub)
    args = parser.parse_args(list(argv))
    assert args.command == "models"
    return args


def _cfg(tmp_path: Path, **models: str) -> Config:
    return Config(models=ModelsConfig(cache_dir=str(tmp_path / "cache"), **models))


@pytest.fixture
def files_server() -> Iterator[str]:
    files = {"/tiny.yaml": YAML, "/tiny.ckpt": CKPT}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _tiny(base: str, ckpt_path: str = "/tiny.ckpt") -> Preset:
    return Preset(
        "tiny",
        "test preset",
        RemoteFile(
            "tiny.yaml", (base + "/tiny.yaml",), hashlib.sha256(YAML).hexdigest(), len(YAML), len(YAML)
        ),
        RemoteFile("tiny.ckpt", (base + ckpt_path,), hashlib.sha256(CKPT).hexdigest(), len(CKPT), len(CKPT)),
    )


@pytest.fixture(autouse=True)
def _short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_mod, "TIMEOUT_S", 5.0)


def test_list_shows_presets_and_clip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path)
    config, ckpt = registry.preset_paths("gumbel_f8_8192", tmp_path / "cache")
    ckpt.parent.mkdir(parents=True)
    config.write_text("x")
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
    tmp_path: Path, files_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(registry.PRESETS, "tiny", _tiny(files_server))
    cfg = _cfg(tmp_path)

    assert cli_models.run(_parse("models", "fetch", "tiny", "--quiet"), cfg) == 0

    config, ckpt = registry.preset_paths("tiny", tmp_path / "cache")
    assert config.read_bytes() == YAML and ckpt.read_bytes() == CKPT
    out = capsys.readouterr().out
    assert str(config) in out and str(ckpt) in out

    assert cli_models.run(_parse("models"), cfg) == 0
    assert "cached: yes" in next(line for line in capsys.readouterr().out.splitlines() if "tiny" in line)


def test_fetch_defaults_to_the_configured_preset(
    tmp_path: Path, files_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(registry.PRESETS, "tiny", _tiny(files_server))
    assert cli_models.run(_parse("models", "fetch", "--quiet"), _cfg(tmp_path, vqgan="tiny")) == 0
    assert registry.preset_paths("tiny", tmp_path / "cache")[1].exists()


def test_fetch_failure_is_one_line_and_exit_2(
    tmp_path: Path, files_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(registry.PRESETS, "tiny", _tiny(files_server, ckpt_path="/gone.ckpt"))

    assert cli_models.run(_parse("models", "fetch", "tiny", "--quiet"), _cfg(tmp_path)) == 2

    err = capsys.readouterr().err.strip()
    ckpt = registry.preset_paths("tiny", tmp_path / "cache")[1]
    assert "\n" not in err
    assert err.startswith("error: could not download tiny.ckpt from ")
    assert f"{files_server}/gone.ckpt (HTTP 404)" in err and str(ckpt) in err


def test_fetch_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(registry.PRESETS, "tiny", _tiny(f"http://127.0.0.1:{port}"))
    assert cli_models.run(_parse("models", "fetch", "tiny", "--quiet"), _cfg(tmp_path)) == 2
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
        assert p.config.urls and p.checkpoint.urls and p.description
        assert all(u.startswith("https://") for u in p.config.urls), "configs name classes: HTTPS only"
        assert p.checkpoint.urls[0].startswith("https://")
        assert p.checkpoint.approx_size > 100_000_000
        for f in (p.config, p.checkpoint):
            assert f.sha256 is None or len(f.sha256) == 64
    with pytest.raises(Exception, match="known: imagenet_f16_16384"):
        registry.get_preset("imagenet")


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
