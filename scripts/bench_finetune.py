"""Benchmark: fine-tuning during a run costs the acquisition nothing.

The demo rig at a 10 pairs/s timelapse, starting from a deliberately weak model
(the bundled x2 model with its output layer scrambled).  Runs without and with
``--fine-tune`` alternate (this machine is noisy); the acquisition's own pairs/s
(first to last trigger) are compared, and the held-back score of the current
model and of each candidate is read from ``finetune.jsonl``.

    python scripts/bench_finetune.py --pairs 300 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import useq

from pairscope._memory import keep_frame_memory
from pairscope.config import AcquisitionSettings
from pairscope.finetune import FineTuneOptions
from pairscope.hardware import demo_rig_path, open_rig
from pairscope.live import LiveOptions, bundled_model_path, run_live
from pairscope.restore import load_model, save_model


def weak_model(path: Path) -> Path:
    model = load_model(bundled_model_path(2))
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        w = model.network.head.weight
        w.copy_(w + 0.5 * w.std() * torch.randn(w.shape, generator=g))
    save_model(path, model.network, model.info.replace(name="scrambled"))
    return path


def one_run(out: Path, model: Path, pairs: int, fine_tune: bool, every: int) -> dict:
    opts = LiveOptions(
        out=out,
        headless=True,
        progress=False,
        model=model,
        fine_tune=FineTuneOptions(every=every) if fine_tune else None,
    )
    with open_rig(demo_rig_path()) as rig:
        for rc in rig.cores:
            rc.core.setProperty(rc.camera, "SensorSize", 256)
        s = run_live(
            rig,
            AcquisitionSettings(mode="triggered"),
            useq.MDASequence(time_plan={"interval": 0.1, "loops": pairs}),
            options=opts,
        )
    log = Path(s.run_dir) / "finetune.jsonl"
    decisions = (
        [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    )
    return {"pairs_per_s": s.pairs_per_s, "pairs": s.pairs, "decisions": decisions}


def main() -> None:
    keep_frame_memory()
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pairs", type=int, default=300)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--every", type=int, default=60)
    args = p.parse_args()
    rates = {False: [], True: []}
    decisions = []
    with tempfile.TemporaryDirectory() as tmp:
        model = weak_model(Path(tmp) / "weak.safetensors")
        for _ in range(args.repeats):
            for ft in (False, True):
                r = one_run(Path(tmp) / "runs", model, args.pairs, ft, args.every)
                rates[ft].append(r["pairs_per_s"])
                decisions += r["decisions"]
                print(f"  fine-tune {ft}: {r['pairs_per_s']:.2f} pairs/s", flush=True)
    off = sum(rates[False]) / len(rates[False])
    on = sum(rates[True]) / len(rates[True])
    print(
        "| pairs per run | runs each | pairs/s without | pairs/s with fine-tune | ratio |"
    )
    print("|---|---|---|---|---|")
    print(f"| {args.pairs} | {args.repeats} | {off:.2f} | {on:.2f} | {on / off:.3f} |")
    print()
    print(
        "| candidate | pairs trained on | held-back score current (dB) | candidate (dB) | swapped |"
    )
    print("|---|---|---|---|---|")
    for d in decisions:
        print(
            f"| {d['candidate']} | {d.get('pairs_trained_on')} | "
            f"{d.get('current_score_db')} | {d.get('candidate_score_db')} | "
            f"{d.get('swapped')} |"
        )


if __name__ == "__main__":
    main()
