"""Seamless tiles: the VQGAN's convolutions pad by wrapping around instead of with zeros.

A convolution padded circularly sees, past the right edge, the left edge: the picture has no border,
so it tiles. ``tiled(module, tile)`` switches every padded ``Conv2d`` of ``module`` (the VQGAN's encoder
and decoder) for the length of a ``with``: each gets padding 0 and a forward pre-hook that pads its
input itself, circularly in the tiled directions ("x": width only, "xy": both) and with zeros in the
other. taming's ``Downsample`` pads (0, 1, 0, 1) with zeros by hand before an unpadded stride-2 conv;
its conv gets a hook that puts the wrapped row/column in place of those zeros. Nearest upsampling,
1x1 convs, group norms and non-local attention commute with a roll as they are. So with tiling on,
decoding a latent rolled by k cells gives the picture rolled by k x factor (up to float rounding).

The modules are restored on leaving the ``with`` (the hooks removed, the padding put back), so the
same loaded model serves tiled and untiled jobs one after the other (one worker thread uses a model).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from taming.modules.diffusionmodules.model import Downsample
from torch import nn


def _pad(x: torch.Tensor, ph: int, pw: int, tile: str) -> torch.Tensor:
    """Pad height by ``ph`` and width by ``pw`` on both sides: wrapped where tiled, zeros elsewhere."""
    if tile == "xy":
        return F.pad(x, (pw, pw, ph, ph), mode="circular")
    if pw:
        x = F.pad(x, (pw, pw, 0, 0), mode="circular")
    return F.pad(x, (0, 0, ph, ph)) if ph else x


def _wrap_last(x: torch.Tensor, tile: str) -> torch.Tensor:
    """A Downsample's input, zero-padded by one row and column at the end: those become the first ones."""
    x = torch.cat([x[..., :-1], x[..., :1]], dim=-1)  # width is tiled in both modes
    if tile == "xy":
        x = torch.cat([x[..., :-1, :], x[..., :1, :]], dim=-2)
    return x


@contextlib.contextmanager
def tiled(module: nn.Module, tile: str) -> Iterator[None]:
    """Within the ``with``, ``module``'s convolutions wrap around in the ``tile`` directions ("x", "xy");
    "none" changes nothing."""
    if tile == "none":
        yield
        return
    if tile not in ("x", "xy"):
        raise ValueError(f"unknown tile mode {tile!r}")
    handles: list[Any] = []
    saved: list[tuple[nn.Conv2d, Any]] = []
    downsampling = {id(m.conv) for m in module.modules() if isinstance(m, Downsample) and m.with_conv}
    try:
        for conv in module.modules():
            if not isinstance(conv, nn.Conv2d):
                continue
            if id(conv) in downsampling:
                handles.append(conv.register_forward_pre_hook(lambda _m, args: (_wrap_last(args[0], tile),)))
                continue
            ph, pw = conv.padding if isinstance(conv.padding, tuple) else (0, 0)
            if not (ph or pw) or conv.padding_mode != "zeros":
                continue
            saved.append((conv, conv.padding))
            conv.padding = (0, 0)
            handles.append(conv.register_forward_pre_hook(
                lambda _m, args, ph=ph, pw=pw: (_pad(args[0], ph, pw, tile),)))
        yield
    finally:
        for h in handles:
            h.remove()
        for conv, padding in saved:
            conv.padding = padding
