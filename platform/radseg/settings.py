"""Typed settings: defaults < settings file < ``RADSEG_*`` environment variables.

The settings file is TOML. It is found at ``$RADSEG_CONFIG`` if set, else at
``$RADSEG_HOME/radseg.toml`` if it exists. Environment variables override single fields:
``RADSEG_HOME``, ``RADSEG_DATABASE_URL``, ``RADSEG_DEVICE``... (the field name upper-cased).
Plugin settings live in ``[plugins.<name>]`` tables and are validated by the plugin in
``radseg_configure``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import tempfile
import tomllib
import unicodedata
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from radseg.archives import ArchiveLimits
from radseg.errors import RadsegError
from radseg.storage import inside

ENV_PREFIX = "RADSEG_"
#: what a settings key that holds a secret is called (plugin tables are free-form)
SECRET_NAME = re.compile(r"pass(word)?|secret|token|api[_-]?key|private|credential", re.I)
#: what ``repr`` and the admin pages show instead of a secret
MASK = "********"


def has_userinfo(url: str) -> bool:
    """Whether ``url`` carries ``user[:password]@`` before its host (with or without a scheme)."""
    rest = url.split("://", 1)[-1]
    return "@" in re.split(r"[/?#]", rest, maxsplit=1)[0]


def mask_secrets(value: Any, key: str = "") -> Any:
    """``value`` (a plain settings value: tables, lists, scalars) with secrets replaced by
    :data:`MASK`: ``SecretStr`` values and anything under a key that names a secret."""
    if isinstance(value, SecretStr):
        return MASK
    if key and SECRET_NAME.search(key) and value not in (None, "", [], {}):
        return MASK
    if isinstance(value, Mapping):
        return {str(k): mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_secrets(v) for v in value]
    return value


def is_loopback(host: str) -> bool:
    """Whether a server bound to ``host`` is reachable from this machine only."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


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
        # first, so that no message below repeats a password written into the url; error
        # messages name the url, credentials belong in username/password or token
        if has_userinfo(url):
            raise ValueError("must not hold credentials (user:password@); use username/password")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https:// (got {url!r})")
        return url.rstrip("/")

    @field_validator("username", "password", "token")
    @classmethod
    def _fits_a_header(cls, value: str | SecretStr | None, info: ValidationInfo) -> Any:
        # requests quotes an invalid header value in its error, and a newline read along with
        # a token from a file would be sent silently otherwise; never repeat the value
        if value is None:
            return value
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if info.field_name == "token":
            if not text or any(not ("!" <= c <= "~") for c in text):
                raise ValueError(
                    "must be printable ASCII without spaces: it holds a whitespace, control or "
                    "non-ASCII character (a trailing newline?)"
                )
            return value
        if any(unicodedata.category(c) == "Cc" or ord(c) > 0xFF for c in text):
            raise ValueError(
                "holds a control character (a trailing newline?) or one that HTTP basic "
                "authentication cannot send (beyond Latin-1)"
            )
        if info.field_name == "username" and ":" in text:
            raise ValueError("holds a ':' character, which HTTP basic authentication cannot send")
        return value

    @model_validator(mode="after")
    def _one_way_to_log_in(self) -> PacsSettings:
        # requests would let basic auth silently replace the bearer header, and a username
        # alone would silently send no credentials at all
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together; set both or neither")
        if self.token is not None and self.username is not None:
            raise ValueError("give a bearer token or a username and password, not both")
        return self


