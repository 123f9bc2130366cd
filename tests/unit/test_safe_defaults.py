"""Safe defaults: no known admin password, Secure cookies off loopback, secrets kept out of
``repr`` and error messages.

(The export job that must receive the real PACS credentials, and leak them nowhere, is in
``tests/integration/test_export_secrets.py``.)
"""

from __future__ import annotations

import logging
import re
import traceback
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, SecretStr, ValidationError

from radseg import users
from radseg.core import Platform, create_platform
from radseg.db.models import Role, User
from radseg.errors import RadsegError
from radseg.hookspecs import hookimpl
from radseg.main import main
from radseg.settings import PacsSettings, Settings, load_settings
from radseg.web import create_app
from tests.support import SQLITE_ONLY, migrated_platform
from tests.web_support import PASSWORD

# -- radseg init ----------------------------------------------------------------------------


def _init(home: Path, *args: str) -> Any:
    # no RADSEG_* from the developer's shell: this is about what init does by default
    env = {"RADSEG_ADMIN_PASSWORD": None, "RADSEG_DATABASE_URL": None, "RADSEG_CONFIG": None}
    return CliRunner().invoke(main, ["--home", str(home), "init", *args], env=env)


def _admin_password(output: str) -> str:
    match = re.search(r"with the password\n\n    (\S+)\n", output)
    assert match, output
    return match.group(1)


def _authenticates(home: Path, username: str, password: str) -> bool:
    platform = create_platform(load_settings({"home": home}, environ={}), autoload=False)
    try:
        with platform.sessions() as session:
            return users.authenticate(session, username, password) is not None
    finally:
        platform.close()


def test_init_without_a_password_generates_one_and_shows_it_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    first = _init(tmp_path / "a")
    assert first.exit_code == 0, first.output
    password = _admin_password(first.output)
    assert len(password) >= 20 and password != "radseg-admin"
    assert "shown only this once" in first.output
    assert _authenticates(tmp_path / "a", "admin", password)
    assert not _authenticates(tmp_path / "a", "admin", "radseg-admin")  # the old default

    again = _init(tmp_path / "a")
    assert again.exit_code == 0 and "already exists" in again.output
    assert password not in again.output

    other = _init(tmp_path / "b")
    assert _admin_password(other.output) != password  # random, not a constant
    assert password not in caplog.text  # printed for the terminal, never logged
    stored = [p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()]
    assert not any(password.encode() in data for data in stored)  # only its hash is kept


def test_init_takes_a_chosen_password_and_checks_it(tmp_path: Path) -> None:
    chosen = _init(tmp_path / "a", "--admin-password", "a-long-password")
    assert chosen.exit_code == 0 and "created admin user 'admin'" in chosen.output
    assert "a-long-password" not in chosen.output
    assert _authenticates(tmp_path / "a", "admin", "a-long-password")
    short = _init(tmp_path / "b", "--admin-password", "short")
    assert short.exit_code == 1 and "use at least 8" in short.output


# -- Secure cookies -------------------------------------------------------------------------


def _login_cookie_flags(platform: Platform, **create: Any) -> tuple[bool, bool]:
    """Log in through the form; whether the session cookie is Secure, and the app's setting."""
    app = create_app(platform, {"TESTING": True, "WTF_CSRF_ENABLED": False}, **create)
    response = app.test_client().post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    cookies = response.headers.getlist("Set-Cookie")
    session = next(c for c in cookies if c.startswith("session="))
    assert "HttpOnly" in session and "SameSite=Lax" in session
    secure = "; Secure" in session
    assert app.config["REMEMBER_COOKIE_SECURE"] is secure  # the remember-me cookie agrees
    return secure, app.config["SESSION_COOKIE_SECURE"]


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("bound_to", "secure"),
    [
        (None, True),  # a WSGI server: the address is unknown
        ("0.0.0.0", True),
        ("radseg.example.org", True),
        ("10.1.2.3", True),
        ("127.0.0.1", False),  # `radseg serve`'s default: local development over http
        ("127.0.0.2", False),
        ("::1", False),
        ("localhost", False),
    ],
)
def test_session_cookies_are_secure_unless_served_on_loopback(
    web_platform: Platform, password_hash: str, bound_to: str | None, secure: bool
) -> None:
    with web_platform.sessions.begin() as session:
        session.add(User(username="alice", password_hash=password_hash, role=Role.CLINICIAN))
    assert _login_cookie_flags(web_platform, bound_to=bound_to) == (secure, secure)


def test_the_secure_cookies_setting_wins_over_the_bind_address() -> None:
    assert Settings(secure_cookies=False).cookies_secure("0.0.0.0") is False
    assert Settings(secure_cookies=True).cookies_secure("127.0.0.1") is True
    assert load_settings(environ={"RADSEG_SECURE_COOKIES": "false"}).secure_cookies is False
    assert load_settings(environ={"RADSEG_SECURE_COOKIES": "1"}).secure_cookies is True
    assert load_settings(environ={"RADSEG_SECURE_COOKIES": ""}).secure_cookies is None
    with pytest.raises(RadsegError, match="RADSEG_SECURE_COOKIES='ture' is not a yes/no value"):
        load_settings(environ={"RADSEG_SECURE_COOKIES": "ture"})


