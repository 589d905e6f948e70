"""Preview status, the sink protocol, and wiring of acquisition/restorer signals.

Nothing here imports Qt or torch: restorers and frames are used duck-typed.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol, runtime_checkable

from pairscope.acquire import Pair

__all__ = [
    "LatestFrames",
    "PreviewLink",
    "PreviewSink",
    "PreviewStatus",
    "RestoredLike",
    "connect_preview",
]

logger = logging.getLogger(__name__)

STATUS_MIN_INTERVAL_S = 0.1  # automatic status pushes: at most 10 per second


@dataclass(frozen=True, slots=True)
class PreviewStatus:
    """What the preview's status line shows (a snapshot; NaN latency = none yet).

    ``skipped`` counts preview frames the restorer skipped (by design: it never
    falls far behind the newest); ``dropped`` counts *data* lost (incomplete
    pairs, writer problems).
    """

    pairs: int = 0
    acquisition_fps: float = 0.0
    restorer_fps: float = 0.0
    latency_p50_ms: float = math.nan
    latency_p99_ms: float = math.nan
    skipped: int = 0
    dropped: int = 0
    model_name: str = ""
    device: str = ""
    error: str = ""

    def line(self) -> str:
        """One line of text, e.g. ``pairs 12 | 9.8 pairs/s | restore 9.1 fps | ...``."""

        def ms(v: float) -> str:
            return "–" if math.isnan(v) else f"{v:.0f}"

        parts = [
            f"pairs {self.pairs}",
            f"{self.acquisition_fps:.1f} pairs/s",
            f"restore {self.restorer_fps:.1f} fps",
            f"latency p50 {ms(self.latency_p50_ms)} / p99 {ms(self.latency_p99_ms)} ms",
            f"preview skipped {self.skipped} (newer frames came; all are saved)",
            f"dropped {self.dropped} (pairs lost)",
        ]
        if self.model_name:
            parts.append(
                f"model {self.model_name}" + (f" on {self.device}" * bool(self.device))
            )
        if self.error:
            parts.append(f"error: {self.error}")
        return " | ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (NaN becomes ``None``)."""
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }

    def replace(self, **changes: Any) -> PreviewStatus:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)


class RestoredLike(Protocol):
    """What the preview reads of a restored frame (``pairscope.restore.RestoredFrame``)."""

    index: int
    image: Any
    latency_ms: float
    model_name: str


@runtime_checkable
class PreviewSink(Protocol):
    """A consumer of live previews: the Qt window or the headless snapshot writer.

    Every method may be called from a non-GUI thread (acquisition or restorer) and
    must return at once, never raise and never block: store the newest item and do
    the work elsewhere.  ``close()`` flushes; what it returns is sink-specific.
    """

    def on_pair(self, pair: Pair) -> None: ...

    def on_restored(self, frame: RestoredLike) -> None: ...

    def on_status(self, status: PreviewStatus) -> None: ...

    def on_error(self, message: str) -> None: ...

    def close(self) -> Any: ...


class LatestFrames:
    """Thread-safe store of the few newest pairs and restored frames.

    :meth:`latest` prefers a *matched* view: the newest restored frame with its own
    pair (restoration lags acquisition by its latency, so the newest pair rarely has
    its restored frame yet, and a difference needs both of the same instant); with no
    match it gives the newest pair and the newest restored frame.
    """

    def __init__(self, keep: int = 16) -> None:
        self._lock = threading.Lock()
        self._keep = keep
        self._pair: Pair | None = None
        self._pairs: OrderedDict[int, Pair] = OrderedDict()
        self._restored: OrderedDict[int, RestoredLike] = OrderedDict()
        self.version = 0  # increases on every change

    def put_pair(self, pair: Pair) -> None:
        if pair.lowdose is None:  # a reference kept alone: nothing to restore
            return
        with self._lock:
            self._pair = pair
            self._pairs[pair.index] = pair
            while len(self._pairs) > self._keep:
                self._pairs.popitem(last=False)
            self.version += 1

    def put_restored(self, frame: RestoredLike) -> None:
        with self._lock:
            self._restored[frame.index] = frame
            self._restored.move_to_end(frame.index)
            while len(self._restored) > self._keep:
                self._restored.popitem(last=False)
            self.version += 1

    def restored_for(self, index: int) -> RestoredLike | None:
        """The restored frame of pair ``index``, else the newest (or ``None``)."""
        with self._lock:
            frame = self._restored.get(index)
            if frame is None:
                frame = next(reversed(self._restored.values()), None)
            return frame

    def latest(self) -> tuple[Pair | None, RestoredLike | None, int]:
        """``(pair, restored frame, version)``: matched if possible (class doc)."""
        with self._lock:
            version = self.version
            for index in reversed(self._restored):
                if index in self._pairs:
                    return self._pairs[index], self._restored[index], version
            pair = self._pair
        frame = self.restored_for(-1 if pair is None else pair.index)
        return pair, frame, version


