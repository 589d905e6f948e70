"""Bad sequences, settings files and training configurations end clean: exit 2,
one line naming the file, the field and the fix, no traceback, no run folder.

Each case of the table runs ``pairscope.cli.main`` in-process; every refusal
comes before a microscope is opened, so none needs Micro-Manager (pymmcore-plus
is pointed at an empty folder all the same).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pairscope.cli import main
from pairscope.config import AcquisitionSettings
from pairscope.hardware import demo_rig_path
from pairscope.sequence import load_sequence
from pairscope.train import TrainConfig

GOOD_SEQUENCE = "time_plan: {interval: 0, loops: 2}\n"
MARKER = "CONSTRUCTED"  # a YAML python tag below would create this file
TAG = f"!!python/object/apply:os.system ['touch {MARKER}']\n"


def _acquire(*extra: str) -> list[str]:
    return ["acquire", str(demo_rig_path()), "--headless", "--no-restore", *extra]


def _sequence(text: str, name: str = "seq.yaml") -> tuple[list[str], dict[str, str]]:
    return _acquire("--sequence", name), {name: text}


def _settings(
    text: str, name: str = "settings.yaml"
) -> tuple[list[str], dict[str, str]]:
    files = {"seq.yaml": GOOD_SEQUENCE, name: text}
    return _acquire("--sequence", "seq.yaml", "--settings", name), files


def _train_config(
    text: str, name: str = "train.yaml"
) -> tuple[list[str], dict[str, str]]:
    return ["train", "no-run", "--out", "m.safetensors", "--config", name], {name: text}


# (id, (argv, files), what the line must say)
CASES = [
    (
        "demo negative interval",
        (["demo", "--interval-ms", "-5", "--headless", "--no-restore"], {}),
        ["--interval-ms must be a finite number >= 0", "got -5"],
    ),
    (
        "demo nan interval",
        (["demo", "--interval-ms", "nan", "--headless", "--no-restore"], {}),
        ["--interval-ms", "got nan"],
    ),
    (
        "loops 0",
        _sequence("time_plan: {interval: 0, loops: 0}\n"),
        ["seq.yaml: time_plan.loops must be greater than 0, got 0", "loops: 100"],
    ),
    (
        "loops 0 in a phase",
        _sequence("time_plan: {phases: [{interval: 0, loops: 0}]}\n"),
        ["seq.yaml: time_plan.phases[0].loops must be greater than 0"],
    ),
    (
        "no loops",
        _sequence("time_plan: {interval: 0.1}\n"),
        ["seq.yaml: time_plan needs 'duration' or 'loops'; add one"],
    ),
    (
        "z plan half given",
        _sequence("z_plan: {top: 1}\n"),
        ["seq.yaml: z_plan.bottom is missing; add it"],
    ),
    (
        "negative interval",
        _sequence("time_plan: {interval: -1, loops: 3}\n"),
        ["seq.yaml: time_plan.interval must be >= 0 s, got -1 s"],
    ),
    (
        "interval 0 over a duration",
        _sequence("time_plan: {interval: 0, duration: 5}\n"),
        ["seq.yaml: time_plan: an interval of 0 s over a duration never ends", "loops"],
    ),
    (
        "duration over 1 loop",
        _sequence("time_plan: {duration: 5, loops: 1}\n"),
        ["seq.yaml: time_plan: a duration spans at least 2 timepoints"],
    ),
    (
        "x at 1e9 µm",
        _sequence(
            '{"time_plan": {"interval": 0, "loops": 2}, '
            '"stage_positions": [{"x": 1e9, "y": 0, "z": 0}]}',
            "seq.json",
        ),
        ["seq.json: stage_positions[0].x = 1e+09 µm is beyond any stage's travel"],
    ),
    (
        "y at -2e6 µm as a list",
        _sequence(GOOD_SEQUENCE + "stage_positions: [[0.0, -2.0e+6, 0.0]]\n"),
        ["seq.yaml: stage_positions[0].y = -2e+06 µm is beyond"],
    ),
    (
        "z at 2e5 µm",
        _sequence(GOOD_SEQUENCE + "stage_positions: [{x: 0, y: 0, z: 2.0e+5}]\n"),
        ["seq.yaml: stage_positions[0].z = 200000 µm is beyond", "|z| <= 100000 µm"],
    ),
    (
        "z plan 1e9 µm",
        _sequence(GOOD_SEQUENCE + "z_plan: {top: 1.0e+9, bottom: 0, step: 1.0e+8}\n"),
        ["seq.yaml: z_plan.top = 1e+09 µm is beyond"],
    ),
    (
        "position not finite",
        _sequence(
            '{"time_plan": {"interval": 0, "loops": 2}, '
            '"stage_positions": [{"x": NaN, "y": 0}]}',
            "seq.json",
        ),
        ["seq.json: stage_positions[0].x = nan µm is not finite"],
    ),
    (
        "empty mapping",
        _sequence("{}", "seq.json"),
        ["seq.json plans no acquisition", '"time_plan"'],
    ),
    (
        "empty file",
        _sequence(""),
        ["seq.yaml must hold a mapping", "it holds nothing"],
    ),
    (
        "a list",
        _sequence("- 1\n- 2\n"),
        ["seq.yaml must hold a mapping", "it holds a list"],
    ),
    (
        "misspelt key",
        _sequence("time_plna: {interval: 0, loops: 2}\n"),
        ["seq.yaml: unknown sequence key 'time_plna'. Did you mean 'time_plan'?"],
    ),
    (
        "sequence not YAML",
        _sequence("time_plan: [\n"),
        ["seq.yaml is not valid YAML (line 2, column 1)"],
    ),
    (
        "sequence python tag",
        _sequence(TAG),
        ["seq.yaml (line 1, column 1): the YAML tag !!python/object/apply:os.system"],
    ),
    (
        "settings not YAML",
        _settings("mode: [triggered\n"),
        ["settings.yaml is not valid YAML (line 2, column 1)", "fix the file"],
    ),
    (
        "settings not JSON",
        _settings("{mode: triggered}", "settings.json"),
        ["settings.json is not valid JSON", "line 1, column 2"],
    ),
    (
        "settings wrong value",
        _settings("mode: fast\n"),
        ["settings.yaml: mode must be 'auto', ", "got 'fast'"],
    ),
    (
        "settings misspelt key",
        _settings("binnig: 2\n"),
        ["settings.yaml: binnig is not a known key (did you mean 'binning'?)"],
    ),
    (
        "settings cross-field check",
        _settings("mode: sparse\n"),
        ["settings.yaml: sparse mode takes a reference every N-th trigger"],
    ),
    (
        "settings not text",
        _settings("\udcff\udcfe", "settings.yaml"),
        ["settings.yaml is not a text file"],
    ),
    (
        "settings python tag",
        _settings(f"mode: {TAG}"),
        ["settings.yaml (line 1, column 7): the YAML tag !!python/object/apply"],
    ),
    (
        "train config python tag",
        _train_config(TAG),
        ["train.yaml (line 1, column 1): the YAML tag !!python/object/apply", "Remove"],
    ),
    (
        "train config not YAML",
        _train_config("epochs: [3\n"),
        ["train.yaml is not valid YAML"],
    ),
    (
        "train config wrong value",
        _train_config("epochs: many\n"),
        ["train.yaml: epochs must be a valid integer", "got 'many'"],
    ),
]


@pytest.fixture(autouse=True)
def _no_micromanager(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICROMANAGER_PATH", str(tmp_path_factory.mktemp("no-mm")))


def _write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        # surrogates stand for raw bytes (a file that is not UTF-8 text)
        (folder / name).write_bytes(text.encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize(
    ("argv", "files", "expected"),
    [pytest.param(argv, files, exp, id=i) for i, (argv, files), exp in CASES],
)
def test_bad_input_ends_in_one_clear_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    files: dict[str, str],
    expected: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, files)
    runs = tmp_path / "runs"
    out = ["--out", str(runs)] if argv[0] in ("demo", "acquire") else []
    assert main([*argv, *out, "--no-progress"] if out else argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("pairscope: error: ")
    for text in expected:
        assert text in line, line
    assert not runs.exists(), "a refused input left a run folder"
    assert not (tmp_path / MARKER).exists(), "a YAML python tag was constructed"


def test_a_python_tag_in_settings_is_one_line_from_the_command(tmp_path: Path) -> None:
    """The issue's case, as a user runs it: no traceback, nothing constructed."""
    _write(tmp_path, {"seq.yaml": GOOD_SEQUENCE, "settings.yaml": TAG})
    proc = subprocess.run(
        [sys.executable, "-m", "pairscope.cli",
         *_acquire("--sequence", "seq.yaml", "--settings", "settings.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ},  # MICROMANAGER_PATH: the empty folder
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "settings.yaml" in line and "YAML tag" in line
    assert not (tmp_path / MARKER).exists()


def test_valid_files_are_read(tmp_path: Path) -> None:
    """What the table refuses is not everything: plain files still load."""
    seq = tmp_path / "seq.yaml"
    seq.write_text(GOOD_SEQUENCE + "stage_positions: [[10.0, -20.0, 5.0]]\n")
    sequence = load_sequence(seq)
    assert sequence.time_plan is not None and sequence.time_plan.loops == 2  # type: ignore[union-attr]
    pos = sequence.stage_positions[0]
    assert (pos.x, pos.y, pos.z) == (10.0, -20.0, 5.0)
    settings = tmp_path / "settings.json"
    settings.write_text('{"mode": "sparse", "reference_every": 3}')
    assert AcquisitionSettings.from_file(settings).reference_every == 3
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert AcquisitionSettings.from_file(empty) == AcquisitionSettings()
    assert TrainConfig.from_file(empty) == TrainConfig()
