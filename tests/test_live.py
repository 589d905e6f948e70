"""The live session: restorer faults and hot swaps never touch acquisition or data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import useq

import pairscope
from pairscope.config import AcquisitionSettings
from pairscope.live import LiveOptions, run_live
from pairscope.restore import (
    ModelInfo,
    StreamingRestorer,
    default_preview_network,
    loaded_from_network,
    save_model,
)

from ._pace import Lockstep

SEQ = useq.MDASequence(time_plan={"interval": 0, "loops": 30})


class _FailingNet(torch.nn.Module):
    """A preview network that fails on every third frame (or runs out of memory)."""

    def __init__(self, exc: type[Exception]) -> None:
        super().__init__()
        self.inner = default_preview_network(2)
        self.exc, self.calls = exc, 0
        self.arch, self.factor, self.params = "unet", 2, self.inner.params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls % 3 == 0:
            raise self.exc("simulated restorer failure")
        return self.inner(x)


def _restorer(net: torch.nn.Module, name: str) -> StreamingRestorer:
    info = ModelInfo(
        name=name, arch="unet", params=default_preview_network(2).params, factor=2
    )
    return StreamingRestorer(loaded_from_network(net, info))


def _small(core) -> None:
    for cam in ("LowDoseCam", "ReferenceCam"):
        core.setProperty(cam, "SensorSize", 128)


def _opts(tmp_path: Path, **kw) -> LiveOptions:
    return LiveOptions(out=tmp_path, headless=True, progress=False, **kw)


def test_failing_or_oom_restorer_leaves_acquisition_and_data_intact(
    demo_core, tmp_path
):
    _small(demo_core)
    for exc, shown in (
        (RuntimeError, "simulated restorer failure"),
        (torch.OutOfMemoryError, "out of memory restoring frame"),
    ):
        restorer = _restorer(_FailingNet(exc), "flaky")
        lockstep = Lockstep()  # every frame restored: the failures are certain
        summary = run_live(
            demo_core,
            AcquisitionSettings(),
            SEQ,
            options=_opts(tmp_path / exc.__name__),
            restorer=restorer,
            on_started=lockstep,
        )
        lockstep.check()
        assert summary.status == "completed" and summary.pairs == 30
        run = pairscope.open_run(summary.run_dir)
        assert len(run) == 30 and all(p.reference is not None for p in run)
        stats = restorer.stats()
        assert (stats.errors, stats.restored, stats.skipped) == (10, 20, 0)
        lines = (Path(summary.run_dir) / "preview" / "preview_stats.jsonl").read_text()
        assert shown in lines


def test_hot_swap_while_acquiring(demo_core, tmp_path: Path) -> None:
    _small(demo_core)
    first = _restorer(default_preview_network(2), "first")
    second = loaded_from_network(
        default_preview_network(2),
        ModelInfo(
            name="second",
            arch="unet",
            params=default_preview_network(2).params,
            factor=2,
        ),
    )
    names: list[str] = []

    def wire(acq, restorer) -> None:
        restorer.events.restored.connect(lambda f: names.append(f.model_name))
        acq.events.pairReady.connect(
            lambda p: restorer.swap_model(second) if p.index == 10 else None
        )

    lockstep = Lockstep(then=wire)  # frames before and after the swap restored
    summary = run_live(
        demo_core,
        AcquisitionSettings(),
        SEQ,
        options=_opts(tmp_path),
        restorer=first,
        on_started=lockstep,
    )
    lockstep.check()
    assert summary.status == "completed" and summary.pairs == 30
    assert names[0] == "first" and names[-1] == "second"
    assert names == sorted(
        names, key=["first", "second"].index
    )  # one switch, no return


def test_saved_predictions_are_marked_and_separate(demo_core, tmp_path: Path) -> None:
    _small(demo_core)
    net = default_preview_network(2)
    info = ModelInfo.for_network(
        net, name="demo-test", lowdose_pixel_size_um=0.2, reference_pixel_size_um=0.1
    )
    model = tmp_path / "m.safetensors"
    sha = save_model(model, net, info)
    lockstep = Lockstep()  # every frame restored, so every one is saved
    summary = run_live(
        demo_core,
        AcquisitionSettings(),
        SEQ,
        options=_opts(tmp_path / "runs", model=model, save_restored=True),
        on_started=lockstep,
    )
    lockstep.check()
    run_dir = Path(summary.run_dir)
    index = [
        json.loads(x) for x in (run_dir / "restored.jsonl").read_text().splitlines()
    ]
    assert len(index) == 30 and all(
        r["prediction"] and r["model_sha256"] == sha for r in index
    )
    with tifffile.TiffFile(run_dir / "restored.prediction.ome.tif") as tif:
        assert len(tif.pages) == len(index)
        assert "prediction" in tif.ome_metadata
        assert tif.pages[0].dtype == np.float32 and tif.pages[0].shape == (128, 128)
    assert len(pairscope.open_run(run_dir)) == 30  # measured data untouched


def test_model_for_another_binning_is_refused(demo_core, tmp_path: Path) -> None:
    net = default_preview_network(4)
    model = tmp_path / "x4.safetensors"
    save_model(model, net, ModelInfo.for_network(net, name="x4"))
    try:
        run_live(
            demo_core, AcquisitionSettings(), SEQ, options=_opts(tmp_path, model=model)
        )
    except ValueError as err:
        assert "restores ×4" in str(err) and "binning" in str(err)
    else:
        raise AssertionError("a x4 model was accepted for a x2 acquisition")


def test_windowed_session_runs_and_shows_all_panels(demo_core, tmp_path: Path) -> None:
    """The Qt path of the demo (offscreen): acquisition completes, panels have content."""
    from qtpy.QtWidgets import QApplication

    _small(demo_core)
    net = default_preview_network(2)
    restorer = _restorer(net, "window-test")
    shots = []

    def grab_at_end(acq, _restorer) -> None:
        acq.events.finished.connect(lambda _s: shots.append(True))

    summary = run_live(
        demo_core,
        AcquisitionSettings(),
        SEQ,
        options=LiveOptions(
            out=tmp_path, window=True, keep_window_open=False, progress=False
        ),
        restorer=restorer,
        on_started=grab_at_end,
    )
    assert summary.status == "completed" and summary.pairs == 30 and shots
    windows = [
        w
        for w in QApplication.topLevelWidgets()
        if w.windowTitle().startswith("pairscope")
    ]
    assert windows, "the preview window was never created"
    window = windows[-1]
    window.refresh()
    image = window.grab().toImage()
    assert image.width() > 100 and image.height() > 100
    assert len(pairscope.open_run(summary.run_dir)) == 30


def test_live_session_registers_the_cameras_and_stores_it(tmp_path: Path) -> None:
    from pairscope.hardware import demo_rig_path, open_rig

    with open_rig(demo_rig_path()) as rig:  # simultaneous pairs: one instant each
        for rc in rig.cores:
            rc.core.setProperty(rc.camera, "SensorSize", 256)
        summary = run_live(
            rig,
            AcquisitionSettings(mode="triggered"),
            SEQ,
            options=_opts(tmp_path, restore=False),
        )
    saved = json.loads((Path(summary.run_dir) / "calibration.json").read_text())
    reg = saved["registration"]
    # the demo's low-dose camera is offset by (+0.13, -0.07) µm = (+1.3, -0.7) px
    assert reg["shift_x_px"] == pytest.approx(1.3, abs=0.2)
    assert reg["shift_y_px"] == pytest.approx(-0.7, abs=0.2)
    assert reg["n_pairs"] == 4
