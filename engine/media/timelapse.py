"""Timelapses: a run's progress frames as an MP4, animated WebP or GIF, small enough to post.

No torch here (the bot imports this module). MP4 is H.264 in yuv420p at even sizes through PyAV
(its wheels carry FFmpeg), which Discord plays inline; WebP and GIF go through Pillow. The frames are
used in the order given, and the last one is shown as it is (the result itself, unless the size had
to shrink). MP4 and GIF frames are decoded one at a time and streamed to the encoder, so a long run
costs no more memory than a short one (beyond the file itself); Pillow's WebP writer takes every frame
at once, so a WebP holds at most ``MAX_WEBP_FRAMES`` and ``WEBP_HELD_BYTES`` of pixels (thinned evenly,
with a note). When ``max_bytes`` is given and the first encoding is larger, the encoder tries again with
a higher CRF / lower quality, fewer frames (thinned evenly, first and last kept) and a smaller size,
in that order of preference, and ``Timelapse.note`` says what it had to give up.
"""

from __future__ import annotations

import io
import math
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from engine.errors import UserError

FORMATS = (".mp4", ".webp", ".gif")
MIN_FRAMES = 2  # a single frame is shown twice: a timelapse always moves from a first to a last frame
MAX_FPS = 60
HOLD_S = 1.0  # the last frame (the result) stays this long at the end, so viewers see what it became
_MP4_CRF = (18, 23, 28, 33, 38, 44, 51)  # H.264 quality ladder: lower is better and bigger
_WEBP_QUALITY = (100, 90, 75, 60, 45, 30, 15)  # 100 = lossless (exact pixels); the rest lossy
_GIF_COLOURS = (256, 192, 128, 96, 64, 32, 16)
_SOFT_LEVEL = 2  # quality steps tried before dropping frames: a little blur beats a jumpy timelapse
_MIN_SIDE = 16  # pixels: never shrink the short side below this
_MAX_TRIES = 40
MAX_WEBP_FRAMES = 10_000  # libwebp's animation encoder slows down past this: 10,000 frames 8 s, 100,000 > 18 min
WEBP_HELD_BYTES = 512 * 2**20  # a WebP's decoded frames (RGB) held at once: 240 zoom frames of 640x640 fit


@dataclass(frozen=True)
class Timelapse:
    """What was written: the file, how many frames and at what size; ``note`` when it had to shrink."""

    path: Path
    frames: int
    size: tuple[int, int]
    note: str | None = None