class Settings(BaseModel):
    """Everything a radseg process can be configured with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Field(default=Path("var"), description="where radseg keeps its data (§9)")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///$RADSEG_HOME/radseg.db"
    )
    secret_key: SecretStr | None = Field(
        default=None, description="Flask session key; default: generated once into $HOME"
    )
    deid_key: SecretStr | None = Field(
        default=None, description="key for patient pseudonyms; default: generated once into $HOME"
    )
    shift_dates: bool = True
    allow_burned_in_annotation: bool = Field(
        default=False,
        description="ingest instances whose BurnedInAnnotation is YES (pixels are not cleaned)",
    )
    secure_cookies: bool | None = Field(
        default=None,
        description=(
            "mark the session and remember-me cookies Secure (sent over https only); unset: "
            "Secure, except under `radseg serve` bound to a loopback address"
        ),
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
    # --- jobs that span machines (radseg.jobs.gangs, docs/operations.md) ---
    gang_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description="how long a worker that joined a multi-machine job waits for the rest of "
        "its gang; then it gives its slot back and the job waits in the queue again",
    )
    gang_ports: str = Field(
        default="29500-29599",
        pattern=r"^\d{1,5}-\d{1,5}$",
        description="the TCP ports (FIRST-LAST) a gang's rank 0 picks its rendezvous port from; "
        "open them between the worker machines",
    )
    gang_address: str = Field(
        default="",
        max_length=255,
        description="the address the other machines reach this worker at, published as a "
        "gang's rendezvous when it is rank 0; default: this host's name, resolved",
    )
    machine_name: str = Field(
        default="",
        max_length=255,
        description="the machine a worker counts as when joining a gang (one worker per machine "
        "and gang); default: the host name",
    )
    # Every zip from outside (upload page, `radseg ingest x.zip`): radseg.archives, docs/security.md
    archive_max_unpacked_bytes: int = Field(
        default=ArchiveLimits.max_unpacked_bytes,
        gt=0,
        description="bytes one zip may unpack to, counted while unpacking",
    )
    archive_max_members: int = Field(
        default=ArchiveLimits.max_members, gt=0, description="entries one zip may hold"
    )
    archive_max_ratio: float = Field(
        default=ArchiveLimits.max_ratio,
        gt=1,
        description="how many times its compressed size a member (or a zip, its file size) may "
        "unpack to, past the first MiB",
    )
    archive_max_depth: int = Field(
        default=ArchiveLimits.max_depth, ge=1, description="folder levels of a path in a zip"
    )
    archive_max_path_bytes: int = Field(
        default=ArchiveLimits.max_path_bytes,
        ge=1,
        le=3000,  # the upload folder's own path must still fit in PATH_MAX (4096)
        description="UTF-8 bytes of a path in a zip",
    )
    # --- request limits (docs/security.md); the in-flight budgets are per web process ---
    upload_max_bytes: int = Field(
        default=2 << 30, gt=0, description="the largest upload request; larger: `radseg ingest`"
    )
    upload_inflight_per_user_bytes: int = Field(
        default=4 << 30, gt=0, description="upload bytes one user may have in flight at once"
    )
    upload_inflight_total_bytes: int = Field(
        default=8 << 30, gt=0, description="upload bytes all users may have in flight at once"
    )
    json_body_limit: int = Field(
        default=1 << 20, gt=0, description="the largest body of any request but an upload"
    )
    correction_max_points: int = Field(
        default=20_000, gt=0, description="brush points in one saved correction"
    )
    correction_max_area: int = Field(
        default=4 << 20, gt=0, description="voxels one saved correction may paint (or sweep)"
    )
    quality_baseline_weeks: int = Field(
        default=4,
        ge=1,
        description="a model version's first weeks with reviews, whose numbers set the limits "
        "of its quality control charts",
    )
    quality_baseline_min: int = Field(
        default=20,
        ge=2,
        description="decisions (corrections) the control charts' baseline needs at least; it "
        "takes more weeks until it has them",
    )
    retrain_after_reviewed: int = Field(
        default=0,
        ge=0,
        description="queue a retrain of a model after this many new reviewed label versions of "
        "its predictions (0: off)",
    )
    retrain_iterations: int = Field(
        default=100, gt=0, description="fine-tuning iterations of a retrain (unless it asks)"
    )
    retrain_margin: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="non-inferiority margin: a retrained version is promoted only if no class's "
        "test Dice is more than this below its parent's",
    )
    upload_grace_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="an upload no job uses is removed this long after its last change",
    )
    export_reader_names: bool = Field(
        default=False,
        description="DICOM exports of an adjudicated label version name its readers and "
        "adjudicator (off: they say how many readers, never who)",
    )

    viewer_convention: Literal["radiological", "neurological"] = Field(
        default="radiological",
        description="how the viewer turns axial and coronal images: radiological (the "
        "patient's right on the screen's left) or neurological (the patient's right on the "
        "right); sagittal images have the patient's front on the left either way",
    )

    ohif_url: str | None = Field(
        default=None,
        description=(
            "the OHIF viewer of a PACS radseg sends to (e.g. https://ohif.example.org): study "
            "and prediction pages then link to the study there (docs/exports.md)"
        ),
    )

    @field_validator("ohif_url")
    @classmethod
    def _viewer_root(cls, url: str | None) -> str | None:
        # a page renders this link for every viewer: no credentials, no script, nothing after
        # the root that the study's query would be glued onto
        if url is None or not url.strip():
            return None
        if has_userinfo(url):
            raise ValueError("must not hold credentials (user:password@)")
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host (got {url!r})")
        if parts.query or parts.fragment:
            raise ValueError("must be the viewer's root, without ?query or #fragment")
        return url.strip().rstrip("/")

    def ohif_viewer_url(self, study_instance_uid: str) -> str | None:
        """The study in the OHIF viewer at ``ohif_url`` (its ``/viewer?StudyInstanceUIDs=``
        scheme), or ``None`` when no OHIF is configured."""
        if self.ohif_url is None:
            return None
        return f"{self.ohif_url}/viewer?{urlencode({'StudyInstanceUIDs': study_instance_uid})}"

    @field_validator("gang_ports")
    @classmethod
    def _port_range(cls, ports: str) -> str:
        first, last = (int(p) for p in ports.split("-"))
        if not 0 < first <= last < 65536:
            raise ValueError(f"must be FIRST-LAST with 0 < FIRST <= LAST < 65536 (got {ports!r})")
        return ports

    @property
    def gang_port_range(self) -> range:
        """The ports of :attr:`gang_ports`, both ends included."""
        first, last = (int(p) for p in self.gang_ports.split("-"))
        return range(first, last + 1)

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

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # a repr ends up in tracebacks and debug logs: no database password, no plugin secret
        for name, value in super().__repr_args__():
            if name == "database_url" and isinstance(value, str) and has_userinfo(value):
                value = re.sub(r"(://[^:/@]*:)[^@]*@", rf"\g<1>{MASK}@", value, count=1)
            elif name == "plugins":
                value = mask_secrets(value)
            yield name, value

    def cookies_secure(self, bound_to: str | None = None) -> bool:
        """Whether the web app marks its session cookies ``Secure``.

        ``secure_cookies`` decides when set. Unset, cookies are Secure unless the app is served
        by ``radseg serve`` on a loopback address (``bound_to``: its ``--host``), which is local
        development over plain http; behind a WSGI server (``bound_to`` is ``None``) the bind
        address is unknown, so they are Secure.
        """
        if self.secure_cookies is not None:
            return self.secure_cookies
        return not (bound_to is not None and is_loopback(bound_to))

    def plugin_settings(self, name: str) -> dict[str, Any]:
        return dict(self.plugins.get(name, {}))

    def path(self, *parts: str) -> Path:
        """A path under ``home``; each part must be one plain name and the result stays inside
        ``home`` (:func:`radseg.storage.inside`), or :class:`radseg.storage.UnsafePathError`."""
        return inside(self.home, *parts)

    def secret(self, field: Literal["secret_key", "deid_key"]) -> str:
        """The configured secret, or one generated once and kept in ``$HOME/.<field>``.

        The key file is created with mode 0600; losing the de-identification key means the same
        patient gets a new pseudonym on the next upload, so back it up with the database.
        """
        value: SecretStr | None = getattr(self, field)
        if value is not None and value.get_secret_value():
            return value.get_secret_value()
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
        elif field.annotation in (bool, bool | None):
            if raw.strip():  # empty (``RADSEG_SECURE_COOKIES=`` in an env file) means unset
                out[name] = _env_bool(name, raw)
        else:
            out[name] = raw
    return out


def _env_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    # a typo must not quietly turn a safety switch off
    raise RadsegError(
        f"{ENV_PREFIX}{name.upper()}={raw!r} is not a yes/no value; use true or false"
    )


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
    # raised outside the handler, so neither chained nor as context: pydantic's error quotes
    # each input, e.g. a whole [pacs.X] table with its password
    raise RadsegError(f"invalid settings ({problems}); fix {candidate} or RADSEG_*")
