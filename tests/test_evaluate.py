"""Evaluation of the shipped demo model on freshly seeded demo specimens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import pairscope
from pairscope.evaluate import evaluate
from pairscope.live import bundled_model_path
from pairscope.restore import load_model
from pairscope.sim import ground_truth

from .conftest import acquire_demo_run


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A specimen seed the model never saw, with the two-point targets in view."""
    return acquire_demo_run(
        tmp_path_factory.mktemp("eval"), frames=3, seed=777, sensor=512
    )


def test_ground_truth_matches_what_the_cameras_saw(fresh_run: Path) -> None:
    run = pairscope.open_run(fresh_run)
    pair, record = run[0], run.records[0]
    truth = ground_truth.noise_free_reference(run.info, record)
    residual = pair.reference.astype(float) - truth
    assert abs(residual.mean()) < 0.05 * truth.std()  # unbiased: only noise is left
    second = ground_truth.independent_reference(run.info, record).astype(float)
    assert np.corrcoef(second.ravel(), pair.reference.ravel())[0, 1] > 0.95
    assert not np.array_equal(second, pair.reference)  # independent noise
    targets = ground_truth.targets_in_pixels(run.info, record, "ReferenceCam")
    assert len(targets) == 24
    for (x1, y1), _, _ in targets:  # a bead sits where the ground truth says
        r, c = round(y1), round(x1)
        assert truth[r, c] > 200 and pair.reference[r, c] > 150  # offset is 100 ADU


def test_shipped_model_beats_bicubic_on_a_fresh_specimen(
    fresh_run: Path, tmp_path
) -> None:
    path = bundled_model_path(2)
    assert path is not None and path.stat().st_size < 5_000_000
    model = load_model(path, expect_factor=2, expect_pixel_size_um=0.2)
    assert model.info.trained_on and model.info.lowdose_pixel_size_um == pytest.approx(
        0.2
    )
    report = evaluate(model, [fresh_run], tmp_path, progress=False)
    o = report["overall"]
    assert o["model"]["psnr"] >= o["bicubic"]["psnr"] + 2.0
    assert o["model"]["ssim"] > o["bicubic"]["ssim"]
    assert o["ideal"]["psnr"] > o["model"]["psnr"]  # no prediction beats the truth
    for name in (
        "evaluation.json",
        "summary.md",
        "metrics_over_time.png",
        "frc_curves.png",
        "side_by_side.png",
        "two_point.png",
    ):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert set(saved["two_point_fraction_resolved"]) >= {
        "model",
        "bicubic",
        "reference",
    }
    assert (
        "NOT better" not in (tmp_path / "summary.md").read_text().split("PSNR:")[1][:40]
    )


def test_summary_says_plainly_where_a_model_is_not_better(
    fresh_run: Path, tmp_path
) -> None:
    from pairscope.restore import (
        ModelInfo,
        default_preview_network,
        loaded_from_network,
    )

    net = default_preview_network(2)  # untrained: exactly bilinear interpolation
    model = loaded_from_network(net, ModelInfo.for_network(net, name="untrained"))
    evaluate(model, [fresh_run], tmp_path, progress=False, max_pairs=1)
    summary = (tmp_path / "summary.md").read_text()
    assert "NOT better" in summary
