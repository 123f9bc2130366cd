"""Build immutable dataset versions (COCO slices) from the series a dataset holds."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from isal import igzip
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from radseg.contracts import ClassInfo, Geometry, ProgressFn, SeriesVolume, SliceRef, no_progress
from radseg.core import Platform
from radseg.db.models import Dataset, DatasetMember, DatasetVersion, Job, LabelSet, Series
from radseg.errors import InputError, NotFound
from radseg.imaging import dataset_version
from radseg.imaging.channels import ChannelRecipe
from radseg.imaging.label_sources.classmap import merge_class_maps
from radseg.imaging.legend import parse_color
from radseg.imaging.palette import class_color
from radseg.imaging.volumes import read_volume
from radseg.label_versions import provenance, training_label_set
from radseg.roles import OPERATORS, Actor, require_role
from radseg.workflows.jobs import queue_job

#: a dataset name names the folder ``datasets/<name>/``: letters, digits, ``.``, ``_``, ``-``
#: and spaces, starting with a letter or digit, at most 80 characters (the column's length)
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,79}")


def check_dataset_name(name: str) -> str:
    """``name`` if it is a valid dataset name (:data:`DATASET_NAME`), else :class:`InputError`.

    The one check for every edge that names a dataset (CLI, web form, JSON API, ingest).
    """
    if not isinstance(name, str) or DATASET_NAME.fullmatch(name) is None or name != name.strip():
        raise InputError(
            f"{str(name)[:80]!r} is not a valid dataset name: use 1 to 80 letters, digits, "
            "'.', '_', '-' or spaces, starting with a letter or digit (e.g. liver-ct)"
        )
    return name


def usable_dataset_name(session: Session, name: str) -> str:
    """``name`` if a dataset of that name exists, or it is a valid new name
    (:func:`check_dataset_name`); else :class:`InputError`.

    Datasets named before the rule keep working (paths built from their names still go through
    :meth:`Platform.path`, which refuses anything but one plain path component).
    """
    if isinstance(name, str) and session.scalar(select(Dataset.id).where(Dataset.name == name)):
        return name
    return check_dataset_name(name)


def get_dataset(session: Session, name: str) -> Dataset:
    found = session.scalars(select(Dataset).where(Dataset.name == name)).first()
    if found is None:
        names = ", ".join(session.scalars(select(Dataset.name).order_by(Dataset.name))) or "none"
        raise InputError(
            f"dataset {name!r} does not exist (datasets: {names}); "
            "create it with `radseg ingest PATH --dataset NAME`"
        )
    return found


def latest_version(session: Session, dataset: Dataset) -> DatasetVersion:
    version = session.scalars(
        select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset.id)
        .order_by(DatasetVersion.version.desc())
    ).first()
    if version is None:
        raise InputError(
            f"dataset {dataset.name!r} has no built version; "
            f"run `radseg datasets build {dataset.name}`"
        )
    return version


def classes_from_rows(rows: list[dict[str, Any]]) -> list[ClassInfo]:
    """Stored class rows as :class:`ClassInfo`; a colour is ``[r, g, b]`` or ``"#rrggbb"``
    (what a reviewer's label set stores, :meth:`radseg.imaging.legend.LegendEntry.to_dict`)."""
    return [
        ClassInfo(
            id=int(r["id"]),
            name=str(r["name"]),
            color=parse_color(r.get("color")) or class_color(int(r["id"])),
            snomed_code=r.get("snomed_code"),
        )
        for r in rows
    ]


def _merged_classes(label_sets: list[LabelSet]) -> list[dict[str, Any]]:
    """One class map for the whole dataset, with :func:`merge_class_maps`'s rules: the same id
    with two names, or the same name with two ids, is refused (labels are never renumbered
    silently)."""
    merged: list[ClassInfo] = []
    rows: dict[int, dict[str, Any]] = {}
    for ls in label_sets:
        try:
            merged, _ = merge_class_maps(merged, classes_from_rows(ls.classes))
        except InputError as exc:
            raise InputError(
                f"label set v{ls.version} of series {ls.series.series_instance_uid} does not "
                f"agree with the dataset's other label sets: {exc}. Relabel one of them (or give "
                "both the same class map, e.g. the same sidecar JSON) so each id is one class"
            ) from None
        for c in ls.classes:
            rows.setdefault(int(c["id"]), c)
    return [rows[c.id] for c in merged]


def build_version(
    platform: Platform,
    name: str,
    *,
    recipe: ChannelRecipe | None = None,
    seed: int = 0,
    polygons: bool = False,
    keep_split: Mapping[str, Sequence[str]] | None = None,
    progress: ProgressFn = no_progress,
) -> DatasetVersion:
    """Write the next version of dataset ``name`` and commit its row (one unit of work).

    The build job's handler and ``radseg datasets build`` call this; the row is returned after
    the commit (its attributes stay readable). Each series takes its
    :func:`~radseg.label_versions.training_label_set` (a reviewed label version before an
    imported one), and each COCO image record says which (``label_version``).

    :param polygons: COCO polygons instead of RLE
        (:func:`radseg.imaging.dataset_version.build_dataset_version`).
    :param keep_split: patient keys per split (an earlier version's ``split``): those patients
        keep their split, so a held-out test split stays held out; only new patients are split.
    :raises InputError: no labelled series, or label sets whose class maps disagree.
    """
    with platform.sessions.begin() as session:
        return _build_version(
            platform,
            session,
            name,
            recipe=recipe,
            seed=seed,
            polygons=polygons,
            keep_split=keep_split,
            progress=progress,
        )


def _build_version(
    platform: Platform,
    session: Session,
    name: str,
    *,
    recipe: ChannelRecipe | None,
    seed: int,
    polygons: bool,
    progress: ProgressFn,
    keep_split: Mapping[str, Sequence[str]] | None = None,
) -> DatasetVersion:
    dataset = get_dataset(session, usable_dataset_name(session, name))
    members = session.scalars(
        select(Series)
        .join(DatasetMember, DatasetMember.series_id == Series.id)
        .where(DatasetMember.dataset_id == dataset.id)
        .order_by(Series.id)
    ).all()
    items: list[tuple[Series, LabelSet]] = []
    for series in members:
        chosen = training_label_set(series.label_sets)
        if chosen is not None:
            items.append((series, chosen))
    if not items:
        raise InputError(
            f"dataset {name!r} has no labelled series; ingest with --labels PATH first"
        )
    class_rows = _merged_classes([ls for _, ls in items])
    classes = classes_from_rows(class_rows)
    recipe = recipe or ChannelRecipe()
    volumes = [_series_volume(platform, s, ls, classes) for s, ls in items]
    split = _split(sorted({v.patient_key for v in volumes}), seed, keep_split)
    number = (
        session.scalar(
            select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset.id)
        )
        or 0
    ) + 1
    out_dir = platform.path("datasets", name, f"v{number}")
    manifest = dataset_version.build_dataset_version(
        out_dir,
        volumes,
        classes=classes,
        recipe=recipe,
        split=split,
        name=name,
        version=number,
        progress=progress,
        polygons=polygons,
        label_versions={s.series_instance_uid: provenance(ls) for s, ls in items},
    )
    version = DatasetVersion(
        dataset_id=dataset.id,
        version=number,
        content_hash=manifest["content_hash"],
        classes=class_rows,
        recipe=recipe.to_dict(),
        split=split,
        path=platform.relative(out_dir),
    )
    session.add(version)
    session.flush()
    return version


