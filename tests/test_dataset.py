"""The torch Dataset of pairs: aligned crops, augmentation, time-block split."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pairscope._binning import bin_sum
from pairscope.io.calibration import (
    Registration,
    registration_from_pairs,
    save_calibration,
)
from pairscope.io.dataset import PairDataset, split_blocks
from pairscope.restore import Normalization


@pytest.fixture(scope="module")
def calibrated_run(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = shutil.copytree(demo_run, tmp_path_factory.mktemp("cal") / "run")
    save_calibration(run, Registration(-0.7, 1.3))  # the demo's misregistration
    return Path(run)


def _corr(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.corrcoef(a.numpy().ravel(), b.ravel())[0, 1])


def test_crops_are_aligned_and_augmented_together(calibrated_run: Path) -> None:
    torch.manual_seed(0)
    ds = PairDataset([calibrated_run], crop=64, samples_per_epoch=40)
    assert len(ds) == 40
    corrs, shifted = [], []
    for i in range(len(ds)):
        low, ref = ds[i]
        assert low.shape == (1, 32, 32) and ref.shape == (1, 64, 64)
        assert low.dtype == ref.dtype == torch.float32
        binned = bin_sum(ref[0].numpy(), 2)
        corrs.append(_corr(low[0], binned))
        shifted.append(_corr(low[0, 1:], binned[:-1]))
    # every augmented crop (flips, rotations) stays aligned; one pixel off is worse
    assert min(corrs) > 0.5
    assert np.mean(corrs) > np.mean(shifted) + 0.1
    norm = ds.normalization
    assert Normalization(**norm["input"]).high > Normalization(**norm["input"]).low
    assert Normalization(**norm["target"]).mode == "fixed"


def test_validation_items_are_fixed(calibrated_run: Path) -> None:
    ds = PairDataset([calibrated_run], crop=64, augment=False)
    a, b = ds[3], ds[3]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="multiple of factor"):
        PairDataset([calibrated_run], crop=63)


def _assert_separated(train: list[int], val: list[int]) -> None:
    if train and val:
        gaps = np.abs(np.subtract.outer(np.asarray(train), np.asarray(val)))
        assert gaps.min() > 1  # no neighbouring trigger indices on both sides


@pytest.mark.parametrize("block_size", [1, 2, 5, 10])
def test_time_block_split_separates_neighbours(block_size: int) -> None:
    rng = np.random.default_rng(block_size)
    trig = sorted(rng.choice(200, 150, replace=False).tolist())
    parts = split_blocks(trig, block_size=block_size, val_fraction=0.2)
    assert sorted(i for p in parts.values() for i in p) == list(range(len(trig)))
    train = [trig[i] for i in parts["train"]]
    val = [trig[i] for i in parts["val"]]
    assert train and val
    assert 0.1 < len(val) / len(trig) < 0.35
    _assert_separated(train, val)


def test_dataset_split_on_run(calibrated_run: Path) -> None:
    kw = {"crop": 64, "block_size": 2, "val_fraction": 0.25}
    train = PairDataset([calibrated_run], split="train", **kw)
    val = PairDataset(
        [calibrated_run], split="val", normalization=train.normalization, **kw
    )
    t = [ti for _, ti in train.trigger_indices]
    v = [ti for _, ti in val.trigger_indices]
    assert not set(t) & set(v)
    _assert_separated(t, v)
    assert val.normalization == train.normalization
    with pytest.raises(ValueError, match="too few"):
        PairDataset([calibrated_run], split="train", block_size=10)


def test_a_run_without_calibration_is_registered_from_its_pairs(
    demo_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Unregistered pairs would teach a model an offset that every flip and turn of
    the crops moves elsewhere (a blur); the dataset estimates the registration."""
    run = Path(shutil.copytree(demo_run, tmp_path / "run"))
    (run / "calibration.json").unlink(missing_ok=True)
    ds = PairDataset([run], crop=64, augment=False)
    assert "no calibration" in caplog.text
    reg = ds.registrations[0]
    assert abs(reg.shift_y_px + 0.7) < 0.15 and abs(reg.shift_x_px - 1.3) < 0.15
    # the pairs it serves are aligned: what is left between the cameras is ~0
    left = registration_from_pairs(
        [ds.load(key) for key in ds.items[:6]], ds.factor, fit_scale=False
    )
    assert abs(left.shift_y_px) < 0.1 and abs(left.shift_x_px) < 0.1
    given = PairDataset([run], crop=64, registrations=[Registration()])
    assert given.registrations == [Registration()]
