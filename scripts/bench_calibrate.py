"""`pairscope calibrate`'s registration: seconds per pair, and the warps it needs.

Acquires a demo run (the two-core demo rig, 512² reference, binning 2), then times
``estimate_registration`` (what ``pairscope calibrate RUN`` runs: phase correlation,
the joint shift + scale fit on 4 pairs, the shift refit on every pair) and counts
the cubic-spline warps of the reference it makes (the fit's unit of work).  Run it
beside other work to see the busy-machine figure.

    python scripts/bench_calibrate.py --pairs 20
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import useq

from pairscope.acquire import PairedAcquisition
from pairscope.hardware import demo_rig_path, open_rig
from pairscope.io import RunWriter, open_run
from pairscope.io import calibration as C


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--sensor", type=int, default=512)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, open_rig(demo_rig_path()) as rig:
        for rc in rig.cores:
            rc.core.setProperty(rc.camera, "SensorSize", args.sensor)
        assert rig.spec is not None
        seq = useq.MDASequence(time_plan={"interval": 0, "loops": args.pairs})
        summary = PairedAcquisition(rig, rig.spec.pairing).run(
            seq, writer=RunWriter(Path(tmp))
        )
        assert summary.run_dir is not None
        run = open_run(summary.run_dir)
        warps = [0]
        warp = C._warp

        def counted(*a, **k):  # type: ignore[no-untyped-def]
            warps[0] += 1
            return warp(*a, **k)

        C._warp = counted
        t0 = time.perf_counter()
        reg = C.estimate_registration(run, max_pairs=args.pairs)
        seconds = time.perf_counter() - t0
        C._warp = warp
    print(
        f"{reg.n_pairs} pairs: {seconds:.1f} s ({seconds / reg.n_pairs:.2f} s/pair), "
        f"{warps[0]} warps; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores; shift ({reg.shift_y_px:.3f}, {reg.shift_x_px:.3f}) "
        f"px, scale {reg.scale:.4f}"
    )


if __name__ == "__main__":
    main()
