"""Named VQGAN presets: which config and checkpoint to fetch, from where, into which folder.

Files live in ``<cache_dir>/<preset>/model.yaml`` and ``<cache_dir>/<preset>/last.ckpt``.
URLs are the public mirrors the well-known VQGAN+CLIP notebooks use, best first. None of the
original publishers (Heidelberg's heibox, EleutherAI, the community mirrors) publish sizes
or checksums for these files, so ``sha256``/``size`` are ``None``: a download is installed only
once it is whole and opens as what it should be (``check_config``: YAML that parses to a taming
VQGAN config; ``check_checkpoint``: a zip/pickle checkpoint whose ``state_dict`` holds every
weight, with its shape, of the model that config describes), and ``fetch`` records its sha256.
Configs are fetched over HTTPS only: a config names Python classes, so it must not come from a
plain-HTTP mirror.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import UserError
from engine.models.fetch import fetch

if TYPE_CHECKING:
    from engine.models.vqgan import VQGAN

__all__ = [
    "RemoteFile",
    "Preset",
    "PRESETS",
    "DEFAULT_PRESET",
    "get_preset",
    "preset_paths",
    "ensure_preset",
    "check_config",
    "check_checkpoint",
    "ClipWeights",
    "clip_weights",
]

_HEIBOX = "https://heibox.uni-heidelberg.de"
_MB = 1_000_000


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file. ``size``/``sha256`` are exact and verified when known."""

    label: str  # how messages name it, e.g. "vqgan_imagenet_f16_16384.ckpt"
    urls: tuple[str, ...]
    sha256: str | None = None
    size: int | None = None
    approx_size: int = 0  # for listings only


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    config: RemoteFile
    checkpoint: RemoteFile

    @property
    def approx_size(self) -> int:
        return self.config.approx_size + self.checkpoint.approx_size


CONFIG_NAME = "model.yaml"
CHECKPOINT_NAME = "last.ckpt"


def _heibox_share(share: str, path: str) -> str:
    return f"{_HEIBOX}/d/{share}/files/?p={path.replace('/', '%2F')}&dl=1"


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "imagenet_f16_16384",
            "ImageNet, 16x downsampling, 16384 codes (the usual VQGAN+CLIP model)",
            RemoteFile(
                "vqgan_imagenet_f16_16384.yaml",
                (
                    _heibox_share("a7530b09fed84f80a887", "/configs/model.yaml"),
                    f"{_HEIBOX}/f/274fb24ed38341bfa753/?dl=1",
                    "https://github.com/mehdidc/feed_forward_vqgan_clip/releases/download/0.1/vqgan_imagenet_f16_16384.yaml",
                ),
                approx_size=1_000,
            ),
            RemoteFile(
                "vqgan_imagenet_f16_16384.ckpt",
                (
                    _heibox_share("a7530b09fed84f80a887", "/ckpts/last.ckpt"),
                    f"{_HEIBOX}/f/867b05fc8c4841768640/?dl=1",
                    "https://github.com/mehdidc/feed_forward_vqgan_clip/releases/download/0.1/vqgan_imagenet_f16_16384.ckpt",
                    "http://mirror.io.community/blob/vqgan/vqgan_imagenet_f16_16384.ckpt",
                ),
                approx_size=980 * _MB,
            ),
        ),
        Preset(
            "imagenet_f16_1024",
            "ImageNet, 16x downsampling, 1024 codes (smaller codebook, softer images)",
            RemoteFile(
                "vqgan_imagenet_f16_1024.yaml",
                (
                    _heibox_share("8088892a516d4e3baf92", "/configs/model.yaml"),
                    f"{_HEIBOX}/f/6ecf2af6c658432c8298/?dl=1",
                ),
                approx_size=1_000,
            ),
            RemoteFile(
                "vqgan_imagenet_f16_1024.ckpt",
                (
                    _heibox_share("8088892a516d4e3baf92", "/ckpts/last.ckpt"),
                    f"{_HEIBOX}/f/140747ba53464f49b476/?dl=1",
                    "http://mirror.io.community/blob/vqgan/vqgan_imagenet_f16_1024.ckpt",
                ),
                approx_size=958 * _MB,
            ),
        ),
        Preset(
            "gumbel_f8_8192",
            "OpenImages, 8x downsampling, 8192 codes, Gumbel quantizer (finer detail)",
            RemoteFile(
                "vqgan_gumbel_f8_8192.yaml",
                (_heibox_share("2e5662443a6b4307b470", "/configs/model.yaml"),),
                approx_size=1_000,
            ),
            RemoteFile(
                "vqgan_gumbel_f8_8192.ckpt",
                (_heibox_share("2e5662443a6b4307b470", "/ckpts/last.ckpt"),),
                approx_size=376 * _MB,
            ),
        ),
        Preset(
            "wikiart_16384",
            "WikiArt paintings, 16x downsampling, 16384 codes (painterly look)",
            RemoteFile(
                "wikiart_16384.yaml",
                ("https://github.com/Eleiber/VQGAN-Mirrors/releases/download/0.0.1/wikiart_16384.yaml",),
                approx_size=1_000,
            ),
            RemoteFile(
                "wikiart_16384.ckpt",
                (
                    "https://github.com/Eleiber/VQGAN-Mirrors/releases/download/0.0.1/wikiart_16384.ckpt",
                    "http://eaidata.bmk.sh/data/Wikiart_16384/wikiart_f16_16384_8145600.ckpt",
                    "http://mirror.io.community/blob/vqgan/wikiart_16384.ckpt",
                ),
                approx_size=1_000 * _MB,
            ),
        ),
    ]
}
DEFAULT_PRESET = "imagenet_f16_16384"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"unknown VQGAN preset {name!r}; known: {', '.join(PRESETS)}") from None


