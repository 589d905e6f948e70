"""CAREamics' CARE as a baseline for bench_generalisation.py (its own venv).

CAREamics pins torch < 2.14 and torchvision <= 0.26, so it lives in a separate
virtual environment (it is not a pairscope dependency):

    python3 -m venv /work/care-venv && . /work/care-venv/bin/activate
    pip install torch==2.9.1 torchvision==0.24.1 && pip install careamics==0.3.5

CARE restores on the output grid, so the low-dose frames are bicubic-upsampled by
``--factor`` (as CSBDeep's upsampling CARE does).  CAREamics' CARE defaults (U-Net,
MAE loss, mean/std normalisation, flips and rotations, Adam with
ReduceLROnPlateau) train under a wall-clock limit (Lightning's ``max_time``; its
early stopping is off unless ``--patience`` is given, so CARE gets the whole
budget), and
every ``--predict`` stack is restored into ``<stem>_care.tif`` (float32,
reference units).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F


def upsample(stack: np.ndarray, factor: int) -> np.ndarray:
    t = torch.from_numpy(stack.astype(np.float32))[:, None]
    up = F.interpolate(t, scale_factor=factor, mode="bicubic", align_corners=False)
    return up[:, 0].numpy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--low", type=Path, required=True)
    p.add_argument("--ref", type=Path, required=True)
    p.add_argument("--factor", type=int, default=2)
    p.add_argument("--minutes", type=float, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--patience",
        type=int,
        default=None,
        help="CAREamics' early stopping patience in epochs (default: none, so CARE "
        "trains for the whole budget; CAREamics' own default is 3)",
    )
    p.add_argument(
        "--self-ensemble",
        action="store_true",
        help="also write <stem>_care+ensemble.tif: the mean of CARE's predictions "
        "of the eight flips and quarter turns (CAREamics has no such option)",
    )
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--predict", type=Path, nargs="+", default=[])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from careamics import CAREamist
    from careamics.config import create_advanced_care_config

    low = upsample(tifffile.imread(args.low), args.factor)
    ref = tifffile.imread(args.ref).astype(np.float32)
    seconds = round(args.minutes * 60)
    config = create_advanced_care_config(
        experiment_name="care_baseline",
        data_type="array",
        axes="SYX",
        patch_size=[args.patch, args.patch],
        batch_size=args.batch_size,
        num_epochs=100_000,  # the wall-clock limit ends training
        num_workers=0,
        trainer_params={"max_time": f"00:00:{seconds // 60:02d}:{seconds % 60:02d}"},
        early_stopping_params={
            "monitor": "val_loss",
            "mode": "min",
            "patience": args.patience or 10**9,
        },
        seed=1,
    )
    args.work.mkdir(parents=True, exist_ok=True)
    care = CAREamist(config, work_dir=args.work, enable_progress_bar=False)
    care.train(train_data=low, train_data_target=ref)

    def predict(x: np.ndarray) -> np.ndarray:
        out, _ = care.predict(np.ascontiguousarray(x), axes="SYX", batch_size=1)
        pred = np.stack([np.asarray(o).squeeze() for o in out]).astype(np.float32)
        return pred.reshape(x.shape) if pred.shape != x.shape else pred

    for path in args.predict:
        x = upsample(tifffile.imread(path), args.factor)
        tifffile.imwrite(path.with_name(path.stem + "_care.tif"), predict(x))
        if args.self_ensemble:
            views = []
            for flip in (False, True):
                xf = x[..., ::-1] if flip else x
                for k in range(4):
                    y = np.rot90(predict(np.rot90(xf, k, (1, 2))), -k, (1, 2))
                    views.append(y[..., ::-1] if flip else y)
            tifffile.imwrite(
                path.with_name(path.stem + "_care+ensemble.tif"),
                np.mean(views, 0).astype(np.float32),
            )
        print(f"{path.name}: {x.shape}", flush=True)


if __name__ == "__main__":
    main()
