"""Sending exports to a PACS over DICOMweb (STOW-RS) and reading them back (WADO-RS).

A destination is a ``[pacs.<name>]`` table in the settings (:class:`radseg.settings.PacsSettings`).
:func:`send` stores DICOM files with one STOW-RS request and checks the PACS's answer: every
instance must be listed as stored, none as failed. :func:`retrieve` fetches one instance back
by its UIDs, so the export workflow can compare what the PACS holds with what was sent.
Errors name the destination and the HTTP status, never a password or token.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import requests
from pydicom.dataset import Dataset

from radseg.errors import InputError, RadsegError
from radseg.settings import PacsSettings, Settings

__all__ = ["PacsError", "SentInstance", "client", "destination", "has_series", "retrieve", "send"]

log = logging.getLogger(__name__)


class PacsError(RadsegError):
    """The PACS refused or could not be reached; the message says which and what it answered."""


@dataclass(frozen=True)
class SentInstance:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str


@dataclass
class SendResult:
    destination: str
    instances: list[SentInstance] = field(default_factory=list)


def destination(settings: Settings, name: str) -> PacsSettings:
    """The PACS called ``name`` in the settings.

    :raises InputError: no such destination; the message lists the configured ones.
    """
    try:
        return settings.pacs[name]
    except KeyError:
        known = ", ".join(sorted(settings.pacs)) or "none is configured"
        raise InputError(
            f"no PACS called {name!r} (configured: {known}); add a [pacs.{name}] table with its "
            "url to the settings file"
        ) from None


def _session(pacs: PacsSettings) -> requests.Session:
    session = requests.Session()
    session.verify = pacs.verify_tls
    if pacs.username is not None and pacs.password is not None:
        session.auth = (pacs.username, pacs.password.get_secret_value())
    if pacs.token is not None:
        session.headers["Authorization"] = f"Bearer {pacs.token.get_secret_value()}"
    return session


def client(pacs: PacsSettings) -> Any:
    """A ``dicomweb_client.DICOMwebClient`` for ``pacs``."""
    from dicomweb_client.api import DICOMwebClient

    dicomweb = DICOMwebClient(pacs.url, session=_session(pacs), timeout=pacs.timeout_s)
    dicomweb.set_http_retry_params(retry=pacs.retries > 0, max_attempts=pacs.retries + 1)
    return dicomweb


def _describe(name: str, exc: Exception) -> str:
    """What went wrong and what to check, for an error message (never a credential)."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        what = f"HTTP {status} {exc.response.reason}"
        if status in (401, 403):
            return f"{what}; check the credentials in [pacs.{name}]: username/password or token"
        return f"{what}; check the destination's url in [pacs.{name}]"
    if isinstance(exc, requests.exceptions.InvalidHeader):  # its message quotes the value
        return (
            "the token or another header is not a valid HTTP header value; check the "
            f"credentials in [pacs.{name}]"
        )
    return f"{type(exc).__name__}: {exc}; check the destination's url in [pacs.{name}]"


def _cause(exc: Exception) -> Exception | None:
    """``exc`` to chain to a PacsError, unless its message quotes a header (a credential)."""
    return None if isinstance(exc, requests.exceptions.InvalidHeader) else exc


def send(name: str, pacs: PacsSettings, files: Sequence[Path]) -> SendResult:
    """STOW-RS ``files`` to ``pacs`` in one request; every one must be stored.

    :raises PacsError: the PACS could not be reached, refused the request, or reported any
        instance as failed.
    """
    datasets: list[Dataset] = [pydicom.dcmread(str(path)) for path in files]
    result = SendResult(destination=name)
    by_study: dict[str, list[Dataset]] = {}
    for ds in datasets:
        by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
    dicomweb = client(pacs)
    for study_uid, group in by_study.items():
        try:
            answer = dicomweb.store_instances(group, study_instance_uid=study_uid)
        except Exception as exc:
            raise PacsError(
                f"PACS {name!r} did not store the export ({_describe(name, exc)})"
            ) from _cause(exc)
        failed = answer.get("FailedSOPSequence") if answer is not None else None
        if failed:
            reasons = ", ".join(str(item.get("FailureReason", "?")) for item in failed)
            raise PacsError(
                f"PACS {name!r} refused {len(failed)} instance(s) (DICOM failure reason "
                f"{reasons}); see the PACS's log"
            )
        stored = {
            str(item.ReferencedSOPInstanceUID)
            for item in (answer.get("ReferencedSOPSequence") or [] if answer is not None else [])
        }
        for ds in group:
            uid = str(ds.SOPInstanceUID)
            if stored and uid not in stored:
                raise PacsError(f"PACS {name!r} did not list instance {uid} as stored")
            result.instances.append(
                SentInstance(study_uid, str(ds.SeriesInstanceUID), uid, str(ds.SOPClassUID))
            )
    log.info("sent %d instance(s) to PACS %s", len(result.instances), name)
    return result


def retrieve(name: str, pacs: PacsSettings, instance: SentInstance) -> Dataset:
    """WADO-RS one instance back from ``pacs``.

    :raises PacsError: the PACS does not return it.
    """
    try:
        return client(pacs).retrieve_instance(
            instance.study_instance_uid, instance.series_instance_uid, instance.sop_instance_uid
        )
    except Exception as exc:
        raise PacsError(
            f"PACS {name!r} did not return instance {instance.sop_instance_uid} "
            f"({_describe(name, exc)})"
        ) from _cause(exc)


def has_series(name: str, pacs: PacsSettings, study_uid: str, series_uid: str) -> bool:
    """Whether ``pacs`` already holds the series (QIDO-RS)."""
    try:
        found = client(pacs).search_for_series(
            study_instance_uid=study_uid, search_filters={"SeriesInstanceUID": series_uid}
        )
    except Exception as exc:
        raise PacsError(
            f"PACS {name!r} could not be searched ({_describe(name, exc)})"
        ) from _cause(exc)
    return bool(found)
