"""Model exchange in the bioimage.io format (spec 0.5): export and import.

Needs the ``export`` extra (``bioimageio.core``, ``onnx``, ``onnxruntime``) for
export and testing; import only reads the package (YAML and safetensors).
"""

from ._export import (
    EXPORT_STEPS,
    INSTALL_EXTRA,
    PAIRSCOPE_ATTACHMENT,
    ExportExtraMissing,
    export_bioimageio,
    require_export_extra,
    sample_from_run,
)
from ._import import import_bioimageio
from ._test import test_package

__all__ = [
    "EXPORT_STEPS",
    "INSTALL_EXTRA",
    "PAIRSCOPE_ATTACHMENT",
    "ExportExtraMissing",
    "export_bioimageio",
    "import_bioimageio",
    "require_export_extra",
    "sample_from_run",
    "test_package",
]
