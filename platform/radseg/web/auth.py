"""Logging in and out, and the role checks every other view is wrapped in.

Every view function carries its access rule: :func:`roles_required` (a logged-in user with one of
the roles) or :func:`public` (login page, static files). A test walks the URL map and fails for a
view with neither, so a new route cannot forget its check.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import Blueprint, Flask, flash, jsonify, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.exceptions import Forbidden
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from radseg import audit, users
from radseg.db.models import Role, User
from radseg.web.context import db, wants_json

bp = Blueprint("auth", __name__)

F = TypeVar("F", bound=Callable[..., Any])

#: everyone who may look at studies, series and predictions
VIEWERS = (Role.ADMIN, Role.RESEARCHER, Role.CLINICIAN)


@dataclass(frozen=True, eq=False)
class WebUser(UserMixin):
    """The logged-in user as the views see it: a detached copy, never an ORM row.

    The id kept in the session cookie includes a digest of the password hash, so changing a
    password logs that user out everywhere.
    """

    id: int
    username: str
    role: Role
    token: str

    @classmethod
    def from_user(cls, user: User) -> WebUser:
        return cls(user.id, user.username, Role(user.role), users.session_token(user))

    def get_id(self) -> str:
        return f"{self.id}:{self.token}"


def web_user() -> WebUser:
    """The logged-in user (only valid inside a view wrapped by :func:`roles_required`)."""
    return cast(WebUser, current_user._get_current_object())


def _load_user(user_id: str) -> WebUser | None:
    raw_id, _, token = user_id.partition(":")
    if not raw_id.isdigit():
        return None
    user = db().get(User, int(raw_id))
    if user is None or not user.active or users.session_token(user) != token:
        return None
    return WebUser.from_user(user)


def _unauthorized() -> Any:
    if wants_json():
        return jsonify(error="Unauthorized", detail="log in first"), 401
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def init_app(app: Flask) -> None:
    manager = LoginManager(app)
    manager.user_loader(_load_user)
    manager.unauthorized_handler(_unauthorized)


def roles_required(*roles: Role) -> Callable[[F], F]:
    """Let a view run only for a logged-in user with one of ``roles`` (403 otherwise)."""
    if not roles:
        raise ValueError("roles_required() needs at least one role")

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return _unauthorized()
            if web_user().role not in roles:
                raise Forbidden(f"this page is for: {', '.join(r.value for r in roles)}")
            return view(*args, **kwargs)

        wrapper.required_roles = frozenset(roles)  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


def login_required(view: F) -> F:
    """Any logged-in user, whatever the role."""
    return roles_required(*Role)(view)


def public(view: F) -> F:
    """Mark a view as deliberately open to anonymous users."""
    view.public = True  # type: ignore[attr-defined]
    return view


def _safe_next(target: str | None) -> str:
    # only same-site paths: an open redirect after login is a phishing tool
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("studies.list_studies")


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=80)])
    password = PasswordField("Password", validators=[DataRequired()])


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> Any:
    if current_user.is_authenticated:
        return redirect(_safe_next(request.args.get("next")))
    form = LoginForm()
    if form.validate_on_submit():
        session = db()
        user = users.authenticate(session, form.username.data, form.password.data)
        if user is None:
            audit.record(session, form.username.data, "login.failed", remote=request.remote_addr)
            session.commit()
            flash("Wrong username or password.", "error")
            return render_template("login.html", form=form), 401
        audit.record(session, user, "login", f"user:{user.id}", remote=request.remote_addr)
        session.commit()
        login_user(WebUser.from_user(user))
        return redirect(_safe_next(request.args.get("next")))
    return render_template("login.html", form=form), 400 if form.is_submitted() else 200


@bp.post("/logout")
@login_required
def logout() -> Any:
    session = db()
    user = web_user()
    audit.record(session, user.username, "logout", f"user:{user.id}")
    session.commit()
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))
