"""Training: loss goes down, resume continues exactly, fine-tuning, torchrun/DDP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pairscope.io.calibration import Registration, save_calibration
from pairscope.restore import (
    ModelFileError,
    ModelInfo,
    build_network,
    load_model,
    save_model,
)
from pairscope.train import TrainConfig, _trainer, checkpoint_path, train

TINY = {
    "width": 8,
    "depth": 1,
    "crop": 64,
    "batch_size": 8,
    "samples_per_epoch": 32,
    "block_size": 2,
    "lr": 3e-3,
    "progress": False,
    "sequential_pairs": True,  # the demo run's pairs are of one instant only when idle
}


@pytest.fixture(scope="module")
def run(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = shutil.copytree(demo_run, tmp_path_factory.mktemp("train") / "run")
    save_calibration(path, Registration(-0.7, 1.3))
    return Path(path)


def test_training_lowers_val_loss_and_writes_model(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.safetensors"
    res = train([run], out, TrainConfig(epochs=4, **TINY))
    losses = [h["val_loss"] for h in res.history]
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    assert losses[-1] < losses[0]
    assert all(h["samples_per_s"] > 0 for h in res.history)
    model = load_model(out, expect_factor=2)
    assert model.info.metrics["val_loss"] == pytest.approx(losses[-1])
    assert model.info.trained_on[0].path == str(run)
    assert len(model.info.trained_on[0].sha256) == 64
    assert model.info.input_norm.low < model.info.input_norm.high
    assert checkpoint_path(out).is_file()

    # fine-tuning starts from the model file; a mismatched factor is refused
    tuned = train(
        [run], tmp_path / "tuned.safetensors", TrainConfig(init=out, epochs=1, **TINY)
    )
    assert tuned.history[0]["val_loss"] < losses[0]
    net4 = build_network("unet", factor=4, width=8, depth=1)
    x4 = tmp_path / "x4.safetensors"
    save_model(x4, net4, ModelInfo.for_network(net4, name="x4"))
    with pytest.raises(ModelFileError, match="binning"):
        train([run], tmp_path / "no.safetensors", TrainConfig(init=x4, **TINY))


def test_cpu_training_runs_in_bf16_where_the_cpu_has_it(
    run: Path, tmp_path: Path
) -> None:
    """The default mixed precision: convolutions in bf16 while training on a CPU
    that runs it natively (fp32 elsewhere), validation in fp32, fp32 weights kept
    and saved; it learns as ``--no-amp`` does."""
    seen: dict[bool, set[torch.dtype]] = {True: set(), False: set()}

    def record(module: torch.nn.Module, args: object, output: torch.Tensor) -> None:
        if isinstance(module, torch.nn.Conv2d):
            seen[module.training].add(output.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        mixed = train(
            [run], tmp_path / "mixed.safetensors", TrainConfig(epochs=4, **TINY)
        )
    finally:
        hook.remove()
    fp32 = train(
        [run], tmp_path / "fp32.safetensors", TrainConfig(epochs=4, amp=False, **TINY)
    )
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()  # judged apart from _trainer
    assert seen == {True: {torch.bfloat16 if native else torch.float32},
                    False: {torch.float32}}  # fmt: skip
    for res in (mixed, fp32):
        assert all(
            p.dtype == torch.float32 and p.is_contiguous()
            for p in res.network.parameters()
        )
    losses = [h["val_loss"] for h in mixed.history]
    assert losses[-1] < losses[0]
    assert losses[-1] < 1.25 * fp32.history[-1]["val_loss"]
    loaded = load_model(tmp_path / "mixed.safetensors").network.state_dict()
    trained = mixed.network.state_dict()
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)


def test_resume_continues_exactly(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrainConfig(epochs=3, **TINY)
    full = train([run], tmp_path / "full.safetensors", config)

    saves = 0
    real_save = _trainer._save_checkpoint

    def crash_after_two(path: Path, state: dict) -> None:
        nonlocal saves
        saves += 1
        if saves == 3:
            raise KeyboardInterrupt  # killed during epoch 3, after 2 checkpoints
        real_save(path, state)

    monkeypatch.setattr(_trainer, "_save_checkpoint", crash_after_two)
    out = tmp_path / "cut.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train([run], out, config)
    monkeypatch.setattr(_trainer, "_save_checkpoint", real_save)
    assert torch.load(checkpoint_path(out), weights_only=True)["epoch"] == 2

    resumed = train([run], out, config.model_copy(update={"resume": True}))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    a, b = full.network.state_dict(), resumed.network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history[-1]["val_loss"] == full.history[-1]["val_loss"]


DDP_SCRIPT = """
import hashlib, json, os, sys
from pathlib import Path
from pairscope.train import TrainConfig, train
run, tmp, cfg = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
res = train([run], tmp / "ddp.safetensors", TrainConfig(**cfg))
h = hashlib.sha256()
for k, v in sorted(res.network.state_dict().items()):
    h.update(k.encode()); h.update(v.detach().cpu().numpy().tobytes())
rank = os.environ["RANK"]
(tmp / f"rank{rank}.json").write_text(json.dumps(
    {"hash": h.hexdigest(), "model": str(res.model_path), "steps": len(res.history)}))
"""


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_agree(run: Path, tmp_path: Path) -> None:
    cfg = {**TINY, "epochs": 1, "samples_per_epoch": 16}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--standalone", "--no-python", sys.executable, "-c", DDP_SCRIPT,
           str(run), str(tmp_path), json.dumps(cfg)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["hash"] == r1["hash"]  # DDP kept the replicas identical
    assert r0["model"].endswith("ddp.safetensors") and r1["model"] == "None"
    assert load_model(tmp_path / "ddp.safetensors").info.metrics["epochs"] == 1
