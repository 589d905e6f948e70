"""Finalise a run folder from what is on disk (writer close and ``pairscope repair``).

The manifest decides: pages that no manifest line lists (written, but the crash or
the error came before their line) are unlinked from the TIFF and cut off; a manifest
line cut by a crash is removed; then every detector file gets its OME-XML and
``run.json`` its status and ``pairs_written`` (the number of listed pairs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import tifffile

from .._files import write_atomic
from ..errors import DamagedRunError
from . import _ome
from . import layout as L

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class FinalizeReport:
    """What finalising found and did."""

    pairs: int = 0
    frames: dict[str, int] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    unlisted_pages_removed: dict[str, int] = field(default_factory=dict)
    damaged_lines_removed: int = 0
    files_removed: list[str] = field(default_factory=list)
    ome_errors: dict[str, str] = field(default_factory=dict)


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


def _page_end(page: Any, bigtiff: bool) -> tuple[int, int]:
    """``(offset of the next-IFD pointer, end of the page's bytes)``."""
    entry, count_size = (20, 8) if bigtiff else (12, 2)
    n = len(page.tags)
    next_ptr = page.offset + count_size + entry * n
    end = next_ptr + (8 if bigtiff else 4)
    for tag in page.tags.values():
        end = max(end, tag.valueoffset + tag.valuebytecount)
    for off, cnt in zip(page.dataoffsets, page.databytecounts, strict=False):
        end = max(end, off + cnt)
    return next_ptr, end


def trim_pages(path: Path, keep: int) -> int:
    """Unlink and cut off every page after the first ``keep``; returns pages removed."""
    with tifffile.TiffFile(path) as tif:
        total = len(tif.pages)
        if total <= keep:
            return 0
        bigtiff = tif.is_bigtiff
        byteorder = tif.byteorder
        next_ptr, _ = _page_end(tif.pages[keep - 1], bigtiff)
        # kept pages' bytes (page 0's OME-XML may sit after later pages)
        end = max(_page_end(tif.pages[i], bigtiff)[1] for i in range(keep))
    fd = os.open(path, os.O_RDWR)
    try:
        fmt = byteorder + ("Q" if bigtiff else "I")
        os.pwrite(fd, struct.pack(fmt, 0), next_ptr)
        os.fsync(fd)
        os.ftruncate(fd, end)
        os.fsync(fd)
    finally:
        os.close(fd)
    return total - keep


def _layout_or_empty(path: Path) -> list[tuple[tuple[int, int], str]]:
    if not path.is_file():
        return []
    try:
        return _ome.page_layout(path)
    except Exception as exc:  # a TIFF with no complete page
        logger.debug("%s has no readable pages: %s", path, exc)
        return []


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
    run_id = str(info.get("run_id") or run_dir.name)
    if info.get("format") == "ome-zarr" or (run_dir / L.ZARR_STORE).is_dir():
        from ._zarr import finalize_zarr

        report.frames, report.unlisted_pages_removed = finalize_zarr(
            run_dir, records, info
        )
        report.images = dict.fromkeys(report.frames, 1)
        return _write_info(run_dir, info, report)
    images: list[_ome.ImageSpec] = []
    files: dict[str, tuple[str, str]] = {}
    labels = {
        role: f"{role} {(info.get('detectors') or {}).get(role) or ''}".strip()
        for role in L.ROLES
    }
    pages_of = {
        role: sorted(r[role]["page"] for r in records if r.get(role))
        for role in L.ROLES
    }
    layouts = {
        role: _layout_or_empty(run_dir / L.TIFF_OF_ROLE[role]) for role in L.ROLES
    }
    for role in L.ROLES:  # every file checked before any is changed
        if len(layouts[role]) < len(pages_of[role]):
            raise _cut_short(run_dir / L.TIFF_OF_ROLE[role], len(layouts[role]),
                             len(pages_of[role]))  # fmt: skip
    for role in L.ROLES:
        name = L.TIFF_OF_ROLE[role]
        path = run_dir / name
        pages, layout = pages_of[role], layouts[role]
        if not pages:
            if path.is_file():  # nothing in it is listed: not part of the run
                path.unlink()
                report.files_removed.append(name)
            continue
        if pages != list(range(len(pages))):
            logger.warning("%s: manifest pages are not 0..n-1; kept as listed", path)
        elif len(layout) > len(pages):
            report.unlisted_pages_removed[role] = trim_pages(path, len(pages))
            layout = layout[: len(pages)]
        planes = _ome.planes_of(records, role, layout)
        if len(planes) != len(pages):
            raise _cut_short(path, len(planes), len(pages))
        report.frames[role] = len(planes)
        imgs = _ome.group_images(role, planes, labels[role])
        report.images[role] = len(imgs)
        images += imgs
        files[role] = (name, _ome.file_uuid(run_id, name))
    for role, (name, urn) in files.items():
        # the file's own images first: viewers open series 0 of the file they open
        own = [im for im in images if im.role == role]
        xml = _ome.build_ome_xml(
            own + [im for im in images if im.role != role],
            files=files,
            root_uuid=urn,
            info=info,
            description={
                r: f"pairscope {r} detector; pairs listed in {L.MANIFEST}"
                for r in files
            },
        )
        try:
            _ome.write_ome(run_dir / name, xml)
        except OSError as exc:  # the data stays readable; repair can add it later
            logger.warning("Could not write the OME-XML of %s: %s", name, exc)
            report.ome_errors[name] = exc.strerror or str(exc)
    return _write_info(run_dir, info, report)


def _cut_short(path: Path, held: int, listed: int) -> DamagedRunError:
    return DamagedRunError(
        f"{path} holds {held} complete frame(s) but {L.MANIFEST} lists {listed}: the "
        "file was cut short (an incomplete copy or a disk fault). Nothing was "
        f"changed; copy {path.name} again from where the run was written, then "
        "repeat"
    )


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
