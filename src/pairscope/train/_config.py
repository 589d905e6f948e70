"""The training configuration: one versioned pydantic model.

The ``pairscope train`` options are generated from its fields (names, types,
defaults and descriptions), and every model file stores its JSON form, so a model
can be retrained exactly as it was made (``TrainConfig.from_model_info``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pairscope.config import file_problem, load_mapping
from pairscope.errors import PairscopeError, SettingsError

__all__ = [
    "SYNTHETIC_ONLY",
    "TRAIN_CONFIG_VERSION",
    "USE_WIDTH",
    "TrainConfig",
    "TrainingError",
]

TRAIN_CONFIG_VERSION: Final = 1
#: options that act on synthetic crops only (off where synthetic_fraction is 0)
SYNTHETIC_ONLY: Final = (
    "dose_jitter",
    "specimen_mix",
    "point_emitters",
    "textured_objects",
)

#: the network width each use implies (``TrainConfig.use``): the live preview's
#: rate on a CPU, or more capacity where no frame rate binds (docs/benchmarks.md)
USE_WIDTH: Final = {"preview": 16, "offline": 24}


class TrainingError(PairscopeError, ValueError):
    """Training cannot start or continue as asked; the message names the fix."""


class TrainConfig(BaseModel):
    """Training settings.  ``samples_per_epoch`` random crops make one epoch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = Field(
        TRAIN_CONFIG_VERSION, description="version of this configuration schema"
    )
    arch: Literal["unet", "resunet"] = Field(
        "unet", description="network: CARE-style U-Net or PSSR-style ResUNet"
    )
    use: Literal["preview", "offline"] = Field(
        "preview",
        description="what the model is for, which sets its capacity: preview (the "
        "live restoration, bound by a CPU's frames/s: width 16) or offline (restore, "
        "evaluate and fine-tune after the run: width 24, more compute per frame, "
        "higher PSNR on specimens it never saw); --width overrides it, and with "
        "--init the initial model's network is kept",
    )
    width: int | None = Field(
        None,
        ge=1,
        le=512,
        description="channels at the first level (none: by --use, 16 for preview, "
        "24 for offline)",
    )
    depth: int = Field(2, ge=0, le=6, description="number of 2x downsampling steps")
    epochs: int = Field(
        500,
        ge=1,
        description="training epochs at most (on a CPU --minutes usually ends "
        "training first)",
    )
    minutes: float | None = Field(
        14.0,
        gt=0,
        description="wall-clock training budget: the learning rate anneals over "
        "whichever of --epochs and --minutes ends first, and no epoch starts that "
        "would end past it; none: all --epochs",
    )
    batch_size: int = Field(8, ge=1, description="crops per optimisation step")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate (cosine decay)")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    loss: Literal["l1", "mse", "l1_fft", "l1_msssim"] = Field(
        "l1",
        description="l1, mse, l1_fft (L1 plus fft_weight x the L1 distance of the "
        "spectra: keeps high frequencies and dips), or l1_msssim ((1 - ssim_weight) "
        "x L1 + ssim_weight x (1 - MS-SSIM))",
    )
    fft_weight: float = Field(
        0.05, ge=0, description="weight of the frequency term of loss l1_fft"
    )
    ssim_weight: float = Field(
        0.84, ge=0, le=1, description="weight of the MS-SSIM term of loss l1_msssim"
    )
    crop: int = Field(128, ge=8, description="training crop, reference pixels")
    samples_per_epoch: int = Field(512, ge=1, description="random crops per epoch")
    synthetic_fraction: float = Field(
        0.3,
        ge=0,
        le=1,
        description="fraction of low-dose crops simulated from the reference "
        "through the fitted camera noise model",
    )
    dose_jitter: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="photon-level augmentation of synthetic crops: the specimen's "
        "brightness scaled by [1 - j, 1 + j] in both frames, shot noise simulated "
        "at the fitted dose ratio",
    )
    specimen_mix: float = Field(
        0.0,
        ge=0,
        le=1,
        description="fraction of synthetic crops whose specimen is the sum of two "
        "reference crops (fluorescence adds, so the sum is a denser specimen the "
        "camera could have seen), the low-dose crop simulated from the sum",
    )
    point_emitters: float = Field(
        1.0,
        ge=0,
        le=1,
        description="fraction of synthetic crops to which point emitters are added, "
        "rendered through the PSF measured on the references' isolated spots (the "
        "low-dose crop simulated from the sum): teaches the optics, not a specimen",
    )
    textured_objects: float = Field(
        0.25,
        ge=0,
        le=1,
        description="fraction of synthetic crops to which extended, textured objects "
        "are added (cell-like masks filled with power-law texture, through the "
        "measured PSF; the low-dose crop simulated from the sum): the nuclei and "
        "cytoplasm the references may lack",
    )
    psf_sigma: float | None = Field(
        None,
        gt=0,
        description="the PSF's Gaussian sigma in reference pixels, where the optics "
        "give it (about 0.21 x wavelength / NA / pixel size); none: measured on the "
        "references' isolated spots",
    )
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="fraction of the pairs held out for validation"
    )
    block_size: int = Field(
        10,
        ge=1,
        description="consecutive triggers kept together by the train/validation "
        "split (time-correlated frames); 1 splits pair by pair",
    )
    gap_blocks: int = Field(
        1, ge=0, description="blocks left out between training and validation"
    )
    independent_frames: bool | None = Field(
        None,
        description="frames are independent snapshots: split pair by pair with no "
        "gap (all data used), overriding block_size and gap_blocks; none: measured "
        "(consecutive reference frames that share no structure are independent)",
    )
    sequential_pairs: bool = Field(
        False,
        description="also train on pairs whose two frames were not taken at the same "
        "instant (sequential mode); only for a specimen that is still between them",
    )
    val_crops_per_pair: int = Field(
        4, ge=1, description="fixed validation crops per held-out pair"
    )
    select: Literal["best", "last"] = Field(
        "best",
        description="keep the epoch with the lowest validation loss, or the last",
    )
    noise_fit: bool = Field(
        True, description="fit the camera noise model and store it in the model file"
    )
    seed: int = Field(0, description="random seed (crops, augmentation, init)")
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads per process (default: torch's)"
    )
    init: Path | None = Field(None, description="model file to fine-tune from")
    resume: bool = Field(
        False, description="continue the interrupted training of --out from its .ckpt"
    )
    force: bool = Field(
        False, description="overwrite an existing --out model and its checkpoint"
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    amp: bool = Field(
        True,
        description="mixed precision: bf16 on a GPU or a CPU that runs it natively "
        "(AVX-512), fp16 on older GPUs",
    )
    device: str | None = Field(None, description="torch device (default: cuda if any)")
    name: str | None = Field(None, description="model name (default: the file's stem)")
    progress: bool = Field(True, description="show progress bars")

    @model_validator(mode="before")
    @classmethod
    def _no_jitter_without_synthetic(cls, data: Any) -> Any:
        """``synthetic_fraction 0`` alone also turns the synthetic crops' own
        options (dose jitter, specimen mix) off where they are left at default."""
        if not isinstance(data, dict):
            return data
        try:
            off = float(data.get("synthetic_fraction", 1)) == 0
        except (TypeError, ValueError):
            off = False  # the field's own validation names the problem
        if off:
            return {**dict.fromkeys(SYNTHETIC_ONLY, 0.0), **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        for name in SYNTHETIC_ONLY:
            if getattr(self, name) and not self.synthetic_fraction:
                raise ValueError(
                    f"{name} {getattr(self, name)} acts on synthetic crops only: set "
                    "synthetic_fraction > 0 as well"
                )
        if self.psf_sigma is not None and not self.uses_psf:
            raise ValueError(
                f"psf_sigma {self.psf_sigma} is the width of the point emitters and "
                "textured objects, which are off: set point_emitters > 0 or "
                "textured_objects > 0"
            )
        return self

    @property
    def network_width(self) -> int:
        """Channels at the first level: ``width``, or the one ``use`` implies."""
        return self.width if self.width is not None else USE_WIDTH[self.use]

    @property
    def uses_psf(self) -> bool:
        """Whether synthetic crops draw structure through the measured PSF."""
        return bool(self.point_emitters or self.textured_objects)

    @property
    def split(self) -> dict[str, Any]:
        """The keywords of :func:`pairscope.io.dataset.split_blocks` this implies."""
        if self.independent_frames:
            return {"val_fraction": self.val_fraction, "block_size": 1, "gap_blocks": 0}
        return {
            "val_fraction": self.val_fraction,
            "block_size": self.block_size,
            "gap_blocks": self.gap_blocks,
        }

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a configuration from JSON or YAML; a problem is one
        :class:`~pairscope.errors.SettingsError` line naming the file, the field
        and the fix (an empty file: the defaults)."""
        data = load_mapping(path, what="training configuration", allow_empty=True)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problem = file_problem(path, exc, model=cls, data=data)
            raise SettingsError(problem) from exc

    @classmethod
    def from_model_info(cls, training: dict[str, Any] | None) -> TrainConfig | None:
        """The configuration stored in a model file's ``training`` field."""
        return None if training is None else cls.model_validate(training)

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with ``changes`` applied."""
        return type(self).model_validate({**self.model_dump(), **changes})