def _split(
    patients: list[str], seed: int, keep: Mapping[str, Sequence[str]] | None
) -> dict[str, list[str]]:
    """The patient-level split: the patients of ``keep`` stay where they were, the others are
    split among themselves (:func:`~radseg.imaging.dataset_version.split_by_patient`)."""
    kept = {key: name for name in dataset_version.SPLITS for key in (keep or {}).get(name, ())}
    split = dataset_version.split_by_patient([p for p in patients if p not in kept], seed=seed)
    for key in patients:
        if key in kept:
            split[kept[key]] = sorted([*split[kept[key]], key])
    return split


def _series_volume(
    platform: Platform, series: Series, label_set: LabelSet, classes: list[ClassInfo]
) -> SeriesVolume:
    hu_path = platform.resolve(series.volume_path)
    mapped = _mapped_hu_cache(hu_path) if series.geometry else None
    if mapped is not None:
        hu, geometry = mapped, Geometry.from_dict(series.geometry)
    else:
        hu, geometry = read_volume(hu_path)
    label_path = platform.resolve(label_set.path)
    labels = _inflated_labels(label_path)
    if labels is None:
        labels, _ = read_volume(label_path)
    return SeriesVolume(
        patient_key=series.study.patient_key,
        study_instance_uid=series.study.study_instance_uid,
        series_instance_uid=series.series_instance_uid,
        modality=series.modality,
        geometry=Geometry.from_dict(series.geometry) if series.geometry else geometry,
        hu=hu,  # int16 or float32 as cached; hu_to_channels casts block by block
        slices=slice_refs(series),
        labels=labels.astype("uint8", copy=False),
        classes=classes,
    )


