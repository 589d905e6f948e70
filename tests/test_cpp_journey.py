"""The whole journey on Micro-Manager's C++ DemoCamera rig with real pixels, as a
user runs it: acquire (live restorer and trust monitor on) → calibrate → train (a
short budget) → evaluate → restore → fine-tune during a run → export; each step's
output read back and checked, no traceback anywhere.  Once in OME-TIFF and once in
OME-Zarr (the same steps: one run-storage interface)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import pairscope

from ._cpp import assert_real_pixels

CPP_RIG = Path(__file__).parents[1] / "hardware_configs" / "cpp_democamera_rig.yaml"
STEP_S = 900  # a bound for a hang, not a timing


def _pairscope(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pairscope.cli", *args],
        capture_output=True,
        text=True,
        timeout=STEP_S,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, f"pairscope {' '.join(args)}:\n{proc.stderr}"
    return proc


def _acquire(tmp: Path, out: Path, fmt: str, *extra: str, loops: int) -> Path:
    sequence = tmp / f"seq-{loops}.yaml"
    sequence.write_text(f"time_plan: {{interval: 0, loops: {loops}}}\n")
    proc = _pairscope(
        "acquire", str(CPP_RIG), "--sequence", str(sequence), "--out", str(out),
        "--format", fmt, "--headless", "--no-progress", *extra,
    )  # fmt: skip
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed", info.get("message")
    # free-running cameras: a phase slip (more of them on a busy machine) keeps
    # two frames alone, marked partner_missing, in place of one pair
    assert info["format"] == fmt and info["pairs_written"] >= loops
    records = pairscope.open_run(run_dir).records
    alone = [r for r in records if not (r.get("lowdose") and r.get("reference"))]
    assert all(r.get("partner_missing") for r in alone)
    assert len(records) - len(alone) >= loops - len(alone)
    return run_dir


@pytest.mark.timeout(3600)  # seven steps, each bounded by STEP_S
@pytest.mark.parametrize("fmt", ["ome-tiff", "ome-zarr"])
def test_the_whole_journey_on_the_cpp_rig(tmp_path: Path, fmt: str) -> None:
    # 1. acquire with the live restorer (bundled demo model) and the trust monitor
    run_dir = _acquire(tmp_path, tmp_path / "runs", fmt, loops=40)
    run = pairscope.open_run(run_dir)
    # free-running cameras: a busy machine's phase slips cost a few pairs of one
    # instant (their frames are kept alone); the journey needs 6 for calibrate
    assert len(run.same_instant_pairs()) >= 20
    assert_real_pixels(run, every=8)
    summary = json.loads((run_dir / "quality_summary.json").read_text())
    assert summary["checked"] > 0 and summary["errors"] == 0, summary
    checked = [
        json.loads(x) for x in (run_dir / "quality.jsonl").read_text().splitlines()
    ]
    assert checked and all(np.isfinite(r["metrics"]["psnr_model"]) for r in checked
                           if "metrics" in r)  # fmt: skip
    rig = json.loads((run_dir / "run.json").read_text())["rig_model"]
    assert rig["lowdose"]["camera_model"] == "DemoCamera/DCam"

    # 2. calibrate: the registration (the photometry of noise-free waves is unknown)
    _pairscope("calibrate", str(run_dir), "--max-pairs", "6")
    cal = json.loads((run_dir / "calibration.json").read_text())
    assert cal["registration"]["n_pairs"] == 6

    # 3. train, a short budget
    model = tmp_path / "cpp.safetensors"
    _pairscope(
        "train", str(run_dir), "--out", str(model), "--epochs", "2",
        "--samples-per-epoch", "16", "--crop", "64", "--no-progress",
    )  # fmt: skip
    info = _pairscope("info", str(model)).stdout
    assert "DemoCamera/DCam" in info, info

    # 4. evaluate against the registered reference
    report = tmp_path / "eval"
    _pairscope("evaluate", str(model), str(run_dir), "--out", str(report),
               "--max-pairs", "6", "--no-progress")  # fmt: skip
    evaluation = json.loads((report / "evaluation.json").read_text())
    assert evaluation, "an empty evaluation"

    # 5. restore every low-dose frame of the run
    _pairscope("restore", str(model), str(run_dir), "--out", str(tmp_path / "restored"),
               "--no-progress")  # fmt: skip
    import tifffile

    frames = tifffile.imread(tmp_path / "restored" / "restored.prediction.ome.tif")
    low = run[run.with_lowdose()[0]].lowdose  # a slip can leave pair 0 without
    assert low is not None and len(frames) == len(run.with_lowdose())
    assert frames.shape[-2:] == (low.shape[0] * 2, low.shape[1] * 2)
    assert np.isfinite(frames).all() and frames.std() > 0

    # 6. fine-tune during a second run, starting from the trained model
    tuned = _acquire(
        tmp_path, tmp_path / "runs2", fmt, "--model", str(model), "--fine-tune",
        "--fine-tune-every", "20", loops=60,
    )  # fmt: skip
    decisions = [
        json.loads(x) for x in (tuned / "finetune.jsonl").read_text().splitlines()
    ]
    assert decisions and "error" not in decisions[0], decisions
    assert decisions[0]["pairs_trained_on"] > 0

    # 7. export for bioimage.io
    package = tmp_path / "cpp.zip"
    _pairscope("export", str(model), "--bioimageio", str(package), "--sample-run",
               str(run_dir))  # fmt: skip
    with zipfile.ZipFile(package) as z:
        assert "rdf.yaml" in z.namelist()
