"""Training loop: single process, or DistributedDataParallel under ``torchrun``.

The same call works in both: when ``WORLD_SIZE > 1`` the process group is
initialised (gloo on CPU, nccl on CUDA), the model is wrapped in DDP, each rank
draws its share of samples through a ``DistributedSampler``, and only rank 0
writes the checkpoint and the model file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from pairscope._files import write_atomic
from pairscope.io import Run
from pairscope.io.dataset import PairDataset
from pairscope.restore import (
    ModelInfo,
    Normalization,
    RestorationNet,
    TrainedRun,
    build_network,
    load_model,
    save_model,
)

from ._crappify import CrappifiedDataset
from ._noise_fit import NoiseModel, fit_noise_model

__all__ = ["TrainConfig", "TrainResult", "checkpoint_path", "train"]

logger = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """Training settings.  ``samples_per_epoch`` random crops make one epoch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    arch: Literal["unet", "resunet"] = "unet"
    width: int = Field(16, ge=1)
    depth: int = Field(2, ge=0)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    loss: Literal["l1", "mse"] = "l1"
    crop: int = Field(128, ge=8)
    samples_per_epoch: int = Field(256, ge=1)
    synthetic_fraction: float = Field(0.0, ge=0, le=1)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    block_size: int = Field(10, ge=1)
    val_crops_per_pair: int = Field(4, ge=1)
    seed: int = 0
    init: Path | None = None
    resume: bool = False
    num_workers: int = Field(0, ge=0)
    amp: bool = True
    device: str | None = None
    name: str | None = None
    progress: bool = True


@dataclass
class TrainResult:
    """What :func:`train` produced; ``model_path`` is ``None`` on ranks other than 0."""

    model_path: Path | None
    checkpoint_path: Path
    history: list[dict[str, float]]
    network: RestorationNet = field(repr=False)


def checkpoint_path(out: str | Path) -> Path:
    """Where :func:`train` keeps its resumable checkpoint for model file ``out``."""
    return Path(out).with_suffix(".ckpt")


def _setup_distributed(config: TrainConfig) -> tuple[int, int, torch.device, bool]:
    """``(rank, world, device, we_initialised_the_group)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and config.device in (None, "cuda")
    if world <= 1:
        dev = torch.device(config.device or ("cuda" if cuda else "cpu"))
        return 0, 1, dev, False
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    own = not dist.is_initialized()
    if own:
        dist.init_process_group("nccl" if cuda else "gloo")
    dev = torch.device(f"cuda:{local}" if cuda else "cpu")
    return dist.get_rank(), dist.get_world_size(), dev, own


def _manifest_sha256(path: Path) -> str:
    return hashlib.sha256((path / "pairs.jsonl").read_bytes()).hexdigest()


def _loss_fn(name: str) -> Any:
    return F.l1_loss if name == "l1" else F.mse_loss


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()  # noqa: NPY002 (legacy global RNG)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    key = state["numpy_key"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, state["numpy_pos"], 0, 0.0))  # noqa: NPY002
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def _build(
    config: TrainConfig, factor: int
) -> tuple[RestorationNet, dict[str, Any] | None]:
    """The network (fresh or from ``config.init``) and the init model's normalisation."""
    if config.init is None:
        net = build_network(
            config.arch, factor=factor, width=config.width, depth=config.depth
        )
        return net, None
    loaded = load_model(config.init, expect_factor=factor)
    net = loaded.network.train().requires_grad_(True)
    norm = {
        "input": loaded.info.input_norm.model_dump(),
        "target": loaded.info.target_norm.model_dump(),
    }
    if norm["input"]["mode"] != "fixed":
        raise ValueError(
            f"{config.init}: fine-tuning needs a fixed input normalisation"
        )
    return net, norm


@torch.no_grad()
def _evaluate(
    net: nn.Module, loader: DataLoader, loss_fn: Any, device: torch.device
) -> float:
    net.eval()
    total, n = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        total += float(loss_fn(net(x), y, reduction="sum")) / y[0].numel()
        n += len(x)
    net.train()
    return total / max(n, 1)


def train(
    runs: list[str | Path | Run],
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    noise: NoiseModel | None = None,
) -> TrainResult:
    """Train (or fine-tune, or resume) a restoration model on the pairs of ``runs``.

    ``out`` is the model file to write (``.safetensors``); the resumable checkpoint
    is :func:`checkpoint_path` ``(out)``.  ``noise`` is used for semi-synthetic pairs
    (``config.synthetic_fraction > 0``); it is fitted on ``runs`` if not given.
    """
    config = config or TrainConfig()
    out = Path(out)
    ckpt_path = checkpoint_path(out)
    rank, world, device, own_group = _setup_distributed(config)
    try:
        return _train(runs, out, ckpt_path, config, noise, rank, world, device)
    finally:
        if own_group:
            dist.destroy_process_group()


