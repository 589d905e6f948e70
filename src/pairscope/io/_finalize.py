"""Finalise a run folder from what is on disk (writer close and ``pairscope repair``).

The manifest decides: a manifest line cut by a crash is removed; frames that no
manifest line lists (written, but the crash or the error came before their line)
are cut from the run's storage, which then writes its OME metadata
(:meth:`pairscope.io._storage.RunStorage.finalize`); ``run.json`` gets its status
and ``pairs_written`` (the number of listed pairs).
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from .._files import write_atomic
from . import layout as L
from ._storage import FinalizeReport, storage_of


def read_manifest(path: Path) -> tuple[list[dict[str, Any]], int, int]:
    """``(records, bytes up to the last complete line, damaged lines at the end)``.

    A line counts only when it ends with a newline and parses.  The writer appends
    whole lines, so damage can only be the tail of an interrupted append; damaged
    lines *between* good ones (a hand edit?) are skipped but never counted for
    cutting, so :func:`cut_manifest` cannot remove a good line.
    """
    data = path.read_bytes() if path.is_file() else b""
    records: list[dict[str, Any]] = []
    good = pos = tail_damaged = 0
    for line in data.splitlines(keepends=True):
        pos += len(line)
        if not line.strip():
            continue
        try:
            if not line.endswith(b"\n"):
                raise ValueError("unterminated")
            records.append(json.loads(line))
        except ValueError:
            tail_damaged += 1
            continue
        good, tail_damaged = pos, 0
    return records, good, tail_damaged


def cut_manifest(path: Path, good_bytes: int) -> None:
    """Truncate the manifest to its complete lines (fsynced)."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, good_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_info(run_dir: Path) -> dict[str, Any]:
    path = run_dir / L.RUN_INFO
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic write; a failed one leaves no ``.tmp`` file behind."""
    text = json.dumps(data, indent=2, default=json_default)
    try:
        write_atomic(path, text.encode())
    except BaseException:
        with contextlib.suppress(OSError):
            path.with_name(path.name + ".tmp").unlink()
        raise


def json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    return str(obj)


def finalize_run(
    run_dir: str | Path,
    *,
    status: str,
    extra_info: dict[str, Any] | None = None,
    cut_damaged: bool = True,
) -> FinalizeReport:
    """Make ``run_dir`` consistent with its manifest, write OME-XML and ``run.json``.

    Raises ``OSError`` when the folder cannot be written; what was on disk stays.
    """
    run_dir = Path(run_dir)
    report = FinalizeReport()
    manifest = run_dir / L.MANIFEST
    records, good, damaged = read_manifest(manifest)
    if damaged and cut_damaged:
        cut_manifest(manifest, good)
        records, _, _ = read_manifest(manifest)
        report.damaged_lines_removed = damaged
    report.pairs = len(records)
    info = read_info(run_dir)
    info.update(extra_info or {})
    info["status"] = status
    storage_of(run_dir, info).finalize(run_dir, records, info, report)
    return _write_info(run_dir, info, report)


def _write_info(
    run_dir: Path, info: dict[str, Any], report: FinalizeReport
) -> FinalizeReport:
    info["pairs_written"] = report.pairs
    info["frames_written"] = report.frames
    if report.ome_errors:
        info["ome_metadata_missing"] = report.ome_errors
    else:
        info.pop("ome_metadata_missing", None)
    info.setdefault("finished", datetime.now().isoformat())
    write_json(run_dir / L.RUN_INFO, info)
    return report
