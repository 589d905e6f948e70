"""Shapes, dtypes and the interpolation start of the restoration networks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pairscope.restore import ResUNet, UNet, build_network, default_preview_network


@pytest.mark.parametrize("arch", ["unet", "resunet"])
@pytest.mark.parametrize("factor", [1, 2, 4])
@pytest.mark.parametrize("size", [(32, 32), (37, 51)])
def test_output_shape_and_dtype(arch: str, factor: int, size: tuple[int, int]) -> None:
    net = build_network(arch, factor=factor, width=4, depth=2).eval()
    x = torch.rand(2, 1, *size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y = net(x)
    assert y.shape == (2, 1, factor * size[0], factor * size[1])
    assert y.dtype == torch.float32


@pytest.mark.parametrize("cls", [UNet, ResUNet])
def test_untrained_network_is_bilinear_interpolation(cls: type[UNet]) -> None:
    net = cls(factor=2, width=4, depth=2).eval()
    x = torch.rand(1, 1, 21, 30)
    with torch.inference_mode():
        y = net(x)
    expected = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(y, expected)


def test_build_network_rejects_unknown_arch() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'vit'"):
        build_network("vit")


def test_params_round_trip_through_factory() -> None:
    net = ResUNet(factor=4, width=8, depth=1, skip="bicubic")
    again = build_network(net.arch, factor=net.factor, **net.params)
    assert again.params == net.params
    assert again.stride == 2


def test_default_preview_network_is_small() -> None:
    net = default_preview_network(2)
    assert net.factor == 2
    assert sum(p.numel() for p in net.parameters()) < 200_000
