"""Snapping cameras: each core in its own thread at once, or one after another."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
from pymmcore_plus import CMMCorePlus

from ..errors import CameraFault
from ._timing import FrameRecord, RunClock, host_window


class Snapshot:
    """One frame snapped by the host: pixels, and when the call ran."""

    __slots__ = ("image", "t_call", "t_return")

    def __init__(self, image: np.ndarray, t_call: float, t_return: float) -> None:
        self.image, self.t_call, self.t_return = image, t_call, t_return


def snap(core: CMMCorePlus, label: str) -> Snapshot:
    """Snap ``label`` on ``core`` (making it the core's camera if needed)."""
    if core.getCameraDevice() != label:
        core.setCameraDevice(label)
    t_call = time.perf_counter()
    core.snapImage()
    t_return = time.perf_counter()
    return Snapshot(core.getImage(), t_call, t_return)


def snapped_record(
    shot: Snapshot, clock: RunClock, label: str, core_name: str, exposure_ms: float
) -> FrameRecord:
    return FrameRecord(
        camera=label,
        core=core_name,
        camera_image_number=None,  # a snap carries no camera image number
        exposure_window_ms=host_window(clock, shot.t_call, shot.t_return, exposure_ms),
        timing_source="host",
        exposure_ms=exposure_ms,
    )


class ParallelSnapper:
    """Snap several cores at once, each from its own thread (pymmcore releases the
    GIL while a C++ camera exposes), with a timeout for a camera that hangs."""

    def __init__(self, n_threads: int) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=max(n_threads, 1), thread_name_prefix="pairscope-snap"
        )
        self._barrier = threading.Barrier(n_threads) if n_threads > 1 else None

    def snap_all(
        self,
        jobs: list[tuple[CMMCorePlus, str]],
        *,
        timeout_s: float,
        trigger_index: int,
    ) -> list[Snapshot]:
        """Snap every (core, camera) together; CameraFault if one fails or hangs."""
        barrier = self._barrier if len(jobs) > 1 else None
        if barrier is not None:
            barrier.reset()

        def run(core: CMMCorePlus, label: str) -> Snapshot:
            if barrier is not None:
                barrier.wait(timeout=timeout_s)  # start the exposures together
            return snap(core, label)

        futures: list[Future[Snapshot]] = [
            self._pool.submit(run, core, label) for core, label in jobs
        ]
        deadline = time.perf_counter() + timeout_s
        shots = []
        for (_, label), fut in zip(jobs, futures, strict=True):
            try:
                shots.append(fut.result(timeout=max(deadline - time.perf_counter(), 0)))
            except FutureTimeout:
                raise CameraFault(
                    f"Camera {label!r} delivered no frame within {timeout_s:.1f} s at "
                    f"trigger {trigger_index} (it hangs). Every earlier pair is saved; "
                    "check the camera (cable, power, driver) and start a new run.",
                    trigger_index=trigger_index,
                    camera=label,
                ) from None
            except threading.BrokenBarrierError:
                raise CameraFault(
                    f"Camera {label!r} could not start with the others at trigger "
                    f"{trigger_index}; another camera failed first.",
                    trigger_index=trigger_index,
                    camera=label,
                ) from None
            except Exception as exc:
                raise camera_fault(label, trigger_index, exc) from exc
        return shots

    def close(self) -> None:
        if self._barrier is not None:
            self._barrier.abort()
        self._pool.shutdown(wait=False, cancel_futures=True)


def camera_fault(label: str, trigger_index: int, exc: BaseException) -> CameraFault:
    return CameraFault(
        f"Camera {label!r} failed at trigger {trigger_index}: {exc}. Every earlier "
        "pair is saved; check the camera (cable, power, driver) and start a new run.",
        trigger_index=trigger_index,
        camera=label,
    )
