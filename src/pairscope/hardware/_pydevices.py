"""A config's Python devices are code: say which modules it imports, and from where.

``UniMMCore`` imports the module named on every ``#py pyDevice`` line (and on a
``Device`` line whose adapter is not a C++ one) with the interpreter's search
path, which can include the current folder.  pairscope imports device modules
from installed packages only, unless the user allows local ones explicitly: a
module found in the current folder or beside the config is refused without
``--allow-local-devices``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from importlib.machinery import PathFinder
from pathlib import Path

from ..errors import ConfigError


@dataclass(frozen=True, slots=True)
class DeviceModule:
    """A Python module a config imports, and where it would come from."""

    module: str
    line: int
    origin: str | None  # file that would be imported (None: not found)
    local: bool  # found in the current folder or beside the config


def device_modules(cfg: Path, cpp_adapters: set[str]) -> list[DeviceModule]:
    """The Python modules ``cfg`` would import, in the order of its lines."""
    out: list[DeviceModule] = []
    for n, raw in enumerate(cfg.read_text(errors="replace").splitlines(), 1):
        line = raw.strip()
        if line.startswith("#py "):
            fields = [f.strip() for f in line[4:].split(",")]
            if len(fields) >= 3 and fields[0] == "pyDevice":
                out.append(_locate(fields[2], n, cfg))
        elif line.startswith("Device,"):
            fields = [f.strip() for f in line.split(",")]
            if len(fields) >= 3 and fields[2] not in cpp_adapters and "." in fields[2]:
                out.append(_locate(fields[2], n, cfg))
    return out


def _locate(module: str, line: int, cfg: Path) -> DeviceModule:
    """Local if the current folder or the config's folder holds the module (it
    would be imported from there whenever that folder is on the search path)."""
    top = module.split(".")[0]
    for folder in (Path.cwd(), cfg.parent):
        found = PathFinder.find_spec(top, [str(folder)])
        if found is not None:
            return DeviceModule(module, line, found.origin or str(folder / top), True)
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    return DeviceModule(module, line, spec.origin if spec else None, False)


def check_device_modules(
    cfg: Path,
    cpp_adapters: set[str],
    *,
    allow_local: bool = False,
    announce: Callable[[str], None] | None = None,
) -> list[DeviceModule]:
    """Announce the modules ``cfg`` imports; refuse local ones unless allowed."""
    modules = device_modules(cfg, cpp_adapters)
    if modules and announce is not None:
        unique = {m.module: m for m in modules}.values()
        names = ", ".join(
            f"{m.module} ({'LOCAL file ' if m.local else 'from '}{m.origin or '?'})"
            for m in unique
        )
        announce(f"{cfg.name} imports Python device code: {names}")
    for m in modules:
        if m.local and not allow_local:
            raise ConfigError(
                f"{cfg} line {m.line} imports Python module {m.module!r} from a file "
                f"in the current folder or beside the config ({m.origin}); a config's "
                "Python devices are code. Install the module as a package, or pass "
                "--allow-local-devices if you trust that file."
            )
    return modules
