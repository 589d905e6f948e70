"""Work-around: bioimageio.spec 0.5.12 with pydantic >= 2.14.

bioimageio.spec passes pydantic's ``SerializationInfo`` positionally to a wrap
serializer's ``handler`` (``handler(value, info)``); pydantic 2.14 takes that
argument as ``index_key`` and raises ``TypeError``, so every ``model_dump`` and
package export fails.  The three serializers that do this get their own source
recompiled with ``handler(value)``, in their own module's namespace.  Applied
once, only with pydantic >= 2.14 and only where the pattern is found.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from typing import Any

_done = False
_CALL = re.compile(r"handler\(\s*(\w+),\s*info,[^\n]*\n\s*\)")


def _recompile(fn: Any) -> bool:
    """Replace ``fn``'s code by its source with the handler call fixed."""
    src = textwrap.dedent(inspect.getsource(fn))
    lines = src.splitlines(keepends=True)
    while lines and lines[0].lstrip().startswith("@"):
        lines.pop(0)
    src = "".join(lines)
    fixed = _CALL.sub(r"handler(\1)", src)
    if fixed == src:
        return False
    namespace: dict[str, Any] = {}
    exec(compile(fixed, fn.__code__.co_filename, "exec"), fn.__globals__, namespace)
    fn.__code__ = namespace[fn.__name__].__code__
    return True


def patch_bioimageio_spec() -> None:
    """Fix the serializers in place if this bioimageio.spec / pydantic need it."""
    global _done
    if _done:
        return
    _done = True
    import pydantic

    if tuple(int(p) for p in pydantic.VERSION.split(".")[:2]) < (2, 14):
        return
    from bioimageio.spec._internal import io_packaging
    from bioimageio.spec._internal.validated_string_with_inner_node import (
        ValidatedStringWithInnerNode,
    )
    from bioimageio.spec.model import v0_4

    proxy = ValidatedStringWithInnerNode.__dict__["_serialize"]
    method = getattr(proxy, "wrapped", proxy)
    for fn in (
        io_packaging.package_file_descr_serializer,
        v0_4.package_weights,
        getattr(method, "__func__", method),
    ):
        _recompile(fn)