def preset_paths(name: str, cache_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(config yaml, checkpoint) where the preset lives in the cache, present or not."""
    get_preset(name)
    folder = Path(cache_dir) / name
    return folder / CONFIG_NAME, folder / CHECKPOINT_NAME


class _Unusable(Exception):
    """Why a downloaded file is not the config or checkpoint it should be."""


def _model_of(config: Path) -> VQGAN:
    """The (weightless, ``meta`` device) VQGAN a taming config describes; ``_Unusable`` if none."""
    import torch
    from omegaconf import OmegaConf

    from engine.models.vqgan import vqgan_from_config

    try:
        cfg = OmegaConf.to_container(OmegaConf.load(config), resolve=True)
    except Exception as e:  # junk, binary data, a web page: whatever the YAML parser says
        raise _Unusable(f"not a YAML file ({type(e).__name__})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise _Unusable("YAML, but not a taming config (no model section)")
    try:
        with torch.device("meta"):  # no memory, no time: only the names and shapes are wanted
            return vqgan_from_config(cfg)
    except UserError as e:
        raise _Unusable(f"not a usable taming config: {e}") from None
    except (TypeError, ValueError, KeyError) as e:  # ddconfig with wrong or missing fields
        raise _Unusable(f"not a usable taming config: {type(e).__name__}: {e}") from None


def check_config(path: Path) -> str | None:
    """``fetch`` check for a preset's ``model.yaml``: None if it is a VQGAN config we can build."""
    try:
        _model_of(path)
    except _Unusable as e:
        return str(e)
    return None


def check_checkpoint(path: Path, config: Path) -> str | None:
    """``fetch`` check for a preset's checkpoint: None if it loads (safely) and its ``state_dict``
    has every weight of the model ``config`` describes, in the shape the config gives it."""
    import torch

    from engine.models.checkpoint import CorruptCheckpoint, load_checkpoint

    try:
        expected = {k: tuple(v.shape) for k, v in _model_of(config).state_dict().items()}
    except _Unusable as e:
        return f"cannot be checked: its config {config} is {e}"
    try:
        data = load_checkpoint(path)
    except CorruptCheckpoint:
        return "not a readable zip/pickle checkpoint (cut short, or another kind of file)"
    except UserError as e:  # e.g. a pickle of something else, with no tensors in it
        return f"not a usable checkpoint ({type(e).__name__})"
    sd = data.get("state_dict")
    if not isinstance(sd, dict):
        return "a checkpoint without a state_dict"
    missing = [k for k in expected if not isinstance(sd.get(k), torch.Tensor)]
    if missing:
        return (
            f"its state_dict lacks {len(missing)} of the {len(expected)} weights the config names, "
            f"e.g. {missing[0]}"
        )
    for k, shape in expected.items():
        if tuple(sd[k].shape) != shape:
            return f"weight {k} has shape {list(sd[k].shape)}, the config says {list(shape)}"
    return None


def ensure_preset(
    name: str, cache_dir: str | os.PathLike[str], progress: bool = True, *, force: bool = False
) -> tuple[Path, Path]:
    """The preset's (config, checkpoint), downloading whichever is missing (both with ``force``).

    The config comes first: the checkpoint is checked against the model it describes.
    Raises ``FetchError``.
    """
    preset = get_preset(name)
    config, ckpt = preset_paths(name, cache_dir)
    for remote, path, check in (
        (preset.config, config, check_config),
        (preset.checkpoint, ckpt, lambda p: check_checkpoint(p, config)),
    ):
        if force or not path.exists():
            fetch(
                remote.urls, path, remote.sha256, remote.size, progress,
                label=remote.label, check=check, force=force,
            )
    return config, ckpt


# --- CLIP: where its weights come from and where they are kept (engine.models.clip fetches them). ---


@dataclass(frozen=True)
class ClipWeights:
    model: str
    pretrained: str
    source: str  # where open_clip gets them from
    approx_size: int | None
    cached_path: Path | None
    # (url, where to save it), best first: ``<cache>/open_clip/<model>/<tag>/<file name on the hub>``
    downloads: tuple[tuple[str, Path], ...] = ()


# fp32 safetensors on the HF hub (151,277,313 parameters); the original OpenAI fp16 .pt is ~354 MB.
_CLIP_SIZES = {("ViT-B-32", "openai"): 605 * _MB}


def clip_weights(model: str, pretrained: str, cache_dirs: tuple[Path, ...] = ()) -> ClipWeights:
    """Where the weights of ``model``/``pretrained`` come from and whether they are cached already.

    Looks at ``<cache_dirs[0]>/<model>/<pretrained>/`` (where they are downloaded, or saved by hand),
    then in the Hugging Face hub cache layout under ``cache_dirs`` and ``$HF_HUB_CACHE`` (by default
    ``~/.cache/huggingface/hub``). URLs use ``$HF_ENDPOINT`` when set. Never touches the network.
    """
    size = _CLIP_SIZES.get((model, pretrained))
    if Path(pretrained).is_file():
        return ClipWeights(model, pretrained, "local file", size, Path(pretrained))
    try:
        from open_clip.pretrained import get_pretrained_cfg

        cfg = get_pretrained_cfg(model, pretrained) or {}
    except Exception:
        cfg = {}
    hub = str(cfg.get("hf_hub", "")).strip("/")
    url = str(cfg.get("url", ""))
    if not hub:
        source = url or "unknown to open_clip"
        cached = None
        if url:
            for d in (*cache_dirs, Path.home() / ".cache" / "clip"):
                if (d / os.path.basename(url)).is_file():
                    cached = d / os.path.basename(url)
                    break
        return ClipWeights(model, pretrained, source, size, cached)
    repo, filename = hub.rsplit("/", 1) if hub.count("/") > 1 else (hub, "")  # "org/repo[/file]"
    candidates = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    if filename.endswith((".bin", ".pth")):  # open_clip prefers a safetensors twin when the hub has one
        candidates.insert(0, filename[:-4] + ".safetensors")
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    downloads = tuple(
        (f"{endpoint}/{repo}/resolve/main/{name}", cache_dirs[0] / model / pretrained / name)
        for name in candidates
    ) if cache_dirs else ()
    cached = next((dest for _, dest in downloads if dest.is_file()), None)
    if cached is not None:
        return ClipWeights(model, pretrained, f"Hugging Face hub {repo}", size, cached, downloads)
    try:
        from huggingface_hub import try_to_load_from_cache

        for cache in (*[str(d) for d in cache_dirs], None):
            for name in candidates:
                hit = try_to_load_from_cache(repo, name, cache_dir=cache)
                if isinstance(hit, str):
                    cached = Path(hit)
                    break
            if cached:
                break
    except Exception:
        pass
    return ClipWeights(model, pretrained, f"Hugging Face hub {repo}", size, cached, downloads)
