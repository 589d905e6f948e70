"""Fine-tuning during a run: a separate process, held-back pairs, swap only if
better, every decision logged, no pair lost."""

from __future__ import annotations

import json
from pathlib import Path

import useq

import pairscope
from pairscope.config import AcquisitionSettings
from pairscope.finetune import FineTuneOptions
from pairscope.hardware import demo_rig_path, open_rig
from pairscope.live import LiveOptions, bundled_model_path, run_live
from pairscope.restore import load_model, save_model
from pairscope.rig import rig_model_for_run

KEYS = {
    "pairs_trained_on",
    "held_back_pairs",
    "current_score_db",
    "candidate_score_db",
    "swapped",
}


def _weak_model(path: Path) -> Path:
    """The bundled demo model with its output layer scrambled: deliberately weak,
    but one layer away from good, so a short fine-tune can repair it."""
    import torch

    model = load_model(bundled_model_path(2))
    net = model.network
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        w = net.head.weight
        w.copy_(w + 0.5 * w.std() * torch.randn(w.shape, generator=g))
    save_model(path, net, model.info.replace(name="scrambled"))
    return path


def test_a_weak_model_is_replaced_by_a_better_candidate(tmp_path: Path) -> None:
    weak = _weak_model(tmp_path / "weak.safetensors")
    options = LiveOptions(
        out=tmp_path / "runs",
        headless=True,
        progress=False,
        model=weak,
        # a fixed amount of work (the pairs up to the 24th, 6 epochs of 96 crops);
        # nice=0: the priority is not under test, and a nice-15 trainer on a busy
        # machine would take minutes for the same work
        fine_tune=FineTuneOptions(
            every=24,
            holdback=4,
            epochs=6,
            samples_per_epoch=96,
            crop=48,
            lr=2e-3,
            nice=0,
        ),
    )
    with open_rig(demo_rig_path()) as rig:
        for rc in rig.cores:
            rc.core.setProperty(rc.camera, "SensorSize", 96)
        summary = run_live(
            rig,
            AcquisitionSettings(mode="triggered"),
            useq.MDASequence(time_plan={"interval": 0.05, "loops": 60}),
            options=options,
        )
    assert summary.status == "completed", summary.message
    run_dir = Path(summary.run_dir)
    assert len(pairscope.open_run(run_dir)) == 60  # fine-tuning cost no pair
    lines = [
        json.loads(x) for x in (run_dir / "finetune.jsonl").read_text().splitlines()
    ]
    assert lines, "no candidate was decided"
    first = lines[0]
    assert set(first) >= KEYS, first
    # the pairs up to the one that started it, whenever the candidate got the CPU
    assert first["pairs_trained_on"] == 20
    assert first["held_back_pairs"] == [20, 21, 22, 23]
    for d in lines:  # the gate: swapped exactly when the candidate scores better
        gain = d["candidate_score_db"] - d["current_score_db"]
        assert d["swapped"] == (gain >= 0.05)
    assert first["swapped"], f"an untrained model should lose: {first}"
    assert Path(first["model"]).is_file()
    # the candidate records the rig it was fine-tuned on: this run's
    rig = load_model(first["model"]).info.rig_model
    assert rig is not None and rig.lowdose == rig_model_for_run(run_dir).lowdose


def _training_children(run_dir: Path) -> list[int]:
    """Processes still training a candidate of this run (from /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "pairscope._finetune_child" in cmdline and str(run_dir) in cmdline:
            found.append(int(proc.name))
    return found


def test_ctrl_c_during_a_candidate_stops_it_at_once_and_keeps_every_pair(
    tmp_path: Path,
) -> None:
    """A terminal's Ctrl-C goes to the whole process group: pairscope stops the
    run and the candidate in training, says so in finetune.jsonl, prints no
    traceback, and leaves no training process behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [
            sys.executable, "-m", "pairscope.cli", "demo", "--frames", "5000",
            "--sensor", "64", "--interval-ms", "0", "--headless", "--fine-tune",
            "--no-progress", "--out", str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives it
    )  # fmt: skip
    deadline = time.monotonic() + 300  # a bound for a hang, not a timing
    logs: list[Path] = []
    while not logs and time.monotonic() < deadline and proc.poll() is None:
        logs = list(tmp_path.glob("*/finetune/candidate-0.log"))
        time.sleep(0.2)
    assert logs, f"no candidate started: {proc.communicate()[1]}"
    run_dir = logs[0].parents[1]
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "cancelled"
    assert len(pairscope.open_run(run_dir)) == info["pairs_written"] >= 100
    decisions = [
        json.loads(x) for x in (run_dir / "finetune.jsonl").read_text().splitlines()
    ]
    assert decisions and all(not d["swapped"] for d in decisions), decisions
    # stopped with the run, or (a fast machine) decided before the Ctrl-C came
    assert "stopped" in decisions[-1] or "candidate_score_db" in decisions[-1]
    assert "error" not in decisions[-1], decisions[-1]
    assert not _training_children(run_dir)


def test_a_candidate_whose_thread_gets_no_cpu_still_gets_its_decision_line(
    demo_run: Path, tmp_path: Path
) -> None:
    """Beside CPU-bound processes the low-priority candidate thread may not run
    before the process ends: finish() writes its 'stopped' line itself."""
    import shutil
    import threading

    from pairscope.finetune import LiveFineTuner
    from pairscope.live import bundled_model_path

    run_dir = Path(shutil.copytree(demo_run, tmp_path / "run"))
    tuner = LiveFineTuner(run_dir, None, bundled_model_path(2))
    starved = threading.Event()  # the candidate thread, never scheduled in time
    tuner._thread = threading.Thread(target=starved.wait, daemon=True)
    tuner._thread.start()
    tuner._in_progress = 0
    try:
        tuner.finish(timeout=0.1)
    finally:
        starved.set()
    lines = [
        json.loads(x) for x in (run_dir / "finetune.jsonl").read_text().splitlines()
    ]
    assert lines == [
        {
            "candidate": 0,
            "swapped": False,
            "stopped": "stopped: the run ended before it was scored",
        }
    ]