def frame_files(folder: Path) -> list[Path]:
    """The PNGs in ``folder`` in name order (numbers in names compare as numbers: 50 before 100).

    A missing folder or one without PNGs is a ``UserError`` with one line.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder" if not folder.exists() else f"{folder}: not a folder")
    pngs = [p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file()]
    if not pngs:
        raise UserError(f"{folder}: no frame PNGs in this folder")
    return sorted(pngs, key=_natural)


def make_timelapse(frames: Sequence[Path], out: Path, *, fps: int = 12,
                   max_bytes: int | None = None, hold_s: float = HOLD_S) -> Timelapse:
    """Write ``frames`` (in this order) as a timelapse at ``out``; the suffix picks the format.

    The last frame is shown for ``hold_s`` seconds (at least one frame's time): in MP4 it is repeated
    (a constant frame rate plays everywhere), in WebP and GIF it gets that duration. A zoom video
    passes 0: every frame of it is content, and it loops.

    Raises ``UserError`` for no frames, an unknown suffix, a bad fps or a ``max_bytes`` nothing fits in.
    """
    out = Path(out)
    fmt = out.suffix.lower()
    if fmt not in FORMATS:
        raise UserError(f"{out.name}: a timelapse is .mp4, .webp or .gif")
    if not 1 <= fps <= MAX_FPS:
        raise UserError(f"timelapse fps must be from 1 to {MAX_FPS} (got {fps})")
    paths = [Path(p) for p in frames]
    if not paths:
        raise UserError("no frames to make a timelapse from")
    if len(paths) < MIN_FRAMES:
        paths = paths * MIN_FRAMES
    size = _open(paths[-1]).size  # the result's size: every frame is shown at it
    data, used, shape, notes = _fit(paths, size, fmt, fps, max_bytes, hold_s)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return Timelapse(path=out, frames=used, size=shape, note="; ".join(notes) if notes else None)


def thin(items: Sequence[Path], count: int) -> list[Path]:
    """``count`` of ``items`` spread evenly, always keeping the first and the last."""
    n = len(items)
    if count >= n:
        return list(items)
    if count <= 1:
        return [items[-1]]
    picks = sorted({round(i * (n - 1) / (count - 1)) for i in range(count)})
    return [items[i] for i in picks]


def _fit(paths: list[Path], size: tuple[int, int], fmt: str, fps: int, max_bytes: int | None,
         hold_s: float = 0.0) -> tuple[bytes, int, tuple[int, int], list[str]]:
    """Encode, then give up quality, frames and size (in that order) until it fits ``max_bytes``."""
    level, count, scale = 0, len(paths), 1.0
    held = _most_held(fmt, size)
    if count > held:  # a format whose encoder holds every frame: thinned to what it may hold
        count = max(MIN_FRAMES, held)
    levels = len(_MP4_CRF)
    floor_scale = min(1.0, _MIN_SIDE / max(1, min(size)))
    for _ in range(_MAX_TRIES):
        shape = _shape(size, scale, even=fmt == ".mp4")
        data = _encode(thin(paths, count), shape, fmt, fps, level, hold_s)
        if max_bytes is None or len(data) <= max_bytes:
            notes = _notes(len(paths), count, size, shape, level, fmt, max_bytes)
            if held < len(paths) and not notes:
                notes = [f"{count} of {len(paths)} frames: a WebP holds at most {held} at {size[0]}x{size[1]}"]
            return data, count, shape, notes
        ratio = max_bytes / len(data)
        if level < _SOFT_LEVEL:
            level += 1
        elif count > MIN_FRAMES and count > min(len(paths), 12):
            count = max(MIN_FRAMES, min(len(paths), 12), min(count - max(1, count // 8), int(count * ratio * 0.9)))
        elif scale > floor_scale * 1.01 and min(_shape(size, scale, even=False)) > 64:
            scale = max(floor_scale, 64 / min(size), min(scale * 0.85, scale * math.sqrt(ratio) * 0.95))
        elif count > MIN_FRAMES:
            count = max(MIN_FRAMES, min(count - max(1, count // 8), int(count * ratio * 0.9)))
        elif level < levels - 1:
            level += 1
        elif scale > floor_scale * 1.01:
            scale = max(floor_scale, min(scale * 0.85, scale * math.sqrt(ratio) * 0.95))
        else:
            break
    limit = max_bytes if max_bytes is not None else 0
    raise UserError(f"a timelapse cannot be made as small as {_mib(limit)}")


def _most_held(fmt: str, size: tuple[int, int]) -> int:
    """How many frames an encoding may use: unbounded where frames are streamed (MP4, GIF)."""
    if fmt != ".webp":
        return 2**62
    return min(MAX_WEBP_FRAMES, WEBP_HELD_BYTES // (3 * size[0] * size[1]))


def _notes(total: int, count: int, size: tuple[int, int], shape: tuple[int, int], level: int, fmt: str,
           max_bytes: int | None) -> list[str]:
    """What was given up, in words; nothing when the first try fitted."""
    gave: list[str] = []
    if count < total:
        gave.append(f"{count} of {total} frames")
    if shape != size and (shape[0] < size[0] - 1 or shape[1] < size[1] - 1):
        gave.append(f"shrunk to {shape[0]}x{shape[1]}")
    if level > 0:
        gave.append({".mp4": "lower quality", ".webp": "lossy", ".gif": "fewer colours"}[fmt])
    if not gave or max_bytes is None:
        return []
    return [f"shortened to fit {_mib(max_bytes)}: " + ", ".join(gave)]


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB" if n >= 1024 else f"{n} bytes"


def _shape(size: tuple[int, int], scale: float, *, even: bool) -> tuple[int, int]:
    w, h = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
    if even:  # yuv420p needs even sides
        w, h = max(2, w - w % 2), max(2, h - h % 2)
    return w, h


def _frames(paths: Sequence[Path], shape: tuple[int, int]) -> Iterator[Image.Image]:
    """Each frame as RGB at ``shape`` (decoded one at a time: a long run's frames need not fit in memory)."""
    for p in paths:
        img = _open(p)
        yield img if img.size == shape else img.resize(shape, Image.Resampling.LANCZOS)


def _open(path: Path) -> Image.Image:
    from engine.media.imageio import open_image

    img = open_image(path, what="frame")
    return img.convert("RGB") if img.mode != "RGB" else img


def _encode(paths: Sequence[Path], shape: tuple[int, int], fmt: str, fps: int, level: int,
            hold_s: float = 0.0) -> bytes:
    if fmt == ".mp4":
        return _mp4(paths, shape, fps, _MP4_CRF[level], max(1, round(hold_s * fps)))
    step = max(1, round(1000 / fps))
    ms = [step] * (len(paths) - 1) + [max(step, round(hold_s * 1000))]  # the last one held
    if fmt == ".gif":
        return _gif(paths, shape, ms, _GIF_COLOURS[level])
    frames = list(_frames(paths, shape))  # Pillow's WebP writer takes them all (``_most_held`` bounds them)
    buf = io.BytesIO()
    q = _WEBP_QUALITY[level]
    # Lossless: ``quality`` is the effort there, and a low one is ~100x faster for a few % more bytes.
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:], duration=ms, loop=0,
                   lossless=q >= 100, quality=20 if q >= 100 else q, method=0 if q >= 100 else 2)
    return buf.getvalue()