#: the NIfTI-1 header fields :func:`_mapped_hu_cache` reads, little endian: sizeof_hdr, dim[8],
#: datatype, bitpix, vox_offset, scl_slope, scl_inter, and the magic
_NIFTI_FIELDS = ((0, "<i4", 1), (40, "<i2", 8), (70, "<i2", 2), (108, "<f4", 3))
#: NIfTI datatype code → the array's dtype (the ones an HU cache is written in)
_NIFTI_DTYPES: dict[int, np.dtype[Any]] = {4: np.dtype("<i2"), 16: np.dtype("<f4")}
#: ... and the one a label volume is written in
_NIFTI_LABEL_DTYPES: dict[int, np.dtype[Any]] = {2: np.dtype("u1")}


def _nifti_layout(
    header: bytes, dtypes: Mapping[int, np.dtype[Any]]
) -> tuple[np.dtype[Any], tuple[int, int, int], int] | None:
    """``(dtype, (z, y, x), voxel offset)`` of a plain little-endian NIfTI-1 volume of one of
    ``dtypes`` without scaling, from its 348-byte header; ``None`` for anything else."""
    if len(header) < 348 or header[344:348] != b"n+1\0":
        return None
    (size,), dims, (datatype, bitpix), (offset, slope, inter) = (
        np.frombuffer(header, dtype, count, start).tolist() for start, dtype, count in _NIFTI_FIELDS
    )
    dtype = dtypes.get(datatype)
    if size != 348 or dims[0] != 3 or dtype is None or bitpix != 8 * dtype.itemsize:
        return None
    if slope not in (0.0, 1.0) or inter != 0.0 or offset < 348 or offset != int(offset):
        return None
    return dtype, (dims[3], dims[2], dims[1]), int(offset)


def _inflated_labels(path: Path) -> np.ndarray | None:
    """The label volume at ``path`` (``(z, y, x)`` uint8) when it is a gzipped plain NIfTI-1
    file of uint8 voxels without scaling, as ingest and every label version write it; ``None``
    otherwise (read it with :func:`read_volume`).

    Inflated by ISA-L straight into the array: SimpleITK inflated it with zlib into an image
    and then copied the image into an array (0.05 s instead of 0.08 s of CPU for 300×512²,
    before the build's slice writers can start). The voxels are stored as they are, so the
    values are the same.
    """
    if not path.name.endswith(".nii.gz"):
        return None
    try:
        with igzip.open(path, "rb") as fh:
            layout = _nifti_layout(fh.read(348), _NIFTI_LABEL_DTYPES)
            if layout is None:
                return None
            dtype, shape, offset = layout
            fh.read(offset - 348)  # extensions, if any
            labels = np.empty(shape, dtype=dtype)
            if fh.readinto(labels.data.cast("B")) != labels.nbytes or fh.read(1):
                return None  # shorter or longer than its header says
    except Exception:  # a damaged file: read_volume reports it as it always did
        return None
    return labels


