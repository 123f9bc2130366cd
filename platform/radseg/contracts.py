"""What plugins implement and what the core hands them.

Four contracts, each a :class:`typing.Protocol` with a ``name`` class attribute that is the
registry key: :class:`DatasetSource`, :class:`ModelBackend`, :class:`Exporter` and
:class:`JobKind`; :class:`PlatformView` is what ``radseg_configure`` is handed. The values they
exchange are plain dataclasses of numpy arrays and paths, so that plugins need nothing from the
database and the heavy dependencies (torch, detectron2) stay inside model plugins.

Axis order everywhere is ``(z, y, x)`` — slice, row, column — as SimpleITK's
``GetArrayFromImage`` returns it. Geometry follows DICOM's patient coordinate system (LPS, mm).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np
from pydantic import BaseModel, ValidationError

from radseg.errors import PluginConfigError

if TYPE_CHECKING:
    from radseg.settings import Settings

#: ``progress(fraction, message)`` with fraction in [0, 1]; long work calls it often.
ProgressFn = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:
    """A :data:`ProgressFn` that discards what it is told."""


#: ``report(facts)``: a backend tells the host how it predicted, as JSON-able facts (e.g.
#: ``{"engine": "bf16", "bf16_check": {...}, "bf16": {...}}``: the engine, this prediction's
#: check of a reduced-precision engine against float32, and what is known of each such engine
#: considered, under its name: ``"bf16"``, ``"int8"``); may be called more than once
ReportFn = Callable[[dict[str, Any]], None]


def no_report(facts: dict[str, Any]) -> None:
    """A :data:`ReportFn` that discards what it is told."""


@dataclass(frozen=True)
class Geometry:
    """Where a volume's voxels lie in patient space.

    ``size`` is ``(x, y, z)`` in voxels, ``spacing`` ``(x, y, z)`` in mm, ``origin`` the centre of
    the first voxel in mm (LPS), ``direction`` the 3×3 direction cosines as a row-major 9-tuple
    whose columns are the x, y and z axes (SimpleITK's convention).
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        return {
            "size": list(self.size),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Geometry:
        return cls(
            size=tuple(int(v) for v in data["size"]),  # type: ignore[arg-type]
            spacing=tuple(float(v) for v in data["spacing"]),  # type: ignore[arg-type]
            origin=tuple(float(v) for v in data["origin"]),  # type: ignore[arg-type]
            direction=tuple(float(v) for v in data["direction"]),
        )


@dataclass(frozen=True)
class SliceRef:
    """The DICOM identity of one slice of a series, in the volume's z order."""

    sop_instance_uid: str
    slice_index: int
    image_position_patient: tuple[float, float, float]
    #: 1-based frame of a multi-frame (enhanced) instance; ``None`` for a single-frame instance
    frame_number: int | None = None


@dataclass(frozen=True)
class ClassInfo:
    """One segmentation class. ``id`` 0 is always background and is not listed."""

    id: int
    name: str
    color: tuple[int, int, int] = (255, 0, 0)
    snomed_code: str | None = None


@dataclass
class SeriesVolume:
    """One de-identified series as a volume, with its labels when the source has them.

    ``hu`` is ``(z, y, x)`` after RescaleSlope/Intercept: float32, or int16 where that holds every
    value exactly (DICOM read by radseg, when every slice has slope 1, an integer intercept and
    HU within int16; the HU cache stores int16 then either way); ``labels`` uint8 ``(z, y, x)`` on
    the same grid, 0 = background. ``slices`` carry the (pseudonymised) SOP Instance UID of every
    z index, so any mask maps back to its source instances.
    """

    patient_key: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    geometry: Geometry
    hu: np.ndarray
    slices: list[SliceRef]
    labels: np.ndarray | None = None
    classes: list[ClassInfo] = field(default_factory=list)
    description: str = ""
    #: StudyDate after de-identification (moved by the keyed per-patient shift), if there is one
    study_date: date | None = None
    #: the nominal SliceThickness in mm that every slice states (not the spacing between slice
    #: centres, which is ``geometry.spacing[2]``); ``None`` when unknown or not the same for all
    slice_thickness: float | None = None
    warnings: list[str] = field(default_factory=list)
    #: the de-identified source instances as DICOM Part 10 ``bytes`` (pixel data included), which
    #: the host stores under ``studies/``; empty for sources without DICOM originals. radseg's
    #: DICOM reader gives read-only ``memoryview`` objects of the memory its reading processes
    #: wrote them to (no copy); any bytes-like object will do.
    originals: list[bytes | memoryview] = field(default_factory=list)


@dataclass
class IngestProblem:
    """A file, frame or series that was not ingested, and why.

    ``path`` names the file as the user gave it, relative to the input: it may carry the
    patient's name (exports name folders after patients), so it is shown only on the console
    of whoever ran the ingest and is never stored. What is stored (reports in the database, a
    failed job's message) is ``name`` with a keyed hash of ``path`` that tells files apart
    (:meth:`radseg.workflows.ingest_report.ProblemNames.stored`). ``reason`` never quotes a
    header value.
    """

    path: str
    reason: str
    #: the (pseudonymised) series the problem belongs to, when known
    series_instance_uid: str = ""
    #: the frame of a multi-frame file the problem is about; ``None`` for the whole file
    frame: int | None = None
    #: ``path`` with the patient's name and ID taken out, safe to store; ``""`` when that could
    #: not be checked (no header of the input could be read), so only the hash is stored
    name: str = ""


def count_problems(problems: Sequence[IngestProblem]) -> str:
    """How many files and frames ``problems`` are about, e.g. ``"2 file(s) and 5 frame(s) of 1
    multi-frame file(s)"``: the frames of one file are not counted as files."""
    files = {p.path for p in problems if p.frame is None}
    frames = [p for p in problems if p.frame is not None]
    parts = [f"{len(files)} file(s)"] if files else []
    if frames:
        parts.append(
            f"{len(frames)} frame(s) of {len({p.path for p in frames})} multi-frame file(s)"
        )
    return " and ".join(parts) or "nothing"


@dataclass(frozen=True)
class FineTune:
    """Start from a trained model version instead of from scratch (a retrain).

    ``weights`` is the version's weights file and ``config`` what its training returned
    (:attr:`TrainResult.config`). A backend keeps what the weights depend on (architecture,
    backbone, input size, pixel normalisation) from ``config``, loads ``weights`` and trains
    ``TrainRequest.config["iterations"]`` more iterations on the new dataset version.
    """

    weights: Path
    config: Mapping[str, Any]


@dataclass(frozen=True)
class TrainRequest:
    """Everything a backend needs to train one model version.

    ``dataset_dir`` holds a built dataset version (see :mod:`radseg.imaging.dataset_version`):
    ``manifest.json``, ``annotations/instances_{train,val}.json`` and the PNGs they name.
    ``output_dir`` is the model version's directory; checkpoints go there and a re-run with
    ``resume=True`` continues from the last one. ``config`` holds backend options
    (architecture, iterations, batch size, learning rate, arbitrary overrides). ``fine_tune``,
    when given, is the model version to start from (:class:`FineTune`).
    """

    dataset_dir: Path
    output_dir: Path
    classes: list[ClassInfo]
    config: Mapping[str, Any]
    resume: bool = True
    device: str = "cpu"
    fine_tune: FineTune | None = None


@dataclass
class TrainResult:
    """``weights`` is the file :meth:`ModelBackend.predict` loads; ``metrics`` are JSON-able."""

    weights: Path
    config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    iterations: int = 0


@dataclass(frozen=True)
class PredictRequest:
    """Predict a label map for each slice of ``images`` (uint8 ``(z, y, x, c)``).

    The images are made by the same channel recipe the model was trained with; the backend only
    maps them to labels. ``model_dir`` and ``config`` are what training returned.
    """

    model_dir: Path
    weights: Path
    config: Mapping[str, Any]
    classes: list[ClassInfo]
    images: np.ndarray
    device: str = "cpu"
    #: slices per forward pass; ``None`` lets the backend choose (its plugin settings)
    batch_size: int | None = None
    #: the dataset version the model was trained on (its directory), for a backend that
    #: calibrates an engine on its training split or measures one on its val split (the
    #: detectron2 plugin's int8 and bf16); ``None``: not known
    dataset_dir: Path | None = None
    #: where the backend reports how it predicted (:data:`ReportFn`); old backends ignore it
    report: ReportFn = no_report
    #: ask for a per-voxel uncertainty map as well: a backend that can give one returns a
    #: :class:`PredictOutput`; one that cannot (or predates this field) returns bare labels
    uncertainty: bool = False
    #: for a CT series, each slice's box of everything denser than air, int ``(z, 4)``
    #: ``(y0, y1, x0, x1)``, half-open, ``(0, 0, 0, 0)`` for a slice of air only
    #: (:func:`radseg.imaging.body.body_boxes`): a backend may skip those slices (they are
    #: background); ``None`` (other modalities, or not known): every slice is predicted
    body_boxes: np.ndarray | None = None


@dataclass(frozen=True)
class PredictOutput:
    """What :meth:`ModelBackend.predict` may return instead of a bare label array.

    ``labels``: uint8 label ids ``(z, y, x)``. ``uncertainty``: float ``(z, y, x)`` in ``[0, 1]``
    (0 sure, 1 as unsure as the model can be), or ``None`` when the model has none to give.
    ``method`` says how it was made, in words a reader of the prediction's page understands
    (e.g. ``"softmax entropy"``, ``"softmax entropy, flip TTA disagreement"``).
    """

    labels: np.ndarray
    uncertainty: np.ndarray | None = None
    method: str = ""


def as_predict_output(value: np.ndarray | PredictOutput) -> PredictOutput:
    """A backend's answer as a :class:`PredictOutput`: a bare label array (every backend
    written before uncertainty maps existed) becomes one without uncertainty."""
    if isinstance(value, PredictOutput):
        return value
    return PredictOutput(labels=np.asarray(value))


@dataclass(frozen=True)
class ReadRequest:
    """Read the studies at ``path`` into de-identified series, with their labels.

    ``deidentify`` is applied to each pydicom ``Dataset`` before anything is kept; a file that
    cannot be read is appended to ``problems`` (the host's list: it reports them) and the rest
    of the study is still yielded. ``labels`` is a label source (label volume, ``.seg.nrrd``,
    SEG, RTSTRUCT, PNG folder, or a source's own form such as a folder of label volumes);
    ``classes`` the class map the user gave for it, parsed and validated (``None``: none given).
    """

    path: Path
    deidentify: Callable[[Any], Any]
    problems: list[IngestProblem]
    labels: Path | None = None
    classes: Sequence[ClassInfo] | None = None


@runtime_checkable
class DatasetSource(Protocol):
    """Reads studies from somewhere and yields de-identified series with their labels.

    A source whose labels always name their own classes sets ``takes_class_map: ClassVar[bool] =
    False``: the host then refuses a class map for it before reading anything.
    """

    name: ClassVar[str]

    def read(self, request: ReadRequest, progress: ProgressFn) -> Iterator[SeriesVolume]:
        """Yield every readable series at ``request.path`` (see :class:`ReadRequest`)."""
        ...


class PlatformView(Protocol):
    """The running platform as a plugin's hooks see it (``radseg_configure``).

    :class:`radseg.core.Platform` satisfies it; the hooks name this Protocol rather than the
    composition root so that the plugin API (:mod:`radseg.hookspecs`, :mod:`radseg.plugins`)
    sits below :mod:`radseg.core`, which builds the plugin host, and never imports it back.
    """

    @property
    def settings(self) -> Settings:
        """The process's settings; ``settings.plugin_settings(name)`` is a plugin's section."""
        ...

    @property
    def home(self) -> Path:
        """``RADSEG_HOME``, where radseg keeps its data."""
        ...

    def path(self, *parts: str) -> Path:
        """``RADSEG_HOME/part/...``, each part one plain name, the result inside the home."""
        ...


#: the job kinds built into radseg (DESIGN §6); a plugin's :class:`JobKind` takes another name
BUILTIN_JOB_KINDS = frozenset(
    {"ingest", "build-dataset", "train", "predict", "evaluate", "export", "agreement", "retrain"}
)


@runtime_checkable
class JobKind(Protocol):
    """A kind of job a plugin adds to the queue (``radseg_register_job_kinds``).

    Jobs of this kind are submitted like any other (``radseg.jobs.store.submit(session, name,
    payload)``) and run by a worker in the job's own process, or in the worker's process when
    the worker lists the kind in ``--inline-kinds``.
    """

    name: ClassVar[str]

    def run(
        self, platform: Any, payload: dict[str, Any], *, progress: ProgressFn, job_id: int
    ) -> dict[str, Any]:
        """Do the job; return its JSON-serialisable result.

        ``platform`` is the process's :class:`radseg.core.Platform`; ``payload`` the job's;
        ``progress`` records progress on the job (throttled); ``job_id`` the job's id. Raise
        :class:`radseg.errors.RadsegError` for bad input (the job fails at once) or anything
        else for a failure worth retrying.
        """
        ...


@runtime_checkable
class ModelBackend(Protocol):
    """Trains from a dataset version and predicts label maps."""

    name: ClassVar[str]
    #: architectures this backend can train, e.g. ``("semantic_fpn", "deeplabv3plus")``
    architectures: ClassVar[tuple[str, ...]]

    def train(self, request: TrainRequest, progress: ProgressFn) -> TrainResult: ...

    def predict(self, request: PredictRequest, progress: ProgressFn) -> np.ndarray | PredictOutput:
        """Return uint8 labels ``(z, y, x)`` for ``request.images``.

        With ``request.uncertainty`` a backend may return a :class:`PredictOutput` (labels and
        a per-voxel uncertainty); a bare array is always accepted (the host reads either through
        :func:`as_predict_output`).
        """
        ...


@dataclass(frozen=True)
class SourceSeries:
    """The de-identified series a prediction was made on, as an exporter references it.

    ``instances`` are the stored de-identified DICOM files (``studies/<study>/<series>/``) in
    slice order, one per :class:`SliceRef` of a single-frame series (an enhanced multi-frame
    series has fewer files than slices); empty when the series did not come from DICOM
    (a NIfTI pair), in which case DICOM exporters refuse with a clear error.
    ``volume_path`` is the HU cache (float32 NIfTI) for exporters that draw the images.
    """

    study_instance_uid: str
    series_instance_uid: str
    modality: str
    patient_key: str
    slices: list[SliceRef]
    instances: list[Path]
    volume_path: Path | None = None
    description: str = ""


@dataclass(frozen=True)
class AlgorithmInfo:
    """Which model made a prediction: DICOM SEG's algorithm identification and provenance."""

    #: e.g. ``"radseg semantic_fpn (model 'liver')"``
    name: str
    #: e.g. ``"model version 7"``
    version: str
    model_version_id: int
    #: the prediction's provenance (dataset version, config hash, code version, ...)
    provenance: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportRequest:
    """Everything an exporter needs to write one prediction.

    ``labels`` are uint8 ``(z, y, x)`` on the series' grid (``geometry``), 0 = background;
    ``classes`` the class map (ids, names, colours, optional SNOMED codes); ``options`` the
    exporter's own per-export options (e.g. ``{"seg_type": "labelmap"}``), already merged with
    its plugin settings by the exporter itself.
    """

    prediction_id: int
    labels: np.ndarray
    geometry: Geometry
    classes: list[ClassInfo]
    series: SourceSeries
    algorithm: AlgorithmInfo
    options: Mapping[str, Any] = field(default_factory=dict)
    #: ``None``: the labels are the model's prediction as it made it; else they are a
    #: reviewer's correction of it, e.g. ``"label version 3 by alice"`` (a DICOM exporter then
    #: says SEMIAUTOMATIC instead of AUTOMATIC)
    correction: str | None = None
    #: what the labels are when they are a reviewed label version rather than the model's
    #: output, for the exported series' descriptions (e.g. ``"adjudicated label version 4"``);
    #: ``None``: the exporter's own series description
    label_version: str | None = None


@dataclass(frozen=True)
class ExportCheck:
    """One check of a written export: what was compared with what, and the outcome.

    ``passed`` ``None`` means the check could not run (its tool is missing): shown, not
    blocking. Any ``passed is False`` blocks the export; ``detail`` says why, in words a
    researcher can act on (never PHI).
    """

    name: str
    passed: bool | None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportCheck:
        return cls(name=str(data["name"]), passed=data["passed"], detail=str(data["detail"]))


@runtime_checkable
class Exporter(Protocol):
    """Turns a predicted label volume into a file (or a folder of files) and checks it.

    The host calls :meth:`export` into a staging folder, then :meth:`verify` on what was
    written; only an export whose checks all pass is moved where the user asked, stored and
    offered (and, for ``dicom`` exporters, may be sent to a PACS). DICOM files an exporter
    writes are also validated by the host with ``dciodvfy``.
    """

    name: ClassVar[str]
    #: file name suffix the exporter writes, e.g. ``".nii.gz"``; ``""`` for a folder
    suffix: ClassVar[str]
    #: ``True`` when the output is DICOM objects a PACS accepts over STOW-RS
    dicom: ClassVar[bool]

    def export(self, request: ExportRequest, out: Path) -> Path:
        """Write ``request`` to ``out`` and return the path written (a file or a folder).

        The exporter may adjust ``out``'s suffix and returns the path it used; ``out`` must
        appear complete or not at all (write to a temporary name, then rename).

        :raises InputError: the request cannot be exported this way (e.g. no DICOM sources).
        """
        ...

    def verify(self, request: ExportRequest, written: Path) -> list[ExportCheck]:
        """Re-read ``written`` with an independent reader and compare it with ``request``."""
        ...


# --- plugin settings ----------------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def validate_settings(plugin: str, schema: type[M], raw: dict[str, Any]) -> M:
    """Validate ``[plugins.<plugin>]`` against ``schema`` (a pydantic model).

    :raises PluginConfigError: naming each invalid field and what is wrong with it.
    """
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise PluginConfigError(invalid_settings_message(plugin, exc)) from None


def invalid_settings_message(plugin: str, exc: ValidationError) -> str:
    """Each invalid field and what is wrong with it; never the value given, which may be a
    password (``str(exc)`` of a pydantic error quotes every input)."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(section)'}: {err['msg']}"
        for err in exc.errors()
    )
    return f"invalid settings in [plugins.{plugin}]: {problems}; fix them in the settings file"