def _train(
    runs: list[str | Path | Run],
    out: Path,
    ckpt_path: Path,
    config: TrainConfig,
    noise: NoiseModel | None,
    rank: int,
    world: int,
    device: torch.device,
) -> TrainResult:
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)  # noqa: NPY002 (for code using the global RNG)
    if rank == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
    ckpt = None
    if config.resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    runs = [r if isinstance(r, Run) else Run(r) for r in runs]
    factor = runs[0].factor
    net, norm = _build(config, factor)
    if ckpt is not None:
        norm = ckpt["normalization"]
    split = {"val_fraction": config.val_fraction, "block_size": config.block_size}
    train_set = PairDataset(
        runs,
        crop=config.crop,
        split="train",
        seed=config.seed,
        normalization=norm,
        samples_per_epoch=config.samples_per_epoch,
        **split,
    )
    norm = train_set.normalization
    val_set = PairDataset(
        runs, crop=config.crop, augment=False, split="val", seed=config.seed,
        normalization=norm, **split,
    )  # fmt: skip
    val_set.samples_per_epoch = len(val_set.items) * config.val_crops_per_pair
    data: Dataset = train_set
    if config.synthetic_fraction > 0:
        noise = noise or fit_noise_model(runs)
        data = CrappifiedDataset(train_set, noise, fraction=config.synthetic_fraction)

    net = net.to(device)
    model: nn.Module = net
    if world > 1:
        model = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    sampler = (
        DistributedSampler(data, num_replicas=world, rank=rank, seed=config.seed)
        if world > 1
        else None
    )
    loader = DataLoader(
        data,
        batch_size=config.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
    )
    val_loader = DataLoader(val_set, batch_size=config.batch_size)
    opt = torch.optim.AdamW(
        net.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=config.epochs * len(loader)
    )
    history: list[dict[str, float]] = []
    start = 0
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start, history = int(ckpt["epoch"]), list(ckpt["history"])
        if rank == 0:
            _set_rng_state(ckpt["rng"])
        else:
            torch.manual_seed(config.seed + 1000 * rank + start)
        logger.info("resumed %s at epoch %d", ckpt_path, start)
    elif rank:
        torch.manual_seed(config.seed + 1000 * rank)  # other crops on other ranks

    amp = config.amp and device.type == "cuda"
    amp_dtype = (
        torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    loss_fn = _loss_fn(config.loss)
    model.train()
    for epoch in range(start, config.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        t0, total, seen = time.perf_counter(), 0.0, 0
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=rank != 0 or not config.progress,
            leave=False,
        )
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            total += float(loss.detach()) * len(x)
            seen += len(x)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        seconds = time.perf_counter() - t0
        stats = torch.tensor([total, seen], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(stats)
        val = _evaluate(net, val_loader, loss_fn, device)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": float(stats[0] / max(stats[1], 1)),
                "val_loss": val,
                "seconds": seconds,
                "samples_per_s": float(stats[1]) / seconds,
            }
        )
        if rank == 0:
            if config.progress:
                tqdm.write(
                    "epoch {epoch}: train {train_loss:.4f} val {val_loss:.4f} "
                    "({samples_per_s:.1f} samples/s)".format(**history[-1])
                )
            _save_checkpoint(
                ckpt_path,
                {
                    "model": net.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "normalization": norm,
                    "rng": _rng_state(),
                    "config": config.model_dump_json(),
                },
            )

    model_path = None
    if rank == 0:
        model_path = out
        _save_final(out, net, config, norm, runs, train_set, history)
    if world > 1:
        dist.barrier()
    return TrainResult(model_path, ckpt_path, history, net)


def _save_final(
    out: Path,
    net: RestorationNet,
    config: TrainConfig,
    norm: dict[str, Any],
    runs: list[Run],
    train_set: PairDataset,
    history: list[dict[str, float]],
) -> None:
    low_px, ref_px = train_set.pixel_sizes
    metrics = {"epochs": float(len(history))}
    if history:
        metrics |= {
            "val_loss": history[-1]["val_loss"],
            "train_loss": history[-1]["train_loss"],
        }
    info = ModelInfo.for_network(
        net,
        name=config.name or out.stem,
        input_norm=Normalization(**norm["input"]),
        target_norm=Normalization(**norm["target"]),
        lowdose_pixel_size_um=low_px,
        reference_pixel_size_um=ref_px,
        trained_on=tuple(
            TrainedRun(path=str(r.path), sha256=_manifest_sha256(r.path)) for r in runs
        ),
        metrics={k: v for k, v in metrics.items() if math.isfinite(v)},
    )
    save_model(out, net, info)
