"""Named VQGAN presets: a config shipped with the package and a checkpoint to fetch.

A preset's architecture is data in the package, ``engine/models/model_configs/<preset>.yaml``
(as open_clip ships ``model_configs/*.json``), so a preset is only weights to download:
``<cache_dir>/<preset>/last.ckpt``. URLs are the public mirrors the well-known VQGAN+CLIP
notebooks use, best first. None of the original publishers (Heidelberg's heibox, EleutherAI, the
community mirrors) publish sizes or checksums for these files, so ``sha256``/``size`` are
``None``: a download is installed only once it is whole and ``checkpoint_problem`` finds in it a
zip/pickle checkpoint whose ``state_dict`` holds every weight, with its shape, of the model the
shipped config describes; ``fetch`` records its sha256.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import ModelSpec
from engine.errors import UserError
from engine.models.fetch import fetch

if TYPE_CHECKING:
    from engine.models.vqgan import VQGAN

__all__ = [
    "RemoteFile",
    "Preset",
    "PRESETS",
    "DEFAULT_PRESET",
    "MODEL_CONFIGS",
    "get_preset",
    "preset_paths",
    "ensure_preset",
    "fetch_checkpoint",
    "model_of",
    "vqgan_factor",
    "checkpoint_problem",
    "ClipWeights",
    "clip_weights",
    "hub_offline",
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
    approx_size: int = 0  # for listings, and the download cap

    @property
    def max_size(self) -> int | None:
        """The most bytes a download may bring: twice the approximate size (the mirrors publish none)."""
        return self.size or (2 * self.approx_size if self.approx_size else None)


# The presets' architectures, shipped as package data (pyproject: [tool.setuptools.package-data]).
MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"


@dataclass(frozen=True)
class Preset:
    """A named VQGAN: the taming YAML that builds it (on disk, shipped) and the checkpoint to fetch."""

    name: str
    description: str
    config: Path
    checkpoint: RemoteFile

    @property
    def approx_size(self) -> int:
        return self.checkpoint.approx_size


CHECKPOINT_NAME = "last.ckpt"


def _heibox_share(share: str, path: str) -> str:
    return f"{_HEIBOX}/d/{share}/files/?p={path.replace('/', '%2F')}&dl=1"


def _shipped(name: str) -> Path:
    return MODEL_CONFIGS / f"{name}.yaml"


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "imagenet_f16_16384",
            "ImageNet, 16x downsampling, 16384 codes (the usual VQGAN+CLIP model)",
            _shipped("imagenet_f16_16384"),
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
            _shipped("imagenet_f16_1024"),
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
            _shipped("gumbel_f8_8192"),
            RemoteFile(
                "vqgan_gumbel_f8_8192.ckpt",
                (_heibox_share("2e5662443a6b4307b470", "/ckpts/last.ckpt"),),
                approx_size=376 * _MB,
            ),
        ),
        Preset(
            "wikiart_16384",
            "WikiArt paintings, 16x downsampling, 16384 codes (painterly look)",
            _shipped("wikiart_16384"),
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
    """(config yaml, checkpoint) of the preset: the shipped config, and where the checkpoint
    lives in the cache, present or not."""
    preset = get_preset(name)
    return preset.config, Path(cache_dir) / name / CHECKPOINT_NAME


def model_of(config: Path) -> VQGAN:
    """The weightless VQGAN (on the ``meta`` device: names and shapes only) a taming config describes."""
    import torch

    from engine.models.vqgan import read_config, vqgan_from_config

    with torch.device("meta"):  # no memory, no time: only the names and shapes are wanted
        return vqgan_from_config(read_config(config))


FALLBACK_FACTOR = 16  # every preset's cell is 16 or 8 pixels: 16 is whole cells for all of them


def vqgan_factor(spec: ModelSpec) -> int:
    """The request's VQGAN cell in pixels (its downsampling factor, 2 ** (levels - 1)), from its config
    alone: no torch, no weights, so the bot and the CLI can size a canvas before anything is queued.
    A config this machine cannot read (a remote worker's own file) counts as 16."""
    path = (Path(spec.vqgan_config) if spec.vqgan_config and spec.vqgan_checkpoint
            else PRESETS[spec.vqgan].config if spec.vqgan in PRESETS else None)
    if path is None or not path.is_file():
        return FALLBACK_FACTOR
    from omegaconf import OmegaConf

    try:
        ch_mult = OmegaConf.select(OmegaConf.load(path), "model.params.ddconfig.ch_mult")
    except Exception:  # not YAML, not a mapping: loading the model says what is wrong with it
        return FALLBACK_FACTOR
    return 2 ** (len(ch_mult) - 1) if ch_mult is not None and 0 < len(ch_mult) <= 7 else FALLBACK_FACTOR


def checkpoint_problem(path: Path, config: Path) -> str | None:
    """``fetch`` check for a preset's checkpoint: None if it loads (safely) and its ``state_dict``
    has every weight of the model ``config`` describes, in the shape the config gives it."""
    import torch

    from engine.errors import CorruptCheckpoint
    from engine.models.checkpoint import load_checkpoint

    try:
        expected = {k: tuple(v.shape) for k, v in model_of(config).state_dict().items()}
    except UserError as e:
        return f"cannot be checked against its config: {e}"
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


def fetch_checkpoint(name: str, cache_dir: str | os.PathLike[str], progress: bool = True, *,
                     force: bool = False) -> Path:
    """Download the preset's checkpoint unless it is cached (again with ``force``), installing it
    only if it holds the weights of the model the shipped config describes. Raises ``FetchError``."""
    preset = get_preset(name)
    config, ckpt = preset_paths(name, cache_dir)
    if force or not ckpt.exists():
        remote = preset.checkpoint
        fetch(remote.urls, ckpt, remote.sha256, remote.size, progress, label=remote.label,
              check=lambda p: checkpoint_problem(p, config), force=force, max_size=remote.max_size)
    return ckpt


def ensure_preset(
    name: str, cache_dir: str | os.PathLike[str], progress: bool = True, *, force: bool = False
) -> tuple[Path, Path]:
    """The preset's (config, checkpoint), downloading the checkpoint if missing (again with ``force``).

    Raises ``FetchError``.
    """
    return preset_paths(name, cache_dir)[0], fetch_checkpoint(name, cache_dir, progress, force=force)


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


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` is set: the Hugging Face hub is not to be asked for anything."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


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
