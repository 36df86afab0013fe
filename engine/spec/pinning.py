"""A request's input files (init image, mask, image prompts): recorded so that a rerun finds them again.

A PNG's metadata may be read in another folder, on another day, after the inputs moved. So each
input is stored as an absolute path with its sha256 (``Request.inputs``). ``pin`` records them
when a request is made; ``locate`` finds them again for ``rerun``: at the recorded path, else
beside the PNG (same name), and checks the sha256 so that a rerun never quietly uses another file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from engine.errors import UserError
from engine.spec.request import ImagePrompt, InputFile, Request

__all__ = ["pin", "locate", "sha256_file"]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute())


def _replace_paths(req: Request, new: dict[str, str]) -> Request:
    """The request with every input path ``p`` replaced by ``new[p]`` and ``inputs`` recorded afresh."""
    init = new.get(req.init_image, req.init_image) if req.init_image else None
    mask = new.get(req.mask, req.mask) if req.mask else None
    prompts = tuple(ImagePrompt(path=new.get(ip.path, ip.path), weight=ip.weight) for ip in req.image_prompts)
    paths = dict.fromkeys(p for p in (init, mask, *(ip.path for ip in prompts)) if p)
    try:
        inputs = tuple(InputFile(path=p, sha256=sha256_file(p)) for p in paths)
    except OSError as e:
        raise UserError(f"cannot read {e.filename}: {e.strerror}") from None
    return req.with_changes(init_image=init, mask=mask, image_prompts=prompts, inputs=inputs)


def _named(req: Request) -> list[tuple[str, str]]:
    """(what, path) for each input file the request names."""
    out = [("input image", req.init_image), ("mask", req.mask)]
    out += [("image prompt", ip.path) for ip in req.image_prompts]
    return [(what, p) for what, p in out if p]


def pin(req: Request) -> Request:
    """Absolute paths and the sha256 of every input file, for the PNG's metadata."""
    return _replace_paths(req, {p: _absolute(p) for _, p in _named(req)})


def locate(req: Request, png: str | Path) -> Request:
    """Find a stored request's inputs again (for ``rerun`` of ``png``); a missing one names where it looked."""
    recorded = {i.path: i.sha256 for i in req.inputs}
    here = Path(png).expanduser().absolute().parent
    found: dict[str, str] = {}
    for what, stored in _named(req):
        p = Path(stored).expanduser()
        candidates = [p.absolute()] if p.is_absolute() else [p.absolute(), here / p]
        candidates.append(here / p.name)
        want = recorded.get(stored)
        changed = None
        for c in dict.fromkeys(candidates):
            if not c.is_file():
                continue
            if want is None or sha256_file(c) == want:
                found[stored] = str(c)
                break
            changed = changed or c
        else:
            if changed is not None:
                raise UserError(f"{what} {changed} is not the file {Path(png).name} was made from "
                                "(its sha256 differs); put the original back to rerun it")
            looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
            raise UserError(f"{what} for {Path(png).name} not found: looked for {looked}")
    return _replace_paths(req, found)
