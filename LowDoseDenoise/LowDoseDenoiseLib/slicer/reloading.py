"""Reload support for developers: Slicer's "Reload" re-reads only the module file.

:func:`forget_library_modules` drops ``LowDoseDenoiseLib`` and its submodules from
``sys.modules``, so that the reloaded module file imports the library afresh, as
SlicerNNUnet and MONAIAuto3DSeg do in their ``onReload`` (they use ``imp``, which
Python 3.12 no longer has).
"""

from __future__ import annotations

import sys
from typing import List

__all__ = ["forget_library_modules"]

PACKAGE = __name__.split(".")[0]


def forget_library_modules(package: str = PACKAGE) -> List[str]:
    """Remove ``package`` and every ``package.*`` module from ``sys.modules``; return their names."""
    names = sorted(name for name in sys.modules if name == package or name.startswith(package + "."))
    for name in names:
        del sys.modules[name]
    return names
