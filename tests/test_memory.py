"""Allocator tuning used by the CLI and the benchmarks."""

import sys

import numpy as np

from pairscope._memory import keep_frame_memory


def test_keep_frame_memory_applies_on_glibc() -> None:
    applied = keep_frame_memory()
    assert applied is sys.platform.startswith("linux")
    frames = [np.ones((1024, 1024), np.uint16) for _ in range(4)]  # still allocates
    assert sum(int(f.sum()) for f in frames) == 4 * 1024 * 1024
