"""How an export is checked before it is offered, and again after a PACS stored it.

Every export is re-read by its exporter's :meth:`~radseg.contracts.Exporter.verify` (an
independent reader, compared with the request); DICOM exports also go through ``dciodvfy``.
An export sent to a PACS is fetched back over WADO-RS and verified again as the PACS returns it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from radseg.contracts import ExportCheck, ExportRequest
from radseg.core import Platform
from radseg.imaging.dciodvfy import dciodvfy_check
from radseg.settings import PacsSettings
from radseg.workflows.export_files import dicom_files

__all__ = ["check_export", "pacs_round_trip"]

log = logging.getLogger(__name__)


def check_export(
    platform: Platform, fmt: str, request: ExportRequest, written: Path
) -> list[ExportCheck]:
    """Every check of what the ``fmt`` exporter wrote; an exporter that returns none fails."""
    exporter = platform.plugins.exporter(fmt)
    checks = _verify(exporter, fmt, request, written)
    if not checks:
        checks.append(
            ExportCheck("re-read", False, f"the {fmt} exporter returned no checks; not offered")
        )
    if getattr(exporter, "dicom", False):
        checks.append(dciodvfy_check(dicom_files(written)))
    return checks


def _verify(exporter: Any, fmt: str, request: ExportRequest, written: Path) -> list[ExportCheck]:
    """``exporter.verify``, with an exception turned into a failed check.

    A verify that raises (a plugin bug, a file it cannot parse) must block the export and be
    recorded like any failed check, not escape as a crash that leaves no Export row.
    """
    try:
        return list(exporter.verify(request, written))
    except Exception as exc:
        log.exception("the %s exporter's verify raised", fmt)
        return [
            ExportCheck(
                "re-read",
                False,
                f"the {fmt} exporter could not check what it wrote ({type(exc).__name__}); "
                "not offered — see the worker's log",
            )
        ]


def pacs_round_trip(
    platform: Platform,
    fmt: str,
    request: ExportRequest,
    stored: Path,
    name: str,
    pacs_settings: PacsSettings,
    with_images: bool,
    staging: Path,
) -> dict[str, Any]:
    """Send the stored export to PACS ``name`` over STOW-RS, read it back over WADO-RS into
    ``staging`` and verify that copy; the ``remote`` record, its ``check`` included.

    :param with_images: also send the de-identified source series when the PACS lacks it.
    """
    from radseg.pacs import has_series, retrieve, send

    remote: dict[str, Any] = {"images_sent": 0}
    if with_images and request.series.instances:
        series = request.series
        if not has_series(
            name, pacs_settings, series.study_instance_uid, series.series_instance_uid
        ):
            sent_images = send(name, pacs_settings, series.instances)
            remote["images_sent"] = len(sent_images.instances)
    sent = send(name, pacs_settings, dicom_files(stored))
    remote["instances"] = [
        {"study": i.study_instance_uid, "series": i.series_instance_uid, "sop": i.sop_instance_uid}
        for i in sent.instances
    ]
    back = staging / "from-pacs"
    back.mkdir()
    copies = []
    for k, instance in enumerate(sent.instances):
        ds = retrieve(name, pacs_settings, instance)
        path = back / f"{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        copies.append(path)
    written = copies[0] if not stored.is_dir() else back
    checks = _verify(platform.plugins.exporter(fmt), fmt, request, written)
    failed = [c for c in checks if c.passed is False]
    detail = (
        f"sent {len(sent.instances)} object(s) over STOW-RS and read them back over WADO-RS: "
        + ("; ".join(f"{c.name}: {c.detail}" for c in failed) if failed else "identical")
    )
    remote["check"] = ExportCheck(f"PACS round trip ({name})", not failed, detail).to_dict()
    return remote
