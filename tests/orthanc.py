"""A real Orthanc PACS with its DICOMweb plugin, started on loopback for tests.

Debian's ``orthanc`` and ``orthanc-dicomweb`` packages provide ``/usr/sbin/Orthanc`` and
``libOrthancDicomWeb.so``. :func:`orthanc_server` writes a JSON configuration into a temporary
directory (storage and index there too), starts Orthanc on free loopback ports, waits until
``GET /system`` answers and stops it on exit (SIGTERM, then SIGKILL after a grace period)::

    with orthanc_server(tmp_path) as pacs:
        pacs.upload(path_to_dicom_file)
        client = DICOMwebClient(pacs.dicomweb_url)

The ``orthanc`` fixture in ``tests/conftest.py`` starts one per test module and skips locally
(fails under ``CI=true``) when the binaries are missing.

Orthanc itself checks HTTP basic authentication only (``auth=(user, password)`` turns on its
``AuthenticationEnabled`` with one ``RegisteredUsers`` entry); its authorization plugin, which
could check tokens, is not packaged in Debian and needs a web service of its own. For PACS that
take a bearer token, :func:`bearer_proxy` puts a small loopback reverse proxy in front of an
Orthanc: it refuses every request without the right ``Authorization: Bearer`` header and forwards
the rest with Orthanc's own basic credentials.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

__all__ = [
    "ORTHANC_BINARY",
    "ORTHANC_DICOMWEB_PLUGIN",
    "BearerProxy",
    "OrthancServer",
    "bearer_proxy",
    "orthanc_available",
    "orthanc_server",
]

log = logging.getLogger(__name__)

ORTHANC_BINARY = Path(os.environ.get("RADSEG_TEST_ORTHANC", "/usr/sbin/Orthanc"))
ORTHANC_DICOMWEB_PLUGIN = Path(
    os.environ.get(
        "RADSEG_TEST_ORTHANC_DICOMWEB", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
    )
)
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0


def orthanc_available() -> str | None:
    """``None`` when Orthanc and its DICOMweb plugin are installed, else why not."""
    if not os.access(ORTHANC_BINARY, os.X_OK):
        return f"Orthanc is not installed at {ORTHANC_BINARY} (apt-get install orthanc)"
    if not ORTHANC_DICOMWEB_PLUGIN.is_file():
        return (
            f"the Orthanc DICOMweb plugin is missing at {ORTHANC_DICOMWEB_PLUGIN} "
            "(apt-get install orthanc-dicomweb)"
        )
    return None


@dataclass
class OrthancServer:
    """A running Orthanc: its REST root, DICOMweb root and a session that can talk to it."""

    url: str
    dicomweb_url: str
    workdir: Path
    http_port: int
    dicom_port: int
    aet: str
    auth: tuple[str, str] | None = None
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    def get(self, path: str, **kwargs: Any) -> Any:
        """``GET`` a REST path (e.g. ``/studies``) and return the decoded JSON."""
        response = self.session.get(f"{self.url}{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def upload(self, path: Path | str) -> dict[str, Any]:
        """Store one DICOM file (``POST /instances``); returns Orthanc's answer (ID, Status...)."""
        data = Path(path).read_bytes()
        response = self.session.post(
            f"{self.url}/instances",
            data=data,
            headers={"Content-Type": "application/dicom"},
            timeout=60,
        )
        if response.status_code >= 400:
            raise RuntimeError(
                f"Orthanc refused {Path(path).name}: HTTP {response.status_code} {response.text}"
            )
        answer: dict[str, Any] = response.json()
        return answer

    def upload_all(self, paths: Iterable[Path | str]) -> list[dict[str, Any]]:
        """Upload every file in ``paths``, in order."""
        return [self.upload(p) for p in paths]

    def clear(self) -> None:
        """Delete every patient (and so every study, series and instance) stored."""
        for patient in self.get("/patients"):
            self.session.delete(f"{self.url}/patients/{patient}", timeout=30).raise_for_status()


