"""Run folders: the crash-safe writer and the reader (no torch, no Qt here).

The torch ``Dataset`` of pairs lives in :mod:`pairscope.io.dataset`.
"""

from ._reader import Run, RunPair, open_run
from ._snapshot import snapshot_run
from ._writer import RunWriter, new_run_dir

__all__ = ["Run", "RunPair", "RunWriter", "new_run_dir", "open_run", "snapshot_run"]
