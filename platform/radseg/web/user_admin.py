"""Admins manage accounts: create users, change roles, deactivate, reset passwords, and clear
an account's failed logins (the login throttle, :class:`radseg.users.ThrottlePolicy`)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Length

from radseg import audit, users
from radseg.db.models import Role, User
from radseg.errors import InputError
from radseg.web.auth import clock, forget_tokens, login_key, roles_required, web_user
from radseg.web.context import db

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
@roles_required(Role.ADMIN)
def list_users() -> Any:
    return _page(NewUserForm(formdata=None))


@bp.post("")
@roles_required(Role.ADMIN)
def create_user() -> Any:
    form = NewUserForm()
    if not form.validate_on_submit():
        return _page(form), 400
    session = db()
    try:
        user = users.create_user(
            session, form.username.data or "", form.password.data or "", form.role.data
        )
    except InputError as exc:
        form.username.errors = [str(exc)]
        return _page(form), 400
    audit.record(
        session, web_user().username, "user.create", f"user:{user.id}", role=user.role.value
    )
    session.commit()
    flash(f"Created {user.role.value} {user.username!r}.", "info")
    return redirect(url_for("user_admin.list_users"), 303)


def _user(user_id: int) -> User:
    user = db().get(User, user_id)
    if user is None:
        abort(404, f"there is no user {user_id}")
    return user


@bp.post("/<int:user_id>")
@roles_required(Role.ADMIN)
def update_user(user_id: int) -> Any:
    session = db()
    user = _user(user_id)
    form = EditUserForm()
    if not form.validate_on_submit():
        abort(400, "; ".join(f"{k}: {', '.join(v)}" for k, v in form.errors.items()))
    if user.id == web_user().id and (form.role.data != Role.ADMIN.value or not form.active.data):
        abort(400, "you cannot demote or deactivate yourself; ask another admin")
    changes: dict[str, Any] = {}
    if form.role.data != user.role.value:
        changes["role"] = form.role.data
        users.set_role(session, user, form.role.data)
    if bool(form.active.data) != user.active:
        changes["active"] = bool(form.active.data)
        revoked = users.set_active(session, user, bool(form.active.data))
        if revoked:
            changes["tokens_revoked"] = revoked
    if form.password.data:
        try:
            users.set_password(session, user, form.password.data)
        except InputError as exc:
            abort(400, str(exc))
        changes["password"] = "reset"
        users.clear_login_failures(session, login_key(user.username))
    if changes:
        audit.record(session, web_user().username, "user.update", f"user:{user.id}", **changes)
        session.commit()
        forget_tokens()
        flash(f"Updated {user.username!r}: {', '.join(changes)}.", "info")
    return redirect(url_for("user_admin.list_users"), 303)


@bp.post("/<int:user_id>/login-failures/clear")
@roles_required(Role.ADMIN)
def clear_login_failures(user_id: int) -> Any:
    """Forget the user's failed logins from every address: the throttle lets them in at once."""
    session = db()
    user = _user(user_id)
    cleared = users.clear_login_failures(session, login_key(user.username))
    actor = web_user().username
    audit.record(session, actor, "user.login_failures.clear", f"user:{user.id}", cleared=cleared)
    session.commit()
    plural = "s" if cleared != 1 else ""
    flash(f"Cleared {cleared} failed login{plural} of {user.username!r}.", "info")
    return redirect(url_for("user_admin.list_users"), 303)
