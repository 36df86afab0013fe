"""What a new user meets on a terminal: offline first runs, wrong output paths, reruns elsewhere, --help.

No test here touches the real network: preset URLs and the Hugging Face endpoint point at a port
on 127.0.0.1 where nobody listens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.media.imageio import read_metadata
from engine.models import registry

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> str:
    """No network: the default preset's mirrors and the Hugging Face hub are a closed port."""
    base = f"http://127.0.0.1:{closed_port()}"
    p = registry.PRESETS["imagenet_f16_16384"]
    monkeypatch.setitem(registry.PRESETS, p.name, dataclasses.replace(
        p, checkpoint=dataclasses.replace(p.checkpoint, urls=(f"{base}/last.ckpt", f"{base}/mirror/last.ckpt"))))
    monkeypatch.setenv("HF_ENDPOINT", base)
    return base


def write_config(path: Path, **models: str) -> Path:
    path.write_text("[models]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in models.items())
                    + '[generation]\nsteps = 2\nwidth = 32\nheight = 32\ncutouts = 4\n')
    return path


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- 4, 5: a first run without network -----------------------------------------------------------

def test_offline_first_paint_names_every_missing_file_at_once(tmp_path, offline, capsys):
    cache = tmp_path / "cache"
    cfg = write_config(tmp_path / "c.toml", cache_dir=str(cache), device="cpu")
    assert main(["imagine", "a forest", "-o", str(tmp_path / "forest.png"), "--config", str(cfg)]) == 2
    err = one_line(capsys.readouterr().err)
    # the VQGAN's config ships with the package: only the two weight files are missing
    assert err.startswith("error: 2 model files are missing: ")
    for path in (cache / "imagenet_f16_16384" / "last.ckpt",
                 cache / "open_clip" / "ViT-B-32" / "openai" / "open_clip_model.safetensors"):
        assert f"save it as {path}" in err
    for url in (f"{offline}/last.ckpt", f"{offline}/mirror/last.ckpt",
                f"{offline}/timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_model.safetensors"):
        assert url in err
    assert ".yaml" not in err
    assert not (tmp_path / "forest.png").exists()


