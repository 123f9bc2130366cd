"""The ``dicomweb`` dataset source: pull studies from a PACS with QIDO-RS and WADO-RS.

Settings (``[plugins.dicomweb]``, validated when the plugin is configured)::

    url = "https://pacs.example.org/dicom-web"   # the DICOMweb root (QIDO, WADO)
    username = "radseg"                           # HTTP basic auth, with password ...
    password = "..."
    # token = "..."                               # ... or a bearer token, not both
    timeout_s = 30
    verify_tls = true
    max_studies = 100                             # refuse queries that match more

The ``path`` given to :meth:`DicomWebSource.read` is the query, not a file on disk: either a JSON
file holding an object, or the text ``Key=value&Key=value``, with the keys
``StudyInstanceUID``, ``PatientID``, ``AccessionNumber``, ``StudyDate`` and ``ModalitiesInStudy``
(e.g. ``PatientID=12345&ModalitiesInStudy=CT``). Each matching study (QIDO-RS
``/studies``) is listed series by series (``/studies/{uid}/series``); image series — of the
asked modality, if one was asked — are retrieved with WADO-RS into a private temporary folder and
read exactly like a DICOM folder (:func:`radseg.imaging.dicom_io.read_series`, de-identifying every
header on the way in). SEG and RTSTRUCT series of the study are retrieved too and put on the image
series they reference (:func:`radseg.imaging.label_sources.attach.attach_label_objects`: by the
referenced SeriesInstanceUID, de-identified alike, else the one series they land on); several
label objects for one series are merged by class name. The temporary folder is removed
afterwards. Problems are reported as ``study N/series M/...`` — never with a UID, name or ID.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydicom.dataset import Dataset

from radseg.contracts import (
    IngestProblem,
    ProgressFn,
    ReadRequest,
    SeriesVolume,
    validate_settings,
)
from radseg.errors import InputError
from radseg.hookspecs import hookimpl
from radseg.imaging.dicom_io import read_series
from radseg.imaging.label_sources.attach import attach_label_objects

__all__ = [
    "QUERY_KEYS",
    "DicomWebSettings",
    "DicomWebSource",
    "parse_query",
    "radseg_configure",
    "radseg_register_datasets",
]

log = logging.getLogger(__name__)

PLUGIN_NAME = "dicomweb"
QUERY_KEYS = ("StudyInstanceUID", "PatientID", "AccessionNumber", "StudyDate", "ModalitiesInStudy")
LABEL_MODALITIES = ("SEG", "RTSTRUCT")
#: Series that hold no image volume (reports, presentation states, registrations...).
_NOT_IMAGES = (
    "SR",
    "PR",
    "KO",
    "REG",
    "RTPLAN",
    "RTDOSE",
    "RTRECORD",
    "DOC",
    "FID",
    "REGISTRATION",
)

# DICOM JSON tags (PS3.18 F.2) of what QIDO answers with.
_STUDY_UID, _SERIES_UID, _MODALITY = "0020000D", "0020000E", "00080060"


class DicomWebSettings(BaseModel):
    """``[plugins.dicomweb]``: where the PACS is and how to log in."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, description="DICOMweb root, e.g. https://pacs/dicom-web")
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    verify_tls: bool = True
    max_studies: int = Field(default=100, ge=1)

    @field_validator("url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        if url is not None and "@" in urlsplit(url).netloc:
            # urls end up in logs and messages; credentials stay in the fields that mask them
            raise ValueError(
                "url must not hold credentials (user:password@); use username/password or token"
            )
        return url

    @model_validator(mode="after")
    def _check(self) -> DicomWebSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together; set both or neither")
        if self.token is not None and self.username is not None:
            raise ValueError("give a bearer token or a username and password, not both")
        return self


@dataclass
class _Study:
    index: int
    uid: str
    images: list[tuple[int, str]] = field(default_factory=list)  # (series index, UID)
    labels: list[tuple[int, str]] = field(default_factory=list)


class DicomWebSource:
    """Studies pulled from a PACS over DICOMweb; see the module doc."""

    name: ClassVar[str] = "dicomweb"
    #: ``path`` is a query, not a local file (the ingest does not look for it on disk).
    reads_local_files: ClassVar[bool] = False
    #: the SEG and RTSTRUCT series of a study name their own classes (no class map)
    takes_class_map: ClassVar[bool] = False

    def __init__(self, settings: DicomWebSettings | None = None) -> None:
        self.settings = settings or DicomWebSettings()

    def session(self) -> requests.Session:
        """An HTTP session with the configured TLS check and credentials."""
        session = requests.Session()
        session.verify = self.settings.verify_tls
        if self.settings.username is not None and self.settings.password is not None:
            session.auth = (self.settings.username, self.settings.password.get_secret_value())
        if self.settings.token is not None:
            session.headers["Authorization"] = f"Bearer {self.settings.token.get_secret_value()}"
        return session

    def client(self) -> Any:
        """A ``dicomweb_client.DICOMwebClient`` for the configured PACS."""
        from dicomweb_client.api import DICOMwebClient  # imported here: only pulls need it

        if not self.settings.url:
            raise InputError(
                'the dicomweb plugin has no PACS to ask: set url = "https://.../dicom-web" in '
                "[plugins.dicomweb] of the settings file"
            )
        return DICOMwebClient(
            self.settings.url.rstrip("/"), session=self.session(), timeout=self.settings.timeout_s
        )

    def read(self, request: ReadRequest, progress: ProgressFn) -> Iterator[SeriesVolume]:
        """Yield every image series of the studies matching the query ``request.path``.

        ``request.labels`` is not used (labels come from the SEG/RTSTRUCT series of each study):
        giving one is an error; and no class map (``takes_class_map``: the SEG and RTSTRUCT name
        their own classes).

        :raises InputError: no or a bad query, no URL set, the PACS refuses or cannot be reached,
            or the query matches more than ``max_studies`` studies.
        """
        if request.labels is not None:
            raise InputError(
                "the dicomweb source takes its labels from the SEG/RTSTRUCT series stored with "
                "each study; store them in the PACS instead of passing a label file"
            )
        query = parse_query(request.path)
        client = self.client()
        studies = self._studies(client, query)
        with tempfile.TemporaryDirectory(prefix="radseg-dicomweb-") as tmp:
            for n, study in enumerate(studies):
                progress(n / len(studies), f"pulling study {n + 1}/{len(studies)}")
                yield from self._pull_study(
                    client,
                    study,
                    Path(tmp) / f"study{study.index}",
                    request.deidentify,
                    request.problems,
                )
        progress(1.0, f"pulled {len(studies)} study(ies)")

    def _studies(self, client: Any, query: dict[str, str]) -> list[_Study]:
        filters = {k: v for k, v in query.items() if k != "ModalitiesInStudy"}
        if "ModalitiesInStudy" in query:
            filters["ModalitiesInStudy"] = query["ModalitiesInStudy"]
        limit = self.settings.max_studies
        found = _ask(
            lambda: client.search_for_studies(
                search_filters=filters, limit=limit + 1, fields=[_STUDY_UID]
            ),
            "search for studies (QIDO-RS)",
        )
        if len(found) > limit:
            raise InputError(
                f"the query matches more than {limit} studies; narrow it (StudyInstanceUID, "
                "StudyDate...) or raise max_studies in [plugins.dicomweb]"
            )
        if not found:
            raise InputError("no study on the PACS matches the query")
        wanted = {m.strip().upper() for m in query.get("ModalitiesInStudy", "").split(",") if m}
        studies = []
        for i, item in enumerate(found, 1):
            study = _Study(i, _value(item, _STUDY_UID))
            listed = _ask(
                partial(client.search_for_series, study.uid, fields=[_SERIES_UID, _MODALITY]),
                f"list the series of study {i} (QIDO-RS)",
            )
            for j, series in enumerate(listed, 1):
                modality = _value(series, _MODALITY).upper()
                uid = _value(series, _SERIES_UID)
                if modality in LABEL_MODALITIES:
                    study.labels.append((j, uid))
                elif modality not in _NOT_IMAGES and (not wanted or modality in wanted):
                    study.images.append((j, uid))
            studies.append(study)
        return studies

    def _pull_study(
        self,
        client: Any,
        study: _Study,
        folder: Path,
        deidentify: Callable[[Any], Any],
        problems: list[IngestProblem],
    ) -> Iterator[SeriesVolume]:
        """The image series of ``study``, with its SEG/RTSTRUCT series attached to them."""
        volumes = _pull_images(client, study, folder, deidentify, problems)
        label_paths: list[Path] = []
        names: list[str] = []
        for j, uid in study.labels:
            target = folder / f"labels{j}"
            if not _pull_series(client, study, j, uid, target, problems):
                continue
            for k, path in enumerate(sorted(target.iterdir()), 1):
                label_paths.append(path)
                names.append(f"study {study.index}/series {j}/instance {k}")
        first = len(problems)
        attach_label_objects(
            volumes, label_paths, deidentify=deidentify, problems=problems, names=names
        )
        for problem in problems[first:]:
            problem.name = problem.path  # generated names ("study 1/series 2/instance 3")
        yield from volumes


def _pull_images(
    client: Any,
    study: _Study,
    folder: Path,
    deidentify: Callable[[Any], Any],
    problems: list[IngestProblem],
) -> list[SeriesVolume]:
    """Retrieve and read the image series of ``study``, de-identified, originals kept."""
    volumes: list[SeriesVolume] = []
    for j, uid in study.images:
        target = folder / f"series{j}"
        if not _pull_series(client, study, j, uid, target, problems):
            continue
        found: list[IngestProblem] = []
        # keep_originals: the host stores the de-identified instances under studies/.
        volumes.extend(
            read_series(target, deidentify=deidentify, problems=found, keep_originals=True)
        )
        # files are named by their position (00001.dcm): names without PHI, kept as they are
        where = f"study {study.index}/series {j}"
        problems.extend(
            replace(p, path=f"{where}/{p.path}", name=f"{where}/{p.path}") for p in found
        )
    return volumes


def _pull_series(
    client: Any, study: _Study, j: int, uid: str, target: Path, problems: list[IngestProblem]
) -> bool:
    """Retrieve series ``j`` (``uid``) of ``study`` into ``target``; a PACS that refuses or
    fails is a problem of that series (``False``), and the study's other series still come."""
    try:
        _retrieve(client, study.uid, uid, target)
    except InputError as exc:
        where = f"study {study.index}/series {j}"
        problems.append(IngestProblem(where, str(exc), name=where))
        return False
    return True


@hookimpl
def radseg_configure(platform: Any) -> DicomWebSettings:
    return validate_settings(
        PLUGIN_NAME, DicomWebSettings, platform.settings.plugin_settings(PLUGIN_NAME)
    )


@hookimpl
def radseg_register_datasets() -> list[type[DicomWebSource]]:
    return [DicomWebSource]


def parse_query(path: Path | str) -> dict[str, str]:
    """The query in ``path``: a JSON object file, or ``Key=value&Key=value`` text.

    :raises InputError: empty, unknown keys, or a value that is not text.
    """
    text = str(path)
    candidate = Path(text)
    if candidate.suffix.lower() == ".json" and candidate.is_file():
        try:
            raw: Any = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read the DICOMweb query {candidate.name}: {exc}") from exc
        if not isinstance(raw, dict):
            raise InputError(
                f"{candidate.name}: the query must be a JSON object of keys and values"
            )
        pairs = [(str(k), v) for k, v in raw.items()]
    else:
        # Path("") is "."; neither is a query.
        pairs = parse_qsl(text, keep_blank_values=True) if text not in ("", ".") else []
    query: dict[str, str] = {}
    for key, value in pairs:
        if key not in QUERY_KEYS:
            raise InputError(
                f"unknown DICOMweb query key {key!r}; use {', '.join(QUERY_KEYS)} "
                "(e.g. StudyInstanceUID=1.2.3 or PatientID=123&ModalitiesInStudy=CT)"
            )
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        if not isinstance(value, str | int) or not str(value).strip():
            raise InputError(f"DICOMweb query key {key} needs a non-empty text value")
        query[key] = str(value).strip()
    if not query:
        raise InputError(
            "the DICOMweb query is empty; give e.g. StudyInstanceUID=1.2.3 or "
            "PatientID=123&ModalitiesInStudy=CT (refusing to pull the whole PACS)"
        )
    return query


def _ask(call: Callable[[], Any], what: str) -> Any:
    try:
        return call()
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        hint = " (check username/password or token)" if status in (401, 403) else ""
        raise InputError(f"the PACS refused to {what}: HTTP {status}{hint}") from None
    except requests.RequestException as exc:
        raise InputError(
            f"cannot reach the PACS to {what}: {type(exc).__name__}; check url in "
            "[plugins.dicomweb] and the network"
        ) from None


def _retrieve(client: Any, study_uid: str, series_uid: str, folder: Path) -> None:
    """Store every instance of a series under ``folder`` (``00000.dcm``, ...)."""
    folder.mkdir(parents=True)

    def pull() -> None:
        for k, ds in enumerate(client.iter_series(study_uid, series_uid)):
            _save(ds, folder / f"{k:05d}.dcm")

    _ask(pull, "retrieve a series (WADO-RS)")
    if not any(folder.iterdir()):
        raise InputError("the PACS returned no instance for this series")


def _save(ds: Dataset, path: Path) -> None:
    ds.ensure_file_meta()
    if "TransferSyntaxUID" not in ds.file_meta:
        raise InputError("an instance came without its transfer syntax")
    ds.save_as(path, enforce_file_format=True)


def _value(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value", [])
    return str(values[0]) if values else ""
