"""The operator's cases of issue 24 end clean: a non-zero exit (zero where the input
is valid), one ``pairscope: error:`` line naming the problem and the fix, no
traceback, nothing lost, no empty folder left.

Every input is a real file (a cut TIFF, a stack of NaNs, a config with three
cameras, a read-only folder, a real file-size limit) fed to the real command line.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile

import pairscope
from pairscope.cli import main
from pairscope.config import AcquisitionSettings
from pairscope.errors import PairingError
from pairscope.hardware import demo_config_path, find_detector_pair, open_core
from pairscope.io import RunWriter
from pairscope.io.calibration import Registration, save_calibration
from pairscope.live import bundled_model_path
from pairscope.restore import load_model

from ._io_pairs import RUN_INFO, make_pair
from ._readonly import read_only

ROOT = Path(__file__).parents[1]
MODEL = bundled_model_path(2)
CLI = [sys.executable, "-m", "pairscope.cli"]
# a tiny, quick training (the shared demo run's pairs, no PSF or noise fits)
TINY = ["--width", "4", "--depth", "1", "--crop", "64", "--batch-size", "4",
        "--samples-per-epoch", "8", "--block-size", "2", "--no-progress",
        "--no-noise-fit", "--sequential-pairs", "--point-emitters", "0",
        "--textured-objects", "0"]  # fmt: skip


def _error_line(err: str) -> str:
    """The one line a refusal prints (and nothing else)."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pairscope: error: "), err
    return lines[0]


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def run_copy(demo_run: Path, tmp_path: Path) -> Path:
    """A writable copy of the shared 12-pair demo run."""
    return Path(shutil.copytree(demo_run, tmp_path / "run"))


# -- pairscope import: stacks that are not camera frames ------------------------------
N_FRAMES = 5


def _write(path: Path, frames: np.ndarray, **kw: object) -> None:
    with warnings.catch_warnings():  # tifffile warns of a stack of no frames
        warnings.simplefilter("ignore", UserWarning)
        tifffile.imwrite(path, frames, photometric="minisblack", **kw)


def _low() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(100, 200, (N_FRAMES, 32, 32)).astype(np.uint16)


def _with(frames: np.ndarray, at: tuple[int, int, int], value: float) -> np.ndarray:
    frames[at] = value
    return frames


def _cut(path: Path, frames: np.ndarray, **kw: object) -> None:
    _write(path, frames, **kw)
    os.truncate(path, path.stat().st_size // 2)


def _declaring(path: Path, side: int) -> None:
    """A 16x16 page whose width and height tags are patched to ``side``."""
    _write(path, np.zeros((16, 16), np.uint16))
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tags = [tif.pages[0].tags[code] for code in (256, 257)]
    for tag in tags:
        fmt = "<H" if tag.dtype == 3 else "<I"
        data[tag.valueoffset : tag.valueoffset + struct.calcsize(fmt)] = struct.pack(
            fmt, side
        )
    path.write_bytes(bytes(data))


# (low-dose stack writer, reference frames or None for the usual, the line's words)
IMPORT_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "nan": (
        lambda p: _write(p, _with(_low().astype(np.float32), (1, 3, 3), np.nan)),
        "frame 1 of low.tif holds 1 NaN or infinite pixel(s)",
    ),
    "inf": (
        lambda p: _write(p, _with(_low().astype(np.float32), (2, 0, 5), np.inf)),
        "frame 2 of low.tif holds 1 NaN or infinite pixel(s)",
    ),
    "complex64": (
        lambda p: _write(p, _low().astype(np.complex64)),
        "holds complex64 pixels; pairscope imports camera counts",
    ),
    "negative int64": (
        lambda p: _write(p, _with(_low().astype(np.int64), (3, 0, 0), -5)),
        "frame 3 of low.tif holds negative values (down to -5)",
    ),
    "no frames": (
        lambda p: _write(p, np.zeros((0, 32, 32), np.uint16)),
        "low.tif holds no frames",
    ),
    "cut short": (
        lambda p: _cut(p, _low()),
        "declares 5 frame(s) of 32x32 uint16 pixels (10240 bytes) but the file holds",
    ),
    "compressed, cut short": (
        lambda p: _cut(p, _low(), compression="zlib"),
        "low.tif is cut short or damaged",
    ),
    "page declaring 60000x60000": (
        lambda p: _declaring(p, 60000),
        "declares frames of 60000x60000 pixels; pairscope imports camera frames",
    ),
    "page declaring 15000x15000 in 500 bytes": (
        lambda p: _declaring(p, 15000),
        "declares 1 frame(s) of 15000x15000 uint16 pixels (450000000 bytes) but the "
        "file holds",
    ),
}


