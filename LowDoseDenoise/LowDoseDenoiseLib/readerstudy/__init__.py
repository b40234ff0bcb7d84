"""Blinded reader study: plan the images, read and score them, summarise the scores.

* :mod:`.protocol` — criteria, the 1–5 scale with its anchors, the study folder's layout;
* :mod:`.plan` — make one image per case and method (engine, classical filters), write
  the blinded worklist, the separate key with SHA-256 of every image, and the protocol;
* :mod:`.sceneplan` — the same plan with volume nodes of a Slicer scene as the cases (MRML);
* :mod:`.scores` — a reader's session: next unscored item, append-only score file;
* :mod:`.summary` — unblind with the key, statistics (SciPy, scikit-learn,
  krippendorff), report and figure;
* :mod:`.views` — MRML: an item's two images in linked side-by-side views (no Qt);
* :mod:`.cli` — the ``lowdose-denoise reader-study`` subcommands.

Nothing here imports Qt; only :mod:`.views` and :mod:`.sceneplan` import MRML and only :mod:`.plan` (when a
model method is planned) imports torch.
"""

from typing import List

__all__: List[str] = []  # nothing is re-exported: the parts are the submodules
