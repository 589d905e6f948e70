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
import pickle
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from pairscope._files import OutputLock, make_parents, remove_empty, write_atomic
from pairscope._progress import progress as progress_bar
from pairscope.errors import OutputError
from pairscope.io import Run, same_instant
from pairscope.io.calibration import Registration
from pairscope.io.dataset import (
    PairDataset,
    frames_independent,
    run_registration,
    split_blocks,
)
from pairscope.restore import (
    CameraModel,
    ModelInfo,
    NoiseFit,
    Normalization,
    PsfFit,
    RestorationNet,
    TrainedRun,
    ValidationScores,
    build_network,
    load_model,
    save_model,
)
from pairscope.rig import RigModel, rig_model_for_run

from ._config import SYNTHETIC_ONLY, TrainConfig, TrainingError
from ._crappify import CrappifiedDataset, can_simulate
from ._noise_fit import NoiseModel, fit_noise_model
from ._psf_fit import PsfModel, fit_psf

__all__ = ["TrainConfig", "TrainResult", "checkpoint_path", "train"]

# options that may differ between an interrupted training and its --resume
_RUNTIME_FIELDS = {
    "resume", "force", "progress", "num_workers", "device", "threads", "name",
    "noise_fit", "select",
}  # fmt: skip

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` produced; ``model_path`` is ``None`` on ranks other than 0."""

    model_path: Path | None
    checkpoint_path: Path
    history: list[dict[str, float]]
    network: RestorationNet = field(repr=False)
    info: ModelInfo | None = None


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


#: Weights of the five MS-SSIM scales (Wang et al. 2003), truncated to fit a crop.
_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_SSIM_WINDOW, _SSIM_SIGMA = 11, 1.5


def _ms_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample MS-SSIM of normalised crops (data range 1, Gaussian window 11/1.5;
    as many scales as the crop holds, up to 5)."""
    x, y = pred.float(), target.float()
    g = torch.exp(
        -0.5
        * (
            (torch.arange(_SSIM_WINDOW, device=x.device) - _SSIM_WINDOW // 2)
            / _SSIM_SIGMA
        )
        ** 2
    )
    g = g / g.sum()
    win = (g[:, None] * g[None, :])[None, None]
    levels = max(1, min(5, int(math.log2(min(x.shape[-2:]) / _SSIM_WINDOW)) + 1))
    w = torch.tensor(_MS_SSIM_WEIGHTS[:levels], device=x.device)
    w = w / w.sum()
    c1, c2 = 0.01**2, 0.03**2
    factors = []
    for level in range(levels):
        mx, my = F.conv2d(x, win), F.conv2d(y, win)
        sxx = F.conv2d(x * x, win) - mx * mx
        syy = F.conv2d(y * y, win) - my * my
        sxy = F.conv2d(x * y, win) - mx * my
        cs = (2 * sxy + c2) / (sxx + syy + c2)
        if level == levels - 1:
            lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
            factors.append((lum * cs).mean((1, 2, 3)))
        else:
            factors.append(cs.mean((1, 2, 3)))
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stacked = torch.stack(factors, 1).clamp_min(1e-6)  # negative: no structure
    return torch.prod(stacked**w, 1)


def _loss_fn(name: str, fft_weight: float = 0.05, ssim_weight: float = 0.84) -> Any:
    """The training loss.  ``l1_fft`` adds the L1 distance of the 2-D spectra;
    ``l1_msssim`` mixes L1 with 1 - MS-SSIM (Zhao et al. 2017)."""
    if name == "mse":
        return F.mse_loss
    if name == "l1":
        return F.l1_loss

    def l1_fft(
        pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        diff = torch.fft.rfft2(pred.float() - target.float(), norm="ortho").abs()
        l1 = F.l1_loss(pred, target, reduction=reduction)
        if reduction == "sum":
            return l1 + fft_weight * diff.sum() * (pred.numel() / diff.numel())
        return l1 + fft_weight * diff.mean()

    def l1_msssim(
        pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        per_sample = (1 - ssim_weight) * (pred - target).abs().float().mean(
            (1, 2, 3)
        ) + ssim_weight * (1 - _ms_ssim(pred, target))
        if reduction == "sum":  # per-pixel units, as F.l1_loss(reduction="sum")
            return per_sample.sum() * target[0].numel()
        return per_sample.mean()

    return l1_fft if name == "l1_fft" else l1_msssim


def _rng_state() -> dict[str, Any]:
    # legacy=True (the default) gives the tuple; numpy's stubs say a dict
    np_state = cast(
        tuple[Any, ...],
        np.random.get_state(),  # noqa: NPY002 (legacy global RNG)
    )
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


_CKPT_KEYS = {
    "model": dict,
    "optimizer": dict,
    "scheduler": dict,
    "budget": dict,
    "epoch": int,
    "history": list,
    "normalization": dict,
    "rng": dict,
    "config": str,
    "factor": int,
}
_START_OVER = "drop --resume and pass --force to start over"


def _check_outputs(out: Path, ckpt: Path, config: TrainConfig) -> None:
    """Refuse to overwrite a model or an interrupted training unless told to."""
    if config.resume and not ckpt.is_file():
        raise TrainingError(
            f"--resume: there is no checkpoint {ckpt} to continue (it is written "
            "after each epoch); drop --resume to start a new training"
        )
    if out.exists() and not config.force:
        raise TrainingError(
            f"{out} exists: pass --force to overwrite it, or choose another --out"
        )
    if ckpt.exists() and not (config.resume or config.force):
        raise TrainingError(
            f"{ckpt} holds an interrupted training of {out}: pass --resume to "
            "continue it, or --force to start over"
        )


def _load_checkpoint(path: Path, config: TrainConfig, factor: int) -> dict[str, Any]:
    """A checkpoint of this very training, checked; never unpickles objects."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TrainingError(f"{path}: cannot read the checkpoint ({e})") from None
    if data[:1] == b"\x80":  # a bare pickle stream: torch.save writes a zip
        raise TrainingError(
            f"{path}: a pickle file, which pairscope never unpickles (not a "
            f"checkpoint written by pairscope train); {_START_OVER}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise TrainingError(
            f"{path}: holds Python objects that pairscope never unpickles (not a "
            f"checkpoint written by pairscope train); {_START_OVER}"
        ) from None
    except Exception as e:  # torch raises RuntimeError, EOFError, ... when cut
        first = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
        raise TrainingError(
            f"{path}: truncated or corrupt checkpoint ({first}); {_START_OVER}"
        ) from None
    bad = [
        k
        for k, kind in _CKPT_KEYS.items()
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get(k), kind)
    ]
    if bad:
        raise TrainingError(
            f"{path}: not a checkpoint of pairscope train (missing or mistyped "
            f"{', '.join(bad[:4])}); {_START_OVER}"
        )
    try:
        stored = TrainConfig.model_validate_json(ckpt["config"])
    except ValidationError:
        raise TrainingError(
            f"{path}: its training configuration is unreadable; {_START_OVER}"
        ) from None
    differ = [
        f"{k}={getattr(stored, k)!r} (now {getattr(config, k)!r})"
        for k in type(config).model_fields
        if k not in _RUNTIME_FIELDS | {"width", "use"}
        and getattr(stored, k) != getattr(config, k)
    ]
    if stored.network_width != config.network_width:  # --width or --use, same net
        differ.insert(0, f"width={stored.network_width} (now {config.network_width})")
    if ckpt["factor"] != factor:
        differ.insert(0, f"factor={ckpt['factor']} (these runs: {factor})")
    if differ:
        raise TrainingError(
            f"{path}: the checkpoint was written for another training "
            f"({'; '.join(differ[:3])}): resume with the same runs and options, "
            f"or {_START_OVER}"
        )
    return ckpt


class _Schedule:
    """Cosine learning-rate decay over whichever ends first: ``total_steps`` or the
    wall-clock budget.

    Time is measured at epoch ends only (reduced over ranks, so every rank computes
    the same rate); within an epoch the time progress is extrapolated from the last
    epoch's seconds per step.  An epoch starts only if the last one's duration
    still fits in the budget.
    """

    def __init__(self, total_steps: int, minutes: float | None) -> None:
        self.total_steps = max(total_steps, 1)
        self.budget_s = None if minutes is None else 60.0 * minutes
        self.elapsed_s = 0.0  # training time at the last epoch end
        self.epoch_start_step = 0
        self.s_per_step = 0.0
        self.last_epoch_s = 0.0

    def progress(self, step: int) -> float:
        p = step / self.total_steps
        if self.budget_s:
            t = self.elapsed_s + (step - self.epoch_start_step) * self.s_per_step
            p = max(p, t / self.budget_s)
        return min(p, 1.0)

    def factor(self, step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * self.progress(step)))

    def end_epoch(self, step: int, seconds: float, steps: int) -> None:
        """Account an epoch of ``seconds`` that ended at ``step``."""
        self.elapsed_s += seconds
        self.epoch_start_step = step
        self.s_per_step = seconds / max(steps, 1)
        self.last_epoch_s = seconds

    def another_epoch_fits(self) -> bool:
        """Whether an epoch as long as the last one ends within the budget."""
        if self.budget_s is None:
            return True
        return self.elapsed_s + self.last_epoch_s <= self.budget_s

    def state_dict(self) -> dict[str, float]:
        return {
            "elapsed_s": self.elapsed_s,
            "epoch_start_step": float(self.epoch_start_step),
            "s_per_step": self.s_per_step,
            "last_epoch_s": self.last_epoch_s,
        }

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.elapsed_s = float(state["elapsed_s"])
        self.epoch_start_step = int(state["epoch_start_step"])
        self.s_per_step = float(state["s_per_step"])
        self.last_epoch_s = float(state["last_epoch_s"])


def _resolve_independence(runs: list[Run], config: TrainConfig) -> TrainConfig:
    """``independent_frames`` measured where not given (stored as measured)."""
    if config.independent_frames is not None:
        return config
    independent = all(frames_independent(r, _usable(r, config)) for r in runs)
    logger.info(
        "frames are %s: split %s",
        "independent snapshots" if independent else "time-correlated",
        "pair by pair" if independent else f"in blocks of {config.block_size}",
    )
    return config.replace(independent_frames=independent)


def _same_instant(record: dict[str, Any], config: TrainConfig) -> bool:
    """A pair to train on: both frames, taken together (unless allowed otherwise)."""
    complete = bool(record.get("lowdose") and record.get("reference"))
    return complete and (config.sequential_pairs or same_instant(record))


def _usable(run: Run, config: TrainConfig) -> list[int]:
    """Records to train on (see :func:`_same_instant`)."""
    return [i for i, r in enumerate(run.records) if _same_instant(r, config)]


def _split(runs: list[Run], config: TrainConfig) -> dict[str, list[tuple[int, int]]]:
    """Training and validation pairs ``(run number, record)``, split over the usable
    pairs only, or a message naming the option that helps."""
    out: dict[str, list[tuple[int, int]]] = {"train": [], "val": []}
    for ri, run in enumerate(runs):
        idx = _usable(run, config)
        if len(idx) < 2:
            skipped = sum(1 for r in run.records if r.get("simultaneous") is False)
            hint = (
                f" ({skipped} pairs were not taken at the same instant: pass "
                "--sequential-pairs if the specimen is still between the exposures)"
                if skipped and not config.sequential_pairs
                else ""
            )
            raise TrainingError(
                f"{run.path}: {len(idx)} pair(s) to train on; training needs at "
                f"least 2 (one to train on, one to validate): acquire more pairs{hint}"
            )
        trig = [int(run.records[i]["trigger_index"]) for i in idx]
        try:
            parts = split_blocks(trig, **config.split)
        except ValueError:
            hint = (
                "acquire more pairs or lower --val-fraction"
                if config.independent_frames
                else "pass --independent-frames if the frames are independent "
                "snapshots, or a smaller --block-size / --gap-blocks 0, or "
                "acquire more pairs"
            )
            raise TrainingError(
                f"{run.path}: {len(idx)} pairs are too few for a training / gap / "
                f"validation split in blocks of {config.split['block_size']} "
                f"triggers: {hint}"
            ) from None
        for part in ("train", "val"):
            out[part] += [(ri, idx[p]) for p in parts[part]]
    return out


def _datasets(
    runs: list[Run],
    config: TrainConfig,
    norm: dict[str, Any] | None,
    registrations: list[Registration | None],
) -> tuple[PairDataset, PairDataset]:
    """Training and validation sets on :func:`_split`; the normalisation (unless
    given) from the training pairs' percentiles only."""
    split = _split(runs, config)
    kw: dict[str, Any] = {
        "crop": config.crop,
        "seed": config.seed,
        "registrations": registrations,
    }
    if norm is None:
        unit = {"mode": "fixed", "low": 0.0, "high": 1.0}
        probe = PairDataset(runs, normalization={"input": unit, "target": unit}, **kw)
        step = max(1, math.ceil(len(split["train"]) / 64))
        lows, refs = [], []
        for key in split["train"][::step]:
            low, ref = probe.load(key)
            lows.append(low.ravel())
            refs.append(ref[:: probe.factor, :: probe.factor].ravel())
        norm = {
            "input": Normalization.from_data(np.concatenate(lows)).model_dump(),
            "target": Normalization.from_data(np.concatenate(refs)).model_dump(),
        }
    train_set = PairDataset(
        runs, normalization=norm, samples_per_epoch=config.samples_per_epoch, **kw
    )
    val_set = PairDataset(runs, normalization=norm, augment=False, **kw)
    train_set.items, val_set.items = split["train"], split["val"]
    val_set.samples_per_epoch = len(val_set.items) * config.val_crops_per_pair
    return train_set, val_set


def _build(
    config: TrainConfig, factor: int
) -> tuple[RestorationNet, dict[str, Any] | None]:
    """The network (fresh or from ``config.init``) and the init model's normalisation."""
    if config.init is None:
        net = build_network(
            config.arch, factor=factor, width=config.network_width, depth=config.depth
        )
        return net, None
    loaded = load_model(config.init, expect_factor=factor)
    net = loaded.network.train().requires_grad_(True)
    norm = {
        "input": loaded.info.input_norm.model_dump(),
        "target": loaded.info.target_norm.model_dump(),
    }
    if norm["input"]["mode"] != "fixed":
        raise TrainingError(
            f"{config.init}: fine-tuning needs a fixed input normalisation"
        )
    return net, norm


def _mixed_precision(device: torch.device) -> torch.dtype | None:
    """The autocast dtype that speeds training on ``device``, or None for fp32.

    CUDA: bf16 where the GPU has it, else fp16 (with loss scaling).  CPU: bf16 where
    oneDNN runs it natively (AVX-512 and newer; 1.55x the samples/s of fp32 on a
    2-core AVX-512 CPU, ``scripts/bench_training.py``); elsewhere a CPU emulates
    bf16 more slowly than fp32, so training stays fp32.  Weights, the loss and
    validation stay fp32 either way.
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and _cpu_runs_bf16():
        return torch.bfloat16
    return None


def _cpu_runs_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (torch's check is private: a torch
    without it trains in fp32 rather than failing)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _with_memory_format(
    net: RestorationNet, memory_format: torch.memory_format
) -> RestorationNet:
    """``net.to(memory_format=...)``, which torch's type stubs do not declare."""
    return cast(Any, net).to(memory_format=memory_format)


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


def _affine_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-crop MSE after the least-squares affine fit of ``pred`` to ``target``."""
    p = pred.flatten(1).double()
    t = target.flatten(1).double()
    pc, tc = p - p.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    a = (pc * tc).sum(1, keepdim=True) / (pc * pc).sum(1, keepdim=True).clamp_min(1e-12)
    return ((a * pc - tc) ** 2).mean(1)


@torch.no_grad()
def _val_psnr(
    net: RestorationNet, loader: DataLoader, device: torch.device
) -> tuple[float, float]:
    """PSNR (dB) of the network and of bicubic on the validation crops.

    Both are fitted affinely to the target (as PSSR and CAREamics score) and use
    the target normalisation's range (percentiles 1 .. 99.8) as data range 1.
    """
    net.eval()
    model_se, bicubic_se = [], []
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        model_se.append(_affine_mse(net(x), y))
        up = F.interpolate(
            x, scale_factor=net.factor, mode="bicubic", align_corners=False
        )
        bicubic_se.append(_affine_mse(up, y))
    net.train()

    def psnr(se: list[torch.Tensor]) -> float:
        return float(-10 * torch.log10(torch.cat(se).mean().clamp_min(1e-12)))

    return psnr(model_se), psnr(bicubic_se)


def _rig_model(run: Run) -> RigModel:
    """The rig model of the (first) training run: recorded in the model file."""
    try:
        return rig_model_for_run(run)
    except ValueError as exc:
        raise TrainingError(f"{run.path}: {exc}") from None


def _camera(rig: RigModel, role: str) -> CameraModel | None:
    """The camera's offset / e-/ADU / read noise from the rig model's photometry
    (None where unknown), never from the device's ``Gain`` property."""
    if not rig.camera(role).label:
        return None
    return CameraModel.from_rig(rig, role)


def _noise_fit(model: NoiseModel | None) -> NoiseFit | None:
    if model is None:
        return None

    def finite(v: float) -> float | None:
        return float(v) if math.isfinite(v) else None

    core = (model.gain_e_per_adu, model.offset_adu, model.read_noise_e)
    if not all(math.isfinite(v) for v in core):
        return None
    return NoiseFit(
        gain_e_per_adu=model.gain_e_per_adu,
        offset_adu=model.offset_adu,
        read_noise_e=model.read_noise_e,
        n_points=model.n_points,
        dose_ratio=finite(model.dose_ratio),
        reference_gain_e_per_adu=finite(model.reference_gain_e_per_adu),
        reference_offset_adu=finite(model.reference_offset_adu),
    )


def _fit_noise(
    runs: list[Run],
    config: TrainConfig,
    noise: NoiseModel | None,
    synthetic_asked: bool,
    registrations: list[Registration | None],
) -> tuple[NoiseModel | None, TrainConfig]:
    """The camera noise model (fitted unless given) and the configuration to train
    with: synthetic crops need a model that can simulate the low-dose camera; where
    there is none they are refused if asked for, else left out (and so recorded)."""
    problem = None
    if noise is None:
        try:
            noise = fit_noise_model(runs, max_pairs=16, registrations=registrations)
        except (ValueError, KeyError, np.linalg.LinAlgError) as e:
            problem = str(e)
    if noise is not None and config.synthetic_fraction > 0 and not can_simulate(noise):
        problem = "it found no dose ratio or reference gain/offset"
    if problem is None:
        return noise, config
    if config.synthetic_fraction > 0 and synthetic_asked:
        raise TrainingError(
            f"synthetic crops need the camera noise fit, which failed ({problem}); "
            "set --synthetic-fraction 0"
        )
    if config.synthetic_fraction > 0:
        logger.warning(
            "camera noise fit failed (%s): training on the measured pairs only, "
            "without synthetic crops",
            problem,
        )
        config = config.replace(
            synthetic_fraction=0.0, **dict.fromkeys(SYNTHETIC_ONLY, 0.0)
        )
    else:
        logger.warning("camera noise fit failed, not stored in the model: %s", problem)
    return noise, config


def _measure_psf(
    runs: list[Run], config: TrainConfig, noise: NoiseModel | None, asked: bool
) -> tuple[PsfModel | None, TrainConfig]:
    """The PSF measured on the references, where point emitters or textured objects
    are to be added; where it cannot be measured they are refused if asked for,
    else left out."""
    if not config.uses_psf:
        return None, config
    offset = None if noise is None else noise.reference_offset_adu
    try:
        psf = fit_psf(runs, offset_adu=offset)
        if config.psf_sigma is not None:  # the optics' width, the spots' brightness
            psf = replace(psf, sigma_px=config.psf_sigma)
        return psf, config
    except (ValueError, KeyError) as e:
        problem = str(e)
    if asked:
        raise TrainingError(
            "point emitters and textured objects need the PSF, which could not be "
            f"measured ({problem}); set --point-emitters 0 --textured-objects 0"
        )
    logger.warning(
        "PSF not measured (%s): training without point emitters or textured objects",
        problem,
    )
    return None, config.replace(point_emitters=0.0, textured_objects=0.0)


def train(
    runs: list[str | Path | Run],
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    noise: NoiseModel | None = None,
) -> TrainResult:
    """Train (or fine-tune, or resume) a restoration model on the pairs of ``runs``.

    ``out`` is the model file to write (``.safetensors``); the resumable checkpoint
    is :func:`checkpoint_path` ``(out)``.  Neither is overwritten unless
    ``config.force`` (or ``config.resume`` for the checkpoint), and while one
    training holds ``out`` (``out.lock``) another of the same ``out`` is refused
    (:class:`~pairscope.errors.OutputError`).  ``noise`` is the
    camera noise model (for synthetic crops and the model file); it is fitted on
    ``runs`` if not given and ``config.noise_fit`` or synthetic crops ask for it.
    """
    config = config or TrainConfig()
    out = Path(out)
    ckpt_path = checkpoint_path(out)
    _check_outputs(out, ckpt_path, config)
    # one training per output: a second one at the same time is refused, not
    # allowed to replace the first's model (rank 0 writes; torchrun sets RANK)
    writer = os.environ.get("RANK", "0") == "0"
    made = make_parents(out) if writer else []
    try:
        with OutputLock(out, what="pairscope train") if writer else nullcontext():
            _check_outputs(out, ckpt_path, config)  # as the lock found them
            return _train_locked(out, ckpt_path, runs, config, noise)
    except BaseException:
        remove_empty(made)
        raise


def _train_locked(
    out: Path,
    ckpt_path: Path,
    runs: list[str | Path | Run],
    config: TrainConfig,
    noise: NoiseModel | None,
) -> TrainResult:
    if config.threads:
        torch.set_num_threads(config.threads)
    # asked for (an option, a configuration file), not the default
    asked = config.model_fields_set
    synthetic_asked = "synthetic_fraction" in asked
    psf_asked = (
        bool({"point_emitters", "textured_objects"} & asked)
        or config.psf_sigma is not None
    )
    rank, world, device, own_group = _setup_distributed(config)
    try:
        return _train(
            runs, out, ckpt_path, config, noise, synthetic_asked, psf_asked,
            rank, world, device,
        )  # fmt: skip
    except OutputError as exc:  # a full disk, a file-size limit: the work is kept
        if not ckpt_path.is_file():
            raise
        raise OutputError(
            f"{exc} The checkpoint {ckpt_path} keeps the last finished epoch: once "
            "there is room, rerun the same command with --resume to finish",
            errno=exc.errno,
        ) from exc
    finally:
        if own_group:
            dist.destroy_process_group()


def _train(
    given: list[str | Path | Run],
    out: Path,
    ckpt_path: Path,
    config: TrainConfig,
    noise: NoiseModel | None,
    synthetic_asked: bool,
    psf_asked: bool,
    rank: int,
    world: int,
    device: torch.device,
) -> TrainResult:
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)  # noqa: NPY002 (for code using the global RNG)
    runs = [r if isinstance(r, Run) else Run(r) for r in given]
    if not runs:
        raise TrainingError("no runs given: pass at least one run folder")
    factor = runs[0].factor
    rig = _rig_model(runs[0])  # a damaged rig model: refused before training
    config = _resolve_independence(runs, config)
    _split(runs, config)  # too few pairs: refused before anything is built
    # the cameras' registration, stored or estimated once per run
    registrations = [run_registration(r) for r in runs]
    if noise is not None or config.synthetic_fraction > 0 or config.noise_fit:
        noise, config = _fit_noise(runs, config, noise, synthetic_asked, registrations)
    psf, config = _measure_psf(runs, config, noise, psf_asked)
    ckpt = _load_checkpoint(ckpt_path, config, factor) if config.resume else None
    net, norm = _build(config, factor)
    if ckpt is not None:
        norm = ckpt["normalization"]
    if rank == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
    train_set, val_set = _datasets(runs, config, norm, registrations)
    norm = train_set.normalization
    low, _ = train_set.load(train_set.items[0])
    if min(low.shape) * factor < config.crop:
        raise TrainingError(
            f"--crop {config.crop} does not fit frames of "
            f"{low.shape[0] * factor}x{low.shape[1] * factor} reference pixels: "
            "pass a smaller --crop"
        )
    data: Dataset = train_set
    if config.synthetic_fraction > 0:
        assert noise is not None
        data = CrappifiedDataset(
            train_set,
            noise,
            fraction=config.synthetic_fraction,
            dose_jitter=config.dose_jitter,
            specimen_mix=config.specimen_mix,
            point_emitters=config.point_emitters,
            textured_objects=config.textured_objects,
            psf=psf,
        )

    # channels-last activations: oneDNN's and cuDNN's fast convolution layout
    net = _with_memory_format(net.to(device), torch.channels_last)
    model: nn.Module = net
    if world > 1:
        model = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    sampler: DistributedSampler[Any] | None = (
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
    schedule = _Schedule(config.epochs * len(loader), config.minutes)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule.factor)
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"epoch": 0, "val_loss": math.inf, "model": None}
    start = 0
    if ckpt is not None:
        try:
            net.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            schedule.load_state_dict(ckpt["budget"])
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).splitlines()[0][:100]
            raise TrainingError(
                f"{ckpt_path}: its weights do not fit this network ({first}); "
                f"{_START_OVER}"
            ) from None
        start, history = int(ckpt["epoch"]), list(ckpt["history"])
        best = dict(ckpt.get("best") or best)
        if rank == 0:
            _set_rng_state(ckpt["rng"])
        else:
            torch.manual_seed(config.seed + 1000 * rank + start)
        logger.info("resumed %s at epoch %d", ckpt_path, start)
    elif rank:
        torch.manual_seed(config.seed + 1000 * rank)  # other crops on other ranks

    amp_dtype = _mixed_precision(device) if config.amp else None
    amp = amp_dtype is not None
    if rank == 0:
        precision = (
            "fp32" if amp_dtype is None else f"mixed {amp_dtype}".replace("torch.", "")
        )
        logger.info(
            "training a %s of width %d, depth %d (%s) on %s in %s",
            type(net).__name__,
            net.width,
            net.depth,
            f"from {config.init.name}" if config.init else f"for {config.use}",
            device,
            precision,
        )
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    loss_fn = _loss_fn(config.loss, config.fft_weight, config.ssim_weight)
    model.train()
    for epoch in range(start, config.epochs):
        if not schedule.another_epoch_fits():
            if rank == 0 and config.progress:
                tqdm.write(
                    f"stopped after epoch {epoch} of {config.epochs}: the "
                    f"--minutes {config.minutes:g} budget is spent"
                )
            break
        if sampler is not None:
            sampler.set_epoch(epoch)
        t0, total, seen = time.perf_counter(), 0.0, 0
        bar = progress_bar(
            loader,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=rank != 0 or not config.progress,
            leave=False,
        )
        for x, y in bar:
            x = x.to(device, non_blocking=True, memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
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
        train_loss = float(stats[0] / cast("torch.Tensor | int", max(stats[1], 1)))
        if not math.isfinite(train_loss):
            raise TrainingError(
                f"training diverged (loss {train_loss} in epoch {epoch + 1}); the "
                f"checkpoint {ckpt_path} keeps the last good epoch: pass a smaller "
                "--lr and --force"
            )
        val = _evaluate(net, val_loader, loss_fn, device)
        spent = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(spent, op=dist.ReduceOp.MAX)
        schedule.end_epoch((epoch + 1) * len(loader), float(spent), len(loader))
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_loss": val,
                "seconds": seconds,
                "samples_per_s": float(stats[1]) / seconds,
            }
        )
        if val < best["val_loss"]:
            best = {
                "epoch": epoch + 1,
                "val_loss": val,
                "model": {
                    k: v.detach().cpu().clone() for k, v in net.state_dict().items()
                },
            }
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
                    "budget": schedule.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "best": best,
                    "normalization": norm,
                    "rng": _rng_state(),
                    "config": config.model_dump_json(),
                    "factor": factor,
                },
            )

    if config.select == "best" and best["model"] is not None:
        net.load_state_dict(best["model"])
    _with_memory_format(net, torch.contiguous_format)
    model_path, info = None, None
    if rank == 0:
        model_path = out
        info = _save_final(
            out, net, config, norm, runs, train_set, val_set, val_loader, history,
            best, noise, psf, device, rig,
        )  # fmt: skip
    if world > 1:
        dist.barrier()
    return TrainResult(model_path, ckpt_path, history, net, info)


def _save_final(
    out: Path,
    net: RestorationNet,
    config: TrainConfig,
    norm: dict[str, Any],
    runs: list[Run],
    train_set: PairDataset,
    val_set: PairDataset,
    val_loader: DataLoader,
    history: list[dict[str, float]],
    best: dict[str, Any],
    noise: NoiseModel | None,
    psf: PsfModel | None,
    device: torch.device,
    rig: RigModel,
) -> ModelInfo:
    low_px, ref_px = train_set.pixel_sizes
    chosen = (
        history[best["epoch"] - 1]
        if config.select == "best" and best["epoch"]
        else history[-1]
        if history
        else None
    )
    metrics = {"epochs": float(len(history))}
    validation = None
    if chosen is not None:
        metrics |= {"val_loss": chosen["val_loss"], "train_loss": chosen["train_loss"]}
        psnr, bicubic = _val_psnr(net, val_loader, device)
        validation = ValidationScores(
            epoch=int(chosen["epoch"]),
            selected=config.select,
            val_loss=chosen["val_loss"],
            psnr_db=psnr if math.isfinite(psnr) else None,
            bicubic_psnr_db=bicubic if math.isfinite(bicubic) else None,
            n_pairs=len(val_set.items),
            n_train_pairs=len(train_set.items),
        )
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
        lowdose_camera=_camera(rig, "lowdose"),
        reference_camera=_camera(rig, "reference"),
        noise_fit=_noise_fit(noise),
        psf_fit=None
        if psf is None
        else PsfFit(
            sigma_px=psf.sigma_px,
            n_spots=psf.n_spots,
            peak_adu=psf.peak_adu,
            sigma_given=config.psf_sigma is not None,
        ),
        training=config.model_dump(mode="json"),
        validation=validation,
        history=tuple(history),
        rig_model=rig,
    )
    save_model(out, net, info)
    return info
