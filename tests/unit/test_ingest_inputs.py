"""Inputs and geometry: DICOMDIR sets, zips, mixed folders, missing UIDs, and per-series checks."""

from __future__ import annotations

import io
import math
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from radseg.contracts import IngestProblem, ReadRequest, no_progress
from radseg.imaging.dicom_io import read_series
from radseg.imaging.synthetic import write_synthetic_ct
from radseg_plugins.datasets.dicom_folder import DicomFolderSource

SMALL = (10, 32, 28)


def identity(ds: Dataset) -> Dataset:
    return ds


def dicomdir_set(tmp_path: Path) -> Path:
    readme = get_testdata_file("DICOMDIR", read=False)
    assert readme is not None, "pydicom's DICOMDIR test set is missing"
    target = tmp_path / "dicomdirtests"
    shutil.copytree(Path(readme).parent, target)
    return target


def read_plugin(path: Path, problems: list[IngestProblem]):
    return list(DicomFolderSource().read(ReadRequest(path, identity, problems), no_progress))


def test_a_dicomdir_set_gives_its_ct_series_from_a_folder_or_a_zip(tmp_path: Path) -> None:
    root = dicomdir_set(tmp_path)
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        paths = [p for p in root.rglob("*") if p.is_file()]
        random.Random(0).shuffle(paths)  # any order inside the archive
        for path in paths:
            zf.write(path, path.relative_to(root).as_posix())

    results = {}
    for source in (root, archive):
        problems: list[IngestProblem] = []
        volumes = read_plugin(source, problems)
        results[source.name] = (volumes, problems)
        cts = sorted(v.hu.shape for v in volumes if v.modality == "CT")
        assert cts == [(4, 16, 16), (5, 16, 16)]
        # four MR series of one image each; tri-planar scouts and projections are not volumes
        assert sorted(v.hu.shape for v in volumes if v.modality == "MR") == [(1, 16, 16)] * 4
        reasons = {p.path: p.reason for p in problems}
        scouts = [k for k, r in reasons.items() if "localizer/scout set" in r]
        assert sorted({Path(k).parent.name for k in scouts}) == ["MR2", "MR700"]
        assert len(scouts) == 7 + 6
        localizers = [k for k, r in reasons.items() if "ImageType LOCALIZER" in r]
        assert sorted(Path(k).parent.name for k in localizers) == ["CT2N", "CT2N"]
        crs = [k for k, r in reasons.items() if "/CR" in k]
        assert len(crs) == 3 and all("ImagePositionPatient" in reasons[k] for k in crs)
        assert all("no pixel data" in r for k, r in reasons.items() if k.startswith("TINY_ALPHA"))
        assert not any("DICOMDIR" in k for k in reasons)  # the indexes are skipped quietly

    folder_volumes, _ = results["dicomdirtests"]
    zip_volumes, _ = results["set.zip"]
    for a, b in zip(folder_volumes, zip_volumes, strict=True):
        assert a.series_instance_uid == b.series_instance_uid
        np.testing.assert_array_equal(a.hu, b.hu)
    # the 5-slice series equals what SimpleITK (GDCM) reads
    ct5n = root / "98892001" / "CT5N"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(ct5n)))
    reference = reader.Execute()
    (five,) = [v for v in folder_volumes if v.hu.shape[0] == 5]
    np.testing.assert_array_equal(five.hu, sitk.GetArrayFromImage(reference).astype(np.float32))
    np.testing.assert_allclose(five.geometry.origin, reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(five.geometry.spacing, reference.GetSpacing(), atol=1e-4)


def test_several_series_mixed_in_one_flat_folder_are_split(tmp_path: Path) -> None:
    a = write_synthetic_ct(tmp_path / "a", seed=90, shape=SMALL, patient_id="A")
    b = write_synthetic_ct(
        tmp_path / "b",
        seed=91,
        shape=(7, 32, 28),
        patient_id="B",
        image_orientation_patient=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
    )
    flat = tmp_path / "flat"
    flat.mkdir()
    everything = a.files + b.files
    random.Random(1).shuffle(everything)
    for k, path in enumerate(everything):
        shutil.copy(path, flat / f"IMG{k:04d}")
    problems: list[IngestProblem] = []
    volumes = read_series(flat, deidentify=identity, problems=problems)
    assert problems == []
    by_uid = {v.series_instance_uid: v for v in volumes}
    np.testing.assert_array_equal(by_uid[a.series_instance_uid].hu, a.hu)
    np.testing.assert_array_equal(by_uid[b.series_instance_uid].hu, b.hu)


def test_missing_or_inconsistent_uids_fall_back_with_a_warning(tmp_path: Path) -> None:
    study = write_synthetic_ct(tmp_path, seed=92, shape=SMALL)
    for path in study.files:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = ""
        ds.save_as(path)
    edited = pydicom.dcmread(study.files[3])
    del edited.SOPInstanceUID
    edited.save_as(study.files[3])
    problems: list[IngestProblem] = []
    (volume,) = read_series(study.dicom_dir, deidentify=identity, problems=problems)
    assert problems == []
    np.testing.assert_array_equal(volume.hu, study.hu)
    assert volume.series_instance_uid.startswith("2.25.")
    assert [s.sop_instance_uid for s in volume.slices] == study.sop_instance_uids
    warnings = " ".join(volume.warnings)
    assert "SeriesInstanceUID missing" in warnings and f"({SMALL[0]} file(s))" in warnings
    assert "SOPInstanceUID missing; taken from the file meta" in warnings
    # the same files read again give the same derived UID (idempotent re-ingest)
    (again,) = read_series(study.dicom_dir, deidentify=identity, problems=[])
    assert again.series_instance_uid == volume.series_instance_uid


def test_localizer_by_image_type_is_excluded(tmp_path: Path) -> None:
    study = write_synthetic_ct(tmp_path, seed=93, shape=SMALL)
    ds = pydicom.dcmread(study.files[0])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.ImagePositionPatient = [0, 0, 500]  # outside the stack: it would add a gap otherwise
    ds.save_as(study.dicom_dir / "scout")
    problems: list[IngestProblem] = []
    (volume,) = read_series(study.dicom_dir, deidentify=identity, problems=problems)
    np.testing.assert_array_equal(volume.hu, study.hu)
    assert [(p.path, "localizer" in p.reason) for p in problems] == [("scout", True)]
    assert problems[0].series_instance_uid == study.series_instance_uid
    assert volume.warnings == ["1 localizer/scout image(s) excluded"]


def test_two_stacks_with_different_orientations_become_two_volumes(tmp_path: Path) -> None:
    axial = write_synthetic_ct(tmp_path / "ax", seed=94, shape=SMALL)
    sagittal = write_synthetic_ct(
        tmp_path / "sag",
        seed=95,
        shape=(6, 32, 28),
        image_orientation_patient=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
    )
    for path in sagittal.files:  # the scanner put both stacks in one series
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = axial.series_instance_uid
        ds.StudyInstanceUID = axial.study_instance_uid
        ds.save_as(axial.dicom_dir / f"sag-{path.name}")
    problems: list[IngestProblem] = []
    volumes = read_series(axial.dicom_dir, deidentify=identity, problems=problems)
    assert problems == []
    assert sorted(v.hu.shape[0] for v in volumes) == [6, SMALL[0]]
    main = next(v for v in volumes if v.series_instance_uid == axial.series_instance_uid)
    split = next(v for v in volumes if v is not main)
    np.testing.assert_array_equal(main.hu, axial.hu)
    np.testing.assert_array_equal(split.hu, sagittal.hu)
    assert any("mixed orientations" in w for w in main.warnings)
    assert any(f"split from series {axial.series_instance_uid}" in w for w in split.warnings)


def test_missing_slices_are_located(tmp_path: Path) -> None:
    study = write_synthetic_ct(tmp_path, seed=96, shape=SMALL)
    order = np.argsort([float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in study.files])
    for k in (4, 5):  # two neighbours in the middle of the stack
        study.files[order[k]].unlink()
    (volume,) = read_series(study.dicom_dir, deidentify=identity, problems=[])
    (warning,) = volume.warnings
    assert "2 slice(s) appear to be missing (after slice 3" in warning
    assert "uneven slice spacing" in warning


def test_gantry_tilt_is_reported(tmp_path: Path) -> None:
    study = write_synthetic_ct(tmp_path, seed=97, shape=SMALL)
    tilt = math.radians(15)
    for path in study.files:
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + z * math.tan(tilt), z]
        ds.GantryDetectorTilt = 15
        ds.save_as(path)
    (volume,) = read_series(study.dicom_dir, deidentify=identity, problems=[])
    (warning,) = volume.warnings
    assert warning.startswith("gantry tilt of about 15.0°")
    np.testing.assert_array_equal(volume.hu, study.hu)


