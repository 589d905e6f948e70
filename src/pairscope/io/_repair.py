"""``pairscope repair``: finalise a run interrupted by ``kill -9``, a crash or power loss.

Keeps exactly the pairs the manifest lists (a manifest line cut by the crash and
pages written after the last listed pair are removed), writes the OME-XML, and sets
``run.json``'s status to ``recovered``.  Idempotent; refuses a run whose writer still
holds ``writing.lock``.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .._files import READ_ONLY_ERRNOS, os_reason
from ..errors import DamagedRunError, OutputError, PairscopeError
from . import layout as L
from ._finalize import FinalizeReport, finalize_run, read_info, read_manifest
from ._lock import RunLock, lock_holder
from ._storage import storage_of
from ._tifflog import tifffile_problems

FINAL = ("completed", "cancelled", "cancelled", "failed")


class RunInUseError(PairscopeError, RuntimeError):
    """The run folder is still being written by a live process."""

    def __init__(self, message: str, *, pid: int) -> None:
        super().__init__(message)
        self.pid = pid


@dataclass(slots=True)
class RepairReport:
    """What ``repair`` found and did."""

    run_dir: Path
    status_before: str
    status: str
    changed: bool
    finalize: FinalizeReport = field(default_factory=FinalizeReport)
    stale_files_removed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        f = self.finalize
        out = [f"{self.run_dir}: status was {self.status_before!r}"]
        if not self.changed:
            out.append(
                f"already finalised ({f.pairs} pairs listed, OME metadata present): "
                "nothing to do"
            )
            return out
        frames = ", ".join(f"{n} {r}" for r, n in f.frames.items()) or "no frames"
        out.append(f"kept the {f.pairs} pairs the manifest lists ({frames})")
        if f.damaged_lines_removed:
            out.append(
                f"removed {f.damaged_lines_removed} incomplete manifest line(s) "
                "(cut by the interruption)"
            )
        for role, n in f.unlisted_pages_removed.items():
            if n:
                out.append(
                    f"removed {n} {role} page(s) written after the last listed pair"
                )
        removed = self.stale_files_removed + f.files_removed
        if removed:
            out.append(f"removed leftovers: {', '.join(removed)}")
        images = ", ".join(f"{n} {r} image(s)" for r, n in f.images.items())
        out.append(
            f"wrote the OME metadata ({images or 'no images'}); status now {self.status!r}"
        )
        return out


def _is_final(run_dir: Path, info: dict) -> bool:
    """Status final, no leftovers, every listed detector file carries OME-XML."""
    if info.get("status") not in (*FINAL, "recovered"):
        return False
    if info.get("ome_metadata_missing") or (run_dir / L.RESERVE).exists():
        return False
    records, _good, damaged = read_manifest(run_dir / L.MANIFEST)
    if damaged or info.get("pairs_written") != len(records):
        return False
    return storage_of(run_dir, info).is_final(run_dir, records)


def _check_manifest_whole(run_dir: Path, info: dict) -> None:
    """Refuse a manifest shorter than the count ``run.json`` recorded when the run
    was finalised: repairing from it would drop the frames of the missing pairs."""
    written = info.get("pairs_written")
    listed = len(read_manifest(run_dir / L.MANIFEST)[0])
    if isinstance(written, int) and listed < written:
        raise DamagedRunError(
            f"{run_dir / L.MANIFEST} lists {listed} pairs but {L.RUN_INFO} records "
            f"{written} written: the manifest was cut short (an incomplete copy or a "
            f"disk fault). Nothing was changed (repairing would drop the frames of "
            f"{written - listed} pairs); copy {L.MANIFEST} again from where the run "
            "was written, then repeat"
        )


def repair_run(run_dir: str | Path) -> RepairReport:
    """Finalise ``run_dir`` from its manifest (module doc); returns what was done.

    A damaged run is checked, not logged about: a file cut short or a manifest
    shorter than ``run.json`` records is one :class:`DamagedRunError`, and nothing
    is changed.
    """
    with tifffile_problems():
        return _repair(Path(run_dir))


def _repair(run_dir: Path) -> RepairReport:
    if not (run_dir / L.MANIFEST).is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a pairscope run folder (no {L.MANIFEST}); pass the "
            "folder 'pairscope demo' or 'pairscope acquire' printed."
        )
    pid = lock_holder(run_dir)
    if pid is not None:
        who = f"process {pid}" if pid > 0 else "another process"
        raise RunInUseError(
            f"{run_dir} is still being written by {who}; let the run finish or stop "
            "it, then run 'pairscope repair' again.",
            pid=pid,
        )
    lock = RunLock(run_dir)
    try:
        lock.acquire()
    except BlockingIOError as exc:
        raise RunInUseError(
            f"{run_dir} is locked by another process ({exc}); try again when it is done.",
            pid=-1,
        ) from exc
    except OSError as exc:  # read-only: fine for a finished run, else say so
        info = read_info(run_dir)
        before = str(info.get("status", "unknown"))
        if exc.errno in READ_ONLY_ERRNOS and _is_final(run_dir, info):
            records = read_manifest(run_dir / L.MANIFEST)[0]
            return RepairReport(
                run_dir, before, before, False, FinalizeReport(pairs=len(records))
            )
        raise OutputError(
            f"{run_dir} cannot be repaired where it is: {os_reason(exc)}. Nothing "
            "was changed; copy the run folder to a writable disk (or make this one "
            "writable) and run 'pairscope repair' on it there.",
            errno=exc.errno,
        ) from exc
    try:
        info = read_info(run_dir)
        before = str(info.get("status", "unknown"))
        _check_manifest_whole(run_dir, info)
        stale = []
        for name in (L.RESERVE, L.RUN_INFO + ".tmp"):
            path = run_dir / name
            if path.exists():
                with contextlib.suppress(OSError):
                    path.unlink()
                    stale.append(name)
        if not stale and _is_final(run_dir, info):
            records = read_manifest(run_dir / L.MANIFEST)[0]
            return RepairReport(
                run_dir, before, before, False, FinalizeReport(pairs=len(records))
            )
        extra = {"repaired": datetime.now().isoformat()}
        info_file = run_dir / L.RUN_INFO
        if not info and info_file.is_file() and info_file.stat().st_size:
            # cut or unreadable: rebuilt from the manifest, the original kept
            shutil.copy2(info_file, run_dir / (L.RUN_INFO + ".damaged"))
            extra["run_info_damaged"] = L.RUN_INFO + ".damaged"
        if "status_before_repair" not in info:
            extra["status_before_repair"] = before
        status = before if before in FINAL else "recovered"
        report = finalize_run(run_dir, status=status, extra_info=extra)
        return RepairReport(run_dir, before, status, True, report, stale)
    finally:
        lock.release()
