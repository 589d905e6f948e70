"""Run folders: the crash-safe writer and the reader (no torch, no Qt here).

The torch ``Dataset`` of pairs lives in :mod:`pairscope.io.dataset`; the names of
a run folder's files in :mod:`pairscope.io.layout`.
"""

from ._finalize import json_default, write_json
from ._import import import_pairs
from ._predictions import PredictionWriter, finalize_predictions, write_bounds
from ._reader import Run, RunPair, is_dark, open_run, same_instant, same_trigger
from ._repair import repair_run
from ._snapshot import snapshot_run
from ._tiff import PageFile
from ._writer import RunWriter, new_run_dir

__all__ = [
    "PageFile",
    "PredictionWriter",
    "Run",
    "RunPair",
    "RunWriter",
    "finalize_predictions",
    "import_pairs",
    "is_dark",
    "json_default",
    "new_run_dir",
    "open_run",
    "repair_run",
    "same_instant",
    "same_trigger",
    "snapshot_run",
    "write_bounds",
    "write_json",
]