@pytest.mark.parametrize("allowed", [False, True])
def test_the_reader_reports_burned_in_refusals_per_file(tmp_path: Path, allowed: bool) -> None:
    from radseg.imaging.deid import Deidentifier

    study = write_synthetic_ct(tmp_path, seed=98, shape=SMALL)
    ds = pydicom.dcmread(study.files[0])
    ds.BurnedInAnnotation = "YES"
    ds.save_as(study.files[0])
    problems: list[IngestProblem] = []
    (volume,) = read_series(
        study.dicom_dir,
        deidentify=Deidentifier(b"k", allow_burned_in=allowed),
        problems=problems,
    )
    assert volume.hu.shape[0] == (SMALL[0] if allowed else SMALL[0] - 1)
    assert [p.path for p in problems] == ([] if allowed else [study.files[0].name])


def test_folders_named_after_the_patient_are_not_repeated_in_stored_names(tmp_path: Path) -> None:
    study = write_synthetic_ct(
        tmp_path, seed=99, shape=SMALL, patient_name="Doughnut^Janet", patient_id="MRN-5544"
    )
    folder = study.dicom_dir / "DOUGHNUT_JANET_MRN-5544"
    folder.mkdir()
    broken = study.files[4]
    data = broken.read_bytes()
    (folder / "IM1").write_bytes(data[: len(data) - 100])  # pixel data cut short
    broken.unlink()
    problems: list[IngestProblem] = []
    read_series(study.dicom_dir, deidentify=identity, problems=problems)
    # the console shows the file as the user named it; what may be stored has the name out
    assert [p.path for p in problems] == ["DOUGHNUT_JANET_MRN-5544/IM1"]
    assert [p.name for p in problems] == ["[patient]_[patient]_[patient]/IM1"]


