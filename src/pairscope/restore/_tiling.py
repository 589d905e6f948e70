"""Overlapping-tile inference with blending, for frames too large to restore at once.

Tiles start on multiples of the network's stride (``2**depth``), so pooling sees the
same grid as for the whole frame.  Each tile's weight is zero within ``overlap/4``
of an interior tile edge (where zero padding of the convolutions shows) and ramps
linearly to one over the next ``overlap/2``; weights of neighbouring tiles sum to
one.  With ``overlap`` at least twice the network's effective receptive radius the
tiled result matches the untiled one to within float rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["restore_tiled", "tile_starts"]


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start positions of tiles of size ``tile`` covering ``length`` with overlap."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _ramp(
    n_out: int, factor: int, overlap: int, lead: bool, trail: bool, like: torch.Tensor
) -> torch.Tensor:
    """1-D blending weights for one tile axis (``n_out`` output pixels)."""
    i = torch.arange(n_out, device=like.device, dtype=torch.float32)
    w = torch.ones(n_out, device=like.device, dtype=torch.float32)
    q = overlap / 4

    def up(d: torch.Tensor) -> torch.Tensor:
        return ((d - q) / (2 * q)).clamp(0, 1)

    if lead:
        w = torch.minimum(w, up((i + 0.5) / factor))
    if trail:
        w = torch.minimum(w, up((n_out - i - 0.5) / factor))
    return w


def restore_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    factor: int,
    tile: int,
    overlap: int,
    stride: int = 1,
) -> torch.Tensor:
    """Apply ``fn`` (``(1,C,h,w) -> (1,C,f*h,f*w)``) to ``x`` tile by tile.

    ``tile`` and ``overlap`` are in input pixels; both are rounded up to multiples of
    ``stride``, and ``tile`` is raised to at least ``2*overlap + stride``.
    """
    h, w = x.shape[-2:]
    overlap = _round_up(max(overlap, 0), stride)
    tile = max(_round_up(tile, stride), 2 * overlap + stride)
    hp, wp = _round_up(h, stride), _round_up(w, stride)
    if hp <= tile and wp <= tile:
        return fn(x)
    xp = F.pad(x, (0, wp - w, 0, hp - h), mode="replicate") if (hp, wp) != (h, w) else x
    f = factor
    out = torch.zeros(
        (*x.shape[:-2], f * hp, f * wp), device=x.device, dtype=torch.float32
    )
    wsum = torch.zeros((f * hp, f * wp), device=x.device, dtype=torch.float32)
    for y0 in tile_starts(hp, tile, overlap):
        th = min(tile, hp)
        wy = _ramp(f * th, f, overlap, y0 > 0, y0 + th < hp, out)
        for x0 in tile_starts(wp, tile, overlap):
            tw = min(tile, wp)
            wx = _ramp(f * tw, f, overlap, x0 > 0, x0 + tw < wp, out)
            weight = wy[:, None] * wx[None, :]
            pred = fn(xp[..., y0 : y0 + th, x0 : x0 + tw]).float()
            ys, xs = slice(f * y0, f * (y0 + th)), slice(f * x0, f * (x0 + tw))
            out[..., ys, xs] += pred * weight
            wsum[ys, xs] += weight
    return (out / wsum.clamp_min(1e-12))[..., : f * h, : f * w]
