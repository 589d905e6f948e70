"""Benchmark: README's test command on an idle machine, then with every core kept busy.

Proves that no test's verdict depends on how fast or busy the CPU is: the suite
runs once on the idle machine (the baseline) and then ``--runs`` times while one
CPU-bound process per core spins beside it.  Each run records its pytest summary
line, its exit status, its wall time and the load average it saw; the ratio is
the loaded wall time over the idle one, measured in this one invocation.

    python scripts/bench_suite_under_load.py --runs 3
    python scripts/bench_suite_under_load.py --runs 3 -- -m slow   # the slow tests
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPIN = "while True:\n    pass\n"
# pytest's last line, with or without -q's missing "=" frame
SUMMARY = re.compile(r"\d+ (passed|failed|errors?)\b.* in [\d.]+s")


def _start_burners(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]


def _run_suite(pytest_args: list[str], log: Path) -> tuple[int, str, float, float]:
    """One run of the suite (its whole output in ``log``): exit status, summary
    line, wall seconds, peak load."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *pytest_args,
    ]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    start = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak_load = 0.0
    lines: list[str] = []
    assert process.stdout is not None
    with log.open("w") as out:  # written as it comes: a stopped benchmark keeps it
        for line in process.stdout:
            lines.append(line.rstrip())
            out.write(line)
            out.flush()
            peak_load = max(peak_load, os.getloadavg()[0])
    process.wait()
    seconds = time.monotonic() - start
    summary = next((line for line in reversed(lines) if SUMMARY.search(line)), "")
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    for line in failures:
        print(f"    {line}", flush=True)
    return process.returncode, summary.strip("= "), seconds, peak_load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="loaded runs (default 3)")
    parser.add_argument(
        "--burners",
        type=int,
        default=os.cpu_count() or 2,
        help="CPU-bound processes (one per core)",
    )
    parser.add_argument(
        "--no-idle", action="store_true", help="skip the idle baseline run"
    )
    parser.add_argument(
        "--logs", type=Path, default=Path("suite-logs"), help="each run's output"
    )
    parser.add_argument(
        "pytest_args", nargs="*", help="extra pytest arguments (after --)"
    )
    args = parser.parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    commit += " (with uncommitted changes)" if dirty else ""
    print(
        f"commit {commit}, {os.cpu_count()} cores, pytest -q {' '.join(args.pytest_args)}"
    )
    rows: list[tuple[str, int, str, float, float]] = []
    idle_seconds = None
    if not args.no_idle:
        print("idle run ...", flush=True)
        code, summary, seconds, load = _run_suite(
            args.pytest_args, args.logs / "idle.log"
        )
        idle_seconds = seconds
        rows.append(("idle", code, summary, seconds, load))
    for index in range(args.runs):
        print(
            f"loaded run {index + 1} of {args.runs} ({args.burners} burners) ...",
            flush=True,
        )
        burners = _start_burners(args.burners)
        try:
            code, summary, seconds, load = _run_suite(
                args.pytest_args, args.logs / f"loaded-{index + 1}.log"
            )
        finally:
            for burner in burners:
                burner.kill()
                burner.wait()
        rows.append((f"loaded {index + 1}", code, summary, seconds, load))

    print("\n| run | exit | pytest summary | wall s | × idle | peak load average |")
    print("|---|---|---|---|---|---|")
    for name, code, summary, seconds, load in rows:
        ratio = f"{seconds / idle_seconds:.2f}" if idle_seconds else "–"
        print(f"| {name} | {code} | {summary} | {seconds:.0f} | {ratio} | {load:.1f} |")
    return 0 if all(code == 0 for _, code, *_ in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