def _free_port() -> int:
    # The port is released before Orthanc binds it; a clash is possible but rare, and start-up
    # then fails loudly (the log is in the error).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(
    workdir: Path, http_port: int, dicom_port: int, aet: str, auth: tuple[str, str] | None
) -> Path:
    """Write the JSON configuration Orthanc starts with and return its path."""
    config: dict[str, Any] = {
        "Name": "radseg-test",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": aet,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": auth is not None,
        "RegisteredUsers": {auth[0]: auth[1]} if auth else {},
        "HttpTimeout": 30,
        "StableAge": 1,
        # Off: unused here, and each one slows shutdown down (WebDAV by 2 s).
        "DicomServerEnabled": False,
        "WebDavEnabled": False,
        "Plugins": [str(ORTHANC_DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        "OverwriteInstances": True,
    }
    path = workdir / "orthanc.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


@contextmanager
def orthanc_server(
    workdir: Path, *, auth: tuple[str, str] | None = None, aet: str = "RADSEGTEST"
) -> Iterator[OrthancServer]:
    """Start Orthanc with its DICOMweb plugin under ``workdir``; stop it on exit.

    :param workdir: an existing directory for the configuration, storage, index and log.
    :param auth: ``(user, password)`` to require HTTP basic authentication; none by default.
    :raises RuntimeError: Orthanc is missing, exits early or does not answer within 30 s
        (the message ends with its log).
    """
    problem = orthanc_available()
    if problem:
        raise RuntimeError(problem)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = _free_port(), _free_port()
    config = write_config(workdir, http_port, dicom_port, aet, auth)
    log_path = workdir / "orthanc.log"
    url = f"http://127.0.0.1:{http_port}"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [str(ORTHANC_BINARY), str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
        )
    server = OrthancServer(
        url=url,
        dicomweb_url=f"{url}/dicom-web",
        workdir=workdir,
        http_port=http_port,
        dicom_port=dicom_port,
        aet=aet,
        auth=auth,
    )
    if auth:
        server.session.auth = auth
    try:
        _wait_until_up(server, process, log_path)
        log.info("Orthanc %s up at %s", process.pid, url)
        yield server
    finally:
        server.session.close()
        _stop(process)


def _wait_until_up(server: OrthancServer, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"Orthanc exited with code {process.returncode} while starting:\n{_tail(log_path)}"
            )
        try:
            response = server.session.get(f"{server.url}/system", timeout=2)
            if response.status_code == 200:
                # The DICOMweb plugin registers its routes during start-up too.
                plugins = server.get("/plugins")
                if "dicom-web" in plugins:
                    return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    _stop(process)
    raise RuntimeError(
        f"Orthanc did not answer on {server.url}/system within {_START_TIMEOUT_S:.0f} s:\n"
        f"{_tail(log_path)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=_STOP_TIMEOUT_S)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


#: request headers the proxy passes on to Orthanc (hop-by-hop and credentials are not)
_FORWARDED_REQUEST_HEADERS = ("Accept", "Content-Type")
#: response headers the proxy passes back to the client
_FORWARDED_RESPONSE_HEADERS = ("Content-Type",)


@dataclass
class BearerProxy:
    """A running :func:`bearer_proxy`: its DICOMweb root and what it has seen."""

    url: str
    dicomweb_url: str
    #: requests that carried the right token and were forwarded
    accepted: int = 0
    #: requests refused with 401 (no token, another scheme or a wrong token)
    refused: int = 0
    #: every ``Authorization`` header value seen, to check nothing else was sent
    schemes: list[str] = field(default_factory=list)


@contextmanager
def bearer_proxy(server: OrthancServer, token: str) -> Iterator[BearerProxy]:
    """A loopback HTTP proxy in front of ``server`` that admits ``Bearer <token>`` only.

    Every request must carry ``Authorization: Bearer <token>`` (compared in constant time);
    others get ``401`` with ``WWW-Authenticate: Bearer``. Accepted requests are forwarded to
    ``server`` with its basic credentials (if it has any), and the answer is relayed with its
    status, ``Content-Type`` and body.
    """
    state = BearerProxy(url="", dicomweb_url="")
    upstream = requests.Session()
    if server.auth:
        upstream.auth = server.auth
    expected = f"Bearer {token}".encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            given = self.headers.get("Authorization", "")
            state.schemes.append(given.partition(" ")[0])
            if not hmac.compare_digest(given.encode(), expected):
                state.refused += 1
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Bearer realm="radseg-test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            state.accepted += 1
            headers = {
                name: self.headers[name]
                for name in _FORWARDED_REQUEST_HEADERS
                if self.headers.get(name) is not None
            }
            answer = upstream.request(
                self.command, server.url + self.path, data=body, headers=headers, timeout=60
            )
            self.send_response(answer.status_code)
            for name in _FORWARDED_RESPONSE_HEADERS:
                if name in answer.headers:
                    self.send_header(name, answer.headers[name])
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = do_DELETE = _relay

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("bearer proxy: " + format, *args)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="bearer-proxy", daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    state.dicomweb_url = f"{state.url}/dicom-web"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
        upstream.close()
