"""Training throughput: samples/s for 1 and 2 processes (DDP under torchrun).

Acquires one demo run, then trains the default network on it: one process with
1 thread, one process with all threads, and 2 processes (gloo on CPU) with 1
thread each, via ``torch.distributed.run``.  On CUDA machines it adds one
process on the GPU.  Reports samples/s of the last (warm) epoch and the
scaling efficiency ``sps(2 processes) / (2 * sps(1 process, 1 thread))``.  The
default recipe simulates 30 % of its crops (the camera noise model); one more
single-thread row trains on measured crops only, to show what that costs, and
one all-threads row trains in fp32 (``--no-amp``), to show what the default
mixed precision (bf16 where the CPU runs it natively) and channels-last layout
gain.

    python scripts/bench_training.py --epochs 3 --samples 256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import useq

HERE = Path(__file__).resolve()


def acquire(out: Path, frames: int) -> Path:
    from pairscope.acquire import PairedAcquisition
    from pairscope.hardware import demo_config_path, open_core
    from pairscope.io import RunWriter
    from pairscope.io.calibration import Registration, save_calibration

    cfg = demo_config_path()
    with open_core(cfg) as core:
        for cam in ("LowDoseCam", "ReferenceCam"):
            core.setProperty(cam, "SensorSize", 256)
        core.setProperty("LowDoseCam", "Binning", 2)
        summary = PairedAcquisition(core, None, config_path=cfg).run(
            useq.MDASequence(time_plan={"interval": 0, "loops": frames}),
            writer=RunWriter(out),
        )
    run = Path(summary.run_dir)
    save_calibration(run, Registration(-0.7, 1.3))  # the demo rig's shift
    return run


def worker(spec: dict) -> None:
    """One training (one rank under torchrun); rank 0 writes the result."""
    from pairscope.train import TrainConfig, train

    extra = (
        {} if spec["synthetic"] is None else {"synthetic_fraction": spec["synthetic"]}
    )
    cfg = TrainConfig(
        **extra,
        epochs=spec["epochs"],
        samples_per_epoch=spec["samples"],
        independent_frames=True,
        sequential_pairs=True,  # the one-core demo config snaps one after the other
        threads=spec["threads"],
        device=spec["device"],
        amp=spec["amp"],
        progress=False,
        force=True,
    )
    res = train([spec["run"]], Path(spec["out"]), cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        sps = res.history[-1]["samples_per_s"]
        Path(spec["result"]).write_text(json.dumps({"samples_per_s": sps}))


def measure(label: str, run: Path, tmp: Path, args: argparse.Namespace, *,
            procs: int, threads: int, device: str = "cpu",
            synthetic: float | None = None, amp: bool = True) -> float:  # fmt: skip
    result = tmp / f"result-{procs}-{threads}-{device}-{synthetic}-{amp}.json"
    spec = {"run": str(run), "out": str(tmp / f"bench-{procs}-{threads}.safetensors"),
            "result": str(result), "threads": threads, "device": device,
            "epochs": args.epochs, "samples": args.samples,
            "synthetic": synthetic, "amp": amp}  # fmt: skip
    common = ["--worker", json.dumps(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if procs == 1:
        cmd = [sys.executable, str(HERE), *common]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={procs}", str(HERE), *common]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    sps = float(json.loads(result.read_text())["samples_per_s"])
    print(f"{label:<28} {sps:8.1f} samples/s", flush=True)
    return sps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--samples", type=int, default=256, help="samples per epoch")
    p.add_argument("--frames", type=int, default=24, help="pairs in the demo run")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = acquire(tmp / "runs", args.frames)
        one = measure("1 process, 1 thread", run, tmp, args, procs=1, threads=1)
        measured = measure("same, measured crops only", run, tmp, args, procs=1,
                           threads=1, synthetic=0.0)  # fmt: skip
        all_ = measure(f"1 process, {cores} threads", run, tmp, args, procs=1,
                       threads=cores)  # fmt: skip
        fp32 = measure("same, fp32 (--no-amp)", run, tmp, args, procs=1,
                       threads=cores, amp=False)  # fmt: skip
        two = measure("2 processes (DDP), 1 thread", run, tmp, args, procs=2,
                      threads=1)  # fmt: skip
        out = {"cpu_cores": cores, "sps_1proc_1thread": one,
               "sps_1proc_1thread_measured_crops": measured,
               "synthetic_crops_cost": one / measured,
               f"sps_1proc_{cores}threads": all_, "sps_2proc_ddp": two,
               f"sps_1proc_{cores}threads_fp32": fp32,
               "mixed_precision_vs_fp32": all_ / fp32,
               "scaling_efficiency_2proc": two / (2 * one),
               "ddp_vs_threads": two / all_}  # fmt: skip
        if torch.cuda.is_available():
            out["sps_cuda_1proc"] = measure("1 process, CUDA", run, tmp, args,
                                            procs=1, threads=1, device="cuda")  # fmt: skip
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