def test_label_ids_present_match_numpy_unique() -> None:
    from radseg_plugins.datasets.dicom_folder import _present_ids

    rng = np.random.default_rng(5)
    for high in (1, 3, 17, 40, 255):
        labels = rng.integers(0, high, (9, 21, 17), endpoint=True).astype(np.uint8)
        labels[:, :5] = 0
        assert _present_ids(labels) == np.unique(labels).tolist()
    sparse = np.zeros((6, 8, 8), dtype=np.uint8)
    sparse[5, 7, 7] = 200
    sparse[0, 0, 0] = 2
    assert _present_ids(sparse) == [0, 2, 200]


def test_seg_and_rtstruct_found_among_the_images_label_their_series(tmp_path: Path) -> None:
    from tests.dicom_labels import write_rtstruct, write_seg

    a = write_synthetic_ct(tmp_path / "a", seed=100, shape=SMALL, patient_id="A")
    b = write_synthetic_ct(
        tmp_path / "b", seed=101, shape=(7, 24, 20), patient_id="B", spacing=(2.5, 2.5, 4.0)
    )
    upload = tmp_path / "upload"
    upload.mkdir()
    for path in a.files + b.files:
        shutil.copy(path, upload / f"{path.parent.parent.name}-{path.name}")
    write_seg(a.files, a.labels, a.classes, upload / "seg.dcm")
    write_rtstruct(b.files, b.labels, b.classes, upload / "rt.dcm")
    problems: list[IngestProblem] = []
    volumes = {v.series_instance_uid: v for v in read_plugin(upload, problems)}
    assert problems == []
    labelled_a = volumes[a.series_instance_uid]
    np.testing.assert_array_equal(labelled_a.labels, a.labels)  # binary SEG: exact
    labelled_b = volumes[b.series_instance_uid]
    assert labelled_b.labels is not None and labelled_b.labels.shape == b.labels.shape
    # RTSTRUCT contours are rasterised: nearly every voxel agrees
    assert (labelled_b.labels == b.labels).mean() > 0.97
    assert {c.name for c in labelled_a.classes} <= {c.name for c in a.classes}


def test_labels_option_accepts_a_dicom_seg(tmp_path: Path) -> None:
    from tests.dicom_labels import write_seg

    study = write_synthetic_ct(tmp_path, seed=102, shape=SMALL)
    seg = write_seg(study.files, study.labels, study.classes, tmp_path / "labels-seg.dcm")
    (volume,) = DicomFolderSource().read(
        ReadRequest(study.dicom_dir, identity, problems=[], labels=seg), no_progress
    )
    np.testing.assert_array_equal(volume.labels, study.labels)


