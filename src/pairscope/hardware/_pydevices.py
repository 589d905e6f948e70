"""A config's Python devices are code: say which modules it imports, and from where.

``UniMMCore``'s config loader (pymmcore-plus 0.18,
``experimental/unicore/core/_config.py``) reads a config line by line: it strips
the line, drops one ``#py `` prefix, skips what is then a comment, splits on
``,`` (fields are not stripped) and runs ``Device`` and ``pyDevice`` alike as
``loadDevice(label, library, name)``.  ``loadDevice`` tries the C++ adapter
``library`` first; when that fails and ``library`` is not one of the C++ adapters
in the adapter search path, it runs ``__import__(library)``.  So *any* ``Device``
or ``pyDevice`` line, with or without ``#py``, dotted or not, imports Python code
whenever its library is not a C++ adapter found there; no other command imports.

:func:`device_modules` reads a config exactly that way and lists those modules;
:func:`check_device_modules` announces them and refuses one that would be
imported from the current folder or from the config's folder (which the import
system searches whenever it is on ``sys.path``, as it is for ``python -m`` or a
notebook started there) unless the user allows local devices explicitly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path

from ..errors import ConfigError

# The loader's syntax, mirrored (tests compare them with pymmcore-plus's own).
PY_PREFIX = "#py "
DEVICE_COMMANDS = frozenset({"Device", "pyDevice"})
FIELD_DELIMITER = ","


@dataclass(frozen=True, slots=True)
class DeviceModule:
    """A Python module a config imports, and where it would come from."""

    module: str
    line: int
    text: str  # the config line, as written
    origin: str | None  # the module's file or package folder (None: not found)
    local: bool  # found in the current folder or beside the config


def device_lines(text: str, cpp_adapters: Iterable[str]) -> list[tuple[int, str, str]]:
    """``(line number, line, module)`` for every line of ``text`` that makes
    ``UniMMCore`` import ``module``: a ``Device``/``pyDevice`` command (``#py``
    or not) whose library is not one of ``cpp_adapters``."""
    adapters = set(cpp_adapters)
    out: list[tuple[int, str, str]] = []
    for n, raw in enumerate(text.splitlines(), 1):  # as the loader splits it
        line = raw.rstrip("\r").strip()
        if line.startswith(PY_PREFIX):
            line = line[len(PY_PREFIX) :].lstrip()
        if not line or line.startswith("#"):
            continue
        command, *args = line.split(FIELD_DELIMITER)
        if command in DEVICE_COMMANDS and len(args) == 3 and args[1] not in adapters:
            out.append((n, raw.strip(), args[1]))
    return out


def device_modules(cfg: Path, cpp_adapters: Iterable[str]) -> list[DeviceModule]:
    """The Python modules ``cfg`` would import, in the order of its lines."""
    text = cfg.read_text(errors="replace")
    return [
        _locate(module, n, line, cfg)
        for n, line, module in device_lines(text, cpp_adapters)
    ]


def _locate(module: str, line: int, text: str, cfg: Path) -> DeviceModule:
    """Where ``import module`` would find its top-level package if the current
    folder and the config's folder were first on ``sys.path``; local if there."""
    top = module.split(".")[0]
    folders = {Path.cwd().resolve(), cfg.parent.resolve()}
    spec = _find_spec(top, [str(f) for f in folders])
    if spec is None:
        return DeviceModule(module, line, text, None, False)
    if spec.submodule_search_locations:  # a package: its folder(s)
        places = list(spec.submodule_search_locations)
    else:
        places = [spec.origin] if spec.has_location and spec.origin else []
    local = any(Path(p).resolve().parent in folders for p in places)
    origin = places[0] if places else spec.origin
    return DeviceModule(module, line, text, origin, local)


def _find_spec(top: str, first: list[str]) -> ModuleSpec | None:
    """The spec ``import top`` would use with ``first`` ahead of ``sys.path``: a
    module already imported is reused, else the import system's finders in order."""
    loaded = sys.modules.get(top)
    if loaded is not None:
        spec = getattr(loaded, "__spec__", None)
        if spec is None:  # e.g. __main__ of a script
            file = getattr(loaded, "__file__", None)
            spec = ModuleSpec(top, None, origin=file)
            spec.has_location = file is not None
        return spec
    if not top:
        return None
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        try:
            found = find(top, [*first, *sys.path] if finder is PathFinder else None)
        except (ImportError, ValueError, OSError):
            return None  # importing it fails the same way: nothing runs
        if found is not None:
            return found
    return None


def check_device_modules(
    cfg: Path,
    cpp_adapters: Iterable[str],
    *,
    allow_local: bool = False,
    announce: Callable[[str], None] | None = None,
) -> list[DeviceModule]:
    """Announce the modules ``cfg`` imports; refuse local ones unless allowed.

    A module that cannot be found is not announced: importing it fails, and the
    load reports that line (often a C++ adapter missing from the search path).
    """
    modules = device_modules(cfg, cpp_adapters)
    found = [m for m in modules if m.origin is not None]
    if found and announce is not None:
        unique = {m.module: m for m in found}.values()
        names = ", ".join(
            f"{m.module} ({'LOCAL file ' if m.local else 'from '}{m.origin})"
            for m in unique
        )
        announce(f"{cfg.name} imports Python device code: {names}")
    for m in modules:
        if m.local and not allow_local:
            raise ConfigError(
                f"{cfg} line {m.line} ({m.text!r}) imports Python module "
                f"{m.module!r} from {m.origin}, a file in the current folder or "
                "beside the config; a config's Python devices are code. Install the "
                "module as a package, or pass --allow-local-devices if you trust "
                "that file."
            )
    return modules
