"""The live trust monitor: checks restored frames off the acquisition path.

Listeners (``on_pair`` from the acquisition, ``on_restored`` from the restorer) only
store references and queue (pair, restored frame) for the worker; at least
``BACKLOG`` checks may wait (a burst of other work passes without a skip), more
while their frames hold at most ``BACKLOG_BYTES``; beyond it the oldest waiting is
dropped and counted as ``skipped``.  The checks run on their own thread
at the lowest priority, so the acquisition never waits for them.  Every checked pair appends one line to
``quality.jsonl``; :meth:`TrustMonitor.finish` writes ``quality_summary.json`` and
``quality.png`` (the metrics over time).  A same-instant reference pair also
calibrates or measures the per-pixel intervals (:mod:`._conformal`) and gets its
invented and lost structure (:mod:`._structures`).  Pairs restored before the
monitor's calibration (registration and photometry from the first same-instant
pairs) wait for it and are checked once it is made.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import Signal, SignalGroup

from .._files import os_reason
from .._threads import (
    LOWEST_NICENESS,
    HelperThread,
    deprioritize_current_thread,
    restore_priority,
)
from ._calibrate import calibration_from_info
from ._checks import (
    CheckResult,
    Thresholds,
    TrustCalibration,
    check_pair,
    register_reference,
    same_instant,
)
from ._conformal import (
    ALPHA_DEFAULT,
    ConformalIntervals,
    check_alpha,
    crop_edges,
    intervals_for,
    uncrop_edges,
)
from ._monitor_util import central as _central
from ._structures import NoiseWarp, StructureTally, structure_risks

__all__ = [
    "QUALITY_FILE",
    "TrustMonitor",
    "TrustSignals",
    "TrustSummary",
    "attach_trust_monitor",
]

logger = logging.getLogger(__name__)
#: how long the monitor waits for the run's live camera registration (a bound
#: for a busy machine: it is estimated at low priority from the first pairs)
REGISTRATION_WAIT_S = 60.0

QUALITY_FILE = "quality.jsonl"
SUMMARY_FILE = "quality_summary.json"
PLOT_FILE = "quality.png"
#: below the restorer and the preview, beside the snapshots' drawing (_threads)
TRUST_NICENESS = LOWEST_NICENESS
#: checks that may wait: at least ``BACKLOG`` (a burst of other work, e.g. a
#: preview snapshot, passes without a skip), more while their frames hold at most
#: ``BACKLOG_BYTES`` (``BACKLOG_MAX`` at most); beyond it the oldest is skipped
BACKLOG = 8
BACKLOG_MAX = 64
BACKLOG_BYTES = 128 * 2**20


class TrustSignals(SignalGroup):
    """Events of the trust monitor (emitted on its worker thread)."""

    checked = Signal(object)  # CheckResult


@dataclass
class TrustSummary:
    """Counts at the end of a monitored run."""

    checked: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    skipped: int = 0  # newer pair arrived before the check started
    #: came before the calibration and were not checked after it (it failed, or
    #: more came than the backlog keeps)
    calibrating: int = 0
    unmatched: int = 0  # restored frame whose pair was no longer kept
    errors: int = 0
    pairs: int = 0  # acquired pairs with a low-dose frame (live)
    restored: int = 0  # restored frames handed to the monitor
    calibration_failed: int = 0  # of ``calibrating``: the calibration failed
    #: why fewer pairs were checked than restored ("" when every one was)
    why: str = ""
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    def line(self) -> str:
        v = self.verdicts
        return (
            f"trust: {self.checked} checked (ok {v.get('ok', 0)}, warn "
            f"{v.get('warn', 0)}, alarm {v.get('alarm', 0)}), {self.skipped} skipped"
        )

    def shortfall(self) -> str:
        """One line when no pair was checked or a check failed, else "" (also when
        nothing was handed to check: no pair came)."""
        if (self.checked and not self.errors) or not (self.pairs or self.restored):
            return ""
        return f"trust: {self.checked} of {self.restored} restored pairs checked" + (
            f": {self.why}" if self.why else ""
        )


class TrustMonitor:
    """Check restored frames against their reference and their input (module doc).

    Parameters
    ----------
    out_dir
        Folder for ``quality.jsonl`` and the summary (the run folder live).
    calibration
        Noise figures and registration; ``None``: from ``run_info`` (default
        ``out_dir/run.json``) and the first ``calibration_pairs`` pairs.
    thresholds
        Verdict levels (:class:`Thresholds`).
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        calibration: TrustCalibration | None = None,
        thresholds: Thresholds | None = None,
        run_info: dict[str, Any] | None = None,
        calibration_pairs: int = 4,
        keep_pairs: int = 64,
        backlog: int | None = None,
        registration: Callable[[float], Any] | None = None,
        alpha: float = ALPHA_DEFAULT,
    ) -> None:
        self.out_dir = Path(out_dir)
        #: the per-pixel intervals' risk level, and their live calibration (made
        #: with the noise calibration: it needs the reference's noise model)
        self.alpha = check_alpha(alpha)
        self.intervals: ConformalIntervals | None = None
        #: invented and lost structure over the same-instant reference pairs
        self.structures = StructureTally()
        #: what the calibration's registration does to simulated noise
        self._noise_warp: tuple[TrustCalibration, NoiseWarp] | None = None
        #: ``registration(timeout_s)``: the run's one live camera registration
        #: (None: it failed); without it the monitor estimates its own
        self._registration = registration
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / QUALITY_FILE
        self.calibration = calibration
        self.thresholds = thresholds or Thresholds()
        self.events = TrustSignals()
        self.results: list[dict[str, Any]] = []  # the lines written, in order
        self._run_info = run_info
        self._n_cal = calibration_pairs
        self._cal_pairs: list[tuple[np.ndarray, np.ndarray, dict[str, Any]]] = []
        self._pairs: OrderedDict[int, Any] = OrderedDict()
        #: restored frames that came before their pair's listener ran
        self._early: OrderedDict[int, Any] = OrderedDict()
        self._keep = keep_pairs
        self._cond = threading.Condition()
        #: (pair, restored frame) waiting for their check, oldest first
        self._pending: deque[tuple[Any, Any]] = deque()
        self._backlog = max(1, BACKLOG if backlog is None else backlog)
        self._backlog_by_size = backlog is None
        #: those that came before the calibration (counted ``calibrating`` until
        #: checked); the oldest beyond ``backlog`` stay unchecked
        self._held: deque[tuple[Any, Any]] = deque(maxlen=self._backlog)
        self._stop = False
        self._thread: threading.Thread | None = None
        self._counts: Counter[str] = Counter()
        self._verdicts: Counter[str] = Counter()
        self._file = self.path.open("a", encoding="utf-8")
        self._write_lock = threading.Lock()
        #: why results stopped being written ("" while they are)
        self.write_error = ""
        #: why the live calibration could not be made (the last reason), and the
        #: first failed check's
        self.calibration_error = ""
        self._first_error = ""
        #: a second core's thread for half of each check (none on one core)
        self._helper = (
            HelperThread(
                "pairscope-trust-helper",
                lambda: deprioritize_current_thread(TRUST_NICENESS),
            )
            if (os.cpu_count() or 1) > 1
            else None
        )

    # -- listeners (any thread; quick; never raise) -----------------------------
    def on_pair(self, pair: Any) -> None:
        """Keep a reference to ``pair`` until its restored frame arrives."""
        try:
            with self._cond:
                self._counts["pairs"] += pair.lowdose is not None
                early = self._early.pop(pair.index, None)
                if early is not None:  # its restored frame came first: check now
                    self._queue_check(pair, early)
                else:
                    self._pairs[pair.index] = pair
                while len(self._pairs) > self._keep:
                    self._pairs.popitem(last=False)
                if (
                    self.calibration is None
                    and pair.reference is not None
                    and pair.lowdose is not None
                    and same_instant(pair.metadata)
                    and len(self._cal_pairs) < self._n_cal
                ):
                    meta = dict(pair.metadata or {})
                    self._cal_pairs.append((pair.lowdose, pair.reference, meta))
        except Exception:
            logger.exception("trust monitor: on_pair failed")

    def on_restored(self, frame: Any) -> None:
        """Queue the check of ``frame`` with its pair."""
        try:
            with self._cond:
                self._counts["restored"] += 1
                pair = self._pairs.pop(frame.index, None)
                if pair is None:  # its pair's listener has not run yet (a fast
                    # restorer), or the pair is no longer kept
                    self._early[frame.index] = frame
                    while len(self._early) > self._keep:
                        self._early.popitem(last=False)
                        self._counts["unmatched"] += 1
                    return
                self._queue_check(pair, frame)
        except Exception:
            logger.exception("trust monitor: on_restored failed")

    def _queue_check(self, pair: Any, frame: Any) -> None:
        """Hand (pair, restored frame) to the worker; a full backlog skips its
        oldest (under _cond)."""
        limit = self._backlog
        if self._backlog_by_size:
            size = sum(
                getattr(a, "nbytes", 0)
                for a in (frame.image, pair.lowdose, pair.reference)
            )
            limit = max(limit, min(BACKLOG_MAX, BACKLOG_BYTES // max(size, 1)))
        while len(self._pending) >= limit:  # the oldest waiting is skipped
            self._pending.popleft()
            self._counts["skipped"] += 1
        self._pending.append((pair, frame))
        self._cond.notify()

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="pairscope-trust", daemon=True
            )
            self._thread.start()

    def finish(self, timeout: float = 300.0) -> TrustSummary:
        """Check what is waiting, stop, write the summary and the plot.

        The worker runs at the lowest priority, so on a busy machine the last checks
        can take tens of seconds: ``timeout`` is a bound for a hang, not a budget.
        """
        with self._cond:
            self._stop = True
            self._counts["unmatched"] += len(self._early)  # their pairs never came
            self._early.clear()
            self._cond.notify_all()
        if self._thread is not None:
            restore_priority(self._thread)  # the acquisition is over: catch up
            if self._helper is not None:
                restore_priority(self._helper.thread)
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("trust monitor did not finish within %.0f s", timeout)
        if self._helper is not None:
            self._helper.close()
        with self._write_lock:
            if not self._file.closed:
                try:
                    self._file.close()
                except OSError as exc:
                    self._cannot_write(exc)
        summary = self.write_summary()
        if line := summary.shortfall():
            logger.warning("%s", line)
        return summary

    # -- synchronous use (evaluate, benchmarks) ------------------------------------
    def check(
        self,
        index: int,
        restored: np.ndarray,
        lowdose: np.ndarray,
        reference: Any,
        *,
        simultaneous: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> CheckResult:
        """Check one pair now and log it (needs ``calibration``); a same-instant
        reference also calibrates, or measures, the per-pixel intervals.

        With a second core, the intervals and structures (:meth:`_interval_checks`)
        run on the helper thread beside the reference and consistency checks."""
        cal = self.calibration
        if cal is None:
            raise ValueError("TrustMonitor.check needs a calibration")
        registered = None
        if reference is not None and simultaneous:
            registered = register_reference(reference, cal)

        def intervals() -> tuple[dict[str, Any], list[str], np.ndarray | None]:
            return self._interval_checks(index, restored, registered, metadata)

        alongside = self._helper.submit(intervals) if self._helper else None
        try:
            result = check_pair(
                index,
                restored,
                lowdose,
                reference,
                cal,
                self.thresholds,
                simultaneous=simultaneous,
                registered=registered,
            )
        except BaseException:
            if alongside is not None:  # never two checks' intervals at once
                wait([alongside])
            raise
        metrics, flags, outside = (
            intervals() if alongside is None else alongside.result()
        )
        result.reference_registered = None  # not kept beyond this check
        result.metrics.update(metrics)
        if outside is not None:
            result.outside_map = outside
        for flag in flags:
            result.reason = (
                flag if result.verdict == "ok" else f"{result.reason}; {flag}"
            )
            if result.verdict == "ok":
                result.verdict = "warn"
        self._record(result)
        return result

    def _interval_checks(
        self,
        index: int,
        restored: np.ndarray,
        registered: np.ndarray | None,
        metadata: dict[str, Any] | None,
    ) -> tuple[dict[str, Any], list[str], np.ndarray | None]:
        """The pair's interval metrics and, with a same-instant reference
        (``registered``), its invented and lost structure; with their flags (the
        reasons they need attention) and the map of pixels outside the interval."""
        cal = self.calibration
        assert cal is not None
        if self.intervals is None:
            self.intervals = intervals_for(cal, self.alpha)
        iv = self.intervals
        was_ready = iv.ready
        outside = None
        flags: list[str] = []
        if registered is not None:  # a same-instant reference: calibrate or measure
            r, t = crop_edges(cal, np.asarray(restored)), crop_edges(cal, registered)
            role = iv.role(index, metadata)
            metrics = iv.observe(r, t, role)
            if iv.last_outside is not None:
                outside = uncrop_edges(cal, iv.last_outside, registered.shape)
            structures, flag = self._structure_checks(index, r, t, role != "none")
            metrics.update(structures)
            flags.append(flag)
        else:
            interval = iv.interval(restored)
            metrics = {
                "alpha": iv.alpha,
                "interval_role": "none",
                "coverage": None,
                "interval_width": None if interval is None else interval.mean_width,
            }
        metrics["intervals"] = "calibrated" if was_ready else "calibrating"
        if iv.ready and not was_ready:
            logger.info("trust: %s", iv.status())
        return metrics, [f for f in (iv.flag(metrics), *flags) if f], outside

    def _structure_checks(
        self,
        index: int,
        restored: np.ndarray,
        target: np.ndarray,
        counted: bool,
    ) -> tuple[dict[str, Any], str]:
        """The pair's invented and lost structure (``pairscope.trust._structures``):
        its metrics and its flag ("" if none).  ``counted``: it enters the run's
        risk bounds (a reference taken on demand does not)."""
        cal, iv = self.calibration, self.intervals
        assert cal is not None and iv is not None
        a, b = iv.photometric_map(restored, target)
        if self._noise_warp is None or self._noise_warp[0] is not cal:
            warp = NoiseWarp.for_registration(cal.registration)
            self._noise_warp = (cal, warp)
        risks = structure_risks(
            a * np.asarray(restored, np.float32) + np.float32(b),
            target,
            iv.reference_variance,
            cal.rayleigh_px,
            noise_warp=self._noise_warp[1],
            seed=index,
        )
        if counted:
            self.structures.add(risks)
        return risks.metrics(), risks.flag(self.structures.tolerance)

    def summary(self) -> TrustSummary:
        with self._cond:
            s = TrustSummary(
                checked=sum(self._verdicts.values()),
                verdicts={k: self._verdicts.get(k, 0) for k in ("ok", "warn", "alarm")},
                skipped=self._counts["skipped"],
                calibrating=self._counts["calibrating"],
                unmatched=self._counts["unmatched"],
                errors=self._counts["errors"],
                pairs=self._counts["pairs"],
                restored=self._counts["restored"],
                calibration_failed=self._counts["calibration_failed"],
            )
        s.why = self._why(s)
        return s

    def coverage(self) -> dict[str, Any]:
        """The intervals' ``alpha``, ``target`` (1 - α), mean ``heldout`` coverage
        and the held-out ``pairs`` it comes from (``heldout`` None when none was
        measured: ``why`` says why)."""
        if self.intervals is not None:
            out = self.intervals.summary()
            if not out["pairs"]:
                out["why"] = self.intervals.status() + (
                    "; no held-out pair after it" if self.intervals.ready else ""
                )
            return out
        return {
            "alpha": self.alpha,
            "target": 1.0 - self.alpha,
            "heldout": None,
            "pairs": 0,
            "why": "no pair was checked, so no interval was calibrated",
        }

    def _why(self, s: TrustSummary) -> str:
        """Why fewer pairs were checked than restored, in words ("" if none)."""
        if s.restored == 0:  # nothing handed ("") or check() used directly
            if s.pairs and not s.checked:
                return (
                    f"the restorer restored none of the {s.pairs} pairs (it skips "
                    "what it cannot keep up with, and a frame it fails on)"
                )
            return ""
        reasons = []
        if s.pairs > s.restored:
            reasons.append(f"the restorer restored {s.restored} of {s.pairs} pairs")
        if s.calibration_failed:  # the pairs in between were collected to retry
            reasons.append(
                f"calibration failed: {self.calibration_error} (tried "
                f"{s.calibration_failed} times)"
            )
        elif s.calibrating:
            reasons.append(
                f"{s.calibrating} before the calibration (the registration needs "
                f"{self._n_cal} pairs of one instant with a reference first)"
            )
        if s.skipped:
            reasons.append(f"{s.skipped} skipped (a newer pair came while it was busy)")
        if s.unmatched:
            reasons.append(f"{s.unmatched} whose pair was no longer kept")
        if s.errors:
            reasons.append(f"{s.errors} checks failed (the first: {self._first_error})")
        return "; ".join(reasons)

    def write_summary(self) -> TrustSummary:
        """Write ``quality_summary.json`` and ``quality.png``; return the counts.

        A folder that cannot be written any more (read-only, full, removed) costs
        one warning, not the summary.
        """
        s = self.summary()
        s.files = [str(self.path)] if not self.write_error else []
        try:
            if not self.out_dir.is_dir():  # removed: never recreate it for a plot
                raise FileNotFoundError(errno.ENOENT, "removed", str(self.out_dir))
            if self.results:
                from ._plots import plot_quality

                plot = plot_quality(
                    self.results, self.out_dir / PLOT_FILE, self.thresholds
                )
                s.files.append(str(plot))
            data = {
                **s.as_dict(),
                "thresholds": self.thresholds.__dict__,
                "calibration": None
                if self.calibration is None
                else self.calibration.as_dict(),
                "coverage": self.coverage(),
                "structures": self.structures.summary(),
            }
            (self.out_dir / SUMMARY_FILE).write_text(
                json.dumps(data, indent=2, default=float)
            )
            s.files.append(str(self.out_dir / SUMMARY_FILE))
        except OSError as exc:
            self._cannot_write(exc)
            s.files = [f for f in s.files if Path(f).is_file()]
        return s

    def _cannot_write(self, exc: OSError) -> None:
        """Say once why the monitor stops writing; the checks and the run go on."""
        if not self.write_error:
            self.write_error = f"{exc.filename or self.out_dir}: {os_reason(exc)}"
            logger.warning(
                "trust monitor: cannot write %s; the checks go on in memory (the "
                "run's pairs are written as before)",
                self.write_error,
            )

    # -- worker ----------------------------------------------------------------
    def _run(self) -> None:
        deprioritize_current_thread(TRUST_NICENESS)
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if not self._pending:
                    return
                job = self._pending.popleft()
            if self.calibration is None and not self._try_calibrate():
                with self._cond:  # checked once the calibration is made
                    self._held.append(job)
                continue
            with self._cond:  # the pairs that came before it, oldest first
                jobs = [*self._held, job]
                self._counts["calibrating"] -= len(self._held)
                self._held.clear()
            for pair, frame in jobs:
                self._check_job(pair, frame)

    def _check_job(self, pair: Any, frame: Any) -> None:
        """Check one (pair, restored frame); a failure is counted, the first said."""
        try:
            meta = pair.metadata or {}
            self.check(
                pair.index,
                frame.image,
                pair.lowdose,
                pair.reference,
                simultaneous=same_instant(meta),
                metadata=meta,
            )
        except Exception as exc:  # one line for the first, the rest counted
            with self._cond:
                self._counts["errors"] += 1
                first = not self._first_error
                if first:
                    self._first_error = f"pair {pair.index}: {exc!r}"
            if first:
                logger.warning("trust check of pair %s failed: %r", pair.index, exc)
            logger.debug("trust check of pair %s failed", pair.index, exc_info=True)

    def _try_calibrate(self) -> bool:
        """Calibrate if enough pairs are in; a failure is said once (one line, its
        reason kept for the summary) and the next pairs are tried."""
        try:
            if self._calibrate():
                return True
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)
            if not self.calibration_error:
                logger.warning(
                    "trust: calibration failed (%s); trying again on the next pairs",
                    reason,
                )
            logger.debug("trust calibration failed", exc_info=True)
            self.calibration_error = reason
            with self._cond:
                self._cal_pairs.clear()  # collect fresh pairs
                self._counts["calibration_failed"] += 1
        with self._cond:
            self._counts["calibrating"] += 1  # failed ones included
        return False

    def _calibrate(self) -> bool:
        """Registration from the first reference pairs, photometry from the rig
        model (what it lacks measured on the same pairs)."""
        with self._cond:
            pairs = list(self._cal_pairs)
        if len(pairs) < self._n_cal:
            return False
        from ..io.calibration import registration_from_pairs
        from ..rig import rig_model_from_info

        info = self._run_info
        if info is None:
            p = self.out_dir / "run.json"
            info = json.loads(p.read_text()) if p.is_file() else {}
        # the rig model's grid factor; the frames' shapes only without run.json
        factor = (
            rig_model_from_info(info).factor
            if info.get("detectors")
            else _shape_factor(pairs[0][:2])
        )
        reg = None
        if self._registration is not None:  # the run's one live registration
            reg = self._registration(REGISTRATION_WAIT_S)
        if reg is None:  # none (no same-instant pairs yet, or it failed): our own
            crops = [_central(lo, ref, factor) for lo, ref, _ in pairs]
            reg = registration_from_pairs(crops, factor, fit_scale=False)
        self.calibration = calibration_from_info(
            info, factor, reg, frames=[(lo, r) for lo, r, _ in pairs]
        )
        with self._cond:
            self._cal_pairs.clear()
        return True

    def _record(self, result: CheckResult) -> None:
        line = result.line()
        with self._write_lock:
            self.results.append(line)
            if not self._file.closed and not self.write_error:
                try:
                    self._file.write(json.dumps(line) + "\n")
                    self._file.flush()
                except OSError as exc:
                    self._cannot_write(exc)
        with self._cond:
            self._verdicts[result.verdict] += 1
        try:
            self.events.checked.emit(result)
        except Exception:
            logger.exception("a trust listener raised")


def _shape_factor(pair: tuple[np.ndarray, np.ndarray]) -> int:
    """The grid factor a pair's shapes show (a monitor without run.json)."""
    low, ref = pair
    return max(1, ref.shape[-1] // low.shape[-1])


def attach_trust_monitor(
    acquisition_events: Any,
    restorer: Any,
    run_dir: str | Path,
    *,
    sink: Any | None = None,
    calibration: TrustCalibration | None = None,
    thresholds: Thresholds | None = None,
    registration: Callable[[float], Any] | None = None,
    alpha: float = ALPHA_DEFAULT,
) -> TrustMonitor:
    """Check every restored pair of a live run; call ``finish()`` at the end.

    ``acquisition_events.pairReady`` feeds the pairs, ``restorer.events.restored``
    the restored frames; a ``sink`` with ``on_quality`` (the preview) gets every
    :class:`CheckResult`.  Results go to ``run_dir/quality.jsonl``.
    """
    monitor = TrustMonitor(
        run_dir,
        calibration=calibration,
        thresholds=thresholds,
        registration=registration,
        alpha=alpha,
    )
    # plain functions: psygnal holds bound methods only weakly
    acquisition_events.pairReady.connect(lambda p: monitor.on_pair(p))
    restorer.events.restored.connect(lambda f: monitor.on_restored(f))
    on_quality = getattr(sink, "on_quality", None)
    if on_quality is not None:
        monitor.events.checked.connect(lambda r: on_quality(r))
    monitor.start()
    return monitor
