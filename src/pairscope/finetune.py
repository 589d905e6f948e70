"""Fine-tune during the run, in a separate process, and swap only what is better.

Every ``every`` same-instant pairs (or when asked, e.g. from the window), a
candidate is trained from the current model on the pairs acquired up to that moment
(once the writer has listed them), in its own low-priority process: acquisition
never waits for it.  What a candidate learns from is fixed when it is started (those
pairs, registered with the live camera registration once it is known; ``epochs`` of
``samples_per_epoch`` crops), never by how fast the machine is.  The newest
``holdback`` same-instant pairs are held back from that training; the candidate
and the current model are scored on them with the trust monitor's metric (PSNR
against the registered simultaneous reference, affine-fitted, fixed data range),
and the restorer hot-swaps to the candidate only if it scores at least
``min_gain_db`` higher.  Every decision is one line of ``finetune.jsonl`` in the
run folder; candidates are kept under ``finetune/``.

The starting model is checked against the run's rig model once, as the first
candidate starts (or at once, given ``rig`` or a run folder that has its
``run.json``): another factor or pixel size is refused, each warning logged once
(:func:`pairscope.restore.check_model_for_rig`).  Candidates are trained on the
run's own pairs, so they record this rig's model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._threads import (
    deprioritize_current_thread,
    restore_priority,
    restore_process_priority,
)
from .io import layout as L

if TYPE_CHECKING:
    from .rig import RigModel

logger = logging.getLogger(__name__)
LOG = "finetune.jsonl"


@dataclass(frozen=True)
class FineTuneOptions:
    """When and how hard to fine-tune during a run."""

    every: int = 100  # same-instant pairs between candidates
    holdback: int = 8  # newest same-instant pairs kept out of training, for scoring
    epochs: int = 3
    samples_per_epoch: int = 128
    crop: int = 64
    lr: float = 2e-4  # gentler than training from scratch
    min_gain_db: float = 0.05  # a candidate must beat the current model by this
    threads: int = 1  # torch threads of the training process
    nice: int = 15  # CPU priority of the training process and of the scoring
    #: seconds a candidate waits for the writer to list the pairs it was started on,
    #: and for the live camera registration (bounds for a hang, not a budget)
    wait_s: float = 120.0


class LiveFineTuner:
    """Trains, scores and (maybe) swaps candidates while the run goes on."""

    def __init__(
        self,
        run_dir: Path,
        restorer: Any,
        model_path: Path,
        options: FineTuneOptions | None = None,
        registration: Callable[[float], Any] | None = None,
        rig: RigModel | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.restorer = restorer
        self.current = Path(model_path)
        self.options = options or FineTuneOptions()
        #: ``registration(timeout_s)``: the live camera registration, waited for
        #: while it is being estimated (None: there is none)
        self.registration = registration
        self.decisions: list[dict[str, Any]] = []
        self._log_lock = threading.Lock()
        self._logged: set[int] = set()  # candidates with their decision line
        self._in_progress: int | None = None  # the candidate being made
        self._count = 0
        self._seen = 0  # pairs acquired so far (index of the newest + 1)
        self._next = self.options.every
        self._thread: threading.Thread | None = None
        self._process: Any = None
        self._stop = threading.Event()
        self._ended = threading.Event()  # the run ended: its manifest is final
        self._rig_checked = False
        if rig is not None or (self.run_dir / L.RUN_INFO).is_file():
            self.check_rig(rig)  # a model that does not fit: refused at once

    def check_rig(self, rig: RigModel | None = None) -> list[str]:
        """Check the starting model against ``rig`` (else the run's rig model),
        once: raises ``RigMismatchError`` for another factor or pixel size; the
        warnings are logged unless the live restorer already said them."""
        from .restore import check_model_for_rig, load_model
        from .rig import rig_model_for_run

        if self._rig_checked:
            return []
        rig = rig if rig is not None else rig_model_for_run(self.run_dir)
        lines = check_model_for_rig(
            load_model(self.current).info, rig, path=self.current
        )
        self._rig_checked = True
        if getattr(self.restorer, "rig_warnings", None) is None:
            for line in dict.fromkeys(lines):
                logger.warning("Fine-tuning: %s", line)
        return lines

    # -- triggers (acquisition thread / GUI thread: cheap) ----------------------
    def on_pair(self, pair: Any) -> None:
        self._seen = max(self._seen, pair.index + 1)
        if pair.metadata.get("simultaneous"):
            self._count += 1
        if self._count >= self._next and not self.busy:
            self._next = self._count + self.options.every
            self._start()

    def request(self) -> bool:
        """Start a candidate now (e.g. a button); False if one is running."""
        if self.busy:
            return False
        self._start()
        return True

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _start(self) -> None:
        k = len(self.decisions)
        self._thread = threading.Thread(
            target=self._candidate,
            args=(k, self._seen),
            name="pairscope-finetune",
            daemon=True,
        )
        self._thread.start()

    def finish(
        self,
        *,
        cancelled: bool = False,
        interrupted: Callable[[], bool] | None = None,
        timeout: float = 300.0,
    ) -> None:
        """At the end of the run: a cancelled run stops its candidate at once; a
        finished run waits for it (saying so) until ``interrupted()`` (a Ctrl-C
        after the run) or ``timeout`` s, then stops it."""
        self._ended.set()
        if cancelled:
            self._stop.set()
        elif self.busy:
            logger.warning(
                "Fine-tuning: waiting for candidate %d to be trained and scored "
                "(Ctrl-C stops it; the run is saved)",
                len(self.decisions),
            )
            # the acquisition is over: the candidate may catch up at full priority
            restore_priority(self._thread)
            if (process := self._process) is not None and process.poll() is None:
                restore_process_priority(process.pid)
        deadline = time.monotonic() + timeout
        while self.busy and time.monotonic() < deadline:
            if interrupted is not None and interrupted():
                self._stop.set()
            assert self._thread is not None
            self._thread.join(0.2)
        self._stop.set()
        self._end_child()
        if self._thread is not None:
            self._thread.join(10)
            if self._thread.is_alive() and self._in_progress is not None:
                # its thread (low priority) got no CPU in time on a busy machine:
                # the decision is still written, here
                self._log(
                    {
                        "candidate": self._in_progress,
                        "swapped": False,
                        "stopped": "stopped: the run ended before it was scored",
                    }
                )

    def _end_child(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # -- one candidate (its own thread; training in a child process) -------------
    def _candidate(self, k: int, pairs: int) -> None:
        """Candidate ``k`` on the first ``pairs`` pairs of the run."""
        self._in_progress = k
        deprioritize_current_thread(self.options.nice)
        from .io import same_instant

        t0 = time.perf_counter()
        record: dict[str, Any] = {"candidate": k}
        try:
            self.check_rig()  # the run.json is written by now
            records = self._listed(pairs)
            same = [
                i for i, r in enumerate(records) if r.get("lowdose") and same_instant(r)
            ]
            held = same[-self.options.holdback :]
            upto = held[0] if held else 0
            record.update(pairs_trained_on=sum(1 for i in same if i < upto))
            record.update(held_back_pairs=held)
            if len(held) < self.options.holdback or record["pairs_trained_on"] < 4:
                raise RuntimeError("too few same-instant pairs logged yet")
            snapshot = self._snapshot(records[:upto], k)
            out = self.run_dir / "finetune" / f"candidate-{k}.safetensors"
            self._train(snapshot, out)
            record["train_s"] = round(time.perf_counter() - t0, 1)
            if self._stop.is_set():
                raise _Stopped("stopped: the run ended before it was scored")
            current = self._score(self.current, held, snapshot)
            candidate = self._score(out, held, snapshot)
            swapped = candidate >= current + self.options.min_gain_db
            record.update(
                current_model=str(self.current),
                current_score_db=round(current, 3),
                candidate_score_db=round(candidate, 3),
                score="mean PSNR (dB) vs the registered simultaneous reference, "
                "affine-fitted, on the held-back pairs",
                swapped=swapped,
                model=str(out),
            )
            if swapped:
                self.restorer.swap_model(out)
                self.current = out
            shutil.rmtree(snapshot, ignore_errors=True)
        except _Stopped as stopped:
            record.update(swapped=False, stopped=str(stopped))
            logger.info("Fine-tuning candidate %d: %s", k, stopped)
        except Exception as exc:  # a failed candidate never touches the run
            record.update(swapped=False, error=" ".join(str(exc).split())[:300])
            logger.warning("Fine-tuning candidate %d: %s", k, record["error"])
        self._log(record)

    def _log(self, record: dict[str, Any]) -> None:
        """One decision line per candidate (the first one written wins)."""
        with self._log_lock:
            if record["candidate"] in self._logged:
                return
            self._logged.add(record["candidate"])
            self.decisions.append(record)
            with open(self.run_dir / LOG, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def _listed(self, pairs: int) -> list[dict[str, Any]]:
        """The manifest records of the first ``pairs`` pairs, once the writer has
        listed them (it writes behind the acquisition); fewer only if the run
        ends without them or ``wait_s`` passes."""
        from .io import open_run

        deadline = time.monotonic() + self.options.wait_s
        while True:
            ended = self._ended.is_set()  # read before the manifest
            records = open_run(self.run_dir).records
            if len(records) >= pairs or ended or self._stop.is_set():
                return records[:pairs]
            if time.monotonic() > deadline:
                logger.warning(
                    "Fine-tuning: %d of %d pairs listed after %.0f s; training on those",
                    len(records),
                    pairs,
                    self.options.wait_s,
                )
                return records
            self._ended.wait(0.2)

    def _snapshot(self, records: list[dict[str, Any]], k: int) -> Path:
        """A run folder listing only the pairs to train on (the held-back ones are
        not in it); the image files are hard links (the manifest decides)."""
        from .io import snapshot_run

        snap = snapshot_run(
            self.run_dir, self.run_dir / "finetune" / f"snapshot-{k}", records
        )  # either format: the image data are shared
        # the live registration is estimated on a low-priority thread: wait for it
        # rather than train on unregistered pairs when the machine is busy
        reg = (
            self.registration(self.options.wait_s)
            if self.registration is not None
            else None
        )
        if reg is not None and not (snap / L.CALIBRATION).exists():
            from .io.calibration import save_calibration

            save_calibration(snap, reg)  # train on registered pairs
        return snap

    def _train(self, snapshot: Path, out: Path) -> None:
        o = self.options
        config = {
            "init": str(self.current),
            "epochs": o.epochs,
            "samples_per_epoch": o.samples_per_epoch,
            "crop": o.crop,
            "lr": o.lr,
            "threads": o.threads,
            "progress": False,
            "force": True,
            "noise_fit": False,
            # short candidates on the pairs so far: measured crops only (measured
            # in docs/benchmarks.md, "Fine-tuning during the run")
            "synthetic_fraction": 0.0,
            "independent_frames": True,
        }
        log = out.with_suffix(".log")
        with open(log, "w", encoding="utf-8") as errors:
            # its own session: a Ctrl-C or a closed terminal reaches pairscope,
            # which stops the candidate itself, never the training mid-step
            self._process = subprocess.Popen(
                [sys.executable, "-m", "pairscope._finetune_child", str(snapshot),
                 str(out), json.dumps(config), str(o.nice), str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,
            )  # fmt: skip
            while self._process.poll() is None:
                if self._stop.wait(0.5):
                    self._end_child()
                    raise _Stopped("stopped: the run ended before it was trained")
        code = self._process.returncode
        if code != 0 or not out.is_file():
            lines = log.read_text(errors="replace").strip().splitlines()
            why = lines[-1] if lines else f"exit code {code}"
            raise RuntimeError(f"training failed ({why}; the whole error: {log})")
        log.unlink(missing_ok=True)

    def _score(self, model: Path, held: list[int], snapshot: Path) -> float:
        import numpy as np

        from .io import open_run
        from .offline import restore
        from .trust import calibration_for_run, check_pair

        run = open_run(self.run_dir)
        cal = calibration_for_run(open_run(snapshot), fit_noise=False)
        scores = []
        for i in held:
            pair = run[i]
            assert pair.lowdose is not None  # held pairs have a low-dose frame
            restored = restore(model, pair.lowdose)
            res = check_pair(i, restored, pair.lowdose, pair.reference, cal)
            scores.append(float(res.metrics["psnr_model"]))  # type: ignore[arg-type]
        return float(np.mean(scores))


class _Stopped(Exception):
    """The run ended (cancelled) before the candidate was trained."""
