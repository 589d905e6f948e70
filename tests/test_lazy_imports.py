"""torch stays out of what does not need it: the package, the run writer and reader,
the napari reader and the command line's ``--help`` / ``--version``.

Each case runs in a fresh interpreter, since this test process has torch loaded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import pairscope
from pairscope.io import RunWriter

from ._io_pairs import RUN_INFO, make_pair

ROOT = Path(__file__).parents[1]
HEAVY = ("torch", "qtpy", "PySide6", "PyQt5", "PyQt6")

_REPORT = """
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY=" + ",".join(heavy))
"""

_CLI = """
from pairscope.cli import main
try:
    main({argv!r})
except SystemExit as e:
    assert e.code in (0, None), e.code
"""

CASES = {
    "import pairscope": "import pairscope\nassert pairscope.open_run",
    "pairscope.io": "import pairscope.io",
    "napari reader": (
        "from pairscope.napari import get_reader\n"
        "layers = get_reader(RUN)(RUN)\n"
        "assert {kw['name'] for _, kw, _ in layers} == {'low-dose', 'reference'}"
    ),
    "writer and reader": (
        "from pathlib import Path\n"
        "from pairscope.io import RunWriter, open_run\n"
        "from tests._io_pairs import RUN_INFO, make_pair\n"
        "w = RunWriter(Path(RUN).parent / 'again', commit_interval_s=0.01)\n"
        "w.start(RUN_INFO)\n"
        "w.submit(make_pair(0))\n"
        "w.close()\n"
        "assert open_run(w.run_dir)[0].reference is not None"
    ),
    "--version": _CLI.format(argv=["--version"]),
    "--help": _CLI.format(argv=["--help"]),
    "evaluate --help": _CLI.format(argv=["evaluate", "--help"]),
    "train --help": _CLI.format(argv=["train", "--help"]),
    "export --help": _CLI.format(argv=["export", "--help"]),
}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    writer = RunWriter(tmp_path_factory.mktemp("lazy"), commit_interval_s=0.01)
    writer.start(RUN_INFO)
    for k in range(3):
        writer.submit(make_pair(k, size=32))
    writer.close()
    assert writer.run_dir is not None
    return writer.run_dir


def _run(code: str, run: Path) -> subprocess.CompletedProcess[str]:
    script = f"import sys\nRUN = {str(run)!r}\n{code}\n{_REPORT.format(heavy=HEAVY)}"
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,  # tests._io_pairs importable
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_needs_no_torch(name: str, small_run: Path) -> None:
    proc = _run(CASES[name], small_run)
    assert proc.returncode == 0, proc.stderr[-2000:]
    heavy = proc.stdout.rsplit("HEAVY=", 1)[1].strip()
    assert heavy == "", f"{name} imported {heavy}"


def test_version_prints_the_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pairscope.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"pairscope {pairscope.__version__}"


def test_lazy_names_still_resolve() -> None:
    from pairscope import train as train_package
    from pairscope.offline import restore
    from pairscope.train._trainer import train

    assert pairscope.restore_frame is restore
    assert train_package.train is train
    with pytest.raises(AttributeError):
        _ = pairscope.no_such_name  # type: ignore[attr-defined]
