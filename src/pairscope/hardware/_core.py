"""Create a core, load a hardware config with clear errors, and own its lifetime."""

from __future__ import annotations

import atexit
import contextlib
import logging
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import pymmcore
from pymmcore_plus.experimental.unicore import UniMMCore

from ..errors import ConfigError
from ._pydevices import check_device_modules

_NO_INSTALL_MESSAGE = "Could not find a compatible Micro-Manager installation"


def hardware_config_path(name: str) -> Path:
    """A file of ``hardware_configs/`` (shipped with the package, or in the repo)."""
    packaged = resources.files("pairscope") / "hardware_configs" / name
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).parents[3] / "hardware_configs" / name


def demo_config_path() -> Path:
    """The demo microscope as one core with both cameras (sequential pairs)."""
    return hardware_config_path("demo_dual_camera.cfg")


def demo_rig_path() -> Path:
    """The demo microscope as a rig: one core per camera, one trigger line."""
    return hardware_config_path("demo_rig.yaml")


class _DropNoInstallError(logging.Filter):
    """pymmcore-plus logs an error when no C++ Micro-Manager is installed; a config
    of pure-Python devices does not need one, so the message only alarms users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _NO_INSTALL_MESSAGE not in record.getMessage()


_LIVE_CORES: weakref.WeakSet[UniMMCore] = weakref.WeakSet()


def create_core() -> UniMMCore:
    """A ``UniMMCore`` (C++ and Python devices) without the no-installation alarm.

    Cores made here are released before interpreter exit (see :func:`release_core`).
    """
    logger = logging.getLogger("pymmcore-plus")
    quiet = _DropNoInstallError()
    logger.addFilter(quiet)
    try:
        core = UniMMCore()
    finally:
        logger.removeFilter(quiet)
    _LIVE_CORES.add(core)
    return core


def release_core(core: UniMMCore) -> None:
    """Unload all devices and detach the core's C++ -> Python callback.

    Work-around (pymmcore-plus 0.18.1): a core that used ``setCameraDevice`` with
    Python devices and is still alive when the interpreter finalises makes the
    process abort ("FATAL: exception not rethrown", exit code 134): its C++
    destructor calls back into a finalising Python.  Unloading the devices and
    registering no callback first makes that destructor harmless (0 aborts in 8
    runs of a script that keeps its core alive to exit; it aborted in 3 of 8
    with unloading alone).
    """
    try:
        stuck = _unstick_python_devices(core)
        if not stuck:
            core.unloadAllDevices()
        else:  # a device that never lets go cannot be unloaded: the rest can
            logging.getLogger(__name__).warning(
                "Device(s) %s do not answer (stuck in a call); unloading the others",
                ", ".join(sorted(stuck)),
            )
            for label in core.getLoadedDevices():
                if label not in stuck and label != "Core":
                    with contextlib.suppress(Exception):
                        core.unloadDevice(label)
    finally:
        pymmcore.CMMCore.registerCallback(core, None)  # CMMCorePlus forbids it
        _LIVE_CORES.discard(core)


def _unstick_python_devices(core: UniMMCore, wait_s: float = 2.0) -> set[str]:
    """Python devices still held by a call that does not return (a camera stuck in
    a snap holds its lock, and unloading waits for that lock forever): each is
    asked to shut down; the labels of those that still hold on are returned.

    Work-around (pymmcore-plus 0.18.1): the core's Python devices are read from
    its private ``_pydevices``; there is no public way to ask a busy one to stop.
    """
    stuck: set[str] = set()
    devices = getattr(core, "_pydevices", None)
    for label in list(devices or ()):
        device = devices[label]  # type: ignore[index]
        if device.lock(True, wait_s):
            device.unlock()
            continue
        with contextlib.suppress(Exception):
            device.shutdown()  # a hung device told to stop lets go of its call
        if device.lock(True, wait_s):
            device.unlock()
        else:
            stuck.add(label)
    return stuck


@atexit.register
def _release_live_cores() -> None:
    for core in list(_LIVE_CORES):
        try:
            release_core(core)
        except Exception:  # exiting anyway; never turn exit into a crash
            logging.getLogger(__name__).debug("release at exit failed", exc_info=True)


def load_config(
    core: UniMMCore,
    cfg: str | Path,
    *,
    allow_local_devices: bool = False,
    announce: Callable[[str], None] | None = None,
) -> Path:
    """Load ``cfg`` into ``core``; raise :class:`ConfigError` naming line and fix.

    Python device modules are announced (``announce``) before anything is
    imported, and taken from installed packages only unless
    ``allow_local_devices`` (see :mod:`pairscope.hardware._pydevices`).
    """
    path = Path(cfg).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"Hardware config not found: {path}. Pass the path of a Micro-Manager "
            f".cfg file or a rig .yaml (the demo's is {demo_rig_path()})."
        )
    modules = check_device_modules(
        path,
        set(core.getDeviceAdapterNames()),
        allow_local=allow_local_devices,
        announce=announce,
    )
    try:
        core.loadSystemConfiguration(str(path))
    except Exception as exc:
        reason = " ".join(str(exc).split())  # one line
        # a library that is neither a C++ adapter nor a module (the failing line's)
        unknown = [m for m in modules if m.origin is None]
        missing = next((m for m in unknown if f"line {m.line}:" in reason), None)
        missing = missing or next(iter(unknown), None)
        hint = (
            f" pymmcore-plus looks for C++ device adapters in "
            f"{', '.join(core.getDeviceAdapterSearchPaths()) or 'no folder'} and "
            f"found no {missing.module!r} there (line {missing.line}): install "
            "Micro-Manager (or run 'mmcore install') on the microscope computer; for "
            "Micro-Manager's test devices (DemoCamera, Utilities) 'pip install "
            "mm-test-adapters' is enough; for a Python device, install the package "
            "that provides it."
            if missing is not None
            else " Check the line's device label, property name and value against "
            "the device's properties (Micro-Manager's Device Property Browser lists "
            "them, as does core.getDevicePropertyNames(label) in pymmcore-plus)."
        )
        raise ConfigError(f"Could not load {path}: {reason}.{hint}") from exc
    return path


@contextmanager
def open_core(cfg: str | Path, **load_options: Any) -> Iterator[UniMMCore]:
    """A core with ``cfg`` loaded, released (devices unloaded) on exit."""
    core = create_core()
    try:
        load_config(core, cfg, **load_options)
        yield core
    finally:
        release_core(core)
