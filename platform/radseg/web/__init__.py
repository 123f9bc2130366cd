"""The web app (DESIGN §8): :func:`create_app` wires the platform into Flask, nothing more.

``radseg serve`` runs it; any WSGI server can call ``create_app()`` instead. The app never
migrates the database: run ``radseg db upgrade`` first.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from flask import Flask

from radseg.core import Platform, create_platform
from radseg.web import (
    account,
    admin,
    api,
    audit_log,
    auth,
    context,
    datasets,
    jobs,
    login,
    models,
    predictions,
    readings,
    review,
    slices,
    studies,
    training,
    user_admin,
)

BLUEPRINTS = (
    login.bp,
    account.bp,
    studies.bp,
    slices.bp,
    review.bp,
    predictions.bp,
    jobs.bp,
    models.bp,
    datasets.bp,
    training.bp,
    admin.bp,
    user_admin.bp,
    audit_log.bp,
    readings.bp,
    api.bp,
)


def create_app(
    platform: Platform | None = None,
    test_config: Mapping[str, Any] | None = None,
    *,
    bound_to: str | None = None,
) -> Flask:
    """Build the Flask app for ``platform`` (``create_platform()`` when ``None``).

    :param test_config: Flask config overrides, applied last (e.g. ``WTF_CSRF_ENABLED=False``).
    :param bound_to: the address ``radseg serve`` listens on; ``None`` under a WSGI server.
        With ``secure_cookies`` unset, cookies are Secure unless this is a loopback address
        (:meth:`radseg.settings.Settings.cookies_secure`).
    """
    platform = platform or create_platform()
    secure = platform.settings.cookies_secure(bound_to)
    app = Flask(__name__)
    settings = platform.settings
    app.config.from_mapping(
        SECRET_KEY=platform.settings.secret("secret_key"),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure,
        REMEMBER_COOKIE_SECURE=secure,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        RADSEG_VOLUME_CACHE_BYTES=1 << 30,
        RADSEG_IMAGE_MAX_AGE=600,
        RADSEG_IMAGE_CACHE_BYTES=256 << 20,
        RADSEG_TOKEN_CACHE_SECONDS=2.0,
        # one upload; larger studies go through `radseg ingest` (other bodies: web/limits.py)
        MAX_CONTENT_LENGTH=settings.upload_max_bytes,
        RADSEG_JSON_BODY_LIMIT=settings.json_body_limit,
        RADSEG_UPLOAD_INFLIGHT_PER_USER=settings.upload_inflight_per_user_bytes,
        RADSEG_UPLOAD_INFLIGHT_TOTAL=settings.upload_inflight_total_bytes,
    )
    if test_config:
        app.config.from_mapping(test_config)
    context.init_app(app, platform)
    auth.init_app(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app
