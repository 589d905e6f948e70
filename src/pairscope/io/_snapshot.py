"""A snapshot of a run being written: a run folder that lists only some of its
pairs, sharing the image data (hard links, else copies) — in either format."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import layout as L
from ._finalize import read_info
from ._storage import storage_of

__all__ = ["snapshot_run"]


def _link(src: Path, dest: Path) -> None:
    if dest.exists():
        return
    try:
        os.link(src, dest)
    except OSError:  # another file system, or links not allowed: copy
        shutil.copy2(src, dest)


def _link_tree(src: Path, dest: Path) -> None:
    """Every file under ``src`` linked into ``dest`` (an OME-Zarr store)."""
    for folder, _dirs, files in os.walk(src):
        target = dest / Path(folder).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            if not name.endswith(".__lock"):  # tensorstore's write locks
                _link(Path(folder) / name, target / name)


def snapshot_run(
    run_dir: str | Path, dest: str | Path, records: Sequence[dict[str, Any]]
) -> Path:
    """Make ``dest`` a run folder of ``run_dir``'s ``records`` only (the manifest
    decides what a reader sees; the image data are shared, never copied twice).
    The pairs listed must be on disk (the writer lists a pair once it is)."""
    run_dir, dest = Path(run_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    info = read_info(run_dir)
    data = storage_of(run_dir, info).data_paths(run_dir)
    for path in (*data, run_dir / L.RUN_INFO, run_dir / L.CALIBRATION):
        if path.is_dir():
            _link_tree(path, dest / path.name)
        elif path.is_file():
            _link(path, dest / path.name)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (dest / L.MANIFEST).write_text(lines)
    return dest
