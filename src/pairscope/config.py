"""User-facing settings: frozen pydantic models with cross-field checks."""

from __future__ import annotations

import difflib
import json
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import SettingsError


class PairingMode(str, Enum):
    """How a low-dose frame and its reference are obtained.

    ``auto`` picks ``simultaneous`` on a rig of one core per camera and
    ``sequential`` on one core with two cameras.
    """

    AUTO = "auto"
    TRIGGERED = "triggered"  # hardware-triggered sequences, one core per camera
    SIMULTANEOUS = "simultaneous"  # all cores snap at once, each from its own thread
    SPARSE = "sparse"  # as simultaneous/sequential, reference only every N-th trigger
    MULTI_CAMERA = "multi-camera"  # one core, Multi Camera, equal-size detectors
    SEQUENTIAL = "sequential"  # one core, two cameras snapped one after the other
    ALTERNATING = "alternating"  # one camera: binned frame, then unbinned frame


SETTINGS_VERSION: Final = 1
SEQUENCE_METADATA_KEY = "pairscope"


class AcquisitionSettings(BaseModel):
    """How to pair detectors for a run.  Unset camera labels are found automatically."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = SETTINGS_VERSION
    mode: PairingMode = PairingMode.AUTO
    lowdose_camera: str | None = None
    reference_camera: str | None = None
    binning: int | None = Field(
        None, description="Low-dose binning to set before the run (None: keep)."
    )
    reference_every: int = Field(1, ge=1, description="Sparse mode: reference period.")
    trigger: tuple[str, str, str] | None = Field(
        None,
        description="(device, property, value) set once per pair to fire both cameras.",
    )
    lowdose_exposure_ms: float | None = Field(None, gt=0)
    reference_exposure_ms: float | None = Field(None, gt=0)
    split_ratio: float | None = Field(
        None, gt=0, lt=1, description="Fraction of light reaching the reference."
    )
    stage_tolerance_um: float = Field(
        1.0,
        gt=0,
        description="How far the XY stage may be from a target before the run stops.",
    )
    focus_tolerance_um: float = Field(
        0.1,
        gt=0,
        description="How far the focus may be from a target before the run stops.",
    )
    camera_trigger_property: str = Field(
        "LastTriggerIndex",
        description="Camera property reporting the trigger it read (checked if present).",
    )
    buffer_mb: int | None = Field(
        None,
        ge=8,
        description="Circular buffer per core in MB (None: 2 s of frames, >= 64 MB).",
    )
    frame_timeout_ms: float | None = Field(
        None,
        gt=0,
        description="How long a camera may deliver nothing before the run stops "
        "(None: 3 x (exposure + interval) + 2 s).",
    )

    @model_validator(mode="after")
    def _check_mode(self) -> AcquisitionSettings:
        if self.mode is PairingMode.SPARSE and self.reference_every < 2:
            raise ValueError(
                f"sparse mode takes a reference every N-th trigger with N >= 2; got "
                f"reference_every={self.reference_every}. Set reference_every (e.g. 5) "
                "or use mode 'simultaneous'."
            )
        if self.mode is not PairingMode.SPARSE and self.reference_every != 1:
            raise ValueError(
                f"reference_every={self.reference_every} only applies to mode "
                f"'sparse', not {self.mode.value!r}."
            )
        if self.binning is not None and self.binning not in (2, 3, 4, 8):
            raise ValueError(f"binning must be 2, 3, 4 or 8; got {self.binning}.")
        if self.mode is PairingMode.ALTERNATING and self.binning is None:
            raise ValueError(
                "alternating mode switches one camera between binned and unbinned "
                "frames: set binning (e.g. 2)."
            )
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> AcquisitionSettings:
        """Settings from JSON/YAML; a problem is one :class:`SettingsError` line
        naming the file, the field and the fix (an empty file: the defaults)."""
        data = load_mapping(path, what="pairing settings", allow_empty=True)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SettingsError(file_problem(path, exc, model=cls, data=data)) from exc

    @classmethod
    def resolve(
        cls,
        *layers: dict[str, Any] | None,
    ) -> AcquisitionSettings:
        """Settings from layers, later ones overriding earlier ones key by key
        (e.g. rig file < sequence metadata < settings file < CLI flags typed)."""
        data: dict[str, Any] = {}
        for layer in layers:
            if layer:
                data.update(layer)
        return cls.model_validate(data)

    @staticmethod
    def from_sequence(sequence: Any) -> dict[str, Any]:
        """The settings embedded in ``sequence.metadata["pairscope"]`` (or {})."""
        meta = getattr(sequence, "metadata", None) or {}
        data = meta.get(SEQUENCE_METADATA_KEY) or {}
        if not isinstance(data, dict):
            raise ValueError(
                f"sequence metadata[{SEQUENCE_METADATA_KEY!r}] must be a mapping of "
                f"pairing settings, got {type(data).__name__}."
            )
        return dict(data)


def load_mapping(
    path: str | Path, *, what: str, allow_empty: bool = False, example: str = ""
) -> dict[str, Any]:
    """The mapping a JSON (``.json``) or YAML file holds.

    Every problem is one :class:`SettingsError` line naming the file (a missing
    file: :class:`FileNotFoundError`).  YAML is read with ``yaml.safe_load``: a
    Python tag (``!!python/object``) is refused, never constructed.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what.capitalize()} file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"{path} is not a text file ({exc.reason} at byte {exc.start}); {what} "
            "files are JSON or YAML text."
        ) from exc
    except OSError as exc:
        raise SettingsError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    try:
        data = (
            json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        )
    except json.JSONDecodeError as exc:
        raise SettingsError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column "
            f"{exc.colno}; fix the file there."
        ) from exc
    except yaml.YAMLError as exc:
        raise SettingsError(_yaml_problem(path, exc)) from exc
    if data is None and allow_empty:
        return {}
    if not isinstance(data, dict):
        got = "nothing" if data is None else f"a {type(data).__name__}"
        eg = f", e.g. {example}" if example else ""
        raise SettingsError(
            f"{path} must hold a mapping (the {what} as key: value pairs){eg}; it "
            f"holds {got}."
        )
    return data


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    """A YAML error as one line: where, what, and the fix (a tag: remove it)."""
    mark = getattr(exc, "problem_mark", None)
    at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = str(getattr(exc, "problem", None) or exc)
    if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in problem:
        tag = problem.rsplit(" ", 1)[-1].strip("'").replace("tag:yaml.org,2002:", "!!")
        return (
            f"{path}{at}: the YAML tag {tag} is refused: pairscope reads plain YAML "
            "(mappings, lists, numbers, text) and never builds Python objects from "
            "a file. Remove the tag."
        )
    return f"{path} is not valid YAML{at}: {' '.join(problem.split())}; fix the file there."


