"""Binary masks → COCO polygons, and what that loses.

COCO polygons are lists ``[x1, y1, x2, y2, ...]`` in pixel-edge coordinates (pixel ``(x, y)``
covers ``[x, x + 1) × [y, y + 1)``), and pycocotools fills several polygons of one annotation as
their union. So a polygon annotation cannot hold a hole: a ring comes back as a disc. Everything
else comes back exactly: :func:`mask_to_polygons` traces the outer boundary of the mask upsampled
2× (cv2, ``RETR_EXTERNAL``), whose boundary sub-pixel centres lie a quarter pixel inside the true
pixel edges, so pycocotools' rasteriser puts every boundary pixel back where it was. The loss is
measured, never assumed: :func:`polygon_iou` decodes the polygons with pycocotools and compares.
"""

from __future__ import annotations

import warnings

import numpy as np
from pycocotools import mask as mask_util

__all__ = ["mask_to_polygons", "polygon_iou"]

_UPSAMPLE = 2


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of ``mask`` (bool or 0/1 ``(h, w)``) as COCO polygons; holes are dropped."""
    import cv2  # imported here: only polygon output needs OpenCV

    big: np.ndarray = np.kron(
        np.asarray(mask, dtype=np.uint8), np.ones((_UPSAMPLE, _UPSAMPLE), dtype=np.uint8)
    )
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        points = (contour[:, 0, :].astype(np.float64) + 0.5) / _UPSAMPLE
        if len(points) < 3:  # pycocotools needs three points; a degenerate run is a sliver
            points = np.concatenate([points, points[::-1], points])[:3]
        polygons.append([round(float(v), 3) for v in points.ravel()])
    return polygons


def polygon_iou(polygons: list[list[float]], mask: np.ndarray) -> float:
    """IoU of ``polygons`` as pycocotools fills them with ``mask``; 1.0 when both are empty."""
    height, width = mask.shape
    truth = np.asarray(mask, dtype=bool)
    if not polygons:
        return 1.0 if not truth.any() else 0.0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
        rle = mask_util.merge(mask_util.frPyObjects(polygons, height, width))
        filled = mask_util.decode(rle).astype(bool)
    union = np.count_nonzero(filled | truth)
    return float(np.count_nonzero(filled & truth) / union) if union else 1.0