def test_offline_a_model_not_downloaded_is_refused_naming_what_is_downloaded(
        tiny_cfg, tmp_path, offline, monkeypatch, capsys):
    wikiart = registry.PRESETS["wikiart_16384"]
    monkeypatch.setitem(registry.PRESETS, wikiart.name, dataclasses.replace(
        wikiart, checkpoint=dataclasses.replace(wikiart.checkpoint, urls=(f"{offline}/wikiart.ckpt",))))
    cache = tmp_path / "cache"
    ckpt = cache / "imagenet_f16_16384" / "last.ckpt"  # the usual model was downloaded earlier
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    cfg = write_config(tmp_path / "c.toml", cache_dir=str(cache), device="cpu",
                       clip_config=tiny_cfg.models.clip_config, clip_checkpoint=tiny_cfg.models.clip_checkpoint)
    assert main(["imagine", "a forest", "--vqgan", "wikiart_16384", "-o", str(tmp_path / "o.png"),
                 "--config", str(cfg)]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith("error: could not download wikiart_16384.ckpt from ")
    assert err.endswith("; downloaded here: model imagenet_f16_16384; clip none")


def test_missing_clip_weights_is_one_fast_line_with_where_to_save_them(
        tiny_cfg, tmp_path, offline, monkeypatch, capsys):
    cache = tmp_path / "cache"
    cfg = write_config(tmp_path / "c.toml", cache_dir=str(cache), device="cpu",
                       vqgan_config=tiny_cfg.models.vqgan_config, vqgan_checkpoint=tiny_cfg.models.vqgan_checkpoint)
    assert main(["imagine", "a forest", "-o", str(tmp_path / "o.png"), "--config", str(cfg)]) == 2
    err = one_line(capsys.readouterr().err)  # no retry lines from the hub client
    dest = cache / "open_clip" / "ViT-B-32" / "openai" / "open_clip_model.safetensors"
    assert f"save it as {dest}" in err and "connection refused" in err
    config_json = err.split("the model's config JSON is ")[1].split(")")[0]
    assert config_json.endswith("ViT-B-32.json") and Path(config_json).is_file()

    # the place the message names is where the engine looks: a file saved there counts as cached
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(b"weights saved by hand")
    shutil.copy(cfg, tmp_path / "config.toml")
    monkeypatch.chdir(tmp_path)  # `models` reads ./config.toml
    assert main(["models"]) == 0
    assert f"cached: yes  {dest}" in capsys.readouterr().out


def test_hf_hub_offline_is_not_even_tried(tiny_cfg, tmp_path, offline, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = write_config(tmp_path / "c.toml", cache_dir=str(tmp_path / "cache"), device="cpu",
                       vqgan_config=tiny_cfg.models.vqgan_config, vqgan_checkpoint=tiny_cfg.models.vqgan_checkpoint)
    assert main(["imagine", "x", "-o", str(tmp_path / "o.png"), "--config", str(cfg)]) == 2
    err = one_line(capsys.readouterr().err)
    assert "HF_HUB_OFFLINE is set" in err and "connection refused" not in err


# -- 7: outputs and the mask's shape are checked before any model is loaded ------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["imagine", "x", "-o", "/proc/nope/b.png"], "error: -o /proc/nope/b.png: cannot write in /proc"),
    (["imagine", "x", "-o", "{folder}"], "error: -o {folder} is a folder; give a file name"),
    (["imagine", "x", "-o", "{out}", "--save-every", "1", "--progress-dir", "{file}"],
     "error: --progress-dir {file}: not a folder"),
    (["edit", "{photo}", "x", "-o", "{out}", "--save-mask", "/proc/nope/m.png"],
     "error: --save-mask /proc/nope/m.png: cannot write in /proc"),
    (["edit", "{photo}", "x", "-o", "{out}", "--mask", "{wide_mask}"],
     "error: mask is 64x16 but the image is 64x64: make the mask the same shape as the image"),
])
def test_bad_output_or_mask_is_refused_before_the_models(tmp_path, offline, capsys, args, message):
    # the models are not cached and cannot be fetched: reaching them would be a model error instead
    cfg = write_config(tmp_path / "c.toml", cache_dir=str(tmp_path / "cache"), device="cpu")
    files = {"folder": tmp_path / "some-folder", "file": tmp_path / "notes.txt", "out": tmp_path / "o.png",
             "photo": tmp_path / "photo.png", "wide_mask": tmp_path / "mask.png"}
    files["folder"].mkdir()
    files["file"].write_text("not a folder")
    Image.new("RGB", (64, 64), (9, 99, 199)).save(files["photo"])
    Image.new("L", (64, 16), 255).save(files["wide_mask"])
    assert main([*(a.format(**files) for a in args), "--config", str(cfg)]) == 2
    assert one_line(capsys.readouterr().err).startswith(message.format(**files))
    assert not files["out"].exists()


# -- 8: rerun in another folder --------------------------------------------------------------------

