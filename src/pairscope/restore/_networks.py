"""Restoration networks: low-dose frame on the coarse grid -> frame on the fine grid.

Both networks work at the low-dose resolution and upsample once at the end with a
``PixelShuffle``; a global skip adds the interpolated input, and the last convolution
starts at zero, so an untrained network reproduces that interpolation exactly.
Any frame size is accepted: the input is padded (replicate) to a multiple of the
network's ``stride`` and the output is cropped back to ``factor * (H, W)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "MAX_FACTOR",
    "NetworkParams",
    "ResUNet",
    "RestorationNet",
    "UNet",
    "build_network",
    "check_params",
    "default_preview_network",
    "expected_shapes",
]

MAX_FACTOR = 16

SkipMode = Literal["bilinear", "bicubic"]
_Block = Callable[[int, int], nn.Module]


class _ConvBlock(nn.Sequential):
    """CARE-style block: two 3x3 convolutions, each followed by ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.ReLU(inplace=True),
        )


class _ResBlock(nn.Module):
    """Residual block: ``relu(x' + conv(relu(conv(x))))``, x' a 1x1 projection."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.proj = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x), inplace=True))
        return F.relu(y + self.proj(x), inplace=True)


def _up_transposed(cin: int, cout: int) -> nn.Module:
    return nn.ConvTranspose2d(cin, cout, 2, stride=2)


def _up_shuffle(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, 4 * cout, 1), nn.PixelShuffle(2))


class RestorationNet(nn.Module):
    """A U-shaped restoration network with a pixel-shuffle head and global skip.

    Parameters
    ----------
    factor
        Upscale factor (the binning ratio reference/low-dose), 1 or more.
    width
        Channels at the first level; level ``i`` has ``width * 2**i``.
    depth
        Number of 2x downsampling steps (the input is padded to ``2**depth``).
    skip
        Interpolation of the global skip connection.
    """

    arch: str = ""

    def __init__(
        self,
        *,
        factor: int = 2,
        width: int = 32,
        depth: int = 2,
        skip: SkipMode = "bilinear",
        block: _Block,
        up: _Block,
    ) -> None:
        super().__init__()
        if factor < 1 or width < 1 or depth < 0:
            raise ValueError(
                f"need factor >= 1, width >= 1, depth >= 0; got factor={factor}, "
                f"width={width}, depth={depth}"
            )
        self.factor, self.width, self.depth, self.skip = factor, width, depth, skip
        chans = [width * 2**i for i in range(depth + 1)]
        self.inc = block(1, chans[0])
        self.down = nn.ModuleList(block(chans[i], chans[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(up(chans[i + 1], chans[i]) for i in range(depth))
        self.dec = nn.ModuleList(block(2 * chans[i], chans[i]) for i in range(depth))
        self.head = nn.Conv2d(chans[0], factor * factor, 3, padding=1)
        self.shuffle = nn.PixelShuffle(factor)
        nn.init.zeros_(self.head.weight)
        assert self.head.bias is not None  # Conv2d's bias=True default
        nn.init.zeros_(self.head.bias)

    @property
    def stride(self) -> int:
        """Input sizes that are multiples of this need no internal padding."""
        return 2**self.depth

    @property
    def params(self) -> dict[str, Any]:
        """Constructor arguments (besides ``factor``), as stored in a model file."""
        return {"width": self.width, "depth": self.depth, "skip": self.skip}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, 1, H, W)`` to ``(N, 1, factor*H, factor*W)``."""
        h, w = x.shape[-2:]
        s = self.stride
        ph, pw = (-h) % s, (-w) % s
        # always pad while tracing (TorchScript / ONNX export), so the exported
        # graph keeps the padding for every input size
        pad = bool(ph or pw) or torch.jit.is_tracing()
        xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if pad else x
        feats = [self.inc(xp)]
        for down in self.down:
            feats.append(down(F.max_pool2d(feats[-1], 2)))
        y = feats.pop()
        for i in reversed(range(self.depth)):
            y = self.dec[i](torch.cat([self.up[i](y), feats.pop()], dim=1))
        y = self.shuffle(self.head(y))
        f = self.factor
        y = y[..., : f * h, : f * w]
        if f == 1:
            return y + x
        base = F.interpolate(x, scale_factor=f, mode=self.skip, align_corners=False)
        return y + base


class UNet(RestorationNet):
    """CARE-style U-Net: double-conv blocks, transposed-conv upsampling."""

    arch = "unet"

    def __init__(
        self,
        *,
        factor: int = 2,
        width: int = 32,
        depth: int = 2,
        skip: SkipMode = "bilinear",
    ) -> None:
        super().__init__(
            factor=factor,
            width=width,
            depth=depth,
            skip=skip,
            block=_ConvBlock,
            up=_up_transposed,
        )


class ResUNet(RestorationNet):
    """PSSR-style ResUNet: residual blocks, pixel-shuffle upsampling in the decoder."""

    arch = "resunet"

    def __init__(
        self,
        *,
        factor: int = 2,
        width: int = 32,
        depth: int = 3,
        skip: SkipMode = "bilinear",
    ) -> None:
        super().__init__(
            factor=factor,
            width=width,
            depth=depth,
            skip=skip,
            block=_ResBlock,
            up=_up_shuffle,
        )


ARCHITECTURES: dict[str, type[RestorationNet]] = {"unet": UNet, "resunet": ResUNet}


class NetworkParams(BaseModel):
    """The constructor keywords of a network, strictly typed and bounded.

    The bounds keep a network built from an untrusted model file small: the widest
    level has at most ``width * 2**depth = 4096`` channels.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    factor: int = Field(2, ge=1, le=MAX_FACTOR)
    width: int = Field(32, ge=1, le=512)
    depth: int = Field(2, ge=0, le=6)
    skip: SkipMode = "bilinear"


def check_params(arch: str, factor: Any, params: dict[str, Any]) -> NetworkParams:
    """Validate ``arch`` and its constructor keywords; ``ValueError`` names the field."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch {arch!r} is not one of {sorted(ARCHITECTURES)}")
    try:
        checked = NetworkParams.model_validate({"factor": factor, **params})
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc']))}={err.get('input')!r}: {err['msg']}"
            for err in e.errors()
        )
        raise ValueError(f"network parameters: {problems}") from None
    if checked.width * 2**checked.depth > 4096:
        raise ValueError(
            f"network parameters: width {checked.width} x 2**depth {checked.depth} "
            "exceeds 4096 channels"
        )
    return checked


def expected_shapes(
    arch: str, factor: int, params: dict[str, Any]
) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes of a network, computed on torch's ``meta`` device.

    Nothing is allocated, so this is safe for parameters read from an untrusted
    file before the weights' declared sizes have been compared with it.
    """
    checked = check_params(arch, factor, params)
    with torch.device("meta"):
        net = ARCHITECTURES[arch](**checked.model_dump())
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def build_network(arch: str, **params: Any) -> RestorationNet:
    """Build a network by architecture name (``"unet"`` or ``"resunet"``).

    ``params`` are the constructor keywords: ``factor``, ``width``, ``depth``, ``skip``.
    """
    try:
        cls = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(
            f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}"
        ) from None
    return cls(**params)


def default_preview_network(factor: int = 2) -> UNet:
    """The small, fast U-Net that the live preview uses by default.

    Two levels, 16 base channels, at the low-dose resolution with a pixel-shuffle
    head; about 25 frames/s at 256->512 on one thread of a 2-core CPU (see
    docs/benchmarks.md).
    """
    return UNet(factor=factor, width=16, depth=2)