@pytest.mark.parametrize(("host", "secure"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_radseg_serve_decides_from_its_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str, secure: bool
) -> None:
    served: dict[str, Any] = {}

    def run_simple(hostname: str, port: int, application: Any, **kwargs: Any) -> None:
        served.update(host=hostname, config=application.config)

    monkeypatch.setattr("werkzeug.serving.run_simple", run_simple)
    result = CliRunner().invoke(
        main,
        ["--home", str(tmp_path), "serve", "--host", host],
        env={"RADSEG_SECURE_COOKIES": None, "RADSEG_DATABASE_URL": None, "RADSEG_CONFIG": None},
    )
    assert result.exit_code == 0, result.output
    assert served["host"] == host and served["config"]["SESSION_COOKIE_SECURE"] is secure
    assert ("https reverse proxy" in result.output) is secure


# -- secrets in repr and messages -----------------------------------------------------------


def test_settings_repr_shows_no_secret() -> None:
    settings = Settings.model_validate(
        {
            "database_url": "postgresql+psycopg://radseg:db-pass-123@db:5432/radseg",
            "secret_key": "flask-key-123",
            "deid_key": "deid-key-123",
            "plugins": {
                "dicomweb": {"url": "https://pacs", "username": "u", "password": "pl-pass-123"}
            },
            "pacs": {"research": {"url": "https://pacs", "token": "tok-123"}},
        }
    )
    shown = repr(settings)
    for secret in ("db-pass-123", "flask-key-123", "deid-key-123", "pl-pass-123", "tok-123"):
        assert secret not in shown
    assert "postgresql+psycopg://radseg:********@db:5432/radseg" in shown  # still useful
    assert settings.secret("secret_key") == "flask-key-123"  # the real values are there
    assert settings.secret("deid_key") == "deid-key-123"
    assert settings.pacs["research"].token.get_secret_value() == "tok-123"  # type: ignore[union-attr]


def test_a_pacs_takes_one_way_to_log_in_and_never_echoes_a_password() -> None:
    with pytest.raises(ValidationError, match="username and password go together"):
        PacsSettings(url="https://pacs", username="u")
    with pytest.raises(ValidationError, match="a bearer token or a username and password"):
        PacsSettings(url="https://pacs", username="u", password="p", token="t")  # type: ignore[arg-type]
    with pytest.raises(RadsegError, match="must not hold credentials") as info:
        load_settings({"pacs": {"x": {"url": "alice:url-pass-123@pacs/dicom-web"}}}, environ={})
    assert "url-pass-123" not in str(info.value)


def test_an_invalid_pacs_table_is_reported_without_chaining_its_values() -> None:
    # pydantic's error quotes the whole raw [pacs.x] table as its input_value
    table = {"url": "https://pacs", "username": "u", "password": "tbl-pass-123", "token": "t"}
    with pytest.raises(RadsegError, match="a bearer token or a username and password") as info:
        load_settings({"pacs": {"x": table}}, environ={})
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert "tbl-pass-123" not in "".join(traceback.format_exception(info.value))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("token", "tok-SECRET-1\n"),
        ("token", "tok SECRET-1"),
        ("password", "pw-SECRET-1\r\n"),
        ("username", "user-SECRET\x00"),
        ("username", "us:er-SECRET"),
    ],
)
def test_a_pacs_credential_that_cannot_go_into_a_header_is_refused_unrepeated(
    field: str, value: str
) -> None:
    table = {"url": "https://pacs", "username": "u", "password": "p"}
    if field == "token":
        table = {"url": "https://pacs"}
    with pytest.raises(RadsegError, match=rf"pacs\.x\.{field}: .*character") as info:
        load_settings({"pacs": {"x": {**table, field: value}}}, environ={})
    assert "SECRET" not in "".join(traceback.format_exception(info.value))


def test_a_pacs_error_from_an_invalid_header_never_quotes_the_header() -> None:
    from radseg import pacs

    # as if the settings had not been validated: requests refuses the header before connecting
    # and quotes its value in the message
    bad = PacsSettings.model_construct(
        url="http://127.0.0.1:9/dicom-web", token=SecretStr("tok-SECRET-2\n"), retries=0
    )
    with pytest.raises(pacs.PacsError, match="not a valid HTTP header") as info:
        pacs.has_series("x", bad, "1.2.3", "1.2.3.4")
    assert "tok-SECRET-2" not in "".join(traceback.format_exception(info.value))


def test_the_dicomweb_source_refuses_a_url_with_credentials_without_repeating_them() -> None:
    from radseg.contracts import validate_settings
    from radseg.errors import PluginConfigError
    from radseg_plugins.datasets.dicomweb import DicomWebSettings

    with pytest.raises(PluginConfigError, match="must not hold credentials") as info:
        validate_settings("dicomweb", DicomWebSettings, {"url": "https://u:url-pw-9@pacs/dw"})
    assert "url-pw-9" not in str(info.value)


class _HandValidated(BaseModel):
    password: SecretStr
    port: int


class _PluginThatValidatesByHand:
    @hookimpl
    def radseg_configure(self, platform: Any) -> _HandValidated:
        return _HandValidated.model_validate(platform.settings.plugin_settings("leaky"))


@SQLITE_ONLY
def test_a_plugin_s_invalid_settings_are_reported_without_their_values(
    settings: Settings,
) -> None:
    settings = Settings.model_validate(
        {**settings.model_dump(), "plugins": {"leaky": {"password": 123456789, "port": "x"}}}
    )
    platform = migrated_platform(
        settings, autoload=False, plugins=[("leaky", _PluginThatValidatesByHand())]
    )
    try:
        (info,) = [i for i in platform.plugins.list() if i.name == "leaky"]
    finally:
        platform.close()
    assert info.status == "unavailable"
    assert "invalid settings in [plugins.leaky]: password:" in info.reason
    assert "port:" in info.reason
    assert "123456789" not in info.reason
