"""The logged-in user's own account: change the password, create and revoke API tokens.

A new token is shown once, on the page that created it; only its digest is stored.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import login_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from radseg import audit, users
from radseg.db.models import User
from radseg.errors import InputError
from radseg.web.auth import WebUser, forget_tokens, login_required, web_user
from radseg.web.context import db

bp = Blueprint("account", __name__)


class PasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired()])
    new = PasswordField(
        "New password", validators=[DataRequired(), Length(min=users.MIN_PASSWORD_LENGTH)]
    )
    repeat = PasswordField(
        "Repeat the new password", validators=[EqualTo("new", message="the passwords differ")]
    )


class TokenForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=80)])


def _me() -> User:
    user = db().get(User, web_user().id)
    assert user is not None  # the login check loaded it a moment ago
    return user


def _page(password_form: PasswordForm, token_form: TokenForm, new_token: str = "") -> str:
    return render_template(
        "account.html",
        password_form=password_form,
        token_form=token_form,
        tokens=users.tokens_of(db(), _me()),
        new_token=new_token,
    )


@bp.get("/account")
@login_required
def account() -> Any:
    return _page(PasswordForm(formdata=None), TokenForm(formdata=None))


@bp.post("/account/password")
@login_required
def change_password() -> Any:
    form = PasswordForm()
    session = db()
    me = _me()
    if not form.validate_on_submit():
        return _page(form, TokenForm(formdata=None)), 400
    if users.authenticate(session, me.username, form.current.data or "") is None:
        form.current.errors = ["that is not your current password"]
        return _page(form, TokenForm(formdata=None)), 400
    try:
        users.set_password(session, me, form.new.data or "")
    except InputError as exc:
        form.new.errors = [str(exc)]
        return _page(form, TokenForm(formdata=None)), 400
    audit.record(session, me, "user.password", f"user:{me.id}")
    session.commit()
    forget_tokens()  # this process stops trusting the old session at once
    login_user(WebUser.from_user(me))  # the old session token no longer matches
    flash("Your password is changed; other sessions are logged out.", "info")
    return redirect(url_for("account.account"))


@bp.post("/account/tokens")
@login_required
def create_token() -> Any:
    form = TokenForm()
    if not form.validate_on_submit():
        return _page(PasswordForm(formdata=None), form), 400
    session = db()
    me = _me()
    row, token = users.create_token(session, me, form.name.data or "")
    audit.record(session, me, "token.create", f"token:{row.id}", name=row.name)
    session.commit()
    return _page(PasswordForm(formdata=None), TokenForm(formdata=None), new_token=token), 201


@bp.post("/account/tokens/<int:token_id>/revoke")
@login_required
def revoke_token(token_id: int) -> Any:
    session = db()
    me = _me()
    try:
        row = users.revoke_token(session, me, token_id)
    except InputError as exc:
        flash(str(exc), "error")
        return redirect(url_for("account.account")), 303
    audit.record(session, me, "token.revoke", f"token:{row.id}", owner=row.user.username)
    session.commit()
    forget_tokens()
    flash(f"Token {row.name!r} is revoked.", "info")
    return redirect(request.referrer or url_for("account.account"), 303)
