"""The logged-in user's own account: change the password, create and revoke API tokens.

The use cases are :mod:`radseg.workflows.accounts`; these views turn forms into their inputs,
and their results and errors into pages. A new token is shown once, on the page that created it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import login_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from radseg import users
from radseg.errors import InputError, NotFound
from radseg.web.auth import WebUser, current_actor, forget_tokens, login_required, web_user
from radseg.web.context import current_platform, db
from radseg.workflows import accounts

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


def _page(password_form: PasswordForm, token_form: TokenForm, new_token: str = "") -> str:
    session = db()
    return render_template(
        "account.html",
        password_form=password_form,
        token_form=token_form,
        tokens=users.tokens_of(session, users.get_user(session, web_user().username)),
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
    if not form.validate_on_submit():
        return _page(form, TokenForm(formdata=None)), 400
    try:
        me = accounts.change_password(
            current_platform(),
            current_actor(),
            current=form.current.data or "",
            new=form.new.data or "",
        )
    except users.WrongPasswordError as exc:
        form.current.errors = [str(exc)]
        return _page(form, TokenForm(formdata=None)), 400
    except InputError as exc:  # the password policy
        form.new.errors = [str(exc)]
        return _page(form, TokenForm(formdata=None)), 400
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
    _, token = accounts.create_token(current_platform(), current_actor(), name=form.name.data or "")
    return _page(PasswordForm(formdata=None), TokenForm(formdata=None), new_token=token), 201


@bp.post("/account/tokens/<int:token_id>/revoke")
@login_required
def revoke_token(token_id: int) -> Any:
    try:
        row = accounts.revoke_token(current_platform(), current_actor(), token_id)
    except NotFound as exc:  # a message on the page it came from, as for every token action
        flash(str(exc), "error")
        return redirect(url_for("account.account"), 303)
    forget_tokens()
    flash(f"Token {row.name!r} is revoked.", "info")
    return redirect(request.referrer or url_for("account.account"), 303)
