"""Logging in and out: the ``auth`` blueprint (``/login``, ``/logout``).

The password check, the login throttle and the audit events are the use cases
:func:`radseg.workflows.accounts.log_in` and ``log_out``; this module shows the form, says why a
login was refused, and keeps the session (Flask-Login).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from radseg import users
from radseg.web.auth import WebUser, clock, current_actor, login_required, public
from radseg.web.context import current_platform
from radseg.workflows import accounts

bp = Blueprint("auth", __name__)


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


def _wait_words(wait: timedelta) -> str:
    seconds = max(1, math.ceil(wait.total_seconds()))
    if seconds < 120:
        return f"{seconds} second{'s' if seconds > 1 else ''}"
    return f"{math.ceil(seconds / 60)} minutes"


@bp.route("/login", methods=["GET", "POST"])
@public
def login() -> Any:
    if current_user.is_authenticated:
        return redirect(_safe_next(request.args.get("next")))
    form = LoginForm()
    if form.validate_on_submit():
        try:
            user = accounts.log_in(
                current_platform(),
                username=form.username.data or "",
                password=form.password.data or "",
                remote=request.remote_addr or "",
                now=clock(),
            )
        except users.LoginThrottled as exc:
            flash(
                f"Too many failed logins for this account from your address. Try again in "
                f"{_wait_words(exc.wait)}, or ask an admin to clear them.",
                "error",
            )
            page = render_template("login.html", form=form)
            return page, 429, {"Retry-After": str(max(1, math.ceil(exc.wait.total_seconds())))}
        except users.LoginRefused:
            flash("Wrong username or password.", "error")
            return render_template("login.html", form=form), 401
        login_user(WebUser.from_user(user))
        return redirect(_safe_next(request.args.get("next")))
    return render_template("login.html", form=form), 400 if form.is_submitted() else 200


@bp.post("/logout")
@login_required
def logout() -> Any:
    accounts.log_out(current_platform(), current_actor())
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))
