"""``pairscope demo | acquire | info``: paired acquisition on a rig or a config."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MODES = (
    "auto",
    "triggered",
    "simultaneous",
    "sparse",
    "multi-camera",
    "sequential",
    "alternating",
)
FAULTS = {
    "trigger-unplugged": "the reference camera's trigger cable is unplugged: it "
    "free-runs, so its frames are not of the low-dose camera's instants",
    "missed-trigger": "the reference camera misses every 7th trigger pulse",
    "camera-hang": "the reference camera stops delivering frames halfway",
    "camera-error": "the reference camera reports a hardware error halfway",
    "stage-stuck": "the XY stage does not move (the run visits two positions)",
    "focus-stuck": "the focus drive does not move (the run takes a z stack)",
}
SCENARIOS = {
    "unseen-structure": "halfway through, structures the model never saw in "
    "training appear in the specimen (the trust monitor must flag them)",
}
# Ctrl-C, a kill, and the terminal closing (SIGHUP) stop a run after the current
# frame, every pair kept
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo",
        help="paired timelapse on the demo microscope (no hardware needed)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Paired timelapse on the demo rig: two simulated cameras in two "
        "Micro-Manager cores on one optical bench and one trigger line.",
        epilog="fault drills (--fault):\n"
        + "\n".join(f"  {k:18} {v}" for k, v in FAULTS.items())
        + "\n\nscenarios (--scenario):\n"
        + "\n".join(f"  {k:18} {v}" for k, v in SCENARIOS.items()),
    )
    demo.add_argument("--frames", type=int, default=200, help="pairs (default 200)")
    demo.add_argument(
        "--interval-ms", type=float, default=100.0, help="timelapse interval (100)"
    )
    demo.add_argument(
        "--binning", type=int, choices=(2, 4), default=2, help="low-dose binning (2)"
    )
    demo.add_argument("--seed", type=int, default=0, help="specimen seed (0)")
    demo.add_argument(
        "--specimen",
        choices=("cells", "beads"),
        default="cells",
        help="cells (tubules, vesicles, bead pairs) or beads, a bead slide (single "
        "beads, bead pairs and rods over the field): the slide to fine-tune a model "
        "on, giving it your sample's prior (default: cells)",
    )
    demo.add_argument(
        "--sensor", type=int, default=512, help="reference pixels per side (512)"
    )
    demo.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="pairing mode (default: the demo rig's 'triggered'; 'sequential' and "
        "'alternating' use the one-core demo config)",
    )
    demo.add_argument(
        "--fault",
        choices=sorted(FAULTS),
        default=None,
        help="a fault drill, listed below (default: none)",
    )
    demo.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        default=None,
        help="a specimen scenario, listed below (default: none)",
    )
    _pairing_options(demo)
    _live_options(demo)
    demo.set_defaults(func=_cmd_demo)

    acq = sub.add_parser(
        "acquire", help="paired acquisition on a rig file or a Micro-Manager config"
    )
    acq.add_argument(
        "rig",
        type=Path,
        metavar="RIG_OR_CFG",
        help="a rig file (.yaml) or a Micro-Manager config (.cfg)",
    )
    acq.add_argument(
        "--sequence", type=Path, required=True, help="useq MDASequence (.json/.yaml)"
    )
    acq.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="pairing mode (default: the settings file's, the sequence's, the rig "
        "file's, else auto)",
    )
    acq.add_argument(
        "--settings",
        type=Path,
        default=None,
        help="pairing settings (.json/.yaml; AcquisitionSettings)",
    )
    _pairing_options(acq)
    _live_options(acq)
    acq.set_defaults(func=_cmd_acquire)

    info = sub.add_parser(
        "info", help="what a rig or config would pair and why (or a model file)"
    )
    info.add_argument(
        "rig",
        type=Path,
        metavar="RIG_OR_CFG_OR_MODEL",
        help="a rig file, a Micro-Manager config or a model file",
    )
    info.add_argument(
        "--mode", choices=MODES, default=None, help="pairing mode (default: auto)"
    )
    info.add_argument(
        "--binning", type=int, default=None, help="low-dose binning (default: as set)"
    )
    info.add_argument(
        "--settings",
        type=Path,
        default=None,
        help="pairing settings (.json/.yaml; AcquisitionSettings), as acquire reads "
        "them (default: none)",
    )
    _code_option(info)
    info.set_defaults(func=_cmd_info)


def _code_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-local-devices",
        action="store_true",
        help="let a config import Python device modules from the current folder or "
        "beside the config (they are code: only for files you trust)",
    )


def _say(message: str) -> None:
    print(f"pairscope: {message}", file=sys.stderr)


def _open(args: argparse.Namespace, path: Path) -> Any:
    from ..hardware import open_rig

    return open_rig(path, allow_local_devices=args.allow_local_devices, announce=_say)


def _pairing_options(p: argparse.ArgumentParser) -> None:
    if not any(a.dest == "binning" for a in p._actions):
        p.add_argument(
            "--binning",
            type=int,
            default=None,
            help="low-dose binning (default: as the config sets it)",
        )
    p.add_argument(
        "--reference-every",
        type=int,
        default=None,
        help="sparse mode: a reference every N-th trigger (default 5)",
    )
    p.add_argument(
        "--buffer-mb",
        type=int,
        default=None,
        help="circular buffer per core in MB (default: 2 s of frames, >= 64)",
    )


def _live_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        type=Path,
        default=Path("pairscope_runs"),
        help="folder for run folders (pairscope_runs)",
    )
    p.add_argument(
        "--headless",
        action="store_true",
        help="no window: PNG snapshots in the run folder (default: a window where "
        "a display exists)",
    )
    p.add_argument(
        "--window",
        action="store_true",
        help="open the preview window even where no display is detected",
    )
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="restoration model file (default: the bundled demo model for the binning)",
    )
    p.add_argument(
        "--format",
        choices=("ome-tiff", "ome-zarr"),
        default="ome-tiff",
        help="run format: one OME-TIFF per detector, or both detectors as OME-Zarr "
        "0.5 arrays in run.ome.zarr (needs pip install pairscope[zarr])",
    )
    p.add_argument("--no-restore", action="store_true", help="no live restoration")
    p.add_argument("--save-restored", action="store_true", help="save predictions")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--alpha",
        type=alpha_argument,
        default=0.1,
        help="risk level of the per-pixel trust intervals, in (0, 0.5]: they are "
        "calibrated on the run's own same-instant references to hold 1 - alpha of "
        "the specimen's pixels (0.1)",
    )
    p.add_argument(
        "--fine-tune",
        action="store_true",
        help="fine-tune the model during the run in a separate process, on the "
        "pairs logged so far; swap only a candidate that scores better on held-back "
        "pairs (decisions in finetune.jsonl)",
    )
    p.add_argument(
        "--fine-tune-every",
        type=int,
        default=100,
        help="same-instant pairs between fine-tuning candidates (100)",
    )
    _code_option(p)


def alpha_argument(text: str) -> float:
    """``--alpha``: a risk level in (0, 0.5], checked before the rig is opened."""
    from ..trust._conformal import check_alpha

    try:
        return check_alpha(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            str(exc) if "risk level" in str(exc) else f"{text!r} is not a number"
        ) from exc


def typed_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Pairing settings the user typed on the command line (and only those)."""
    out: dict[str, Any] = {}
    if getattr(args, "mode", None) is not None:
        out["mode"] = args.mode
    for key in ("binning", "reference_every", "buffer_mb"):
        if getattr(args, key, None) is not None:
            out[key] = getattr(args, key)
    if out.get("mode") == "sparse" and "reference_every" not in out:
        out["reference_every"] = 5
    if "reference_every" in out and out.get("mode") not in ("sparse", None):
        raise ValueError(
            "--reference-every only applies to --mode sparse; add --mode sparse or "
            "drop --reference-every."
        )
    return out


