"""A config's Python devices are code: every line form that makes ``UniMMCore``
import a module is announced, and a module beside the config or in the working
folder is refused unless the user allows local devices.

Each case is checked twice: against pymmcore-plus itself (does loading the line
really import the module?) and against pairscope's check (does it say so?).
pymmcore-plus looks for C++ adapters in an empty folder here, so no case needs
Micro-Manager.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pairscope.errors import ConfigError
from pairscope.hardware import create_core, load_config, release_core
from pairscope.hardware._pydevices import (
    DEVICE_COMMANDS,
    FIELD_DELIMITER,
    PY_PREFIX,
    check_device_modules,
    device_lines,
    device_modules,
)

# (id, config text, module it names): UniMMCore imports the module
IMPORTS = [
    ("Device", "Device,XY,helper_devices,DemoXYStage\n", "helper_devices"),
    ("#py Device", "#py Device,XY,helper_devices,DemoXYStage\n", "helper_devices"),
    ("#py pyDevice", "#py pyDevice,XY,helper_devices,DemoXYStage\n", "helper_devices"),
    ("pyDevice", "pyDevice,XY,helper_devices,DemoXYStage\n", "helper_devices"),
    (
        "dotted",
        "Device,XY,helper_devices.stages,DemoXYStage\n",
        "helper_devices.stages",
    ),
    ("indented", "  #py   Device,XY,helper_devices,DemoXYStage  \n", "helper_devices"),
    ("crlf", "# demo\r\nDevice,XY,helper_devices,DemoXYStage\r\n", "helper_devices"),
    ("space in the name", "Device,XY,helper devices,DemoXYStage\n", "helper devices"),
    (
        "form feed",
        "# notes\x0cDevice,XY,helper_devices,DemoXYStage\n",
        "helper_devices",
    ),
    # a C++ adapter's name is a Python module where no such adapter is installed
    ("absent C++ adapter", "Device,Camera,DemoCamera,DCam\n", "DemoCamera"),
]
# (id, config text): UniMMCore imports nothing
NO_IMPORT = [
    ("comment", "# Device,XY,helper_devices,DemoXYStage\n"),
    ("#py comment", "#py # Device,XY,helper_devices,DemoXYStage\n"),
    ("#py without space", "#pyDevice,XY,helper_devices,DemoXYStage\n"),
    ("too few fields", "Device,XY,helper_devices\n"),
    ("too many fields", "Device,XY,helper_devices,DemoXYStage,1\n"),
    ("space before the name", "Device,XY, helper_devices,DemoXYStage\n"),
    ("lower-case command", "device,XY,helper_devices,DemoXYStage\n"),
    ("property", "Property,XY,helper_devices,1\n"),
]


@pytest.fixture(autouse=True)
def _no_micromanager(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pymmcore-plus finds no C++ adapter: an empty Micro-Manager folder."""
    monkeypatch.setenv("MICROMANAGER_PATH", str(tmp_path_factory.mktemp("no-mm")))


def _plant(folder: Path, module: str, marker: Path) -> None:
    """``module``'s top-level file in ``folder``, writing ``marker`` if imported."""
    top = module.split(".")[0]
    (folder / f"{top}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n"
    )


@contextlib.contextmanager
def _forgotten(*modules: str) -> Iterator[None]:
    """Forget ``modules`` from ``sys.modules`` afterwards (each test plants its own)."""
    try:
        yield
    finally:
        for name in list(sys.modules):
            if name.split(".")[0] in {m.split(".")[0] for m in modules}:
                del sys.modules[name]


@pytest.mark.parametrize(
    ("text", "module", "imports"),
    [pytest.param(t, m, True, id=i) for i, t, m in IMPORTS]
    + [pytest.param(t, "helper_devices", False, id=i) for i, t in NO_IMPORT],
)
def test_the_table_is_what_unimmcore_does(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    module: str,
    imports: bool,
) -> None:
    """Ground truth: UniMMCore, its folder on sys.path, imports exactly the
    modules of the IMPORTS table (guards the table against a pymmcore-plus change)."""
    marker = tmp_path / "IMPORTED"
    _plant(tmp_path, module, marker)
    cfg = tmp_path / "rig.cfg"
    cfg.write_bytes(text.encode())
    monkeypatch.syspath_prepend(str(tmp_path))
    core = create_core()
    try:
        with _forgotten(module), contextlib.suppress(Exception):
            core.loadSystemConfiguration(str(cfg))
    finally:
        release_core(core)
    assert marker.exists() is imports


def test_the_loader_syntax_is_pymmcore_plus_s() -> None:
    """pairscope's reading of a config uses the loader's own prefix and commands."""
    from pymmcore_plus import CFGCommand
    from pymmcore_plus.experimental.unicore.core import _config

    assert _config.PY_PREFIX == PY_PREFIX
    assert {CFGCommand.Device.value, _config._PY_DEVICE_CMD} == DEVICE_COMMANDS
    assert CFGCommand.FieldDelimiters.value == FIELD_DELIMITER
    # the commands audited (pymmcore-plus 0.18): of these only Device loads a device;
    # a new one must be read before this test is updated
    assert {c.value for c in _config._COMMAND_EXECUTORS} == {
        "Device", "Property", "Delay", "FocusDirection", "Label", "ConfigGroup",
        "ConfigPixelSize", "PixelSize_um", "PixelSizeAffine", "PixelSizeAngle_dxdz",
        "PixelSizeAngle_dydz", "PixelSizeOptimalZ_Um", "Parent",
    }  # fmt: skip


