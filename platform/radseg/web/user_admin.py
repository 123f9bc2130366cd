"""Admins manage accounts: create users, change roles, deactivate, reset passwords, and clear
an account's failed logins (the login throttle, :class:`radseg.users.ThrottlePolicy`).

The use cases are :mod:`radseg.workflows.users`; these views turn forms into their inputs, and
their results and errors into pages.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Length

from radseg import users
from radseg.db.models import Role, User
from radseg.errors import InputError
from radseg.roles import ADMINS
from radseg.web.auth import clock, current_actor, forget_tokens, login_key, roles_required
from radseg.web.context import current_platform, db
from radseg.workflows import users as user_cases
from radseg.workflows.lookup import get_row

bp = Blueprint("user_admin", __name__, url_prefix="/admin/users")

ROLE_CHOICES = [(r.value, r.value) for r in Role]


class NewUserForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=80)])
    role = SelectField("Role", choices=ROLE_CHOICES, default=Role.CLINICIAN.value)
    password = PasswordField(
        "Initial password", validators=[DataRequired(), Length(min=users.MIN_PASSWORD_LENGTH)]
    )


class EditUserForm(FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES)
    active = BooleanField("Active")
    password = PasswordField("New password (leave empty to keep)")


def _page(form: NewUserForm) -> str:
    session = db()
    people = users.list_users(session)
    keys = {login_key(u.username): u.id for u in people}
    failures = users.login_failures(session, keys, now=clock())
    return render_template(
        "users.html",
        users=people,
        form=form,
        tokens={u.id: [t for t in u.tokens if t.revoked_at is None] for u in people},
        failures={keys[key]: summary for key, summary in failures.items()},
    )


@bp.get("")
@roles_required(*ADMINS)
def list_users() -> Any:
    return _page(NewUserForm(formdata=None))


@bp.post("")
@roles_required(*ADMINS)
def create_user() -> Any:
    form = NewUserForm()
    if not form.validate_on_submit():
        return _page(form), 400
    try:
        user = user_cases.create_user(
            current_platform(),
            current_actor(),
            username=form.username.data or "",
            password=form.password.data or "",
            role=form.role.data,
        )
    except InputError as exc:
        form.username.errors = [str(exc)]
        return _page(form), 400
    flash(f"Created {user.role.value} {user.username!r}.", "info")
    return redirect(url_for("user_admin.list_users"), 303)


@bp.post("/<int:user_id>")
@roles_required(*ADMINS)
def update_user(user_id: int) -> Any:
    username = get_row(db(), User, user_id, "user").username
    form = EditUserForm()
    if not form.validate_on_submit():
        abort(400, "; ".join(f"{k}: {', '.join(v)}" for k, v in form.errors.items()))
    changes = user_cases.update_user(
        current_platform(),
        current_actor(),
        user_id,
        role=form.role.data,
        active=bool(form.active.data),
        password=form.password.data or None,
    )
    if changes:
        forget_tokens()  # this process stops trusting the user's cached sessions and tokens
        flash(f"Updated {username!r}: {', '.join(changes)}.", "info")
    return redirect(url_for("user_admin.list_users"), 303)


@bp.post("/<int:user_id>/login-failures/clear")
@roles_required(*ADMINS)
def clear_login_failures(user_id: int) -> Any:
    """Forget the user's failed logins from every address: the throttle lets them in at once."""
    username = get_row(db(), User, user_id, "user").username
    cleared = user_cases.clear_login_failures(
        current_platform(), current_actor(), username=username
    )
    plural = "s" if cleared != 1 else ""
    flash(f"Cleared {cleared} failed login{plural} of {username!r}.", "info")
    return redirect(url_for("user_admin.list_users"), 303)
