"""Restored frames saved on request: their own OME-TIFF, marked as predictions.

Predictions never mix with measured data: they go to ``restored.prediction.ome.tif``
with an index ``restored.jsonl`` naming, for every page, the pair it restores and
the SHA-256 of the model file that predicted it.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np

from . import _layout as L
from ._writer import _PageFile

logger = logging.getLogger(__name__)
PREDICTION_INDEX = "restored.jsonl"
_STOP = object()


class PredictionWriter:
    """Append restored frames (float32) on a thread; never blocks the restorer."""

    def __init__(self, run_dir: str | Path, *, max_queue: int = 8) -> None:
        self.run_dir = Path(run_dir)
        self._file = _PageFile(self.run_dir / L.PREDICTION_TIFF)
        self._index = open(self.run_dir / PREDICTION_INDEX, "a", encoding="utf-8")  # noqa: SIM115
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self.dropped = 0
        self.written = 0
        self._thread = threading.Thread(
            target=self._loop, name="pairscope-predictions", daemon=True
        )
        self._thread.start()

    def on_restored(self, frame: Any) -> None:
        """Slot for ``StreamingRestorer.events.restored``; drops when the disk lags."""
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self.dropped += 1

    def close(self) -> int:
        self._queue.put(_STOP)
        self._thread.join()
        self._file.close()
        self._index.close()
        try:
            self._file.finalize_ome("restored (prediction, not measured data)")
        except Exception:
            logger.exception("Could not write OME-XML into %s", self._file.path)
        return self.written

    def _loop(self) -> None:
        while (frame := self._queue.get()) is not _STOP:
            try:
                page = self._file.write(np.asarray(frame.image, np.float32), None)
                self._file.sync()
                record = {
                    "page": page,
                    "pair": frame.index,
                    "prediction": True,
                    "model_name": frame.model_name,
                    "model_sha256": frame.model_sha256,
                    "latency_ms": round(frame.latency_ms, 3),
                }
                self._index.write(json.dumps(record) + "\n")
                self._index.flush()
                self.written += 1
            except OSError:
                logger.exception(
                    "Could not save a restored frame (measured data unaffected)"
                )
                self.dropped += 1