@pytest.mark.parametrize("where", ["beside the config", "in the working folder"])
@pytest.mark.parametrize(
    ("text", "module"), [(t, m) for _, t, m in IMPORTS], ids=[i for i, _, _ in IMPORTS]
)
def test_every_importing_line_is_announced_and_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, module: str, where: str
) -> None:
    cfg_dir, work_dir = tmp_path / "downloads", tmp_path / "work"
    cfg_dir.mkdir(), work_dir.mkdir()
    marker = tmp_path / "IMPORTED"
    planted = cfg_dir if where == "beside the config" else work_dir
    _plant(planted, module, marker)
    cfg = cfg_dir / "rig.cfg"
    cfg.write_bytes(text.encode())
    monkeypatch.chdir(work_dir)
    monkeypatch.syspath_prepend(str(planted))  # as `python -m` or a notebook there
    said: list[str] = []
    core = create_core()
    try:
        with _forgotten(module), pytest.raises(ConfigError) as err:
            load_config(core, cfg, announce=said.append)
    finally:
        release_core(core)
    assert not marker.exists(), "the module ran"
    top = module.split(".")[0]
    file = planted.resolve() / f"{top}.py"
    assert said == [f"rig.cfg imports Python device code: {module} (LOCAL file {file})"]
    message = str(err.value)
    assert "\n" not in message
    line = next(n for n, x in enumerate(text.splitlines(), 1) if top in x)
    assert f"rig.cfg line {line} (" in message
    assert f"{text.splitlines()[line - 1].strip()!r}" in message
    assert f"module {module!r} from {file}" in message
    assert "--allow-local-devices" in message


@pytest.mark.parametrize(
    "text", [t for _, t in NO_IMPORT], ids=[i for i, _ in NO_IMPORT]
)
def test_lines_that_import_nothing_are_not_flagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    cfg = tmp_path / "rig.cfg"
    cfg.write_bytes(text.encode())
    _plant(tmp_path, "helper_devices", tmp_path / "IMPORTED")
    said: list[str] = []
    monkeypatch.chdir(tmp_path)
    # nothing found to import (" helper_devices" is no file): nothing to announce
    assert all(m.origin is None for m in device_modules(cfg, set()))
    check_device_modules(cfg, set(), announce=said.append)
    assert said == []


def test_a_cpp_adapter_found_in_the_search_path_is_not_a_module() -> None:
    line = "Device,Camera,DemoCamera,DCam"
    assert device_lines(line, {"DemoCamera", "Utilities"}) == []
    assert device_lines(line, {"Utilities"}) == [(1, line, "DemoCamera")]


def test_allowed_local_devices_are_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "IMPORTED"
    _plant(tmp_path, "helper_devices", marker)
    cfg = tmp_path / "rig.cfg"
    cfg.write_text("Device,XY,helper_devices,DemoXYStage\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    core = create_core()
    try:
        with _forgotten("helper_devices"), pytest.raises(ConfigError, match="class"):
            load_config(core, cfg, allow_local_devices=True)  # no such class in it
    finally:
        release_core(core)
    assert marker.exists()


def test_an_installed_package_is_not_shadowed_by_a_folder_of_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clone named ``pairscope`` in the working folder is not what Python
    imports for ``pairscope.sim.devices`` (the installed package is)."""
    (tmp_path / "pairscope").mkdir()
    cfg = tmp_path / "rig.cfg"
    cfg.write_text("#py pyDevice,Hub,pairscope.sim.devices,DemoHub\n")
    monkeypatch.chdir(tmp_path)
    (found,) = device_modules(cfg, set())
    assert found.module == "pairscope.sim.devices" and not found.local
    assert found.origin is not None and "pairscope" in found.origin


@pytest.mark.parametrize(
    "line",
    [
        "Device,XY,helper_devices,DemoXYStage",
        "#py Device,XY,helper_devices,DemoXYStage",
    ],
)
def test_cli_info_from_the_config_folder_imports_nothing(
    tmp_path: Path, line: str
) -> None:
    """The issue's case: ``python -m pairscope.cli info CFG`` run where the
    config and a helper module lie (that folder is then on sys.path)."""
    marker = tmp_path / "IMPORTED"
    _plant(tmp_path, "helper_devices", marker)
    cfg = tmp_path / "downloaded.cfg"
    cfg.write_text(f"#py pyDevice,Hub,pairscope.sim.devices,DemoHub\n{line}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pairscope.cli", "info", cfg.name],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ},  # MICROMANAGER_PATH: the empty folder
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert not marker.exists(), "the module ran"
    said, error = proc.stderr.strip().splitlines()
    assert "pairscope.sim.devices (from " in said
    assert (
        f"helper_devices (LOCAL file {tmp_path.resolve() / 'helper_devices.py'})"
        in said
    )
    assert error.startswith(f"pairscope: error: {cfg.name} line 2 ({line!r})")
    assert "helper_devices" in error and "--allow-local-devices" in error
