"""What the web tests share: the seeded users' password, a demo exporter plugin, logging in
without scrypt, reading audit events, JSON answers and PNG images; for the browser tests, a
user who logs in through the form, the app served on a thread, a page and the login form. The
fixtures that build the app (``web_platform``, ``seeded``, ``app``, ``client``) are in
``tests/unit/conftest.py``."""

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
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash
from werkzeug.serving import make_server

from radseg import audit, users
from radseg.core import Platform
from radseg.db.models import AuditEvent, Role, User
from radseg.hookspecs import hookimpl
from radseg.web import create_app

PASSWORD = "correct horse"
LESION_GREEN = (0, 255, 0)
#: volume (z, y, x): columns 0-7 are air, 8-15 soft tissue, 16-23 bone
SHAPE = (4, 16, 24)
#: the one class of the browser tests' predictions
NODULE = [{"id": 1, "name": "nodule", "color": "#ff0000"}]


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


# --- the browser tests ------------------------------------------------------------------------


def add_user(session: Session, username: str, password: str, role: Role) -> User:
    """A user who logs in through the login form (a real scrypt hash, as ``radseg users add``
    stores it)."""
    user = User(
        username=username,
        password_hash=generate_password_hash(password, method="scrypt"),
        role=role,
    )
    session.add(user)
    return user


@contextmanager
def served(platform: Platform) -> Iterator[str]:
    """:func:`serving`, then the platform closed (when the app could not start, too)."""
    try:
        with serving(platform) as url:
            yield url
    finally:
        platform.close()


@contextmanager
def browser_page(browser: Any, width: int, height: int) -> Iterator[Any]:
    """A page in a fresh browser context of a ``width`` x ``height`` window (waits time out
    after 15 s), closed after."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def submit_login(page: Any, username: str, password: str) -> None:
    """Fill in and send the login form that ``page`` shows."""
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button[type=submit]")


def log_in_at(page: Any, url: str, username: str, password: str, lands: str = "") -> None:
    """Open ``url`` (the login form stands in for it), log in, and wait until the browser is at
    ``lands`` (``url`` unless given: the page asked for)."""
    page.goto(url)
    submit_login(page, username, password)
    page.wait_for_url(lands or url)


def wait_for_overlay(page: Any, part: str) -> None:
    """Until the viewer's overlay image (its URL with ``part`` in it) and slice are decoded."""
    page.wait_for_function(
        """(part) => {
            const img = document.getElementById('overlay-img');
            const slice = document.getElementById('slice-img');
            return img.src.includes(part) && img.complete && img.naturalWidth > 0
                && slice.complete && slice.naturalWidth > 0;
        }""",
        arg=part,
    )


def stage_pixel(page: Any, row: float, col: float, *, shape: tuple[int, int, int]) -> np.ndarray:
    """The RGB of the viewer's ``#stage`` on screen at voxel (row, col) of a slice of a
    ``shape`` (z, y, x) volume: the median of a 5 x 5 patch of its screenshot."""
    shot = np.asarray(Image.open(io.BytesIO(page.locator("#stage").screenshot())).convert("RGB"))
    height, width = shot.shape[:2]
    y = int((row + 0.5) / shape[1] * height)
    x = int((col + 0.5) / shape[2] * width)
    return np.median(shot[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3), axis=0)