class PreviewLink:
    """The connection made by :func:`connect_preview`; also tracks the status.

    Counts pairs (and acquisition pairs/s), dropped data and the last error,
    merges the restorer's ``stats()`` and pushes a :class:`PreviewStatus` to the
    sink on pairs, errors and model swaps (at most 10 per second), and on
    :meth:`disconnect`.
    """

    def __init__(self, sink: PreviewSink, restorer: Any | None = None) -> None:
        self.sink = sink
        self.restorer = restorer
        self.pairs = 0
        self.dropped = 0
        self.last_error = ""
        self._times: deque[float] = deque(maxlen=50)
        self._last_push = 0.0
        self._lock = threading.Lock()
        self._connections: list[tuple[Any, Callable[..., Any]]] = []

    # -- handlers (called on emitting threads; never raise) ----------------------
    def pair_ready(self, pair: Pair) -> None:
        with self._lock:
            self.pairs += 1
            self._times.append(time.perf_counter())
        _guard(self.sink.on_pair, pair)
        self.push_status(throttle=True)

    def pair_incomplete(self, pair: Pair, reason: str) -> None:
        self.report_dropped(1, f"pair {pair.index} incomplete: {reason}")

    def report_dropped(self, count: int, reason: str) -> None:
        """Count ``count`` data frames lost (e.g. by the writer) and show ``reason``."""
        with self._lock:
            self.dropped += count
        self.error(reason)

    def restored(self, frame: RestoredLike) -> None:
        _guard(self.sink.on_restored, frame)

    def error(self, message: str) -> None:
        self.last_error = message
        _guard(self.sink.on_error, message)
        self.push_status()

    # -- status ------------------------------------------------------------------
    def status(self) -> PreviewStatus:
        """The current status (restorer figures from ``restorer.stats()``)."""
        with self._lock:
            times = list(self._times)
            span = times[-1] - times[0] if len(times) > 1 else 0.0
            st = PreviewStatus(
                pairs=self.pairs,
                acquisition_fps=(len(times) - 1) / span if span > 0 else 0.0,
                dropped=self.dropped,
                error=self.last_error,
            )
        stats = getattr(self.restorer, "stats", None)
        if stats is None:
            return st
        s = stats()
        return st.replace(
            restorer_fps=float(s.fps),
            latency_p50_ms=float(s.latency_p50_ms),
            latency_p99_ms=float(s.latency_p99_ms),
            skipped=int(s.skipped),
            model_name=str(s.model_name),
            device=str(s.device),
        )

    def push_status(self, *, throttle: bool = False) -> None:
        """Send :meth:`status` to the sink (``throttle``: at most 10 per second)."""
        now = time.perf_counter()
        if throttle and now - self._last_push < STATUS_MIN_INTERVAL_S:
            return
        self._last_push = now
        try:
            status = self.status()
        except Exception:
            logger.exception("preview status failed")
            return
        _guard(self.sink.on_status, status)

    def disconnect(self) -> None:
        """Disconnect every signal and push a final status."""
        for signal, slot in self._connections:
            try:
                signal.disconnect(slot)
            except Exception:
                logger.debug("disconnect failed", exc_info=True)
        self._connections.clear()
        self.push_status()

    def _connect(self, signal: Any, slot: Callable[..., Any]) -> None:
        signal.connect(slot)
        self._connections.append((signal, slot))


def _guard(fn: Callable[..., Any], *args: Any) -> None:
    """Call a sink method; log (never raise) what it raises."""
    try:
        fn(*args)
    except Exception:
        logger.exception("preview sink %r raised", fn)


def connect_preview(
    sink: PreviewSink,
    *,
    acquisition_events: Any | None = None,
    restorer: Any | None = None,
) -> PreviewLink:
    """Wire acquisition and restorer signals to ``sink`` (either preview sink).

    ``acquisition_events`` (a ``PairedSignals``): ``pairReady`` → ``on_pair``,
    ``pairIncomplete`` → counted as dropped + ``on_error``, ``error`` →
    ``on_error``.  ``restorer`` (a ``StreamingRestorer``): ``events.restored`` →
    ``on_restored``, ``events.error`` → ``on_error``, ``events.model_swapped`` →
    a status update; its ``stats()`` fill the status.  Frames are not submitted to
    the restorer here.  Keep the returned link to :meth:`PreviewLink.disconnect`.
    """
    link = PreviewLink(sink, restorer)
    # plain functions: psygnal holds them strongly (bound methods only weakly)
    if acquisition_events is not None:
        link._connect(acquisition_events.pairReady, lambda p: link.pair_ready(p))
        if hasattr(acquisition_events, "pairIncomplete"):
            link._connect(
                acquisition_events.pairIncomplete,
                lambda p, r: link.pair_incomplete(p, r),
            )
        if hasattr(acquisition_events, "error"):
            link._connect(acquisition_events.error, lambda m: link.error(m))
    events = getattr(restorer, "events", None)
    if events is not None:
        link._connect(events.restored, lambda f: link.restored(f))
        link._connect(events.error, lambda m: link.error(m))
        if hasattr(events, "model_swapped"):
            link._connect(events.model_swapped, lambda _: link.push_status())
    return link