@pytest.mark.pixels
def test_rerun_finds_inputs_from_another_folder_and_names_the_path_when_gone(
        tiny_config_path, tmp_path, monkeypatch, capsys):
    made, elsewhere = tmp_path / "made-here", tmp_path / "elsewhere"
    made.mkdir()
    elsewhere.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(made / "photo.png")
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 16, 16))
    mask.save(made / "mask.png")
    monkeypatch.chdir(made)  # relative paths, as typed
    assert main(["edit", "photo.png", "a golden sun", "--mask", "mask.png", "-o", "sun.png", "--seed", "5", "--steps", "1",
                 "--config", str(tiny_config_path)]) == 0
    req = read_metadata(made / "sun.png")["request"]
    assert req["init_image"] == str(made / "photo.png") and req["mask"] == str(made / "mask.png")
    assert req["inputs"] == [{"path": str(made / "photo.png"), "sha256": sha256_file(made / "photo.png")},
                             {"path": str(made / "mask.png"), "sha256": sha256_file(made / "mask.png")}]

    monkeypatch.chdir(elsewhere)
    assert main(["rerun", str(made / "sun.png"), "-o", "again.png", "--config", str(tiny_config_path)]) == 0
    assert np.array_equal(np.asarray(Image.open(made / "sun.png")), np.asarray(Image.open("again.png")))

    capsys.readouterr()
    (made / "photo.png").unlink()
    assert main(["rerun", str(made / "sun.png"), "-o", "gone.png", "--config", str(tiny_config_path)]) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith("error: input image for sun.png not found: looked for ")
    assert str(made / "photo.png") in err


def test_rerun_finds_inputs_moved_along_with_the_png_and_refuses_a_changed_one(
        tiny_config_path, tmp_path, monkeypatch, capsys):
    first, moved = tmp_path / "first", tmp_path / "moved"
    first.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(first / "ref.png")
    monkeypatch.chdir(first)
    assert main(["imagine", "a cat", "--image-prompt", "ref.png:0.5", "-o", "cat.png", "--seed", "2", "--steps", "1",
                 "--config", str(tiny_config_path)]) == 0
    shutil.move(first, moved)  # the folder is renamed: the recorded absolute path is gone
    monkeypatch.chdir(tmp_path)
    assert main(["rerun", str(moved / "cat.png"), "-o", "again.png", "--config", str(tiny_config_path)]) == 0
    assert read_metadata(tmp_path / "again.png")["request"]["image_prompts"] == [
        {"path": str(moved / "ref.png"), "weight": 0.5}]

    Image.new("RGB", (32, 32), (0, 0, 255)).save(moved / "ref.png")  # another picture under the same name
    capsys.readouterr()
    assert main(["rerun", str(moved / "cat.png"), "-o", "x.png", "--config", str(tiny_config_path)]) == 2
    assert "is not the file cat.png was made from" in one_line(capsys.readouterr().err)


# -- 12, 13: the command line itself ---------------------------------------------------------------

def test_help_version_and_usage_errors_do_not_import_torch():
    code = (
        "import sys\n"
        "from engine.cli import main\n"
        "for argv in (['--help'], ['--version'], ['imagine', '--help'], ['imagine'], ['bench', '--bogus']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert "usage: python -m engine" in proc.stdout and "the following arguments are required" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "no torch"


def test_cli_speaks_of_itself_not_of_a_bot(tiny_config_path, tmp_path, capsys):
    notes = tmp_path / "notes.png"
    notes.write_text("this is not an image")
    assert main(["edit", str(notes), "x", "-o", str(tmp_path / "o.png"), "--config", str(tiny_config_path)]) == 2
    err = one_line(capsys.readouterr().err)
    assert "not an image" in err and "bot" not in err


def test_clip_weights_download_lands_where_the_offline_message_says(tmp_path, monkeypatch):
    """With a network, the hub's redirect is followed and the file is kept at the path offline runs name."""
    import http.server
    import threading

    from engine.models.clip import clip_weights_path

    body = b"\x00weights" * 1000
    seen: list[str] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.path)
            if self.path.endswith("/resolve/main/open_clip_model.safetensors"):
                self.send_response(302)  # the hub sends files from a CDN
                self.send_header("Location", "/cdn/blob")
                self.end_headers()
            elif self.path == "/cdn/blob":
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{httpd.server_address[1]}")
        got = clip_weights_path("ViT-B-32", "openai", tmp_path / "open_clip")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert got == tmp_path / "open_clip" / "ViT-B-32" / "openai" / "open_clip_model.safetensors"
    assert got.read_bytes() == body
    assert seen == ["/timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_model.safetensors", "/cdn/blob"]
