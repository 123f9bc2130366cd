"""The headers of a prediction's stored source instances, for exporters that reference them.

DICOM exporters (``dicom-seg``, ``rtstruct``) copy patient and study attributes from the
de-identified originals and reference every slice by its SOP Instance UID. Both need the same
thing first: every stored instance's header (never its pixel data), keyed by SOP Instance UID,
with a clear refusal when the series has no DICOM originals, an original cannot be read, or a
slice names an instance that is not stored.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from radseg.contracts import ExportRequest
from radseg.errors import InputError

__all__ = ["source_headers"]


def source_headers(request: ExportRequest) -> dict[str, Dataset]:
    """The source instances' headers (read with ``stop_before_pixels``) by SOP Instance UID,
    in the order of ``request.series.instances``.

    :raises InputError: the series has no DICOM originals (it came from NIfTI), an original
        cannot be read, or a slice of the series names an instance that is not stored.
    """
    series = request.series
    if not series.instances:
        raise InputError(
            f"prediction {request.prediction_id}'s series has no DICOM originals (it came from "
            "NIfTI or another non-DICOM source), so a DICOM object cannot reference it; export "
            "it as nifti instead"
        )
    headers: dict[str, Dataset] = {}
    for path in series.instances:
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception as exc:
            raise InputError(
                f"prediction {request.prediction_id}: a stored source instance "
                f"({Path(path).name}) cannot be read ({type(exc).__name__}); re-ingest the series"
            ) from None
        headers[str(ds.SOPInstanceUID)] = ds
    missing = [s.slice_index for s in series.slices if s.sop_instance_uid not in headers]
    if missing:
        raise InputError(
            f"prediction {request.prediction_id}: {len(missing)} slice(s) of the series (first: "
            f"index {missing[0]}) have no stored DICOM instance; re-ingest the series"
        )
    return headers
