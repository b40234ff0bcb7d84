"""Image files in and out, DICOM series in (on a regular grid on request), derived DICOM series out,
and the one output check and atomic writer (no torch).

Import the parts by name: :mod:`.imagefiles`, :mod:`.dicomread`, :mod:`.dicomsource`, :mod:`.regulargrid`,
:mod:`.dicomwrite`, :mod:`.outputs`.
"""

from typing import List

__all__: List[str] = []  # nothing is re-exported: the parts are the submodules
