"""Run bioimage.io's own test (``bioimageio test``) on a package."""

from __future__ import annotations

import sys
from pathlib import Path

from ._compat import patch_bioimageio_spec

__all__ = ["main", "test_package"]


def test_package(package: str | Path) -> str:
    """``bioimageio.core.test_model`` on ``package``: ``"passed"`` or ``"failed"``."""
    patch_bioimageio_spec()
    from bioimageio.core import test_model

    return str(test_model(str(package)).status)


def main() -> None:
    """The ``bioimageio`` command line, with the pydantic 2.14 work-around applied.

    ``python -m pairscope.bioimageio._test test OUT.zip`` is ``bioimageio test
    OUT.zip`` (see :mod:`pairscope.bioimageio._compat`).
    """
    patch_bioimageio_spec()
    from bioimageio.core.__main__ import main as bioimageio_main

    sys.argv[0] = "bioimageio"
    sys.exit(bioimageio_main())


if __name__ == "__main__":
    main()