def _mapped_hu_cache(path: Path) -> np.ndarray | None:
    """The HU cache at ``path`` memory-mapped (read-only, ``(z, y, x)``), when it is a plain
    little-endian NIfTI-1 file of int16 or float32 voxels without scaling, as ingest writes it;
    ``None`` otherwise (read it with :func:`read_volume`).

    The build's slice writers read each slice they write straight from the page cache instead
    of the parent copying the whole volume into memory first (SimpleITK reads into an image,
    then copies it into an array): the same values, since the voxels are stored as they are.
    """
    if path.suffix != ".nii":
        return None
    with open(path, "rb") as fh:
        layout = _nifti_layout(fh.read(348), _NIFTI_DTYPES)
    if layout is None:
        return None
    dtype, shape, offset = layout
    if path.stat().st_size != offset + int(np.prod(shape)) * dtype.itemsize:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def slice_refs(series: Series) -> list[SliceRef]:
    geometry = Geometry.from_dict(series.geometry)
    d = geometry.direction
    normal = (d[2], d[5], d[8])
    out = []
    for inst in series.instances:
        k = inst.slice_index * geometry.spacing[2]
        position = tuple(geometry.origin[i] + k * normal[i] for i in range(3))
        out.append(
            SliceRef(
                inst.sop_instance_uid,
                inst.slice_index,
                position,  # type: ignore[arg-type]
                frame_number=inst.frame_number or None,  # 0 in the table: a single-frame instance
            )
        )
    return out


# --- use cases ----------------------------------------------------------------------------------

#: a dataset build's split seed (numpy's seeds are 32 bits)
MAX_SEED = 2**32 - 1


def check_seed(value: int | str) -> int:
    """The split seed ``value`` as an int, if it is a whole number from 0 to :data:`MAX_SEED`.

    The one seed check for every edge (a form's text, a JSON number, a CLI option); an empty
    text means the default, 0.
    """
    if isinstance(value, str):
        text = value.strip() or "0"
        if not (text.isascii() and text.isdigit() and len(text) <= len(str(MAX_SEED))):
            text = ""
        value = int(text) if text else -1
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise InputError(f"seed must be a whole number from 0 to {MAX_SEED}")
    return value


def request_build(
    platform: Platform,
    actor: Actor,
    *,
    name: str,
    recipe: ChannelRecipe,
    seed: int = 0,
    study_ids: Sequence[int] = (),
    via: str | None = None,
) -> Job:
    """Add the series of ``study_ids`` to dataset ``name`` (created if new) and queue the job
    that builds its next version; audited.

    :raises NotFound: a new dataset without studies to make it from.
    :raises InputError: an invalid name or seed, or no series to build from.
    """
    require_role(actor, OPERATORS, "build datasets")
    seed = check_seed(seed)
    with platform.sessions.begin() as session:
        usable_dataset_name(session, name)
        dataset = session.scalars(select(Dataset).where(Dataset.name == name)).first()
        if dataset is None and not study_ids:
            raise NotFound(f"there is no dataset {name!r}; choose at least one study to create it")
        if dataset is None:
            dataset = Dataset(name=name)
            session.add(dataset)
            session.flush()
        series_ids = session.scalars(
            select(Series.id).where(Series.study_id.in_(list(study_ids)))
        ).all()
        # one query for the members there are, not one per series: a search may choose 10,000
        members = set(
            session.scalars(
                select(DatasetMember.series_id).where(DatasetMember.dataset_id == dataset.id)
            )
        )
        session.add_all(
            DatasetMember(dataset_id=dataset.id, series_id=series_id)
            for series_id in series_ids
            if series_id not in members
        )
        if not series_ids and not dataset.members:
            raise InputError(
                f"dataset {name!r} has no series: choose at least one study with a series"
            )
        payload = {"dataset": name, "recipe": recipe.to_dict(), "seed": seed}
        extra = {"via": via} if via else {}
        return queue_job(
            session,
            platform,
            actor,
            "build-dataset",
            payload,
            target=f"dataset:{dataset.id}",
            **extra,
        )
