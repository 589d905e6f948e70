"""The default recipe's measured choices: frame independence and the time budget."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import pairscope
from pairscope.io._import import import_pairs
from pairscope.io.calibration import Registration, save_calibration
from pairscope.io.dataset import frames_independent
from pairscope.train import TrainConfig, checkpoint_path, train
from pairscope.train._trainer import _Schedule

TINY = {"width": 4, "depth": 1, "crop": 64, "batch_size": 4, "samples_per_epoch": 8,
            "progress": False, "noise_fit": False, "lr": 3e-3}  # fmt: skip


def _import(demo_run: Path, folder: Path, *, shuffle_fields: bool) -> Path:
    """The demo timelapse as plain stacks; with ``shuffle_fields`` every frame is
    turned and shifted differently, so consecutive frames show different fields."""
    with pairscope.open_run(demo_run) as run:
        low = [run[i].lowdose for i in range(len(run))]
        ref = [run[i].reference for i in range(len(run))]
    if shuffle_fields:
        low = [np.roll(np.rot90(a, k), 13 * k, (0, 1)) for k, a in enumerate(low)]
        ref = [np.roll(np.rot90(a, k), 26 * k, (0, 1)) for k, a in enumerate(ref)]
    folder.mkdir()
    tifffile.imwrite(folder / "low.tif", np.stack(low))
    tifffile.imwrite(folder / "ref.tif", np.stack(ref))
    return import_pairs(folder / "low.tif", folder / "ref.tif", folder / "runs",
                        reference_pixel_um=0.1, binning=2, offset=100, gain=0.5,
                        progress=False)  # fmt: skip


@pytest.mark.slow  # two imports and two trainings
def test_independence_is_measured_not_assumed(demo_run: Path, tmp_path: Path) -> None:
    timelapse = _import(demo_run, tmp_path / "a", shuffle_fields=False)
    snapshots = _import(demo_run, tmp_path / "b", shuffle_fields=True)
    for path, independent in ((timelapse, False), (snapshots, True)):
        with pairscope.open_run(path) as run:
            assert frames_independent(run, range(len(run))) is independent
    # the trainer stores what it measured, and splits accordingly
    for path, independent in ((timelapse, False), (snapshots, True)):
        cfg = TrainConfig(epochs=1, block_size=2, **TINY)
        res = train([path], tmp_path / f"{independent}.safetensors", cfg)
        assert res.info is not None and res.info.training is not None
        assert res.info.training["independent_frames"] is independent
        val = res.info.validation
        assert val is not None
        # 12 pairs: pair by pair uses all 12; blocks of 2 leave a gap block out
        used = val.n_train_pairs + val.n_pairs
        assert used == 12 if independent else used < 12


def test_schedule_anneals_over_the_budget_or_the_steps() -> None:
    by_steps = _Schedule(total_steps=100, minutes=None)
    assert by_steps.factor(0) == 1.0 and by_steps.factor(100) == pytest.approx(0.0)
    assert by_steps.factor(50) == pytest.approx(0.5)
    by_steps.end_epoch(10, seconds=1e6, steps=10)
    assert by_steps.another_epoch_fits()  # no budget: always goes on
    timed = _Schedule(total_steps=10_000, minutes=1.0)
    assert timed.another_epoch_fits()
    timed.end_epoch(10, seconds=20.0, steps=10)
    assert timed.another_epoch_fits()  # 20 s of 60: another 20 s fits
    # 2 s per step extrapolated: at step 15 the budget is 30 s in, half the cosine
    assert timed.progress(15) == pytest.approx(0.5)
    timed.end_epoch(20, seconds=25.0, steps=10)
    assert not timed.another_epoch_fits()  # 45 s + 25 s > 60 s
    assert timed.progress(20) == pytest.approx(45 / 60)


class _Clock:
    """The trainer's clock, read three times an epoch (start, after the steps,
    after validation): each reading 0.5 s after the last, so every epoch takes 1 s
    whatever the CPU."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 0.5
        return self.now


def test_minutes_end_training_with_the_rate_annealed(
    demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pairscope.train import _trainer

    run = Path(shutil.copytree(demo_run, tmp_path / "run"))
    save_calibration(run, Registration(-0.7, 1.3))  # the demo rig's: not estimated
    monkeypatch.setattr(_trainer, "time", _Clock())
    cfg = TrainConfig(epochs=100_000, minutes=0.1, block_size=2, **TINY)
    res = train([run], tmp_path / "m.safetensors", cfg)
    # 1 s epochs in a 6 s budget: the sixth ends it, not the 100 000 epochs
    assert len(res.history) == 6
    ckpt = torch.load(checkpoint_path(tmp_path / "m.safetensors"), weights_only=True)
    last_lr = ckpt["scheduler"]["_last_lr"][0]
    assert last_lr < 0.2 * cfg.lr  # annealed by the clock, not by the 100 000 epochs
    assert math.isfinite(res.history[-1]["val_loss"])


def test_ms_ssim_loss_scores_structure() -> None:
    from pairscope.train._trainer import _loss_fn, _ms_ssim

    g = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 1, 128, 128, generator=g)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g)
    assert torch.allclose(_ms_ssim(clean, clean), torch.ones(2))
    assert (_ms_ssim(clean, noisy) < 0.99).all()
    assert (_ms_ssim(clean, torch.rand(clean.shape, generator=g)) < 0.2).all()
    loss = _loss_fn("l1_msssim", ssim_weight=0.84)
    pred = noisy.clone().requires_grad_(True)
    value = loss(pred, clean)
    value.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    # "sum" is per pixel as in F.l1_loss, so validation divides it back the same way
    with torch.no_grad():
        per_crop = loss(pred, clean, reduction="sum") / clean[0].numel() / len(clean)
    assert float(per_crop) == pytest.approx(float(value.detach()), rel=1e-5)
