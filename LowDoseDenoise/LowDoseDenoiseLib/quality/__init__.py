"""Noise and NPS, image-quality metrics, the low-dose simulator, phantoms, classical filters and
figures (no torch at import).

Import the parts by name: :mod:`.noise`, :mod:`.metrics`, :mod:`.simulate`, :mod:`.phantom`,
:mod:`.taskphantoms`, :mod:`.filters`, :mod:`.figures`.
"""

from typing import List

__all__: List[str] = []  # nothing is re-exported: the parts are the submodules
