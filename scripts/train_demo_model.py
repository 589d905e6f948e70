"""Train the demo restoration model shipped with pairscope, and validate it honestly.

1. acquire paired runs on the demo microscope (training seeds, several stage
   positions), 2. calibrate each run, 3. train the preview-sized U-Net on this
   CPU, 4. evaluate on *freshly seeded* specimens against nearest / bilinear /
   bicubic, 5. write the model into the package and the evaluation into docs/.

    python scripts/train_demo_model.py --binning 2 --minutes 12

``--metadata-only`` rewrites only the shipped model's metadata (no retraining, no
download): the current model-file format and the rig model of a short demo run at
that binning (the simulated demo camera, its declared photometry), so that the check
of a model against a rig (``pairscope.restore.check_model_for_rig``) knows the
bundled model was trained on the simulated demo camera.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import useq

from pairscope.acquire import PairedAcquisition
from pairscope.evaluate import evaluate
from pairscope.hardware import demo_rig_path, open_rig
from pairscope.io import RunWriter
from pairscope.io.calibration import estimate_registration, save_calibration
from pairscope.live import MODELS_DIR
from pairscope.restore import FORMAT_VERSION, CameraModel, load_model, save_model
from pairscope.rig import rig_model_for_run
from pairscope.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
POSITIONS = [(0.0, 0.0), (22.0, 18.0), (-20.0, 12.0), (10.0, -8.0)]


def acquire(out: Path, seed: int, binning: int, loops: int, positions) -> Path:
    """A calibrated run of simultaneous pairs on the demo rig (one core per camera)."""
    with open_rig(demo_rig_path()) as rig:
        core = rig.primary.core
        core.setProperty("DemoHub", "Seed", seed)
        core.setProperty("DemoHub", "SpecimenSecondsPerTrigger", 0.5)
        core.setProperty("LowDoseCam", "Binning", binning)
        seq = useq.MDASequence(
            time_plan={"interval": 0, "loops": loops},
            stage_positions=[(x, y, 0.0) for x, y in positions],
        )
        assert rig.spec is not None
        acq = PairedAcquisition(rig, rig.spec.pairing)
        summary = acq.run(seq, writer=RunWriter(out, name=f"demo-seed{seed}"))
    assert summary.status == "completed", summary
    run = Path(summary.run_dir)
    save_calibration(run, estimate_registration(run))
    return run


def rewrite_metadata(binning: int) -> Path:
    """Give the shipped ×``binning`` model the current format and the rig model of
    a short demo run at that binning; its weights are kept bit for bit."""
    path = MODELS_DIR / f"demo_x{binning}.safetensors"
    model = load_model(path, expect_factor=binning)
    with tempfile.TemporaryDirectory() as tmp:
        rig = rig_model_for_run(acquire(Path(tmp), 0, binning, 2, [(0.0, 0.0)]))
    info = model.info.replace(
        format_version=FORMAT_VERSION,
        rig_model=rig,
        lowdose_camera=CameraModel.from_rig(rig, "lowdose"),
        reference_camera=CameraModel.from_rig(rig, "reference"),
    )
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    save_model(path, model.network, info)
    after = load_model(path, expect_factor=binning).network.state_dict()
    assert all(bool((before[k] == after[k]).all()) for k in before), "weights changed"
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--binning", type=int, choices=(2, 4), default=2)
    p.add_argument("--minutes", type=float, default=12.0, help="training budget")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--eval-seeds", type=int, nargs="+", default=[100, 101])
    p.add_argument("--loops", type=int, default=25, help="timepoints per training run")
    p.add_argument("--samples-per-s", type=float, default=140.0, help="measured speed")
    p.add_argument(
        "--default-recipe",
        action="store_true",
        help="train with pairscope train's defaults (a --minutes budget, 512 crops "
        "per epoch) instead of 20 epochs sized by --samples-per-s",
    )
    p.add_argument(
        "--use",
        choices=("preview", "offline"),
        default="preview",
        help="with --default-recipe: pairscope train --use (the shipped models are "
        "preview models)",
    )
    p.add_argument(
        "--loss",
        choices=("l1", "mse"),
        default="l1",
        help="with --default-recipe: pairscope train --loss (l1: the median of what "
        "the model finds likely, mse: its mean)",
    )
    p.add_argument(
        "--evaluate-only",
        action="store_true",
        help="re-run the evaluation of the shipped model (the demo is deterministic)",
    )
    p.add_argument(
        "--metadata-only",
        action="store_true",
        help="rewrite only the shipped model's metadata (format, rig model): no "
        "training, no download",
    )
    args = p.parse_args()
    if (args.use, args.loss) != ("preview", "l1") and not args.default_recipe:
        p.error(
            "--use and --loss need --default-recipe (the fixed recipe is width 16, L1)"
        )
    if args.metadata_only:
        print(rewrite_metadata(args.binning))
        return
    if args.evaluate_only:
        name = f"demo_x{args.binning}"
        with tempfile.TemporaryDirectory() as tmp:
            evals = [
                acquire(Path(tmp), s, args.binning, 6, [(0.0, 0.0)])
                for s in args.eval_seeds
            ]
            report = evaluate(
                MODELS_DIR / f"{name}.safetensors",
                evals,
                ROOT / "docs" / f"{name}_evaluation",
            )
        print(json.dumps(report["overall"], indent=2))
        return
    t0 = time.perf_counter()
    name = f"demo_x{args.binning}"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = [
            acquire(tmp / "train", s, args.binning, args.loops, POSITIONS)
            for s in args.train_seeds
        ]
        evals = [
            acquire(tmp / "eval", s, args.binning, 6, [(0.0, 0.0)])
            for s in args.eval_seeds
        ]
        t_acq = time.perf_counter() - t0
        samples = int(args.minutes * 60 * args.samples_per_s)
        epochs = 20
        config = TrainConfig(
            arch="unet",
            width=16,
            depth=2,
            epochs=epochs,
            batch_size=8,
            crop=128,
            samples_per_epoch=max(samples // epochs // 8 * 8, 64),
            lr=2e-3,
            loss="l1",
            minutes=None,  # the epochs above are sized to --minutes already
            independent_frames=False,  # a timelapse: time blocks, as measured
            seed=0,
            name=name,
        )
        if args.default_recipe:
            config = TrainConfig(
                minutes=args.minutes,
                lr=2e-3,
                seed=0,
                name=name,
                use=args.use,
                loss=args.loss,
            )
        model = tmp / f"{name}.safetensors"
        result = train(runs, model, config)
        t_train = time.perf_counter() - t0 - t_acq
        report_dir = ROOT / "docs" / f"{name}_evaluation"
        report = evaluate(model, evals, report_dir)
        MODELS_DIR.mkdir(exist_ok=True)
        shutil.copy2(model, MODELS_DIR / model.name)
    o = report["overall"]
    facts = {
        "model": str((MODELS_DIR / model.name).relative_to(ROOT)),
        "size_bytes": (MODELS_DIR / model.name).stat().st_size,
        "train_seconds": round(t_train, 1),
        "acquire_seconds": round(t_acq, 1),
        "samples_per_s": round(
            len(result.history) * config.samples_per_epoch / t_train, 1
        ),
        "final_val_loss": result.history[-1]["val_loss"],
        "psnr_model_minus_bicubic_db": o["model"]["psnr"] - o["bicubic"]["psnr"],
        "smallest_resolved_um": report["smallest_resolved_separation_um"],
    }
    (report_dir / "training.json").write_text(
        json.dumps(
            {
                **facts,
                "config": config.model_dump(mode="json"),
                "history": result.history,
            },
            indent=2,
            default=str,
        )
    )
    print(json.dumps(facts, indent=2, default=str))


if __name__ == "__main__":
    main()
