"""What an RT Structure Set is made from: the request's labels, checked, and the headers of the
source instances it copies from and references."""

from __future__ import annotations

import logging

import numpy as np
from pydicom.dataset import Dataset

from radseg.contracts import ExportRequest
from radseg.errors import InputError
from radseg.imaging.labels import label_array
from radseg.imaging.source_headers import source_headers

__all__ = ["SourceHeaders", "checked_labels"]

log = logging.getLogger(__name__)


class SourceHeaders:
    """What the structure set copies from, and references in, the source instances."""

    def __init__(self, first: Dataset, sop_classes: dict[str, str]) -> None:
        self.first = first
        #: SOPInstanceUID → SOPClassUID of every source instance, in slice order
        self.sop_classes = sop_classes

    @classmethod
    def read(cls, request: ExportRequest) -> SourceHeaders:
        """:raises InputError: see :func:`~radseg.imaging.source_headers.source_headers`; also
        when the instances do not share exactly one frame of reference."""
        headers = source_headers(request)
        series = request.series
        frames = {str(h.get("FrameOfReferenceUID", "")) for h in headers.values()}
        if len(frames) != 1 or "" in frames:
            raise InputError(
                f"series {series.series_instance_uid}: its instances have "
                f"{len(frames - {''})} FrameOfReferenceUID(s) (need exactly one); contours "
                "cannot be placed in patient space — export it as nifti instead"
            )
        sop_classes = {uid: str(h.SOPClassUID) for uid, h in headers.items()}
        return cls(next(iter(headers.values())), sop_classes)

    @property
    def frame_of_reference_uid(self) -> str:
        return str(self.first.FrameOfReferenceUID)


def checked_labels(request: ExportRequest) -> np.ndarray:
    labels = label_array(request.labels, request.geometry)
    if len(request.series.slices) != labels.shape[0]:
        raise InputError(
            f"the series lists {len(request.series.slices)} slices but the labels have "
            f"{labels.shape[0]}; export the prediction of this series"
        )
    ids = [c.id for c in request.classes]
    if any(not 1 <= i <= 255 for i in ids) or len(set(ids)) != len(ids):
        raise InputError(
            f"class ids must be distinct and 1-255 (ROI numbers), got {ids}; fix the class map"
        )
    unknown = sorted(set(np.unique(labels).tolist()) - {0} - set(ids))
    if unknown:
        log.warning("labels contain class ids %s with no class; they are not exported", unknown)
    return labels
