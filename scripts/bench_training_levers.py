"""Training levers measured on held-out specimens (issue 10, item 1).

Trains the default network on demo-rig runs (training seeds) with the same sample
budget under each recipe, then scores every model with ``pairscope.evaluate`` on
freshly seeded specimens it never saw: PSNR against the noise-free truth (ideal)
and the reference, model minus bicubic, and the two-point separations where the
model resolves fewer pairs than a baseline (regressions).

    python scripts/bench_training_levers.py --samples 6144
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

from pairscope.evaluate import evaluate  # noqa: E402
from pairscope.train import TrainConfig, train  # noqa: E402
from train_demo_model import acquire  # noqa: E402

RECIPES: dict[str, dict] = {
    "l1, last epoch (old default)": {"loss": "l1", "select": "last"},
    "l1, best epoch": {"loss": "l1", "select": "best"},
    "l1 + FFT term, best epoch": {"loss": "l1_fft", "select": "best"},
    "l1, best, photon-level augmentation": {
        "loss": "l1",
        "select": "best",
        "synthetic_fraction": 0.3,
        "dose_jitter": 0.5,
    },
    "l1, best, independent frames": {
        "loss": "l1",
        "select": "best",
        "independent_frames": True,
    },
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--samples", type=int, default=6144, help="training crops")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--loops", type=int, default=24, help="timepoints per run")
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = [
            acquire(tmp / "train", s, 2, args.loops, [(0.0, 0.0)]) for s in (1, 2, 3)
        ]
        evals = [acquire(tmp / "eval", s, 2, 4, [(0.0, 0.0)]) for s in (100, 101)]
        for label, recipe in RECIPES.items():
            cfg = TrainConfig(
                epochs=args.epochs,
                samples_per_epoch=args.samples // args.epochs // 8 * 8,
                lr=2e-3,
                block_size=4,
                threads=1,
                progress=False,
                noise_fit="synthetic_fraction" in recipe,
                force=True,
                **recipe,
            )
            model = tmp / "m.safetensors"
            t0 = time.perf_counter()
            res = train(runs, model, cfg)
            seconds = time.perf_counter() - t0
            report = evaluate(model, evals, tmp / "report", progress=False)
            o = report["overall"]
            psnr = {k: v.get("psnr") for k, v in o.items()}
            results[label] = {
                "train_seconds": round(seconds, 1),
                "kept_epoch": res.info.validation.epoch if res.info else None,
                "train_pairs": res.info.validation.n_train_pairs if res.info else None,
                "psnr": psnr,
                "model_minus_bicubic_db": psnr["model"] - psnr["bicubic"],
                "two_point_regressions": len(report["regressions"]),
            }
            print(label, json.dumps(results[label]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
