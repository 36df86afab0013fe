"""``python -m engine models [fetch NAME [--force]]``: see which model files are cached (and the
sha256 recorded for each), fetch them ahead of time or again.

Fetching before the first generation (or before starting the bot) keeps a 1 GB download out
of a user's first request.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TypeVar

from engine.config import Config, cache_dir
from engine.errors import UserError
from engine.models import registry
from engine.models.fetch import recorded_sha256

_P = TypeVar("_P", bound=argparse.ArgumentParser)  # the main parser's class (engine.cli.parser.Parser)

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction[_P]) -> _P:
    """Register ``models`` (and ``models fetch``) on the main parser's subcommands."""
    p = subparsers.add_parser(
        "models",
        help="list the VQGAN presets and CLIP model, and whether they are cached",
        description="List model presets, or fetch one into the cache.",
    )
    sub = p.add_subparsers(dest="models_command")
    f = sub.add_parser(
        "fetch",
        help="download a VQGAN preset into the cache",
        description=f"Download a VQGAN preset: {', '.join(registry.PRESETS)}.",
    )
    f.add_argument(
        "name", nargs="?", default=None, help="preset name (default: models.vqgan from the config)"
    )
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.add_argument(
        "--force",
        action="store_true",
        help="download the preset again even if it is cached, and record the new sha256",
    )
    return p


def _size(n: int | None) -> str:
    if not n:
        return "?"
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def _list(cfg: Config, root: Path) -> int:
    m = cfg.models
    rows = []
    for p in registry.PRESETS.values():
        _, ckpt = registry.preset_paths(p.name, root)  # the config ships with the package
        if ckpt.exists():
            state = f"yes  {ckpt.parent}"
        elif ckpt.with_name(ckpt.name + ".part").exists():
            state = "partial (fetch resumes it)"
        else:
            state = "no"
        mark = "*" if p.name == m.vqgan and not m.vqgan_checkpoint else " "
        rows.append((f"{mark} {p.name}", p.description, _size(p.approx_size), state))
    print(f"VQGAN presets (cache: {root}; * = configured):")
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print(f"  {r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  cached: {r[3]}")
    if m.vqgan_checkpoint:
        found = "found" if Path(m.vqgan_checkpoint).expanduser().exists() else "MISSING"
        print(f"* custom VQGAN: {m.vqgan_config or '(no config)'} + {m.vqgan_checkpoint} ({found})")
    _print_recorded(root)

    print("CLIP:")
    if m.clip_checkpoint:
        found = "found" if Path(m.clip_checkpoint).expanduser().exists() else "MISSING"
        print(f"  custom: {m.clip_config or m.clip_model} + {m.clip_checkpoint} ({found})")
    else:
        # engine.models.loader keeps CLIP weights under <cache>/open_clip.
        w = registry.clip_weights(m.clip_model, m.clip_pretrained or "", (root / "open_clip",))
        where = w.downloads[0][1] if w.downloads else root / "open_clip"
        cached = f"yes  {w.cached_path}" if w.cached_path else f"no (downloaded to {where} on first use)"
        print(f"  {w.model} / {w.pretrained}  from {w.source}  {_size(w.approx_size)}  cached: {cached}")
    return 0


def _print_recorded(root: Path) -> None:
    """The sha256 recorded for each downloaded file, to compare with another machine's or a
    publisher's: the mirrors publish none, so this is what was checked and installed here."""
    rows = []
    for p in registry.PRESETS.values():
        _, path = registry.preset_paths(p.name, root)
        digest = p.checkpoint.sha256 or recorded_sha256(path)
        if path.exists():
            rows.append((f"{p.name}/{path.name}", digest or "(not recorded: not downloaded by fetch)"))
    if not rows:
        return
    print("sha256 of the downloaded files (recorded when each was installed):")
    width = max(len(r[0]) for r in rows)
    for file, digest in rows:
        print(f"  {file:<{width}}  {digest}")


def _fetch(args: argparse.Namespace, cfg: Config, root: Path) -> int:
    name = args.name or cfg.models.vqgan
    config, ckpt = registry.ensure_preset(name, root, progress=not args.quiet, force=args.force)
    digest = registry.get_preset(name).checkpoint.sha256 or recorded_sha256(ckpt)
    print(f"{name}: config {config} (ships with the package)")
    print(f"{name}: checkpoint {ckpt}" + (f"  sha256 {digest}" if digest else ""))
    return 0


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Exit status: 0, or 2 with one line on stderr for a user error (unknown name, failed download)."""
    root = cache_dir(cfg.models)
    try:
        if getattr(args, "models_command", None) == "fetch":
            return _fetch(args, cfg, root)
        return _list(cfg, root)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)  # same form as engine.cli.main
        return 2
