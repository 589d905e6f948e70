"""Benchmark the default preview restorer: frames/s and latency percentiles.

Throughput comes from ``StreamingRestorer.restore_now`` (back-to-back frames);
latency from the streaming path, with frames submitted at 80% of that throughput,
so it measures restoring under load rather than queueing.  Prints a Markdown table.

    python scripts/bench_restorer.py            # full run
    python scripts/bench_restorer.py --quick    # smoke run (small sizes, few frames)
    python scripts/bench_restorer.py --width 16 24   # the preview's and the offline
                                                     # width (pairscope train --use)
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from pairscope.restore import (
    ModelInfo,
    StreamingRestorer,
    UNet,
    default_preview_network,
    loaded_from_network,
)
from pairscope.train import USE_WIDTH

SIZES = [(256, 2), (512, 2), (1024, 2), (128, 4)]


@dataclass
class Variant:
    device: str
    amp_dtype: str | None  # None: fp32
    compile: bool


@dataclass
class Row:
    variant: Variant
    size: int
    factor: int
    fps: float
    p50: float
    p99: float
    skipped: int
    received: int


def bench(
    variant: Variant, size: int, factor: int, frames: int, threads: int, width: int
) -> Row:
    net = UNet(factor=factor, width=width, depth=default_preview_network(factor).depth)
    model = loaded_from_network(net, ModelInfo.for_network(net, name="preview"))
    r = StreamingRestorer(
        model,
        device=variant.device,
        amp=variant.amp_dtype is not None,
        amp_dtype=variant.amp_dtype,
        compile=variant.compile,
        num_threads=threads,
    )
    rng = np.random.default_rng(0)
    stack = rng.integers(100, 4000, (4, size, size), dtype=np.uint16)
    for i in range(3 if variant.compile else 2):  # warm-up (and compile)
        r.restore_now(stack[i % 4])
    t0 = time.perf_counter()
    for i in range(frames):
        r.restore_now(stack[i % 4])
    fps = frames / (time.perf_counter() - t0)

    done = threading.Event()
    r.events.restored.connect(lambda f: f.index == frames - 1 and done.set())
    period = 1.25 / fps
    with r:
        start = time.perf_counter()
        for i in range(frames):
            target = start + i * period
            while (now := time.perf_counter()) < target:
                time.sleep(min(target - now, 0.001))
            r.submit(i, stack[i % 4])
        done.wait(30 + 10 * period)
    s = r.stats()
    return Row(
        variant,
        size,
        factor,
        fps,
        s.latency_p50_ms,
        s.latency_p99_ms,
        s.skipped,
        s.received,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--frames", type=int, default=40, help="frames per measurement")
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, (os.cpu_count() or 1) - 1),
        help="torch CPU threads (default: the restorer's default, cpu_count - 1)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="also torch.compile on CPU"
    )
    parser.add_argument(
        "--width",
        type=int,
        nargs="+",
        default=[default_preview_network().width],
        help="U-Net widths to compare in one run (pairscope train --use: preview "
        f"{USE_WIDTH['preview']}, offline {USE_WIDTH['offline']}; default: the "
        "preview's)",
    )
    args = parser.parse_args()

    sizes = [(64, 2), (32, 4)] if args.quick else SIZES
    frames = 5 if args.quick else args.frames
    variants = [Variant("cpu", None, False)]
    if args.compile:
        variants.append(Variant("cpu", None, True))
    if torch.cuda.is_available():
        variants += [
            Variant("cuda", dtype, comp)
            for dtype in (None, "bfloat16", "float16")
            for comp in (False, True)
        ]
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {args.threads} torch threads, {frames} frames each"
    )
    print()
    print(
        "| width | device | precision | compile | input → output | frames/s "
        "| latency p50 ms | latency p99 ms | skipped |"
    )
    print("|---:|---|---|---|---|---:|---:|---:|---:|")
    fps: dict[tuple[int, str, int], float] = {}
    for v in variants:
        for size, factor in sizes:
            for width in args.width:
                row = bench(v, size, factor, frames, args.threads, width)
                precision = v.amp_dtype or "float32"
                name = f"{v.device} {precision}" + (" compiled" if v.compile else "")
                fps[width, name, size] = row.fps
                print(
                    f"| {width} | {v.device} | {precision} "
                    f"| {'yes' if v.compile else 'no'} | {size}² → {size * factor}² "
                    f"| {row.fps:.1f} | {row.p50:.1f} | {row.p99:.1f} "
                    f"| {row.skipped}/{row.received} |",
                    flush=True,
                )
    if len(args.width) > 1:
        first = args.width[0]
        print()
        for (width, v, size), value in fps.items():
            if width != first:
                ratio = fps[first, v, size] / value
                print(f"width {width} vs {first}, {v}, {size}²: {ratio:.2f}x the time")


if __name__ == "__main__":
    main()