def file_problem(
    path: str | Path,
    exc: ValidationError,
    *,
    model: type[BaseModel] | None = None,
    data: Any = None,
    hints: dict[str, str] | None = None,
) -> str:
    """One line for the first problem of ``exc``, found in the file ``path``: the
    field, what is wrong and the fix.

    A union field (useq's time plans, z plans) reports the branch the input
    meant, not pydantic's first branch: the branch with most of the keys given in
    ``data`` (the file's mapping) among the fields of ``model``'s classes, then the
    fewest missing fields.  ``model`` also lists the keys a misspelt one may mean;
    ``hints``: advice by top-level field (e.g. an example time plan).
    """
    classes = _model_classes(model) if model is not None else {}
    err = _resolve_unions([dict(e) for e in exc.errors()], data, classes)[0]
    loc = list(err["loc"])
    where = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc)[1:]
    kind = err["type"]
    msg = str(err.get("msg", "")).removeprefix("Value error, ").rstrip(".")
    if kind == "missing":
        text = f"{where} is missing; add it"
    elif kind == "missing_one_of":
        *others, last = err["choices"]
        options = f"{', '.join(others)} or {last}" if others else last
        text = f"{where} needs {options}; add one"
    elif kind == "extra_forbidden":
        known = sorted(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        mean = f" (did you mean {close[0]!r}?)" if close and len(loc) == 1 else ""
        text = f"{where} is not a known key{mean}; rename or remove it"
    elif kind in ("value_error", "assertion_error"):
        text = f"{where}: {msg}" if where else msg  # the validator names the fix
    else:
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) else f", got {got!r}"
        if kind == "model_type":
            msg = "Input should be a mapping"
        text = f"{where} {msg.replace('Input should be', 'must be', 1)}{shown}; fix it"
    hint = (hints or {}).get(str(loc[0]) if loc else "", "")
    return f"{path}: {text}{' (' + hint + ')' if hint else ''}."