def _gif(paths: Sequence[Path], shape: tuple[int, int], ms: Sequence[int], colours: int) -> bytes:
    """An endlessly looping GIF, written a frame at a time with Pillow's GIF writer (``getheader`` and
    ``getdata``), so that only the frame at hand and the one before it are held (Pillow's
    ``save_all`` keeps every frame until the end). Each frame has its own palette (Pillow's fast
    octree, no dithering); a frame equal to the one before only lengthens it."""
    from PIL import GifImagePlugin

    buf = io.BytesIO()
    pending: tuple[Image.Image, int] | None = None  # the frame before, not yet written, and its duration

    def write(frame: Image.Image, duration: int) -> None:
        if not buf.tell():
            header, _ = GifImagePlugin.getheader(frame, info={"loop": 0})
            buf.write(b"".join(header))
        buf.write(b"".join(GifImagePlugin.getdata(frame, duration=duration, disposal=1,
                                                  include_color_table=True)))

    for img, duration in zip(_frames(paths, shape), ms, strict=True):
        frame = img.quantize(colours, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        del img
        if pending is not None and _same(pending[0], frame):
            pending = (pending[0], pending[1] + duration)
            continue
        if pending is not None:
            write(*pending)
        pending = (frame, duration)
    if pending is not None:
        write(*pending)
    buf.write(b";")  # the trailer
    return buf.getvalue()


def _same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and a.getpalette() == b.getpalette() and a.tobytes() == b.tobytes()


def _mp4(paths: Sequence[Path], shape: tuple[int, int], fps: int, crf: int, last: int = 1) -> bytes:
    """H.264 yuv420p MP4 with the index up front (plays inline while it downloads); the last frame
    ``last`` times."""
    import av

    with tempfile.TemporaryDirectory(prefix="timelapse-") as tmp:  # faststart rewrites the file: not a buffer
        target = Path(tmp) / "out.mp4"
        with av.open(str(target), mode="w", options={"movflags": "+faststart"}) as box:
            _mux(box, paths, shape, fps, crf, last)
        return target.read_bytes()


def _mux(box: Any, paths: Sequence[Path], shape: tuple[int, int], fps: int, crf: int, last: int = 1) -> None:
    import av

    stream = box.add_stream("libx264", rate=fps)
    stream.width, stream.height = shape
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": str(crf), "preset": "medium"}
    img = None
    for img in _frames(paths, shape):
        box.mux(stream.encode(av.VideoFrame.from_image(img)))
    for _ in range(last - 1 if img is not None else 0):  # the result held: repeats cost a few bytes each
        box.mux(stream.encode(av.VideoFrame.from_image(img)))
    box.mux(stream.encode())


def _natural(path: Path) -> list[int | str]:
    """``frame2.png`` before ``frame10.png``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]
