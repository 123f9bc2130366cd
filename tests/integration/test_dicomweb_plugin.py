"""The ``dicomweb`` dataset source against a real Orthanc (QIDO-RS, WADO-RS) on loopback.

Two synthetic studies are stored in the PACS: one CT with a DICOM SEG covering some slices, one
with an RTSTRUCT. What the plugin pulls must be identical to reading the same files from disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from radseg.contracts import (
    IngestProblem,
    ReadRequest,
    SeriesVolume,
    no_progress,
    validate_settings,
)
from radseg.errors import InputError, PluginConfigError
from radseg.imaging.deid import Deidentifier, pseudonymise
from radseg.imaging.dicom_io import read_series
from radseg.imaging.label_sources import read_label_source
from radseg.imaging.synthetic import SyntheticStudy, write_synthetic_ct
from radseg_plugins.datasets.dicomweb import (
    DicomWebSettings,
    DicomWebSource,
    parse_query,
)
from tests.dicom_labels import write_rtstruct, write_seg
from tests.orthanc import OrthancServer, orthanc_available, orthanc_server
from tests.support import require

KEY = b"dicomweb-test"


@pytest.fixture(scope="module")
def pacs(orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory):
    """Orthanc holding study A (CT + partial SEG) and study B (CT + RTSTRUCT)."""
    root = tmp_path_factory.mktemp("pacs")
    a = write_synthetic_ct(root / "a", seed=11, shape=(6, 40, 36), patient_id="MRN-A")
    b = write_synthetic_ct(root / "b", seed=12, shape=(5, 32, 32), patient_id="MRN-B")
    seg = write_seg(a.files, a.labels, a.classes, root / "a_seg.dcm", slices=slice(1, 5))
    rt = write_rtstruct(b.files, b.labels, b.classes, root / "b_rt.dcm")
    orthanc.clear()
    orthanc.upload_all([*a.files, seg, *b.files, rt])
    return orthanc, a, b, seg, rt


def pull(url: str, query: str, problems: list[IngestProblem] | None = None) -> list[SeriesVolume]:
    source = DicomWebSource(DicomWebSettings(url=url))
    return list(
        source.read(
            ReadRequest(
                Path(query), Deidentifier(KEY), problems=problems if problems is not None else []
            ),
            no_progress,
        )
    )


def from_disk(study: SyntheticStudy) -> SeriesVolume:
    (volume,) = read_series(study.dicom_dir, deidentify=Deidentifier(KEY), problems=[])
    return volume


def assert_same_series(pulled: SeriesVolume, disk: SeriesVolume) -> None:
    assert pulled.patient_key == disk.patient_key
    assert pulled.study_instance_uid == disk.study_instance_uid
    assert pulled.series_instance_uid == disk.series_instance_uid
    assert pulled.geometry == disk.geometry
    assert pulled.slices == disk.slices
    np.testing.assert_array_equal(pulled.hu, disk.hu)


def test_pull_by_study_uid_equals_reading_the_files(pacs) -> None:
    server, a, _, seg, _ = pacs
    (volume,) = pull(server.dicomweb_url, f"StudyInstanceUID={a.study_instance_uid}")
    disk = from_disk(a)
    assert_same_series(volume, disk)
    assert volume.patient_key == pseudonymise(KEY, "MRN-A")
    # The de-identified instances come along for the host to store, one per slice.
    assert len(volume.originals) == len(a.files)
    assert all(b"MRN-A" not in data for data in volume.originals)
    expected = read_label_source(seg, disk)
    assert volume.labels is not None
    np.testing.assert_array_equal(volume.labels, expected.labels)
    assert volume.classes == expected.classes
    # The SEG covers slices 1-4 only: the others are background, the covered ones the truth.
    np.testing.assert_array_equal(volume.labels[1:5], a.labels[1:5])
    assert not volume.labels[0].any() and not volume.labels[5].any()


def test_pull_by_patient_and_modality_with_an_rtstruct(pacs, tmp_path: Path) -> None:
    server, _, b, _, rt = pacs
    query = tmp_path / "query.json"
    query.write_text(json.dumps({"PatientID": "MRN-B", "ModalitiesInStudy": "CT"}))
    (volume,) = pull(server.dicomweb_url, str(query))
    disk = from_disk(b)
    assert_same_series(volume, disk)
    assert volume.labels is not None
    np.testing.assert_array_equal(volume.labels, read_label_source(rt, disk).labels)
    np.testing.assert_array_equal(volume.labels, b.labels)
    assert [c.name for c in volume.classes] == [c.name for c in b.classes]


def test_everything_pulled_is_free_of_the_original_identifiers(pacs) -> None:
    server, a, b, _, _ = pacs
    problems: list[IngestProblem] = []
    volumes = pull(server.dicomweb_url, "StudyDate=19000101-29991231", problems)
    assert len(volumes) == 2 and problems == []
    text = repr(
        [
            (
                v.patient_key,
                v.study_instance_uid,
                v.series_instance_uid,
                v.slices,
                v.warnings,
                v.classes,
            )
            for v in volumes
        ]
    )
    for secret in (
        "MRN-A",
        "MRN-B",
        a.study_instance_uid,
        b.series_instance_uid,
        a.sop_instance_uids[0],
        "Doe",
    ):
        assert secret not in text


def test_queries_are_checked_before_asking_the_pacs(pacs) -> None:
    server = pacs[0]
    with pytest.raises(InputError, match="unknown DICOMweb query key 'PatientName'"):
        pull(server.dicomweb_url, "PatientName=Doe")
    with pytest.raises(InputError, match="query is empty"):
        pull(server.dicomweb_url, "")
    with pytest.raises(InputError, match="no study on the PACS matches"):
        pull(server.dicomweb_url, "PatientID=nobody")
    source = DicomWebSource(DicomWebSettings(url=server.dicomweb_url, max_studies=1))
    with pytest.raises(InputError, match="matches more than 1 studies"):
        list(
            source.read(
                ReadRequest(Path("StudyDate=19000101-29991231"), Deidentifier(KEY), problems=[]),
                no_progress,
            )
        )
    assert parse_query("PatientID=1&ModalitiesInStudy=CT") == {
        "PatientID": "1",
        "ModalitiesInStudy": "CT",
    }


def test_settings_are_validated_naming_the_field() -> None:
    with pytest.raises(PluginConfigError, match=r"\[plugins.dicomweb\].*username and password"):
        validate_settings("dicomweb", DicomWebSettings, {"url": "http://x", "username": "u"})
    with pytest.raises(PluginConfigError, match="url must start with http"):
        validate_settings("dicomweb", DicomWebSettings, {"url": "ftp://pacs"})
    with pytest.raises(PluginConfigError, match="max_studies"):
        validate_settings("dicomweb", DicomWebSettings, {"max_studies": 0})
    with pytest.raises(InputError, match="set url ="):
        DicomWebSource().client()


def test_basic_auth_is_used_and_a_wrong_password_is_a_clear_error(tmp_path: Path) -> None:
    problem = orthanc_available()
    require(problem is None, problem or "")
    study = write_synthetic_ct(tmp_path / "s", seed=13, shape=(3, 24, 24))
    with orthanc_server(tmp_path / "pacs", auth=("radseg", "s3cret")) as server:
        server.upload_all(study.files)
        good = DicomWebSettings(
            url=server.dicomweb_url, username="radseg", password=SecretStr("s3cret")
        )
        (volume,) = DicomWebSource(good).read(
            ReadRequest(
                Path(f"StudyInstanceUID={study.study_instance_uid}"), Deidentifier(KEY), problems=[]
            ),
            no_progress,
        )
        np.testing.assert_array_equal(volume.hu, study.hu)
        bad = DicomWebSettings(
            url=server.dicomweb_url, username="radseg", password=SecretStr("wrong")
        )
        with pytest.raises(InputError, match=r"HTTP 401 \(check username/password"):
            list(
                DicomWebSource(bad).read(
                    ReadRequest(Path("PatientID=x"), Deidentifier(KEY), problems=[]), no_progress
                )
            )


def test_the_platform_configures_the_plugin_from_its_settings(tmp_path: Path) -> None:
    import radseg_plugins.datasets.dicomweb as dicomweb
    from radseg.core import create_platform
    from radseg.settings import load_settings

    def platform_with(section: dict[str, object]):
        settings = load_settings({"home": tmp_path, "plugins": {"dicomweb": section}}, environ={})
        return create_platform(settings, autoload=False, plugins=[("dicomweb", dicomweb)])

    good = platform_with({"url": "http://pacs.example/dicom-web", "token": "t0ken"})
    source = good.plugins.dataset_source("dicomweb")
    assert isinstance(source, DicomWebSource)
    assert source.settings.url == "http://pacs.example/dicom-web"
    assert source.session().headers["Authorization"] == "Bearer t0ken"
    good.close()
    bad = platform_with({"url": "pacs.example", "timeout": 3})
    info = bad.plugins.infos["dicomweb"]
    assert info.status == "unavailable"
    assert "url must start with http" in info.reason and "timeout" in info.reason
    bad.close()


def test_ingest_from_the_pacs_stores_series_labels_and_originals_once(
    pacs, database_url: str, tmp_path: Path
) -> None:
    """``radseg ingest --source dicomweb "StudyInstanceUID=..."``, on SQLite and PostgreSQL."""
    from sqlalchemy import func, select

    from radseg.core import create_platform
    from radseg.db.migrate import upgrade
    from radseg.db.models import LabelSet, Series
    from radseg.imaging.volumes import read_volume
    from radseg.settings import load_settings
    from radseg.workflows.ingest import ingest

    server, a, _, _, _ = pacs
    settings = load_settings(
        {
            "home": tmp_path / "home",
            "database_url": database_url,
            "plugins": {"dicomweb": {"url": server.dicomweb_url}},
        },
        environ={},
    )
    probe = create_platform(settings, autoload=False)
    upgrade(probe.engine)
    probe.close()
    platform = create_platform(settings)
    try:
        query = Path(f"StudyInstanceUID={a.study_instance_uid}")
        report = ingest(platform, query, source="dicomweb")
        assert len(report.added) == 1 and report.labelled == 1
        with platform.sessions.begin() as session:
            series = session.scalars(select(Series)).one()
            label_set = session.scalars(select(LabelSet)).one()
            labels, _ = read_volume(platform.resolve(label_set.path))
            np.testing.assert_array_equal(labels[1:5], a.labels[1:5])
            assert [c["name"] for c in label_set.classes] == [c.name for c in a.classes]
            stored = list((platform.home / "studies").rglob("*.dcm"))
            assert len(stored) == len(a.files)
            assert series.series_instance_uid != a.series_instance_uid  # pseudonymised
        again = ingest(platform, query, source="dicomweb")
        with platform.sessions() as session:
            assert again.added == [] and len(again.already_present) == 1
            assert session.scalar(select(func.count()).select_from(LabelSet)) == 1
    finally:
        platform.close()


def test_cli_ingests_a_query(pacs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from radseg.cli import main

    server, _, b, _, _ = pacs
    home = tmp_path / "home"
    home.mkdir()
    (home / "radseg.toml").write_text(f'[plugins.dicomweb]\nurl = "{server.dicomweb_url}"\n')
    monkeypatch.setenv("RADSEG_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.delenv("RADSEG_CONFIG", raising=False)
    runner = CliRunner()
    init = runner.invoke(main, ["--home", str(home), "init"], catch_exceptions=False)
    assert init.exit_code == 0, init.output
    query = "PatientID=MRN-B&ModalitiesInStudy=CT"
    args = ["--home", str(home), "ingest", "--source", "dicomweb", "--json", query]
    result = runner.invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert len(report["added"]) == 1 and report["labelled"] == 1
    assert "MRN-B" not in result.output and b.study_instance_uid not in result.output
    missing = runner.invoke(main, ["--home", str(home), "ingest", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0 and "does not exist" in missing.output
