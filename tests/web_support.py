"""What the web tests share: the seeded users' password, a demo exporter plugin, logging in
without scrypt, reading audit events, JSON answers and PNG images. The fixtures that build the
app (``web_platform``, ``seeded``, ``app``, ``client``) are in ``tests/unit/conftest.py``."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from flask.testing import FlaskClient
from PIL import Image
from werkzeug.serving import make_server

from radseg import audit, users
from radseg.core import Platform
from radseg.db.models import AuditEvent
from radseg.hookspecs import hookimpl
from radseg.web import create_app

PASSWORD = "correct horse"
LESION_GREEN = (0, 255, 0)
#: volume (z, y, x): columns 0-7 are air, 8-15 soft tissue, 16-23 bone
SHAPE = (4, 16, 24)


class DemoExporter:
    name: ClassVar[str] = "demo-png"
    suffix: ClassVar[str] = ".png"

    def export(self, labels: Any, geometry: Any, classes: Any, out: Path) -> Path:
        return out


class DemoPlugin:
    @hookimpl
    def radseg_register_exporters(self) -> list[type]:
        return [DemoExporter]


DEMO = ("demo", DemoPlugin())


def log_in_as(client: FlaskClient, platform: Platform, username: str) -> None:
    """What a successful login leaves in the session, without scrypt."""
    with platform.sessions() as session:
        user = users.get_user(session, username)
        user_id = f"{user.id}:{users.session_token(user)}"
    with client.session_transaction() as flask_session:
        flask_session["_user_id"] = user_id
        flask_session["_fresh"] = True


def audit_events(platform: Platform, action: str) -> list[AuditEvent]:
    with platform.sessions() as session:
        return audit.events(session, action=action)


def get_json(client: FlaskClient, url: str) -> Any:
    response = client.get(url)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def png(response: Any) -> np.ndarray:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.data)))


@contextmanager
def serving(platform: Platform) -> Iterator[str]:
    """radseg's web app on a free loopback port, as `radseg serve` gives it (plain http, CSRF
    on, cookies not Secure), on a thread for the browser tests: yields its base URL."""
    app = create_app(platform, bound_to="127.0.0.1")
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(timeout=10)
