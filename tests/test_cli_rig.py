"""The CLI on rigs: info, a drill, and Ctrl-C / SIGTERM that stop cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import pairscope

from ._cli import assert_cancelled_cleanly, interrupted_demo

CONFIGS = Path(__file__).parents[1] / "hardware_configs"


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pairscope.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_info_names_the_cores_and_the_factor_from_pixel_sizes() -> None:
    proc = _cli("info", str(CONFIGS / "demo_rig.yaml"))
    assert proc.returncode == 0, proc.stderr
    assert "core 'lowdose'" in proc.stdout and "core 'reference'" in proc.stdout
    assert "mode:      triggered" in proc.stdout and "factor:    2" in proc.stdout
    assert "pixel sizes 0.2 µm" in proc.stdout


def test_demo_drill_ends_with_the_fault_named_and_the_pairs_kept(
    tmp_path: Path,
) -> None:
    proc = _cli(
        "demo", "--frames", "12", "--sensor", "64", "--interval-ms", "0",
        "--headless", "--no-restore", "--no-progress", "--fault", "camera-error",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "ReferenceCam" in proc.stderr and "failed" in proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    info = json.loads((run_dir / "run.json").read_text())
    assert info["fault"]["name"] == "camera-error" and info["status"] == "failed"
    assert len(pairscope.open_run(run_dir)) >= 1


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_cleanly(tmp_path: Path, sig: int, code: int) -> None:
    proc, out, err, manifest = interrupted_demo(
        tmp_path, sig, "--interval-ms", "0", "--headless"
    )
    assert proc.returncode == code, err
    assert_cancelled_cleanly(out, err, manifest)


def test_a_config_cannot_run_local_code_without_permission(tmp_path: Path) -> None:
    """#py devices from a file beside the config (or in the current folder) are
    refused unless --allow-local-devices; every command says what it imports."""
    marker = tmp_path / "RAN"
    (tmp_path / "helper_devices.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    )
    cfg = tmp_path / "downloaded.cfg"
    cfg.write_text(
        "#py pyDevice,Cam,helper_devices,Cam\n#py Property,Core,Initialize,1\n"
    )
    for cwd in (tmp_path, Path.cwd()):  # beside the config, and in the cwd
        proc = subprocess.run(
            [sys.executable, "-m", "pairscope.cli", "info", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd,
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert "imports Python device code: helper_devices (LOCAL file" in proc.stderr
        assert "--allow-local-devices" in proc.stderr
        assert not marker.exists(), "the module ran"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pairscope.cli",
            "info",
            str(cfg),
            "--allow-local-devices",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert marker.exists()  # imported once the user allowed it
    assert "Traceback" not in proc.stderr


def test_a_display_qt_cannot_use_falls_back_to_headless(tmp_path: Path) -> None:
    """A DISPLAY without a usable Qt platform (dead X server, missing xcb
    libraries) must not abort the run: one line, then headless snapshots."""
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env["DISPLAY"] = ":97"  # no X server there
    proc = subprocess.run(
        [
            sys.executable, "-m", "pairscope.cli", "demo", "--frames", "4",
            "--sensor", "64", "--interval-ms", "0", "--no-restore", "--no-progress",
            "--out", str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "no window: Qt cannot start here" in proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    assert f"snapshots in {run_dir / 'preview'}" in proc.stderr
    assert len(pairscope.open_run(run_dir)) == 4


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        ('{"time_pan": {"interval": 0.1, "loops": 3}}', "Did you mean 'time_plan'"),
        ('{"time_plan": {"interval": -1, "loops": 3}}', "must be >= 0 s, got -1 s"),
        ('{"time_plan": {"interval": 0, "loops": 1000000000000}}', "plans 1,000,000"),
        ('{"stage_positions": [[NaN, 0, 0]]}', "stage_positions"),
        (
            '{"channels": ["DAPI"], "time_plan": {"interval": 0, "loops": 2}}',
            "channel 'DAPI'",
        ),
        ("[1, 2]", "must hold a mapping"),
    ],
    ids=["misspelt-key", "negative-interval", "unplannable", "nan", "channel", "list"],
)
def test_bad_sequences_get_one_line_before_any_trigger(
    tmp_path: Path, sequence: str, expected: str
) -> None:
    seq = tmp_path / "seq.yaml"
    seq.write_text(sequence)
    proc = _cli(
        "acquire", str(CONFIGS / "demo_rig.yaml"), "--sequence", str(seq),
        "--headless", "--no-restore", "--out", str(tmp_path / "runs"),
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and expected in proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("pairscope: error")]
    assert len(err) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
