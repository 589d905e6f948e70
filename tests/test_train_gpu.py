"""A short training on CUDA (skipped where no CUDA device exists)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from pairscope.io.calibration import Registration, save_calibration
from pairscope.restore import load_model
from pairscope.train import TrainConfig, train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_short_cuda_training_with_amp(demo_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(demo_run, tmp_path / "run"))
    save_calibration(run, Registration(-0.7, 1.3))
    cfg = TrainConfig(width=8, depth=2, crop=64, batch_size=8, samples_per_epoch=64,
                      epochs=3, lr=3e-3, block_size=2, device="cuda", amp=True,
                      progress=False, noise_fit=False, sequential_pairs=True)  # fmt: skip
    res = train([run], tmp_path / "m.safetensors", cfg)
    assert next(res.network.parameters()).device.type == "cuda"
    losses = [h["val_loss"] for h in res.history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[1:]) < losses[0]
    model = load_model(tmp_path / "m.safetensors")  # loads on the CPU
    assert model.info.training is not None
    assert model.info.training["device"] == "cuda"
