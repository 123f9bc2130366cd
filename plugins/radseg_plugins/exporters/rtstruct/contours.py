"""A mask slice as closed polygons that give the mask back exactly under the even-odd rule.

Each boundary of the mask, outer or hole, is traced with OpenCV on the slice upsampled 2×; the
traced sub-pixel centres lie a quarter pixel inside the pixel edges, so no pixel centre is ever
on a contour and every pixel comes back as it was — a ring is an outer contour plus a hole
contour, an island in the hole a third contour.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mask_to_contours"]

_UPSAMPLE = 2


def mask_to_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Every boundary of ``mask`` (bool ``(rows, cols)``) as a closed polygon of pixel indices.

    Returns arrays ``(n, 2)`` of continuous ``(x, y)`` indices (integers are pixel centres).
    Outer boundaries and hole boundaries alike are returned, unordered: filled with the even-odd
    rule they give ``mask`` back exactly, because the points lie a quarter pixel inside the
    pixel edges (the sub-pixel centres of the 2× upsampled mask) and so no pixel centre is ever
    on an edge.
    """
    import cv2  # imported here: only contour output needs OpenCV

    # One pixel of padding keeps OpenCV's tracing off the image border.
    padded = np.pad(np.asarray(mask, dtype=np.uint8), 1)
    big = np.kron(padded, np.ones((_UPSAMPLE, _UPSAMPLE), dtype=np.uint8))
    # RETR_LIST: every border (outer and hole) with no hierarchy — even-odd needs no nesting.
    contours, _ = cv2.findContours(big, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        points = contour[:, 0, :].astype(np.float64)
        # sub-pixel centre → pixel-edge coordinate ((c + 0.5) / 2) → unpadded pixel index.
        polygons.append((points + 0.5) / _UPSAMPLE - 1.0 - 0.5)
    return polygons
