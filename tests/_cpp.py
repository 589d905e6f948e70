"""Checks shared by the tests on Micro-Manager's C++ DemoCamera rig."""

from __future__ import annotations

from typing import Any


def assert_real_pixels(run: Any, every: int = 10) -> None:
    """Frames that are not blank: structure in every sampled frame of both cameras
    (DemoCamera's ``FastImage 1`` returns all-zero frames)."""
    for i, pair in enumerate(run):
        if i % every:
            continue
        for img in (pair.lowdose, pair.reference):
            if img is not None:
                assert img.max() > 0 and float(img.std()) > 10.0, "a blank frame"