def test_a_process_pool_reads_the_same_as_one_process(tmp_path: Path) -> None:
    from radseg.imaging.deid import Deidentifier

    study = write_synthetic_ct(tmp_path, seed=103, shape=(64, 16, 16))
    deid = Deidentifier(b"pool")
    results = []
    for workers in (1, 2):
        problems: list[IngestProblem] = []
        (volume,) = read_series(
            study.dicom_dir,
            deidentify=deid,
            problems=problems,
            keep_originals=True,
            workers=workers,
        )
        results.append(volume)
    one, pool = results
    np.testing.assert_array_equal(pool.hu, one.hu)
    assert pool.hu.dtype == one.hu.dtype == np.int16
    assert pool.slices == one.slices
    # what the assembly reads from the slim headers a reading process sends back
    assert (pool.patient_key, pool.modality, pool.description) == (
        one.patient_key,
        one.modality,
        one.description,
    )
    assert pool.patient_key and pool.modality == "CT"
    assert (pool.geometry, pool.warnings) == (one.geometry, one.warnings)
    assert pool.originals == one.originals and len(pool.originals) == 64
    assert pydicom.dcmread(io.BytesIO(pool.originals[0])).PatientIdentityRemoved == "YES"


def test_originals_from_shared_memory_or_the_pipe_are_the_same(tmp_path: Path, monkeypatch) -> None:
    """The reading processes hand each de-identified original over in shared memory; one that
    lies past the memory mapped for the read, or outgrows its slot, comes through the pipe.
    Either way the originals and the volume are what one process reads."""
    import mmap

    from radseg.imaging import dicom_io
    from radseg.imaging.deid import Deidentifier

    study = write_synthetic_ct(tmp_path, seed=105, shape=(64, 64, 64))
    deid = Deidentifier(b"pool")
    sizes = [p.stat().st_size for p in study.dicom_dir.iterdir()]
    (one,) = read_series(
        study.dicom_dir, deidentify=deid, problems=[], keep_originals=True, workers=1
    )
    slot = -(-(max(sizes) + dicom_io._SLOT_SLACK) // mmap.PAGESIZE) * mmap.PAGESIZE
    for setting, value, kinds in (
        ("_SHARED_BYTES", 40 * slot, {bytes, memoryview}),  # 40 files' slots mapped
        ("_SLOT_SLACK", 1 - min(sizes), {bytes}),  # one page each: no original fits
    ):
        with monkeypatch.context() as patch:
            patch.setattr(dicom_io, setting, value)
            (pool,) = read_series(
                study.dicom_dir, deidentify=deid, problems=[], keep_originals=True, workers=2
            )
        assert [bytes(o) for o in pool.originals] == one.originals
        np.testing.assert_array_equal(pool.hu, one.hu)
        assert pool.slices == one.slices
        assert {type(o) for o in pool.originals} == kinds, setting
        assert all(o.readonly for o in pool.originals if isinstance(o, memoryview))


def test_a_process_pool_reports_the_same_problems_as_one_process(tmp_path: Path) -> None:
    from radseg.imaging.deid import Deidentifier

    study = write_synthetic_ct(tmp_path, seed=104, shape=(70, 16, 16))
    files = sorted(study.dicom_dir.iterdir())
    files[5].write_bytes(files[5].read_bytes()[:400])  # truncated
    (study.dicom_dir / "notes.dat").write_bytes(b"not dicom at all")
    deid = Deidentifier(b"pool")
    seen = []
    for workers in (1, 2):
        problems: list[IngestProblem] = []
        (volume,) = read_series(
            study.dicom_dir,
            deidentify=deid,
            problems=problems,
            keep_originals=True,
            workers=workers,
        )
        seen.append(([(p.path, p.reason, p.name) for p in problems], volume.hu, volume.originals))
    (problems_one, hu_one, originals_one), (problems_pool, hu_pool, originals_pool) = seen
    assert problems_pool == problems_one and len(problems_one) == 2
    np.testing.assert_array_equal(hu_pool, hu_one)
    assert hu_one.shape[0] == 69 and originals_pool == originals_one
