"""Tiny, randomly initialised VQGAN and CLIP saved in the real file formats.

The same loading code that reads the real checkpoints reads these: a taming-style YAML plus a
Lightning-style ``.ckpt`` (with ``loss.*`` keys and training state, as real ones have) for
VQGAN, and an open_clip model-config JSON plus ``.safetensors`` for CLIP.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
import yaml
from safetensors.torch import save_file

from engine.config import Config, load_config
from engine.models.vqgan import vqgan_from_config

VQGAN_CONFIG = {
    "model": {
        "base_learning_rate": 4.5e-6,
        "target": "taming.models.vqgan.VQModel",
        "params": {
            "embed_dim": 8,
            "n_embed": 64,
            "monitor": "val/rec_loss",
            "ddconfig": {
                "double_z": False, "z_channels": 8, "resolution": 64, "in_channels": 3, "out_ch": 3,
                "ch": 32, "ch_mult": [1, 1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
            },
            "lossconfig": {
                "target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
                "params": {"disc_conditional": False, "disc_in_channels": 3, "disc_start": 0},
            },
        },
    }
}

CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def write_tiny_vqgan(folder: Path, seed: int = 0, codebook_std: float = 1.0) -> tuple[Path, Path]:
    torch.manual_seed(seed)
    model = vqgan_from_config(VQGAN_CONFIG)
    # Spread the codebook like a trained one, so that quantisation picks varied entries.
    torch.nn.init.normal_(model.codebook, std=codebook_std)
    sd = dict(model.state_dict())
    sd["loss.discriminator.main.0.weight"] = torch.zeros(4, 3, 4, 4)  # as in real checkpoints
    folder.mkdir(parents=True, exist_ok=True)
    yaml_path, ckpt_path = folder / "tiny_vqgan.yaml", folder / "tiny_vqgan.ckpt"
    yaml_path.write_text(yaml.safe_dump(VQGAN_CONFIG))
    torch.save({"epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.0.8",
                "state_dict": sd, "optimizer_states": [], "lr_schedulers": []}, ckpt_path)
    return yaml_path, ckpt_path


def write_tiny_gumbel_vqgan(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A tiny ``GumbelVQ``: its codes are ``argmax(proj(h))`` and its ``embed`` rows live in another space."""
    torch.manual_seed(seed)
    config = json.loads(json.dumps(VQGAN_CONFIG))
    config["model"]["target"] = "taming.models.vqgan.GumbelVQ"
    model = vqgan_from_config(config)
    torch.nn.init.normal_(model.codebook, std=1.0)
    folder.mkdir(parents=True, exist_ok=True)
    yaml_path, ckpt_path = folder / "tiny_gumbel.yaml", folder / "tiny_gumbel.ckpt"
    yaml_path.write_text(yaml.safe_dump(config))
    torch.save({"epoch": 1, "state_dict": dict(model.state_dict())}, ckpt_path)
    return yaml_path, ckpt_path


def write_tiny_clip(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    torch.manual_seed(seed)
    model = open_clip.CLIP(**json.loads(json.dumps(CLIP_CONFIG)))
    folder.mkdir(parents=True, exist_ok=True)
    json_path, weights_path = folder / "tiny_clip.json", folder / "tiny_clip.safetensors"
    json_path.write_text(json.dumps(CLIP_CONFIG, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights_path)
    return json_path, weights_path


CLIP_CONFIG_48 = {**CLIP_CONFIG, "vision_cfg": {**CLIP_CONFIG["vision_cfg"], "image_size": 48}}
"""A second tiny CLIP with another input size (48 pixels), for ensembles."""


def write_tiny_clip_48(folder: Path, seed: int = 1) -> tuple[Path, Path]:
    torch.manual_seed(seed)
    model = open_clip.CLIP(**json.loads(json.dumps(CLIP_CONFIG_48)))
    folder.mkdir(parents=True, exist_ok=True)
    json_path, weights_path = folder / "tiny_clip_48.json", folder / "tiny_clip_48.safetensors"
    json_path.write_text(json.dumps(CLIP_CONFIG_48, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights_path)
    return json_path, weights_path


def write_tiny_config(folder: Path, **sections: dict) -> Path:
    """Write tiny models and a config.toml using them with small, fast defaults."""
    vq_yaml, vq_ckpt = write_tiny_vqgan(folder / "models")
    clip_json, clip_w = write_tiny_clip(folder / "models")
    base: dict[str, dict] = {
        "models": {"vqgan_config": str(vq_yaml), "vqgan_checkpoint": str(vq_ckpt), "clip_config": str(clip_json),
                   "clip_checkpoint": str(clip_w), "device": "cpu", "cache_dir": str(folder / "cache")},
        "generation": {"steps": 4, "width": 32, "height": 32, "cutouts": 4, "progress_every": 2},
        "queue": {"db_path": str(folder / "jobs.sqlite3"), "results_dir": str(folder / "results")},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        lines.append("")
    path = folder / "config.toml"
    path.write_text("\n".join(lines))
    return path


def tiny_config(folder: Path, **sections: dict) -> Config:
    return load_config(write_tiny_config(folder, **sections))
