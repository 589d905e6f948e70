"""The live trust monitor: verdicts on real demo runs with the real bundled model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import useq
from matplotlib.image import imread

import pairscope
from pairscope.config import AcquisitionSettings
from pairscope.hardware import demo_rig_path, open_rig
from pairscope.io.calibration import save_calibration
from pairscope.live import LiveOptions, bundled_model_path, run_live
from pairscope.restore import StreamingRestorer, load_model
from pairscope.sim import ground_truth
from pairscope.trust import (
    QUALITY_FILE,
    TrustMonitor,
    calibration_for_run,
    check_pair,
)

from ._demo_rig import acquire_rig_run, configure
from ._pace import WAIT_S, Lockstep

ONSET_PAIR = 5
SEQ = useq.MDASequence(time_plan={"interval": 0.4, "loops": 14})


def _live(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    scenario: str = "none",
    seed: int = 5,
) -> Path:
    """A live run in which the restorer and the monitor deal with every pair (the
    acquisition waits for them), however busy the CPU is."""
    lockstep = Lockstep(monkeypatch)
    with open_rig(demo_rig_path()) as rig:
        configure(rig, seed=seed, scenario=scenario, onset_pair=ONSET_PAIR)
        summary = run_live(
            rig,
            AcquisitionSettings(),
            SEQ,
            options=LiveOptions(out=tmp_path, headless=True, progress=False),
            on_started=lockstep,
        )
    assert summary.status == "completed"
    lockstep.check()
    return Path(summary.run_dir)


def _every_pair(run: pairscope.Run) -> list[int]:
    """The pairs a paced monitor checks: every one with a low-dose frame, those
    before its calibration (from its first 4 same-instant pairs) once it is made."""
    return [r["pair"] for r in run.records if r.get("lowdose")]


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(s) for s in (run_dir / QUALITY_FILE).read_text().splitlines()]


def test_live_monitor_flags_the_unseen_structure_drill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = _live(tmp_path, monkeypatch, scenario="unseen-structure")
    run = pairscope.open_run(run_dir)
    active = {
        rec["trigger_index"]: ground_truth.scenario_active(run.info, rec)
        for rec in run.records
    }
    assert not active[ONSET_PAIR - 1] and active[ONSET_PAIR]  # the drill's onset
    lines = _lines(run_dir)
    assert lines and all({"pair", "verdict", "reason"} <= set(ln) for ln in lines)
    # every pair is checked, those that came before the monitor's calibration
    # once it is made; a pair a busy machine made of two triggers only for
    # consistency
    assert [ln["pair"] for ln in lines] == _every_pair(run)
    lines = [ln for ln in lines if ln["has_reference"]]
    affected = [ln for ln in lines if active[ln["pair"]]]
    before = [ln for ln in lines if not active[ln["pair"]]]
    assert len(affected) >= 3
    flagged = [ln for ln in affected if ln["verdict"] != "ok"]
    seen = [(ln["pair"], ln["verdict"], ln.get("error_excess")) for ln in lines]
    assert len(flagged) >= 0.9 * len(affected), seen
    assert all("vs reference" in ln["reason"] for ln in flagged)
    assert all(ln["verdict"] == "ok" for ln in before), before
    summary = json.loads((run_dir / "quality_summary.json").read_text())
    # 14 pairs: 12 calibrate the intervals (10 needed), no held-out pair comes
    # after that to measure them: said, not faked
    assert (
        summary["coverage"]["alpha"] == 0.1 and summary["coverage"]["heldout"] is None
    )
    assert "no held-out pair after it" in summary["coverage"]["why"]
    every = _lines(run_dir)
    assert summary["checked"] == len(every)
    assert summary["verdicts"]["ok"] == sum(ln["verdict"] == "ok" for ln in every)
    assert (run_dir / "quality.png").stat().st_size > 10_000
    # the headless preview shows the trust strip and the error map (5 panels)
    last = sorted((run_dir / "preview").glob("preview_*.png"))[-1]
    assert imread(last).shape[1] >= 1900


def test_live_monitor_is_quiet_on_a_familiar_specimen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = _live(tmp_path, monkeypatch, seed=6)
    lines = _lines(run_dir)
    assert [ln["pair"] for ln in lines] == _every_pair(pairscope.open_run(run_dir))
    assert sum(ln["verdict"] != "ok" for ln in lines) <= 0.05 * len(lines)
    lines = [ln for ln in lines if ln["has_reference"]]
    assert len(lines) >= 8
    for ln in lines:  # the model is matched to the data: an advantage over bicubic
        assert ln["advantage_db"] > 3 and ln["error_excess"] < 4


@pytest.fixture(scope="module")
def familiar_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = acquire_rig_run(tmp_path_factory.mktemp("trust"), frames=4, seed=9)
    save_calibration(
        run_dir, calibration_for_run(pairscope.open_run(run_dir)).registration
    )
    return run_dir


def test_ideal_prediction_scores_at_the_noise_and_invention_is_caught(
    familiar_run: Path,
) -> None:
    run = pairscope.open_run(familiar_run)
    cal = calibration_for_run(run)
    pair = run[0]
    # the simulator's noise-free truth at the reference's dose, seen by the
    # low-dose camera's geometry: what a perfect restoration would output
    truth = ground_truth.noise_free_reference(run.info, pair.metadata, "LowDoseCam")
    ideal = check_pair(0, truth, pair.lowdose, pair.reference, cal)
    assert ideal.verdict == "ok", ideal.reason
    # only the reference's noise (smoothed a little by the registration) is left
    assert 0.6 < ideal.metrics["error_excess"] < 1.2
    assert 0.9 < ideal.metrics["consistency_chi2"] < 1.1
    # invent bright structure where the data have none (a network sharpening noise)
    invented = truth.copy()
    dark = np.argwhere(truth < np.percentile(truth, 30))[::997][:20]
    for r, c in dark:
        invented[r - 1 : r + 2, c - 1 : c + 2] += 300.0
    bad = check_pair(0, invented, pair.lowdose, pair.reference, cal)
    assert bad.verdict == "alarm"
    assert "low-dose data do not support" in bad.reason
    # with no reference (sparse-reference frames) consistency alone still catches it
    alone = check_pair(0, invented, pair.lowdose, None, cal)
    assert alone.verdict == "alarm" and alone.metrics["has_reference"] is False
    assert check_pair(0, truth, pair.lowdose, None, cal).verdict == "ok"


@pytest.mark.parametrize("backlog", [1, 3, None])
def test_listeners_never_wait_and_skipped_checks_are_counted(
    familiar_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    backlog: int | None,
) -> None:
    """``backlog`` checks may wait; None: as many as ``BACKLOG_BYTES`` of frames
    hold (at least ``BACKLOG``), here 5."""
    import dataclasses
    import threading

    import pairscope.trust._monitor as monitor_module

    run = pairscope.open_run(familiar_run)
    restorer = StreamingRestorer(load_model(bundled_model_path(2)), device="cpu")
    frames = []
    for i in range(len(run)):
        p = run[i]
        frames.append((p, restorer.restore_now(p.lowdose)))
    # the run's pairs again under later indices: more than the backlog can hold
    n = len(frames)
    frames += [(dataclasses.replace(p, index=p.index + n), im) for p, im in frames]
    waiting = backlog
    if backlog is None:  # by size: frames of 5 checks fit
        p, im = frames[0]
        size = im.nbytes + p.lowdose.nbytes + p.reference.nbytes
        monkeypatch.setattr(monitor_module, "BACKLOG", 2)
        monkeypatch.setattr(monitor_module, "BACKLOG_BYTES", 5 * size + 1)
        waiting = 5
    # ``backlog``: checks that may wait; beyond it the oldest waiting is skipped
    monitor = TrustMonitor(
        tmp_path, calibration=calibration_for_run(run), backlog=backlog
    )

    class Restored:  # the restorer's RestoredFrame fields the monitor reads
        def __init__(self, index: int, image: np.ndarray) -> None:
            self.index, self.image = index, image

    # the first check holds the worker until released: a check as slow as can be
    entered, release = threading.Event(), threading.Event()
    real_check = monitor_module.check_pair

    def held_check(*args: object, **kw: object) -> object:
        entered.set()
        assert release.wait(WAIT_S), "never released"
        return real_check(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(monitor_module, "check_pair", held_check)
    # counting is under test, not priority: at nice 19 beside CPU-bound processes
    # the worker gets ~1 % of a core and its two checks can outlast any bound
    monkeypatch.setattr(
        monitor_module, "deprioritize_current_thread", lambda *_a, **_k: None
    )
    monitor.start()
    (p0, img0), rest = frames[0], frames[1:]
    monitor.on_pair(p0)
    monitor.on_restored(Restored(p0.index, img0))
    assert entered.wait(WAIT_S), "the worker never took the first check"

    def burst() -> None:  # while that check runs: the newest `backlog` wait
        for p, img in rest:
            monitor.on_pair(p)
            monitor.on_restored(Restored(p.index, img))

    feeder = threading.Thread(target=burst)
    feeder.start()
    feeder.join(WAIT_S)  # the listeners never wait for the check in progress
    assert not feeder.is_alive(), "a listener waited for the trust check"
    release.set()
    summary = monitor.finish(timeout=WAIT_S)
    assert summary.skipped == len(rest) - waiting
    assert summary.checked == 1 + waiting
    waited = [p.index for p, _ in rest[-waiting:]]
    assert [ln["pair"] for ln in _lines(tmp_path)] == [p0.index, *waited]


def test_qt_window_shows_the_trust_strip_and_error_overlay(familiar_run: Path) -> None:
    from qtpy.QtWidgets import QApplication

    from pairscope.acquire import Pair
    from pairscope.preview import PreviewWindow

    app = QApplication.instance() or QApplication([])
    run = pairscope.open_run(familiar_run)
    cal = calibration_for_run(run)
    p = run[0]
    truth = ground_truth.noise_free_reference(run.info, p.metadata, "LowDoseCam")
    invented = truth.copy()
    invented[100:110, 100:110] += 400.0  # a structure the data do not have
    result = check_pair(p.index, invented, p.lowdose, p.reference, cal)
    assert result.verdict == "alarm"

    class Restored:
        index, image, latency_ms, model_name = p.index, invented, 10.0, "test"

    win = PreviewWindow()
    win.on_pair(Pair(p.index, p.lowdose, p.reference, p.metadata))
    win.on_restored(Restored())
    win.on_quality(result)
    win.show()
    app.processEvents()
    win.refresh()
    win.refresh()
    assert "alarm 1" in win.trust_label.text()
    assert not win.trust_strip.pixmap().isNull()
    tinted = win.panels[1].pixels
    assert tinted.ndim == 3  # restored panel with the error overlay (red)
    red = tinted[..., 0].astype(int) - tinted[..., 1]
    assert red[105 - 2 : 105 + 2, 105 - 2 : 105 + 2].mean() > 50  # where it invented
    assert np.median(red) < 5  # and nowhere else
    win.close()


def test_a_restored_frame_that_comes_before_its_pair_is_still_checked(
    tmp_path: Path,
) -> None:
    """A fast restorer can answer before the monitor's own pair listener has run
    (the restorer is handed the pair first): the check is made once the pair comes,
    not lost as 'unmatched'."""
    from pairscope.acquire import Pair
    from pairscope.restore import RestoredFrame
    from pairscope.trust import CameraNoise, TrustCalibration

    noise = CameraNoise(0.5, 100.0, 1.6)
    cal = TrustCalibration(factor=2, lowdose=noise, reference=noise)
    monitor = TrustMonitor(tmp_path, calibration=cal)
    monitor.start()
    rng = np.random.default_rng(0)
    ref = rng.poisson(400, (64, 64)).astype(np.uint16)
    low = (ref.reshape(32, 2, 32, 2).sum(axis=(1, 3)) // 10).astype(np.uint16)
    pair = Pair(7, low, ref, metadata={"simultaneous": True})
    monitor.on_restored(RestoredFrame(7, ref.astype(np.float32), 1.0, "m", "0" * 64))
    monitor.on_pair(pair)
    summary = monitor.finish()
    assert summary.checked == 1 and summary.unmatched == 0
    assert [ln["pair"] for ln in _lines(tmp_path)] == [7]
    late = TrustMonitor(tmp_path / "late", calibration=cal)  # its pair never comes
    late.start()
    late.on_restored(RestoredFrame(8, ref.astype(np.float32), 1.0, "m", "0" * 64))
    assert late.finish().unmatched == 1


def test_a_run_whose_checks_fell_behind_says_how_many_were_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trust monitor's checks are held until the last pair is acquired (every
    frame restored, in lockstep), with room for one waiting check: the others are
    skipped, and the run says how many in one line (the monitor's own count, as
    in quality_summary.json)."""
    import threading

    import pairscope.trust._monitor as monitor_module

    n = 12
    release = threading.Event()
    real_check = monitor_module.check_pair

    def held_check(*args: object, **kw: object) -> object:
        assert release.wait(WAIT_S), "never released"
        return real_check(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(monitor_module, "check_pair", held_check)
    monkeypatch.setattr(monitor_module, "BACKLOG", 1)
    monkeypatch.setattr(monitor_module, "BACKLOG_BYTES", 0)

    def release_at_the_end(acq, _restorer) -> None:
        acq.events.pairReady.connect(
            lambda p: release.set() if p.index == n - 1 else None
        )

    said: list[str] = []
    lockstep = Lockstep(then=release_at_the_end)  # every frame restored
    with open_rig(demo_rig_path()) as rig:
        configure(rig, seed=5)
        summary = run_live(
            rig,
            AcquisitionSettings(),
            useq.MDASequence(time_plan={"interval": 0, "loops": n}),
            options=LiveOptions(
                out=tmp_path, headless=True, progress=False, announce=said.append
            ),
            on_started=lockstep,
        )
    lockstep.check()
    assert summary.status == "completed" and summary.pairs == n
    q = json.loads((Path(summary.run_dir) / "quality_summary.json").read_text())
    assert q["skipped"] >= 1, q
    assert q["checked"] + q["skipped"] + q["calibrating"] == n
    lines = [s for s in said if s.startswith("trust: ")]
    assert len(lines) == 1 and f"{q['skipped']} skipped" in lines[0]
    assert "every pair is on disk" in lines[0]
