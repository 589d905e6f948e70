"""napari plugin (npe2): open a run folder as overlaid, physically scaled layers.

The reader needs neither napari nor Qt to run: it returns napari's layer data
tuples, so it is tested headless.
"""

from ._reader import get_reader, read_run

__all__ = ["get_reader", "read_run"]
