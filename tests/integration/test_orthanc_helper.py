"""The test PACS helper (tests/orthanc.py) that DICOMweb tests build on."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file

from tests.orthanc import OrthancServer, orthanc_available, orthanc_server
from tests.support import require


def test_orthanc_fixture_stores_and_serves_dicomweb(orthanc: OrthancServer) -> None:
    orthanc.clear()
    answer = orthanc.upload(str(get_testdata_file("CT_small.dcm")))
    assert answer["Status"] == "Success"
    studies = DICOMwebClient(orthanc.dicomweb_url).search_for_studies()
    assert [s["0020000D"]["Value"][0] for s in studies] == [
        "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    ]
    orthanc.clear()
    assert orthanc.get("/patients") == []


def test_orthanc_with_auth_refuses_anonymous_requests(tmp_path: Path) -> None:
    problem = orthanc_available()
    require(problem is None, problem or "")
    with orthanc_server(tmp_path, auth=("radseg", "s3cret")) as pacs:
        assert requests.get(f"{pacs.url}/system", timeout=5).status_code == 401
        assert pacs.get("/system")["Name"] == "radseg-test"
        assert pacs.session.get(f"{pacs.dicomweb_url}/studies", timeout=5).status_code == 200
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{pacs.url}/system", timeout=2)
