"""Acquisition sequences: a ``useq.MDASequence`` from a file, refused before the
first trigger when it cannot run as meant.

Every refusal is one :class:`~pairscope.errors.SettingsError` line naming the
file, the field and the fix.  Checked: the file (JSON/YAML, a mapping, known
keys), useq's own validation (reported for the time or z plan the input meant),
time plans (no negative interval, none that never ends or divides by zero), the
number of events (at least one, at most :data:`MAX_EVENTS`) and positions
(finite, within :data:`XY_RANGE_UM` / :data:`Z_RANGE_UM`).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import useq
from pydantic import ValidationError

from .config import file_problem, load_mapping
from .errors import SettingsError

__all__ = [
    "MAX_EVENTS",
    "XY_RANGE_UM",
    "Z_RANGE_UM",
    "check_sequence",
    "load_sequence",
    "planned_events",
]

MAX_EVENTS: Final = 10_000_000
# Beyond any microscope stage's travel: such a number is a unit mistake (nm, a
# typo), and a stage sent there would drive to its end stop.  XY: 1 m (large
# stages travel ~0.3 m and may count from a corner); Z: 10 cm.
XY_RANGE_UM: Final = 1e6
Z_RANGE_UM: Final = 1e5
EXAMPLE: Final = '{"time_plan": {"interval": 0.1, "loops": 100}}'
_HINTS: Final = {
    "time_plan": "e.g. time_plan: {interval: 0.1, loops: 100}, interval in s",
    "z_plan": "e.g. z_plan: {range: 4, step: 0.5}, in µm",
}
# Plan fields that are positions or extents, in µm (steps, counts are not).
_Z_FIELDS: Final = ("top", "bottom", "range", "above", "below", "absolute", "relative")
_XY_FIELDS: Final = (
    "top", "left", "bottom", "right", "width", "height", "max_width", "max_height",
    "vertices",
)  # fmt: skip


def load_sequence(path: str | Path) -> useq.MDASequence:
    """A useq MDASequence from JSON/YAML, every mistake named in one line."""
    path = Path(path)
    data = load_mapping(path, what="sequence", example=EXAMPLE)
    known = {k for k in useq.MDASequence.model_fields if not k.startswith("_")}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SettingsError(
                f"{path}: unknown sequence key {key!r}.{hint} Known keys: "
                f"{', '.join(sorted(known))}."
            )
    positions = data.get("stage_positions")
    if isinstance(positions, list):  # JSON/YAML have no tuples: [x, y, z] is one
        data["stage_positions"] = [
            tuple(p) if isinstance(p, list) else p for p in positions
        ]
    try:
        sequence = useq.MDASequence.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(
            file_problem(path, exc, model=useq.MDASequence, data=data, hints=_HINTS)
        ) from exc
    check_sequence(sequence, path)
    return sequence


def check_sequence(sequence: useq.MDASequence, where: Any = "the sequence") -> None:
    """Refuse what cannot run as meant, before the first trigger; ``where`` names
    the sequence's file (or origin) in the message."""
    _check_plans(sequence, f"{where}")
    n = planned_events(sequence)
    if n > MAX_EVENTS:
        raise SettingsError(
            f"{where} plans {n:,} events (more than {MAX_EVENTS:,}); split it into "
            "shorter runs or use fewer loops."
        )
    if next(iter(sequence.iter_events()), None) is None:
        raise SettingsError(
            f"{where} plans no acquisition: it has no time plan, positions, channels "
            f"or z plan. Give at least a time plan, e.g. {EXAMPLE}."
        )


def _check_plans(sequence: useq.MDASequence, where: str, inner: str = "") -> None:
    for label, tp in _time_phases(sequence.time_plan):
        _check_time_phase(tp, f"{where}: {inner}{label}")
    for label, axis, value in _positions(sequence):
        limit = Z_RANGE_UM if axis == "z" else XY_RANGE_UM
        if not math.isfinite(value) or abs(value) > limit:
            what = (
                "is not finite"
                if not math.isfinite(value)
                else "is beyond any stage's travel"
            )
            raise SettingsError(
                f"{where}: {inner}{label} = {value:g} µm {what} (|{axis}| <= "
                f"{limit:g} µm); positions are in µm: fix it in the sequence."
            )
    for i, pos in enumerate(sequence.stage_positions):
        sub = getattr(pos, "sequence", None)
        if sub is not None:
            _check_plans(sub, where, f"{inner}stage_positions[{i}].sequence.")


def _time_phases(tp: Any) -> Iterator[tuple[str, Any]]:
    if tp is None:
        return
    phases = getattr(tp, "phases", None)
    if phases is None:
        yield "time_plan", tp
    else:
        for i, phase in enumerate(phases):
            yield f"time_plan.phases[{i}]", phase


def _check_time_phase(tp: Any, where: str) -> None:
    fields = type(tp).model_fields
    interval: timedelta | None = tp.interval if "interval" in fields else None
    duration: timedelta | None = tp.duration if "duration" in fields else None
    if interval is not None and interval.total_seconds() < 0:
        raise SettingsError(
            f"{where}.interval must be >= 0 s, got {interval.total_seconds():g} s; "
            "0 means as fast as the cameras allow."
        )
    if duration is not None and duration.total_seconds() < 0:
        raise SettingsError(
            f"{where}.duration must be >= 0 s, got {duration.total_seconds():g} s."
        )
    if duration is not None and interval is not None and not interval.total_seconds():
        raise SettingsError(
            f"{where}: an interval of 0 s over a duration never ends; give loops "
            "(the number of timepoints) instead of the duration."
        )
    if duration is not None and "loops" in fields and tp.loops < 2:
        raise SettingsError(
            f"{where}: a duration spans at least 2 timepoints, got loops {tp.loops}; "
            "for one timepoint give {interval: 0, loops: 1}."
        )


def _positions(sequence: useq.MDASequence) -> Iterator[tuple[str, str, float]]:
    """(field, axis, value in µm) of every position and extent the plans name."""
    for i, pos in enumerate(sequence.stage_positions):
        for axis in ("x", "y", "z"):
            v = getattr(pos, axis, None)
            if v is not None:
                yield f"stage_positions[{i}].{axis}", axis, float(v)
    for plan, axis, names in (
        (sequence.z_plan, "z", _Z_FIELDS),
        (sequence.grid_plan, "x", _XY_FIELDS),
    ):
        if plan is None:
            continue
        kind = "z_plan" if axis == "z" else "grid_plan"
        for name in names:
            if name in type(plan).model_fields:
                for v in _numbers(getattr(plan, name)):
                    yield f"{kind}.{name}", axis, v


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        yield float(value)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _numbers(v)


def planned_events(sequence: useq.MDASequence) -> int:
    """How many events a sequence plans, from its plans' sizes (``sizes`` and
    ``iter_events`` would enumerate a 10**12-loop plan)."""
    t = sum(_phase_loops(tp) for _, tp in _time_phases(sequence.time_plan))
    sizes = [
        t,
        len(sequence.stage_positions),
        len(sequence.channels),
        sequence.z_plan.num_positions() if sequence.z_plan else 1,
        sequence.grid_plan.num_positions() if sequence.grid_plan else 1,
    ]
    n = 1
    for size in sizes:
        n *= max(int(size), 1)
    return n


def _phase_loops(tp: Any) -> int:
    fields = type(tp).model_fields
    if "loops" in fields:
        return int(tp.loops)
    interval, duration = tp.interval, tp.duration  # checked: interval > 0
    return int(duration / interval) + 1 if interval.total_seconds() else 1
