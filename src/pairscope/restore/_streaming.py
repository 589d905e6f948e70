"""Streaming restorer: inference on its own daemon thread that catches up within a bound.

Acquisition calls :meth:`StreamingRestorer.submit`, which never blocks and never
raises.  The worker restores the waiting frames oldest first while it keeps up: a
burst (the pairer hands over its first pairs at once) is restored whole, so every
pair gets its restoration and its trust check.  It never falls far behind: at most
``backlog`` frames wait (a newer one pushes the oldest out), and a waiting frame
that has waited longer than ``max_wait_s`` when the worker comes to it is passed
over unless it is the newest; frames passed over are counted as ``skipped``.  With
``max_wait_s=0`` the newest frame always wins (the preview's lowest latency).

Restored frames, errors and model swaps are announced through
:attr:`StreamingRestorer.events`; listeners run on the worker thread (connect with
``thread=`` to relay them elsewhere); a listener that raises is logged once, never
stops the others and is disconnected after repeated failures.  An output of the
wrong size or with NaN/infinite pixels is an error (counted, announced on
``error``), never a restored frame.

CPU threads: torch's intra-op thread count is process-wide.  When the restorer
runs on the CPU, :meth:`StreamingRestorer.start` sets it to ``num_threads``
(default ``max(1, os.cpu_count() - 1)``) so that one core stays free for the
acquisition and writer threads; pass ``num_threads=0`` to leave it alone.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import numpy as np
import torch
from psygnal import Signal, SignalGroup

from .._signals import GuardedSignalInstance
from .._threads import deprioritize_current_thread
from ..errors import RestorationError
from ._model_file import LoadedModel, as_loaded
from ._tiling import restore_tiled

__all__ = ["RestoredFrame", "RestorerSignals", "RestorerStats", "StreamingRestorer"]

logger = logging.getLogger(__name__)

#: at most this many frames wait for the worker (a newer one pushes the oldest out)
BACKLOG = 8
#: a frame that has waited longer than this is passed over for a newer one: the
#: preview stays this close to the acquisition (a burst of 7 demo pairs at 512² is
#: restored in about 0.14 s on one CPU core)
MAX_WAIT_S = 0.25

#: Frames with more input pixels than this are tiled even when ``tile`` is None.
AUTO_TILE_PIXELS = 2048 * 2048
AUTO_TILE = 1024


@dataclass(frozen=True, slots=True)
class RestoredFrame:
    """One restored frame, float32 on the reference grid in target units."""

    index: int
    image: np.ndarray
    latency_ms: float
    model_name: str
    model_sha256: str


@dataclass(frozen=True)
class RestorerStats:
    """Counters and timings of a :class:`StreamingRestorer` (a snapshot)."""

    received: int
    restored: int
    skipped: int
    errors: int
    fps: float
    latency_p50_ms: float
    latency_p99_ms: float
    device: str
    model_name: str


class RestorerSignals(SignalGroup):
    """Events of the streaming restorer (emitted on the worker thread).

    Listeners are guarded as the acquisition's are: one that raises is logged once,
    never stops the others, and is disconnected after repeated failures.
    """

    #: a :class:`RestoredFrame`
    restored = Signal(object, signal_instance_class=GuardedSignalInstance)
    #: what went wrong, in words
    error = Signal(str, signal_instance_class=GuardedSignalInstance)
    #: the name of the model now in use
    model_swapped = Signal(str, signal_instance_class=GuardedSignalInstance)


def pick_device(device: str = "auto") -> torch.device:
    """``"auto"``: CUDA, then MPS, then CPU; anything else is passed to torch."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class _CudaGraph:
    """A CUDA graph per input shape around a module (static shapes only)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.graphs: dict[tuple[int, ...], tuple[Any, torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape)
        if key not in self.graphs:
            static_in = x.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.fn(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.fn(static_in)
            self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out


class _Engine:
    """One model prepared for one device: normalise, infer (tiled), de-normalise."""

    def __init__(self, model: LoadedModel, owner: StreamingRestorer) -> None:
        self.model = model
        self.device = owner.device
        self.tile, self.overlap = owner.tile, owner.overlap
        net = copy.deepcopy(model.network)  # leave the caller's network untouched
        # Module.to takes memory_format at run time; torch's overloads omit it
        net = net.to(  # type: ignore[call-overload]
            self.device, memory_format=torch.channels_last
        ).eval()
        self.net = net
        self.amp_dtype = owner.amp_dtype
        fn: Any = torch.compile(net, dynamic=False) if owner.compile else net
        if owner.cuda_graphs and self.device.type == "cuda":
            fn = _CudaGraph(fn)
        self.fn = fn
        self.cuda = self.device.type == "cuda"
        self.self_ensemble = owner.self_ensemble
        self._pinned: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output; with ``self_ensemble`` the mean over the eight
        flips and quarter turns of the input, each turned back (Lim et al. 2017)."""
        if not self.self_ensemble:
            return self._forward_once(x)
        total = torch.zeros(())
        for flip in (False, True):
            xf = x.flip(-1) if flip else x
            for k in range(4):
                y = torch.rot90(
                    self._forward_once(torch.rot90(xf, k, (-2, -1))), -k, (-2, -1)
                )
                total = total + (y.flip(-1) if flip else y).float()
        return total / 8

    def _forward_once(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        if self.amp_dtype is None:
            return self.fn(x)
        with torch.autocast(self.device.type, dtype=self.amp_dtype):
            return self.fn(x)

    def _buffers(self, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.model.info.factor
        if shape not in self._pinned:
            self._pinned.clear()
            self._pinned[shape] = (
                torch.empty(shape, dtype=torch.float32).pin_memory(),
                torch.empty(
                    (f * shape[0], f * shape[1]), dtype=torch.float32
                ).pin_memory(),
            )
        return self._pinned[shape]

    def restore(self, frame: np.ndarray, tile: int | None) -> np.ndarray:
        info = self.model.info
        arr = np.asarray(frame, dtype=np.float32)
        if arr.ndim != 2:
            raise ValueError(f"expected a 2-D frame, got shape {arr.shape}")
        lo, hi = info.input_norm.bounds(arr)
        tlo, thi = info.target_norm.low, info.target_norm.high
        host = torch.from_numpy(arr)
        if self.cuda:
            pin_in, pin_out = self._buffers(arr.shape)
            pin_in.copy_(host)
            host = pin_in
        x = host.to(self.device, non_blocking=True)
        x = ((x - lo) * (1.0 / (hi - lo)))[None, None]
        if tile is None and arr.size > AUTO_TILE_PIXELS:
            tile = AUTO_TILE
        if tile is None:
            y = self._forward(x)
        else:
            y = restore_tiled(
                self._forward,
                x,
                factor=info.factor,
                tile=tile,
                overlap=self.overlap,
                stride=self.net.stride,
            )
        y = y[0, 0].float() * (thi - tlo) + tlo
        _check_shape(tuple(y.shape), arr.shape, info.factor)
        finite = torch.isfinite(y).all()  # read after the copy: no extra sync
        if self.cuda:
            pin_out.copy_(y, non_blocking=True)
            torch.cuda.current_stream(self.device).synchronize()
            out = pin_out.numpy().copy()
        else:
            out = y.cpu().numpy()
        if not bool(finite):
            _refuse_non_finite(arr)
        return out


def _refuse_non_finite(frame: np.ndarray) -> NoReturn:
    """Say why an output has NaN or infinite pixels: its input, or the model."""
    bad = int(frame.size - np.count_nonzero(np.isfinite(frame)))
    size = f"{frame.shape[1]}x{frame.shape[0]}"
    if bad:
        raise RestorationError(
            f"the {size} low-dose frame holds {bad} NaN or infinite pixel(s), so its "
            "restoration does too: the camera (or the file) delivered non-finite "
            "values; nothing to restore there"
        )
    raise RestorationError(
        f"the model returned NaN or infinite pixels for a {size} frame (input "
        f"{float(frame.min()):g} to {float(frame.max()):g} ADU): its weights or "
        "normalisation are broken for this input; retrain it or use another model"
    )


def _check_shape(got: tuple[int, ...], frame: tuple[int, ...], factor: int) -> None:
    """A x``factor`` restorer returns ``factor`` times the frame per axis."""
    want = (frame[0] * factor, frame[1] * factor)
    if got != want:
        size = "x".join(str(n) for n in got[::-1])
        raise RestorationError(
            f"the model returned a {size} image for a {frame[1]}x{frame[0]} frame; "
            f"a x{factor} restorer must return {want[1]}x{want[0]}: the model file "
            "is not a working pairscope restorer; retrain it or use another model"
        )


class StreamingRestorer:
    """Restore low-dose frames live on a daemon thread, catching up within a bound.

    Parameters
    ----------
    model
        A :class:`LoadedModel` or the path of a model file.
    device
        ``"auto"`` (CUDA, then MPS, then CPU) or a torch device string.
    amp
        Autocast on CUDA (bf16, or fp16 where bf16 is unsupported); ignored elsewhere.
    amp_dtype
        Force ``"bfloat16"`` or ``"float16"`` for autocast (CUDA only).
    compile
        Wrap the network in ``torch.compile`` (first frames of each size are slow).
    cuda_graphs
        Replay a captured CUDA graph per frame size (CUDA only).
    tile, overlap
        Restore in overlapping tiles of ``tile`` input pixels; frames larger than
        ``AUTO_TILE_PIXELS`` are tiled at ``AUTO_TILE`` even when ``tile`` is None.
    num_threads
        Torch CPU threads set by :meth:`start` (see module docstring); 0 keeps them.
    self_ensemble
        Restore each frame in its eight flips and quarter turns and average them:
        8x the work, less noise-driven structure (offline restoration).
    backlog, max_wait_s
        At most ``backlog`` frames wait; one that has waited longer than
        ``max_wait_s`` is passed over for a newer one (module doc).
    """

    def __init__(
        self,
        model: LoadedModel | str | Path,
        *,
        device: str = "auto",
        amp: bool = True,
        amp_dtype: str | None = None,
        compile: bool = False,
        cuda_graphs: bool = False,
        tile: int | None = None,
        overlap: int = 16,
        num_threads: int | None = None,
        self_ensemble: bool = False,
        backlog: int = BACKLOG,
        max_wait_s: float = MAX_WAIT_S,
    ) -> None:
        self.device = pick_device(device)
        self.self_ensemble = self_ensemble
        self.amp_dtype: torch.dtype | None = None
        if amp and self.device.type == "cuda":
            if amp_dtype is not None:
                self.amp_dtype = getattr(torch, amp_dtype)
            elif torch.cuda.is_bf16_supported():
                self.amp_dtype = torch.bfloat16
            else:
                self.amp_dtype = torch.float16
        self.compile = compile
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self.tile, self.overlap = tile, overlap
        self.num_threads = (
            max(1, (os.cpu_count() or 1) - 1) if num_threads is None else num_threads
        )
        self.events = RestorerSignals()
        #: the warning lines of its model's check against the rig it restores
        #: (:func:`~pairscope.restore.check_model_for_rig`), once checked and said
        self.rig_warnings: tuple[str, ...] | None = None
        self._engine = _Engine(as_loaded(model), self)
        self._next_engine: _Engine | None = None
        self._infer_lock = threading.Lock()
        self._cond = threading.Condition()
        #: (index, frame, arrival) waiting, oldest first
        self._pending: deque[tuple[int, np.ndarray, float]] = deque()
        self.backlog = max(1, int(backlog))
        self.max_wait_s = float(max_wait_s)
        self._stop = False
        self._finish_waiting = False
        self._thread: threading.Thread | None = None
        self._received = self._restored = self._skipped = self._errors = 0
        self._latencies: deque[float] = deque(maxlen=2000)
        self._done_times: deque[float] = deque(maxlen=100)

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread (no-op when running)."""
        if self._thread is not None and self._thread.is_alive():
            return
        if self.device.type == "cpu" and self.num_threads > 0:
            torch.set_num_threads(self.num_threads)
        self._stop = False
        self._finish_waiting = False
        self._thread = threading.Thread(
            target=self._run, name="pairscope-restorer", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5, *, finish_waiting: bool = False) -> None:
        """Stop the worker after the frame in progress; the waiting frames are
        dropped, or with ``finish_waiting`` (the run's last frames) restored first
        as while running (those that waited past ``max_wait_s`` passed over)."""
        with self._cond:
            self._stop = True
            self._finish_waiting = finish_waiting
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("restorer thread did not stop within %.1f s", timeout)
            self._thread = None

    def __enter__(self) -> StreamingRestorer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- producer side -----------------------------------------------------------
    def submit(
        self, index: int, lowdose: np.ndarray, arrival_time: float | None = None
    ) -> None:
        """Offer a frame; it waits behind those already waiting, and pushes the
        oldest out (skipped) when ``backlog`` frames wait.

        Never blocks and never raises.  Do not modify ``lowdose`` afterwards.
        ``arrival_time`` (``time.perf_counter()``): from when its wait counts.
        """
        try:
            t = time.perf_counter() if arrival_time is None else arrival_time
            with self._cond:
                self._received += 1
                while len(self._pending) >= self.backlog:
                    self._pending.popleft()
                    self._skipped += 1
                self._pending.append((index, lowdose, t))
                self._cond.notify()
        except Exception:  # must never reach acquisition
            logger.exception("restorer submit failed")

    def swap_model(self, model: LoadedModel | str | Path) -> None:
        """Load and prepare ``model`` here; the worker uses it from the next frame.

        Raises :class:`ModelFileError` if it cannot be loaded or its factor differs
        from the current model's.
        """
        loaded = as_loaded(model, expect_factor=self._engine.model.info.factor)
        engine = _Engine(loaded, self)
        with self._cond:
            self._next_engine = engine

    # -- consumer side -----------------------------------------------------------
    def restore_now(self, lowdose: np.ndarray) -> np.ndarray:
        """Restore one frame synchronously (same path as the worker)."""
        self._take_swap()
        with self._infer_lock, torch.inference_mode():
            return self._engine.restore(lowdose, self.tile)

    def stats(self) -> RestorerStats:
        """A snapshot of counters, throughput and latency percentiles."""
        with self._cond:
            lat = np.asarray(self._latencies, dtype=np.float64)
            done = list(self._done_times)
            counts = (self._received, self._restored, self._skipped, self._errors)
        span = done[-1] - done[0] if len(done) > 1 else 0.0
        p50, p99 = np.percentile(lat, (50, 99)) if lat.size else (np.nan, np.nan)
        return RestorerStats(
            *counts,
            fps=(len(done) - 1) / span if span > 0 else 0.0,
            latency_p50_ms=float(p50),
            latency_p99_ms=float(p99),
            device=str(self.device),
            model_name=self._engine.model.info.name,
        )

    def _take_swap(self) -> None:
        with self._cond:
            engine, self._next_engine = self._next_engine, None
        if engine is not None:
            self._engine = engine
            self._emit(self.events.model_swapped, engine.model.info.name)

    def _emit(self, signal: Any, value: object) -> None:
        try:
            signal.emit(value)
        except Exception:  # listeners must not kill the worker
            logger.exception("a restorer listener raised")

    def _run(self) -> None:
        deprioritize_current_thread()  # acquisition first, restoration with the rest
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if not self._pending or (self._stop and not self._finish_waiting):
                    return
                self._pass_over_stale()
                index, frame, arrival = self._pending.popleft()
            try:
                self._take_swap()
                model = self._engine.model
                with self._infer_lock, torch.inference_mode():
                    image = self._engine.restore(frame, self.tile)
            except torch.OutOfMemoryError:
                self._fail(
                    f"out of memory restoring frame {index} {np.shape(frame)} on "
                    f"{self.device}: set tile=512 (or smaller), or use a smaller model"
                )
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            except Exception as e:  # reported, worker keeps going
                logger.debug("restoring frame %d failed", index, exc_info=True)
                self._fail(f"restoring frame {index} failed: {type(e).__name__}: {e}")
                continue
            done = time.perf_counter()
            latency = (done - arrival) * 1e3
            with self._cond:
                self._restored += 1
                self._latencies.append(latency)
                self._done_times.append(done)
            out = RestoredFrame(index, image, latency, model.info.name, model.sha256)
            self._emit(self.events.restored, out)

    def _pass_over_stale(self) -> None:
        """Skip the waiting frames (not the newest) that waited past ``max_wait_s``
        (under ``_cond``)."""
        now = time.perf_counter()
        while len(self._pending) > 1 and now - self._pending[0][2] > self.max_wait_s:
            self._pending.popleft()
            self._skipped += 1

    def _fail(self, message: str) -> None:
        with self._cond:
            self._errors += 1
            n = self._errors
        if n == 1 or n % 100 == 0:  # a broken model fails every frame: not a flood
            logger.warning("%s (%d frame(s) not restored so far)", message, n)
        self._emit(self.events.error, message)
