"""Typed settings: defaults < settings file < ``RADSEG_*`` environment variables.

The settings file is TOML. It is found at ``$RADSEG_CONFIG`` if set, else at
``$RADSEG_HOME/radseg.toml`` if it exists. Environment variables override single fields:
``RADSEG_HOME``, ``RADSEG_DATABASE_URL``, ``RADSEG_DEVICE``... (the field name upper-cased).
Plugin settings live in ``[plugins.<name>]`` tables and are validated by the plugin in
``radseg_configure``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from radseg.errors import RadsegError

ENV_PREFIX = "RADSEG_"
#: a dotted Python import path (``plugin_modules``)
_MODULE_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class PacsSettings(BaseModel):
    """``[pacs.<name>]``: a PACS that accepts exports over DICOMweb STOW-RS.

    Give ``username``/``password`` (HTTP basic) or ``token`` (a bearer token), or neither for an
    open PACS. The PACS receives de-identified objects: they reference the pseudonymised UIDs
    of radseg's stored series, so send them to a research PACS that holds those series (an
    export can send the series along, see docs/exports.md).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="DICOMweb root, e.g. https://pacs.example.org/dicom-web")
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    timeout_s: float = Field(default=60.0, gt=0)
    verify_tls: bool = True
    #: further attempts after a failed request (exponential back-off: 2 s, 4 s, ...)
    retries: int = Field(default=2, ge=0, le=10)

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        from urllib.parse import urlsplit

        if not url.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https:// (got {url!r})")
        if "@" in urlsplit(url).netloc:
            # error messages name the url; credentials belong in username/password or token
            raise ValueError("must not hold credentials (user:password@); use username/password")
        return url.rstrip("/")


class Settings(BaseModel):
    """Everything a radseg process can be configured with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Field(default=Path("var"), description="where radseg keeps its data (§9)")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///$RADSEG_HOME/radseg.db"
    )
    secret_key: str | None = Field(
        default=None, description="Flask session key; default: generated once into $HOME"
    )
    deid_key: str | None = Field(
        default=None, description="key for patient pseudonyms; default: generated once into $HOME"
    )
    shift_dates: bool = True
    allow_burned_in_annotation: bool = Field(
        default=False,
        description="ingest instances whose BurnedInAnnotation is YES (pixels are not cleaned)",
    )
    secure_cookies: bool = Field(
        default=False, description="mark session cookies Secure (set it when served over TLS)"
    )
    disabled_plugins: tuple[str, ...] = ()
    plugin_modules: tuple[str, ...] = Field(
        default=(),
        description="import paths of plugin modules to load besides the radseg entry points "
        "(RADSEG_PLUGIN_MODULES=a.b,c.d); every process loads them, job processes included",
    )
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: PACS destinations for exports, by name: ``[pacs.research]`` url = "...", ...
    pacs: dict[str, PacsSettings] = Field(default_factory=dict)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    lease_seconds: float = Field(default=60.0, gt=0)
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    poll_seconds: float = Field(default=1.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)

    @field_validator("plugin_modules")
    @classmethod
    def _module_paths(cls, modules: tuple[str, ...]) -> tuple[str, ...]:
        for module in modules:
            if not _MODULE_PATH.fullmatch(module):
                raise ValueError(f"{module!r} is not a module import path such as pkg.module")
        return modules

    @property
    def database_url_resolved(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'radseg.db').resolve()}"

    def plugin_settings(self, name: str) -> dict[str, Any]:
        return dict(self.plugins.get(name, {}))

    def path(self, *parts: str) -> Path:
        """A path under ``home``."""
        return self.home.joinpath(*parts)

    def secret(self, field: Literal["secret_key", "deid_key"]) -> str:
        """The configured secret, or one generated once and kept in ``$HOME/.<field>``.

        The key file is created with mode 0600; losing the de-identification key means the same
        patient gets a new pseudonym on the next upload, so back it up with the database.
        """
        value = getattr(self, field)
        if value:
            return str(value)
        key_file = self.home / f".{field}"
        if not key_file.exists():
            # Publish atomically: the web app and a worker may start at the same moment; the
            # loser of os.link's race reads the winner's complete key, never an empty file.
            self.home.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{field}.", dir=self.home)
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_hex(32))
                os.chmod(tmp, 0o600)
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, key_file)
            finally:
                os.unlink(tmp)
        return key_file.read_text().strip()


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None or name in ("plugins", "pacs"):
            continue
        if name in ("disabled_plugins", "plugin_modules"):
            out[name] = tuple(p.strip() for p in raw.split(",") if p.strip())
        elif field.annotation is bool:
            out[name] = raw.strip().lower() in {"1", "true", "yes", "on"}
        else:
            out[name] = raw
    return out


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build :class:`Settings` from the file, the environment and ``overrides`` (highest)."""
    environ = os.environ if environ is None else environ
    env = _env_overrides(environ)
    home = Path((overrides or {}).get("home") or env.get("home") or "var")
    config_file = environ.get(ENV_PREFIX + "CONFIG")
    data: dict[str, Any] = {}
    candidate = Path(config_file) if config_file else home / "radseg.toml"
    if config_file and not candidate.exists():
        raise RadsegError(f"settings file {candidate} (from RADSEG_CONFIG) does not exist")
    if candidate.exists():
        try:
            data = tomllib.loads(candidate.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise RadsegError(f"settings file {candidate} is not valid TOML: {exc}") from exc
    data.update(env)
    data.update(overrides or {})
    try:
        return Settings(**data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise RadsegError(f"invalid settings ({problems}); fix {candidate} or RADSEG_*") from exc
