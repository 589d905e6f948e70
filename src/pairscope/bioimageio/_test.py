"""Run bioimage.io's own test (``bioimageio test``) on a package."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["main", "test_package"]


def test_package(package: str | Path) -> str:
    """``bioimageio.core.test_model`` on ``package``: ``"passed"`` or ``"failed"``."""
    from bioimageio.core import test_model

    return str(test_model(str(package)).status)


def main() -> None:
    """``python -m pairscope.bioimageio._test test OUT.zip`` is ``bioimageio test
    OUT.zip`` (bioimage.io's own command line)."""
    from bioimageio.core.__main__ import main as bioimageio_main

    sys.argv[0] = "bioimageio"
    sys.exit(bioimageio_main())


if __name__ == "__main__":
    main()