def _import_argv(low: Path, ref: Path, out: Path) -> list[str]:
    return ["import", "--lowdose", str(low), "--reference", str(ref), "--out",
            str(out), "--offset", "100", "--gain", "0.5", "--reference-pixel-um",
            "0.1", "--no-progress"]  # fmt: skip


@pytest.mark.parametrize("case", IMPORT_CASES)
def test_import_refuses_what_is_not_camera_frames(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_low, words = IMPORT_CASES[case]
    low, ref, out = tmp_path / "low.tif", tmp_path / "ref.tif", tmp_path / "runs"
    make_low(low)
    side = 64 if "declaring" not in case else 16  # the binning check comes later
    _write(ref, np.full((N_FRAMES, side, side), 150, np.uint16))
    rc = main(_import_argv(low, ref, out))
    line = _error_line(capsys.readouterr().err).replace(f"{tmp_path}/", "")
    assert rc == 2
    assert words in line, line
    assert not out.exists()  # no run folder, and no empty --out folder


def test_import_of_valid_stacks_still_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    low, ref, out = tmp_path / "low.tif", tmp_path / "ref.tif", tmp_path / "runs"
    _write(low, _low().astype(np.int64))  # signed, but camera counts: fine
    _write(ref, np.full((N_FRAMES, 64, 64), 150, np.uint16))
    assert main(_import_argv(low, ref, out)) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(pairscope.open_run(run_dir)) == N_FRAMES


# -- a config with three cameras -----------------------------------------------------
THIRD = """
#py pyDevice,SideCam,pairscope.sim.devices,DemoCamera
#py Property,SideCam,Binning,1
#py Property,SideCam,PixelSize_um,0.1
#py Property,SideCam,SensorSize,512
"""


@pytest.fixture
def three_cameras(tmp_path: Path) -> Path:
    cfg = tmp_path / "three.cfg"
    text = demo_config_path().read_text()
    devices_end = text.index("#py Property,Core,Initialize,1")
    cfg.write_text(text[:devices_end] + THIRD + text[devices_end:])
    return cfg


def test_three_cameras_are_not_guessed(
    three_cameras: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["info", str(three_cameras)])
    line = _error_line(_without_announcement(capsys.readouterr().err))
    assert rc == 2
    assert "3 cameras (LowDoseCam, ReferenceCam, SideCam)" in line
    assert "lowdose_camera: LowDoseCam' and 'reference_camera: ReferenceCam'" in line
    # an explicit choice works, from the command line and from Python
    settings = tmp_path / "pairing.yaml"
    settings.write_text("lowdose_camera: LowDoseCam\nreference_camera: SideCam\n")
    assert main(["info", str(three_cameras), "--settings", str(settings)]) == 0
    out = capsys.readouterr().out
    assert "low-dose:  LowDoseCam" in out and "reference: SideCam" in out
    assert "other cameras ignored: ['ReferenceCam']" in out
    with open_core(three_cameras) as core:
        with pytest.raises(PairingError, match="pairscope pairs two"):
            find_detector_pair(core)
        chosen = AcquisitionSettings(
            lowdose_camera="LowDoseCam", reference_camera="ReferenceCam"
        )
        pair = find_detector_pair(core, chosen)
        assert (pair.lowdose, pair.reference, pair.factor) == (
            "LowDoseCam",
            "ReferenceCam",
            2,
        )


def _without_announcement(err: str) -> str:
    """stderr less the line every Python-device config earns (not the refusal)."""
    return "\n".join(
        line for line in err.splitlines() if "imports Python device code" not in line
    )


# -- repair: cut files and read-only disks -------------------------------------------
def _cut_tiff(run: Path) -> None:
    tiff = run / "lowdose.ome.tif"
    os.truncate(tiff, tiff.stat().st_size * 6 // 10)


def _cut_manifest(run: Path) -> None:
    manifest = run / "pairs.jsonl"
    os.truncate(manifest, manifest.stat().st_size // 2)


REPAIR_REFUSALS: dict[str, tuple[Callable[[Path], None], str]] = {
    "a detector file cut short": (
        _cut_tiff,
        r"lowdose\.ome\.tif holds \d complete frame\(s\) but pairs\.jsonl lists 12: "
        r"the file was cut short .* Nothing was changed",
    ),
    "a manifest cut short": (
        _cut_manifest,
        r"pairs\.jsonl lists \d pairs but run\.json records 12 written: the manifest "
        r"was cut short .* Nothing was changed",
    ),
}


@pytest.mark.parametrize("case", REPAIR_REFUSALS)
def test_repair_refuses_a_cut_file_and_changes_nothing(
    case: str, run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damage, pattern = REPAIR_REFUSALS[case]
    damage(run_copy)
    before = _files(run_copy)
    rc = main(["repair", str(run_copy)])
    line = _error_line(capsys.readouterr().err)
    assert rc == 2
    import re

    assert re.search(pattern, line), line
    assert _files(run_copy) == before


def test_repair_restores_a_cut_ome_xml(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The OME-XML is appended last: a copy cut in it keeps every frame."""
    tiff = run_copy / "lowdose.ome.tif"
    os.truncate(tiff, tiff.stat().st_size - 200)
    assert main(["repair", str(run_copy)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    with tifffile.TiffFile(tiff) as tif:
        assert tif.is_ome and len(tif.pages) == 12
    assert len(pairscope.open_run(run_copy)) == 12


def test_repair_on_a_read_only_disk_says_read_only(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info_path = run_copy / "run.json"
    finished = info_path.read_text()
    with read_only(run_copy):  # a finished run: nothing to do, exit 0
        assert main(["repair", str(run_copy)]) == 0
        assert "nothing to do" in capsys.readouterr().err
    info = json.loads(finished)
    info_path.write_text(json.dumps({**info, "status": "running"}))  # a killed run
    before = _files(run_copy)
    with read_only(run_copy):
        rc = main(["repair", str(run_copy)])
    line = _error_line(capsys.readouterr().err)
    assert rc == 2
    assert "cannot be repaired where it is" in line and "read-only" in line
    assert "locked" not in line and "copy the run folder to a writable disk" in line
    assert _files(run_copy) == before


# -- calibrate on a read-only run: refused before the work ---------------------------
def test_calibrate_on_a_read_only_run_is_refused_before_the_work(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (run_copy / "calibration.json").unlink(missing_ok=True)
    with read_only(run_copy):
        rc = main(["calibrate", str(run_copy)])
    err = capsys.readouterr().err
    line = _error_line(err)
    assert rc == 2
    assert "is not writable" in line and "calibrate the copy" in line
    assert "registering" not in err  # no progress: the work never started
    assert not (run_copy / "calibration.json").exists()


# -- evaluate --targets outside the frame, or with pairs and rods mixed up -----------
@pytest.mark.parametrize(
    ("targets", "words"),
    [
        (
            "[[[10, 10], [1e9, 1e9], 0.2]]",
            "the point (1e+09, 1e+09) lies outside the 256x256 reference frame",
        ),
        (
            '{"targets": [{"pair": 3, "p1": [-4, 10], "p2": [8, 10], '
            '"separation_um": 0.2}]}',
            "the point (-4, 10) of pair 3 lies outside the 256x256 reference frame",
        ),
        ("[[[NaN, 10], [12, 10], 0.2]]", "coordinates and separation must be finite"),
        (  # 0.1 um pixels: 7.2 px apart is 3.6x 0.2 um, one object, not a pair
            "[[[10, 10], [17.2, 10], 0.2]]",
            "is 3.60x its separation_um (0.2 um) apart at 0.1 um/pixel, not about "
            '1x; if it is one object, mark it "kind": "rod"',
        ),
        (
            '[[[10, 10], [12, 10], 0.2, "rod"]]',
            "is 1.00x its separation_um (0.2 um) long at 0.1 um/pixel; a rod matched "
            "to a pair is about 1.8x",
        ),
        (
            '[[[10, 10], [12, 10], 0.2, "Rod"]]',
            '"kind" is "pair" or "rod", got \'Rod\'',
        ),
        (
            '[[[10, 10], [13.6, 10], 0.2, "rod"], [[300, 10], [303.6, 10], 0.2, "rod"]]',
            "the rod's end (300, 10) lies outside the 256x256 reference frame",
        ),
    ],
    ids=[
        "1e9",
        "negative, per pair",
        "NaN",
        "a rod as a pair",
        "a pair as a rod",
        "kind",
        "rod outside",
    ],
)
def test_targets_outside_the_frame_are_refused_before_the_work(
    targets: str,
    words: str,
    demo_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, out = tmp_path / "targets.json", tmp_path / "eval"
    path.write_text(targets)
    argv = ["evaluate", str(MODEL), str(demo_run), "--out", str(out)]
    rc = main([*argv, "--targets", str(path), "--no-progress"])
    line = _error_line(capsys.readouterr().err)
    assert rc == 2 and words in line, line
    assert not out.exists()


# -- restore: a NaN frame, a kill mid-way, a file-size limit -------------------------
def _float_run(root: Path, nan_pair: int) -> Path:
    """A 3-pair run whose low-dose frames are float32, one holding a NaN."""
    writer = RunWriter(root, commit_interval_s=0.01)
    writer.start(RUN_INFO)
    for k in range(3):
        pair = make_pair(k, size=64)
        assert pair.lowdose is not None
        low = pair.lowdose.astype(np.float32)
        if k == nan_pair:
            low[3, 3] = np.nan
        writer.submit(replace(pair, lowdose=low))
    writer.close()
    return writer.run_dir


def test_restore_refuses_an_output_with_nan_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, out = _float_run(tmp_path / "runs", nan_pair=1), tmp_path / "restored"
    rc = main(["restore", str(MODEL), str(run), "--out", str(out), "--no-progress"])
    line = _error_line(capsys.readouterr().err)
    assert rc == 2
    assert "pair 1: the 32x32 low-dose frame holds 1 NaN or infinite pixel(s)" in line
    assert "nothing was written" in line
    assert not out.exists()


def test_a_restore_killed_mid_way_does_not_block_the_rerun(
    run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "restored"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pairscope.offline import restore_run

        def kill(n):
            if n == 2:  # frames 0-2 written, the rest not
                os.kill(os.getpid(), signal.SIGKILL)

        restore_run({str(MODEL)!r}, {str(run_copy)!r}, {str(out)!r},
                    progress=False, on_frame=kill)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "restored.prediction.ome.tif").exists()
    rc = main(["restore", str(MODEL), str(run_copy), "--out", str(out),
               "--no-progress"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [
        "restore.json",
        "restored.jsonl",
        "restored.prediction.ome.tif",
    ]
    with tifffile.TiffFile(out / "restored.prediction.ome.tif") as tif:
        assert tif.is_ome and len(tif.pages) == 12
    assert len((out / "restored.jsonl").read_text().splitlines()) == 12


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child, before exec (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_restore_under_a_file_size_limit_is_one_line_and_leaves_nothing(
    run_copy: Path, tmp_path: Path
) -> None:
    out = tmp_path / "restored"
    proc = subprocess.run(
        [*CLI, "restore", str(MODEL), str(run_copy), "--out", str(out),
         "--no-progress"],
        preexec_fn=_file_size_limit(100_000),
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    line = _error_line(proc.stderr)
    assert proc.returncode == 2
    assert f"Cannot write the restored frames into {out}" in line
    assert "the file size limit was reached" in line
    assert not out.exists()
    assert len(pairscope.open_run(run_copy)) == 12  # the run is untouched


# -- train: a file-size limit, two trainings of one output ---------------------------
@pytest.fixture
def train_run(run_copy: Path) -> Path:
    save_calibration(run_copy, Registration(-0.7, 1.3))  # the demo rig's true shift
    return run_copy


def test_train_under_a_file_size_limit_is_one_line_and_leaves_no_partial_file(
    train_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "models" / "m.safetensors"
    proc = subprocess.run(
        [*CLI, "train", str(train_run), "--out", str(out), "--epochs", "1", *TINY],
        preexec_fn=_file_size_limit(20_000),
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = _error_line(proc.stderr)
    assert proc.returncode == 2
    assert "m.ckpt: the file size limit was reached (nothing written)" in line
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_a_second_training_of_the_same_output_is_refused_while_the_first_runs(
    train_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.safetensors"
    first = subprocess.Popen(
        [*CLI, "train", str(train_run), "--out", str(out), *TINY,
         "--epochs", "100000", "--minutes", "none"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    lock = out.with_name(out.name + ".lock")
    try:
        deadline = time.monotonic() + 120  # until its first epoch is checkpointed
        while not out.with_suffix(".ckpt").exists() and first.poll() is None:
            assert time.monotonic() < deadline, "the first training never started"
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()[1]
        rc = main(["train", str(train_run), "--out", str(out), *TINY, "--epochs",
                   "1", "--force"])  # fmt: skip
        line = _error_line(capsys.readouterr().err)
        assert rc == 2
        assert f"{out} is being written by process {first.pid}" in line
        assert "wait for it to finish or choose another output" in line
        assert not out.exists()  # the second wrote no model (the first never ends)
    finally:
        first.kill()
        first.wait(60)
    # the lock of a training that died does not block the next one
    assert main(["train", str(train_run), "--out", str(out), *TINY, "--epochs", "1",
                 "--force"]) == 0  # fmt: skip
    assert load_model(out).info.metrics["epochs"] == 1
    assert not lock.exists()