def _model_classes(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model class reachable from ``root``'s fields, by name (the names
    pydantic gives union branches in error locations)."""
    found: dict[str, type[BaseModel]] = {}

    def walk(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp.__name__ in found:
                return
            found[tp.__name__] = tp
            for info in tp.model_fields.values():
                walk(info.annotation)
        for arg in typing.get_args(tp):
            walk(arg)

    walk(root)
    return found


def _union_at(loc: tuple[Any, ...]) -> int | None:
    """Where a location names a union branch (a model class, capitalised)."""
    return next(
        (i for i, p in enumerate(loc) if isinstance(p, str) and p[:1].isupper()), None
    )


def _keys_at(data: Any, path: tuple[Any, ...]) -> set[str]:
    """The keys of the mapping at ``path`` in ``data`` (none if there is none)."""
    for p in path:
        if isinstance(data, dict):
            data = data.get(p)
        elif isinstance(data, list | tuple) and isinstance(p, int) and p < len(data):
            data = data[p]
        else:
            return set()
    return {str(k) for k in data} if isinstance(data, dict) else set()


def _resolve_unions(
    errors: list[dict[str, Any]], data: Any, classes: dict[str, type[BaseModel]]
) -> list[dict[str, Any]]:
    """Errors with each union field's branches reduced to the branch the input
    meant (most keys given, then fewest missing); branch names dropped from the
    locations.  When the closest branches only miss fields: one
    ``missing_one_of`` error naming the choices."""
    first = next(
        (k for k, e in enumerate(errors) if _union_at(e["loc"]) is not None), None
    )
    if first is None:
        return errors
    i = _union_at(errors[first]["loc"])
    assert i is not None
    prefix = errors[first]["loc"][:i]
    branches: dict[str, list[dict[str, Any]]] = {}
    rest: list[dict[str, Any]] = []
    for e in errors[first:]:
        loc = e["loc"]
        if loc[:i] == prefix and _union_at(loc) == i:
            branches.setdefault(loc[i], []).append({**e, "loc": loc[:i] + loc[i + 1 :]})
        else:
            rest.append(e)
    given = _keys_at(data, prefix)

    def rank(name: str, errs: list[dict[str, Any]]) -> tuple[int, int]:
        cls = classes.get(name)
        names = set(cls.model_fields) if cls is not None else set()
        missing = sum(e["type"] in ("missing", "missing_one_of") for e in errs)
        return -len(given & names), missing

    ranked = [
        (rank(b, r), r)
        for b, errs in branches.items()
        for r in [_resolve_unions(errs, data, classes)]
    ]
    best = min(key for key, _ in ranked)
    closest = [errs for key, errs in ranked if key == best]
    if len(closest) > 1 and all(
        e["type"] in ("missing", "missing_one_of") for errs in closest for e in errs
    ):
        choices = [" and ".join(repr(e["loc"][-1]) for e in errs) for errs in closest]
        chosen = [
            {
                "type": "missing_one_of",
                "loc": prefix,
                "choices": list(dict.fromkeys(choices)),
            }
        ]
    else:
        chosen = min(closest, key=len)
    return errors[:first] + chosen + _resolve_unions(rest, data, classes)
