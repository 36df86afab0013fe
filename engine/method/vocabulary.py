"""The words ``describe`` builds prompts from, and their CLIP text embeddings, cached on disk.

The vocabularies are plain text files shipped with the package (``engine/method/vocab/<slot>.txt``: one
entry a line, ``#`` starts a comment), one per slot of a prompt: subject, medium, movement, artist,
flavour. Embedding about a thousand texts takes a minute on a CPU, so each model's table is computed once
and kept beside the model cache (``<models.cache_dir>/describe/``) as safetensors: data, never code. A
table is used only if its recorded model identity and vocabulary hash match and its shape is right; a
changed list, another model, or a damaged file is computed again, never trusted and never a crash.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from engine.errors import UserError
from engine.media.files import write_atomic

log = logging.getLogger(__name__)

VOCAB_DIR = Path(__file__).resolve().parent / "vocab"  # package data (pyproject: [tool.setuptools.package-data])
SLOTS = ("subject", "medium", "movement", "artist", "flavour")
FILES = {"subject": "subjects.txt", "medium": "media.txt", "movement": "movements.txt", "artist": "artists.txt",
         "flavour": "flavours.txt"}
TEMPLATES = {"artist": "by {}"}  # how an entry reads in a prompt (and is embedded); the others as written
FORMAT = "1"  # of the cached tables; a change makes every old table be computed again
BATCH = 64  # texts per CLIP call
_UNSAFE = re.compile(r"[`\x00-\x1f\x7f]")  # entries are shown in Discord inside `code`: no backticks


@dataclass(frozen=True)
class Vocabulary:
    """One slot's entries, the texts embedded for them, and the hash that names their table."""

    slot: str
    entries: tuple[str, ...]
    texts: tuple[str, ...]
    digest: str  # sha256 of the file's bytes and the slot's template


def read_vocabulary(slot: str, path: Path) -> Vocabulary:
    """One slot's file; a missing or empty one is a ``UserError`` naming it."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"vocabulary {path}: cannot be read ({e.strerror or e})") from None
    entries: list[str] = []
    seen: set[str] = set()
    for line in raw.decode("utf-8", errors="replace").splitlines():
        entry = " ".join(line.split())
        if not entry or entry.startswith("#") or entry in seen:
            continue
        if _UNSAFE.search(entry):
            log.warning("vocabulary %s: skipping %r (backticks and control characters are not allowed)", path, entry)
            continue
        seen.add(entry)
        entries.append(entry)
    if not entries:
        raise UserError(f"vocabulary {path}: no entries")
    template = TEMPLATES.get(slot, "{}")
    digest = hashlib.sha256(raw + b"\0" + template.encode()).hexdigest()
    return Vocabulary(slot, tuple(entries), tuple(template.format(e) for e in entries), digest)


def load_vocabularies(folder: Path | None = None) -> dict[str, Vocabulary]:
    """Every slot's vocabulary: the file of ``folder`` where it has one (``subjects.txt``, ``media.txt``,
    ``movements.txt``, ``artists.txt``, ``flavours.txt``), else the shipped one."""
    if folder is not None:
        if not folder.is_dir():
            raise UserError(f"vocabulary folder {folder}: not found")
        if not any((folder / name).is_file() for name in FILES.values()):
            raise UserError(f"vocabulary folder {folder} has none of {', '.join(FILES.values())}")
    out = {}
    for slot in SLOTS:
        own = folder / FILES[slot] if folder is not None else None
        out[slot] = read_vocabulary(slot, own if own is not None and own.is_file() else VOCAB_DIR / FILES[slot])
    return out


def encode_in_batches(encode: Callable[[list[str]], torch.Tensor], texts: Sequence[str],
                      batch: int = BATCH) -> torch.Tensor:
    """(len(texts), D) unit embeddings on the CPU, ``batch`` texts per call."""
    parts = [encode(list(texts[i:i + batch])).detach().float().cpu() for i in range(0, len(texts), batch)]
    return torch.cat(parts)


def table_path(folder: Path, model_id: str, vocab: Vocabulary) -> Path:
    """``<folder>/<model hash>/<slot>-<vocabulary hash>.safetensors``: another model or list, another file."""
    model = hashlib.sha256(model_id.encode()).hexdigest()[:16]
    return folder / model / f"{vocab.slot}-{vocab.digest[:16]}.safetensors"


def _metadata(model_id: str, vocab: Vocabulary) -> dict[str, str]:
    return {"format": FORMAT, "model": model_id, "slot": vocab.slot, "sha256": vocab.digest,
            "entries": str(len(vocab.entries))}


def read_table(path: Path, model_id: str, vocab: Vocabulary, dim: int | None = None) -> torch.Tensor | None:
    """The cached table if it is whole and is this model's table of this list; None (recompute) otherwise."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:  # type: ignore[no-untyped-call]
            if f.metadata() != _metadata(model_id, vocab) or list(f.keys()) != ["embeddings"]:
                raise ValueError("made for another model or list")
            table: torch.Tensor = f.get_tensor("embeddings")
        if (table.dtype != torch.float32 or table.dim() != 2 or table.shape[0] != len(vocab.entries)
                or (dim is not None and table.shape[1] != dim) or not torch.isfinite(table).all()):
            raise ValueError(f"a table of shape {list(table.shape)} and {table.dtype}")
    except Exception as e:  # a cache file is only ever a shortcut: anything wrong with it means recompute
        log.warning("text embeddings %s are not usable (%s); computing them again", path, str(e) or type(e).__name__)
        return None
    return table


def write_table(path: Path, table: torch.Tensor, model_id: str, vocab: Vocabulary) -> None:
    """Written whole or not at all; older tables of the slot for this model are removed. A cache that cannot
    be written costs the next run the time again, nothing else."""
    try:
        write_atomic(path, save({"embeddings": table.contiguous()}, metadata=_metadata(model_id, vocab)))
        for old in path.parent.glob(f"{vocab.slot}-*.safetensors"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as e:
        log.warning("cannot cache text embeddings in %s (%s)", path.parent, e.strerror or e)


def embed_vocabulary(encode: Callable[[list[str]], torch.Tensor], vocab: Vocabulary, *,
                     folder: Path | None = None, model_id: str | None = None, dim: int | None = None,
                     on_compute: Callable[[Vocabulary], None] | None = None) -> torch.Tensor:
    """The slot's text embeddings, (entries, D) on the CPU: from ``folder``'s cache when it holds this model's
    table of this list, else computed (and cached when ``folder`` and ``model_id`` are given);
    ``on_compute(vocab)`` is told before a table is computed (it takes a while)."""
    path = table_path(folder, model_id, vocab) if folder is not None and model_id is not None else None
    if path is not None and model_id is not None:
        cached = read_table(path, model_id, vocab, dim)
        if cached is not None:
            return cached
    if on_compute is not None:
        on_compute(vocab)
    table = encode_in_batches(encode, vocab.texts)
    if path is not None and model_id is not None:
        write_table(path, table, model_id, vocab)
    return table
