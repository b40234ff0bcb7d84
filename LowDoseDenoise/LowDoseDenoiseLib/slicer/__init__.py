"""MRML logic for the Slicer module: output node, subject hierarchy, compare views, DICOM export (MRML,
no Qt).

Import the parts by name: :mod:`.scene`, :mod:`.headless`, :mod:`.dicomexport`,
:mod:`.dependencies`, :mod:`.modelchoice`, :mod:`.messages`, :mod:`.compat`, :mod:`.reloading`.
"""

from typing import List

__all__: List[str] = []  # nothing is re-exported: the parts are the submodules
