"""Create a core, load a hardware config with clear errors, and own its lifetime."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from pymmcore_plus.experimental.unicore import UniMMCore

from ..errors import ConfigError

_NO_INSTALL_MESSAGE = "Could not find a compatible Micro-Manager installation"


def demo_config_path() -> Path:
    """The demo microscope's config (shipped with the package, or in the repo)."""
    packaged = (
        resources.files("pairscope") / "hardware_configs" / "demo_dual_camera.cfg"
    )
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).parents[3] / "hardware_configs" / "demo_dual_camera.cfg"


class _DropNoInstallError(logging.Filter):
    """pymmcore-plus logs an error when no C++ Micro-Manager is installed; a config
    of pure-Python devices does not need one, so the message only alarms users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _NO_INSTALL_MESSAGE not in record.getMessage()


def create_core() -> UniMMCore:
    """A ``UniMMCore`` (C++ and Python devices) without the no-installation alarm."""
    logger = logging.getLogger("pymmcore-plus")
    quiet = _DropNoInstallError()
    logger.addFilter(quiet)
    try:
        return UniMMCore()
    finally:
        logger.removeFilter(quiet)


def load_config(core: UniMMCore, cfg: str | Path) -> Path:
    """Load ``cfg`` into ``core``; raise :class:`ConfigError` naming line and fix."""
    path = Path(cfg).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"Hardware config not found: {path}. Pass the path of a Micro-Manager "
            f".cfg file (the demo microscope's is {demo_config_path()})."
        )
    text = path.read_text(errors="replace")
    needs_cpp = any(line.strip().startswith("Device,") for line in text.splitlines())
    try:
        core.loadSystemConfiguration(str(path))
    except Exception as exc:
        hint = (
            " This config loads C++ device adapters: install Micro-Manager (or run "
            "'mmcore install') on the microscope computer."
            if needs_cpp
            else " Check the line's device label, property name and value against "
            "the device's properties (pairscope info CFG lists them)."
        )
        raise ConfigError(f"Could not load {path}: {exc}.{hint}") from exc
    return path


@contextmanager
def open_core(cfg: str | Path) -> Iterator[UniMMCore]:
    """A core with ``cfg`` loaded, unloaded on exit.

    Work-around (pymmcore-plus 0.18.1): after ``setCameraDevice`` on a config with
    Python devices, a core still alive at interpreter exit aborts the process
    ("FATAL: exception not rethrown", exit code 134).  Unloading the devices and
    collecting the core here avoids it.
    """
    core = create_core()
    try:
        load_config(core, cfg)
        yield core
    finally:
        try:
            core.unloadAllDevices()
        finally:
            del core
            gc.collect()
