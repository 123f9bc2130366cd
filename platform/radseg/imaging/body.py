"""Where the patient is in a CT volume: each slice's bounding box of everything that is not air.

A prediction only needs the model where there is something to label: :func:`body_boxes` finds,
for every axial slice of an HU volume ``(z, y, x)``, the smallest box holding the voxels denser
than :data:`AIR_HU` (−500 HU: air and lung-free outside air are about −1000, fat −100, the
lungs −500 to −900 but always inside the body's box). What counts, and why:

* **everything dense is kept, the table included**: the box covers all of it, not only the
  largest connected component, so an arm beside the trunk, a separate leg or a head holder is
  never cut off. A table costs some speed (a taller box); cutting off a limb would cost a wrong
  answer;
* **specks are not**: a row or column counts only where at least :data:`MIN_RUN` voxels of it
  are dense, so isolated noise or a streak artefact's single voxels in the air do not stretch
  the box to the edge of the field of view;
* **a slice with nothing dense has no box** (``(0, 0, 0, 0)``): it is air only (above the head,
  below the feet, a scout slice), and the model is not run on it.

CT only: the threshold is in Hounsfield units. Other modalities (MR intensities have no fixed
scale) get no boxes from the host, and their slices are predicted whole.
"""

from __future__ import annotations

import numpy as np

#: HU above which a voxel is not air (air ≈ −1000, fat ≈ −100)
AIR_HU = -500.0
#: dense voxels a row or a column of a slice needs to count as part of the body
MIN_RUN = 3
#: modalities whose voxel values are Hounsfield units
HU_MODALITIES = frozenset({"CT"})


def body_boxes(hu: np.ndarray, *, air_hu: float = AIR_HU, min_run: int = MIN_RUN) -> np.ndarray:
    """Per slice of ``hu`` ``(z, y, x)``, the box ``(y0, y1, x0, x1)`` (half-open, int32
    ``(z, 4)``) of its voxels denser than ``air_hu``; ``(0, 0, 0, 0)`` for a slice without any
    (see the module docstring for what counts)."""
    if hu.ndim != 3:
        raise ValueError(f"expected an HU volume (z, y, x), got shape {hu.shape}")
    nz = hu.shape[0]
    boxes = np.zeros((nz, 4), np.int32)
    # Slab by slab, so that the boolean mask of a 300 x 512² volume is never whole in memory.
    step = max(1, (1 << 22) // max(1, hu.shape[1] * hu.shape[2]))
    for z0 in range(0, nz, step):
        dense = hu[z0 : z0 + step] > air_hu
        rows = np.count_nonzero(dense, axis=2) >= min_run  # (n, y)
        cols = np.count_nonzero(dense, axis=1) >= min_run  # (n, x)
        for k, (r, c) in enumerate(zip(rows, cols, strict=True)):
            ys, xs = np.flatnonzero(r), np.flatnonzero(c)
            if ys.size and xs.size:
                boxes[z0 + k] = (ys[0], ys[-1] + 1, xs[0], xs[-1] + 1)
    return boxes


def has_body(boxes: np.ndarray) -> np.ndarray:
    """Per slice, whether :func:`body_boxes` found anything (bool ``(z,)``)."""
    return (boxes[:, 1] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 2])
