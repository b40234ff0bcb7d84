"""Training: data, losses, the trainer (validates through the engine) and export to a model file.

Import the parts by name: :mod:`.config`, :mod:`.data`, :mod:`.losses`, :mod:`.perceptual`,
:mod:`.trainer`, :mod:`.export`.
"""

from typing import List

__all__: List[str] = []  # nothing is re-exported: the parts are the submodules