def _live(args: argparse.Namespace) -> Any:
    from ..finetune import FineTuneOptions
    from ..live import LiveOptions

    return LiveOptions(
        alpha=args.alpha,
        out=args.out,
        headless=args.headless,
        window=True if args.window else None,
        format=args.format,
        restore=not args.no_restore,
        model=args.model,
        save_restored=args.save_restored,
        progress=not args.no_progress,
        announce=_say,
        fine_tune=FineTuneOptions(every=args.fine_tune_every)
        if args.fine_tune
        else None,
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    stopper = _Stopper()  # before the rig is opened: a Ctrl-C then is not lost
    with stopper.installed():
        return _demo(args, stopper)


def _demo(args: argparse.Namespace, stopper: _Stopper) -> int:
    import useq

    from ..config import AcquisitionSettings
    from ..hardware import demo_config_path, demo_rig_path

    single = args.mode in ("sequential", "alternating", "multi-camera")
    path = demo_config_path() if single else demo_rig_path()
    frames = args.frames
    if frames < 1:
        raise ValueError(f"--frames must be at least 1, got {frames}.")
    if not 0 <= args.interval_ms < float("inf"):
        raise ValueError(
            f"--interval-ms must be a finite number >= 0 (0: as fast as the cameras "
            f"allow), got {args.interval_ms:g}."
        )
    with _open(args, path) as rig:
        primary = rig.primary.core
        primary.setProperty("DemoHub", "Specimen", args.specimen)
        primary.setProperty("DemoHub", "Seed", args.seed)
        for rc in rig.cores:
            for cam in _demo_cameras(rc.core):
                rc.core.setProperty(cam, "SensorSize", args.sensor)
        time_plan = {"interval": args.interval_ms / 1000.0, "loops": frames}
        # plain dicts and tuples: pydantic coerces them to useq's models at run time
        sequence = useq.MDASequence(time_plan=time_plan)  # type: ignore[arg-type]
        if args.fault:
            sequence = _apply_fault(rig, args.fault, frames, time_plan)
        extra: dict[str, Any] = {}
        if args.scenario:
            spt = float(primary.getProperty("DemoHub", "SpecimenSecondsPerTrigger"))
            onset_pair = frames // 2
            primary.setProperty("DemoHub", "ScenarioOnset_s", onset_pair * spt)
            primary.setProperty("DemoHub", "Scenario", args.scenario)
            extra["scenario"] = {"name": args.scenario, "onset_pair": onset_pair}
        if args.fault:
            extra["fault"] = {"name": args.fault, "what": FAULTS[args.fault]}
        base = rig.spec.pairing.model_dump(exclude_unset=True) if rig.spec else {}
        overrides = {"binning": args.binning, **typed_overrides(args)}
        if args.mode is None and single is False:
            overrides.pop("mode", None)
        settings = AcquisitionSettings.resolve(base, overrides)
        return _run(rig, settings, sequence, path, args, extra, stopper)


def _demo_cameras(core: Any) -> list[str]:
    from ..hardware import list_cameras

    return [c for c in list_cameras(core) if core.hasProperty(c, "SensorSize")]


def _apply_fault(rig: Any, fault: str, frames: int, time_plan: dict[str, Any]) -> Any:
    """Arm a drill on the demo devices; returns the sequence the drill needs."""
    import useq

    ref = next((c for c in rig.cores if c.role == "reference"), None)
    ref_core = ref.core if ref is not None else rig.primary.core
    ref_cam = "ReferenceCam"
    primary = rig.primary.core
    half = max(frames // 2, 1)
    if fault == "trigger-unplugged":
        ref_core.setProperty(ref_cam, "TriggerCable", "Unplugged")
    elif fault == "missed-trigger":
        ref_core.setProperty(ref_cam, "MissTriggerEvery", 7)
    elif fault == "camera-hang":
        ref_core.setProperty(ref_cam, "HangAfterFrames", half)
    elif fault == "camera-error":
        ref_core.setProperty(ref_cam, "FailAfterFrames", half)
    elif fault == "stage-stuck":
        primary.setProperty("XY", "Stuck", "Yes")
        # plain dicts and tuples: pydantic coerces them to useq's models at run time
        return useq.MDASequence(
            time_plan=time_plan,  # type: ignore[arg-type]
            stage_positions=[(0.0, 0.0, 0.0), (20.0, 0.0, 0.0)],  # type: ignore[arg-type]
        )
    elif fault == "focus-stuck":
        primary.setProperty("Z", "Stuck", "Yes")
        return useq.MDASequence(
            time_plan=time_plan,  # type: ignore[arg-type]
            z_plan={"absolute": [0.0, 1.0, 2.0]},  # type: ignore[arg-type]
        )
    return useq.MDASequence(time_plan=time_plan)  # type: ignore[arg-type]


def _cmd_acquire(args: argparse.Namespace) -> int:
    stopper = _Stopper()  # before the rig is opened: a Ctrl-C then is not lost
    with stopper.installed():
        return _acquire(args, stopper)


def _acquire(args: argparse.Namespace, stopper: _Stopper) -> int:
    from ..config import AcquisitionSettings
    from ..sequence import load_sequence

    sequence = load_sequence(args.sequence)
    file_layer = (
        AcquisitionSettings.from_file(args.settings).model_dump(exclude_unset=True)
        if args.settings
        else {}
    )
    with _open(args, args.rig) as rig:
        check_channels(sequence, rig.primary.core)
        rig_layer = rig.spec.pairing.model_dump(exclude_unset=True) if rig.spec else {}
        settings = AcquisitionSettings.resolve(
            rig_layer,
            AcquisitionSettings.from_sequence(sequence),
            file_layer,
            typed_overrides(args),
        )
        return _run(rig, settings, sequence, args.rig, args, {}, stopper)


def _run(
    rig: Any,
    settings: Any,
    sequence: Any,
    path: Path,
    args: argparse.Namespace,
    extra: dict[str, Any],
    stopper: _Stopper,
) -> int:
    from dataclasses import replace

    from ..live import run_live

    codes: list[int] = []

    def finished(summary: Any) -> None:  # as soon as the run ends
        codes.append(report(summary, stopper.signal))

    summary = run_live(
        rig,
        settings,
        sequence,
        config_path=path,
        options=replace(_live(args), on_finished=finished),
        on_started=lambda acq, _: stopper.watch(acq),
        extra_info=extra,
    )
    return codes[0] if codes else report(summary, stopper.signal)


class _Stopper:
    """Ctrl-C and SIGTERM cancel the acquisition (every pair is kept)."""

    def __init__(self) -> None:
        self.acquisition: Any = None
        self.signal: int | None = None

    def watch(self, acquisition: Any) -> None:
        self.acquisition = acquisition
        if self.signal is not None:  # it came while the rig was being set up
            acquisition.cancel()

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signal is not None:  # a second Ctrl-C: still a clean stop
            return
        self.signal = signum
        print(
            f"\npairscope: {signal.Signals(signum).name}: stopping after the current "
            "frame; every acquired pair is kept",
            file=sys.stderr,
        )
        if self.acquisition is not None:
            self.acquisition.cancel()

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = {s: signal.getsignal(s) for s in EXIT_SIGNAL}
        for s in EXIT_SIGNAL:
            signal.signal(s, self._handle)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _cmd_info(args: argparse.Namespace) -> int:
    from ..config import AcquisitionSettings
    from ..hardware import find_detector_pair, list_cameras

    if args.rig.suffix in (".safetensors", ".zip"):
        from .. import restore

        describe = getattr(restore, "describe_model_file", None)
        if describe is None:
            raise ValueError("this pairscope cannot describe model files yet.")
        print(describe(args.rig))
        return 0
    file_layer = (
        AcquisitionSettings.from_file(args.settings).model_dump(exclude_unset=True)
        if args.settings
        else {}
    )
    with _open(args, args.rig) as rig:
        base = rig.spec.pairing.model_dump(exclude_unset=True) if rig.spec else {}
        overrides = dict(typed_overrides(args).items())
        settings = AcquisitionSettings.resolve(base, file_layer, overrides)
        for rc in rig.cores:
            print(
                f"core {rc.name!r} ({rc.role}): {rc.config}; cameras: "
                f"{', '.join(list_cameras(rc.core)) or 'none'}"
            )
        pair = find_detector_pair(rig, settings)
        print(f"mode:      {pair.mode.value}")
        print(f"low-dose:  {pair.lowdose} (core {pair.lowdose_core})")
        print(f"reference: {pair.reference} (core {pair.reference_core})")
        print(f"factor:    {pair.factor}")
        for reason in pair.reasons:
            print(f"  - {reason}")
    return 0


def check_channels(sequence: Any, core: Any) -> None:
    """Every channel of the sequence must be a preset of the primary core."""
    for ch in sequence.channels:
        if not core.isConfigDefined(ch.group, ch.config):
            presets = (
                list(core.getAvailableConfigs(ch.group))
                if ch.group in core.getAvailableConfigGroups()
                else []
            )
            raise ValueError(
                f"channel {ch.config!r} (group {ch.group!r}) is not in the config; "
                f"presets of that group: {presets or 'none (no such group)'}. Fix the "
                "sequence or add the preset to the primary core's config."
            )


def report(summary: Any, signum: int | None = None) -> int:
    """Print the summary (stderr) and the run folder (last line of stdout)."""
    print(
        f"{summary.status}: {summary.pairs}/{summary.expected_pairs} pairs "
        f"({summary.simultaneous_pairs} simultaneous, {summary.incomplete_pairs} "
        f"without partner) at {summary.pairs_per_s:.1f} pairs/s",
        file=sys.stderr,
    )
    for problem in summary.problems:
        print(f"pairscope: note: {problem}", file=sys.stderr)
    if summary.status in ("failed", "overflow", "incomplete"):
        print(f"pairscope: run {summary.status}: {summary.message}", file=sys.stderr)
    print(summary.run_dir)  # the run folder is always the last line
    if signum is not None:
        return EXIT_SIGNAL.get(signal.Signals(signum), 1)
    return 0 if summary.status in ("completed", "cancelled") else 1
