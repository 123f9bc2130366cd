"""Logging in and out, and the role checks every other view is wrapped in.

Every view function carries its access rule: :func:`roles_required` (a logged-in user with one of
the roles) or :func:`public` (login page, static files). A test walks the URL map and fails for a
view with neither, so a new route cannot forget its check.

Scripts and the CLI authenticate with ``Authorization: Bearer <API token>`` instead of a
session cookie. Such a request is judged by its token alone (a cookie sent with it is ignored)
and needs no CSRF token: a cross-site page cannot set that header. Every other state-changing
request needs the CSRF token (a form field, or the ``X-CSRFToken`` header for page scripts).

Failed logins slow down further attempts of the same account from the same address
(:class:`radseg.users.ThrottlePolicy`); such an attempt answers 429 with ``Retry-After``, without
its password being checked. An address that has not failed is never slowed down, so nobody can
lock another person out; an admin can clear an account's failures.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from flask import (
    Flask,
    current_app,
    g,
    jsonify,
    redirect,
    request,
    url_for,
)
from flask_login import (
    AnonymousUserMixin,
    LoginManager,
    UserMixin,
    current_user,
)
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import Forbidden

from radseg import users
from radseg.db.base import utcnow
from radseg.db.models import Role, User
from radseg.roles import Actor
from radseg.web import limits
from radseg.web.cache import TTLCache
from radseg.web.context import current_platform, db, wants_json
from radseg.workflows import accounts
from radseg.workflows import users as workflows_users

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, eq=False)
class WebUser(UserMixin):
    """The logged-in user as the views see it: a detached copy, never an ORM row.

    The id kept in the session cookie includes the user's session epoch
    (:func:`radseg.users.session_token`), so a new password or a deactivation logs that user out
    everywhere, and reactivating the account does not bring old sessions back.
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


def current_actor() -> Actor:
    """The logged-in user as the use cases (:mod:`radseg.workflows`) see them."""
    user = web_user()
    return Actor(user.username, user.role)


def _load_user(user_id: str) -> WebUser | None:
    """The user of a session cookie. For the viewer's image requests (dozens per second while a
    reviewer scrolls) a valid one is remembered for the token cache's TTL, as API tokens are;
    pages always read the user's row, so a password change or deactivation ends a session at
    once everywhere but in the images of the next two seconds. A session of an older epoch
    is refused, even when the user is active again."""
    raw_id, _, token = user_id.partition(":")
    if not raw_id.isdigit():
        return None
    cache = cast(TokenCache, current_app.extensions[TOKENS])
    key = f"session:{user_id}"
    images_only = request.blueprint == "slices"
    web = cache.get(key) if images_only else None
    if web is not None:
        return web
    session = db()
    user = session.get(User, int(raw_id))
    web = WebUser.from_user(user) if user is not None and user.active else None
    # the views get a detached copy: end this read, so that what a view reads after a use case
    # has committed is read anew (on SQLite a transaction reads one snapshot)
    session.rollback()
    if web is None or web.token != token:
        return None
    if images_only:
        cache.put(key, web)
    return web


def _unauthorized() -> Any:
    if wants_json():
        return jsonify(error="Unauthorized", detail="log in first"), 401
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def bearer_token() -> str | None:
    """The token of an ``Authorization: Bearer …`` header, if the request has one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


TOKENS = "radseg.tokens"
#: the owners of recently used API tokens (by digest) and of the viewer's session cookies, for
#: ``RADSEG_TOKEN_CACHE_SECONDS``: a script polling the API, or a viewer's image requests, would
#: otherwise read the token's row on every request. Only valid ones are kept (an unknown token
#: always asks the database). Revoking a token or changing a user through the web app clears
#: this process's cache at once (:func:`forget_tokens`); other processes notice within the TTL.
TokenCache = TTLCache[str, WebUser]


def forget_tokens() -> None:
    """Call after revoking a token or changing a user: this process stops trusting its cache."""
    cast(TokenCache, current_app.extensions[TOKENS]).clear()


def _authenticate_bearer() -> None:
    token = bearer_token()
    if token is None:
        g.radseg_bearer = False
        return
    g.radseg_bearer = True
    cache = cast(TokenCache, current_app.extensions[TOKENS])
    digest = users.token_digest(token)
    web = cache.get(digest)
    if web is None:
        user = accounts.token_owner(current_platform(), token)
        web = WebUser.from_user(user) if user is not None else None
        if web is not None:
            cache.put(digest, web)
    manager: LoginManager = current_app.login_manager  # type: ignore[attr-defined]
    # the token decides, never a cookie that came along with it
    manager._update_request_context_with_user(web if web is not None else AnonymousUserMixin())


def _gate_bodies() -> Any:
    """Before anything reads a body (the CSRF check reads the form, spooling its files): refuse
    a caller the view would refuse, then limit the body (:mod:`radseg.web.limits`)."""
    if request.method not in limits.BODY_METHODS or request.endpoint is None:
        return None
    view = current_app.view_functions.get(request.endpoint)
    if not getattr(view, "public", False):
        if not current_user.is_authenticated:
            return _unauthorized()
        roles = getattr(view, "required_roles", None)
        if roles is not None and web_user().role not in roles:
            raise _forbidden(roles)
    limits.check_body(web_user().id if current_user.is_authenticated else None)
    return None


def _protect_forms(csrf: CSRFProtect) -> Any:
    def check() -> None:
        if request.method in {"GET", "HEAD", "OPTIONS", "TRACE"} or g.get("radseg_bearer"):
            return
        if not current_app.config.get("WTF_CSRF_ENABLED", True) or request.endpoint is None:
            return
        csrf.protect()

    return check


def init_app(app: Flask) -> None:
    manager = LoginManager(app)
    manager.user_loader(_load_user)
    manager.unauthorized_handler(_unauthorized)
    # CSRF is checked here, after the bearer check, instead of by CSRFProtect's own hook
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    csrf = CSRFProtect(app)
    app.extensions[TOKENS] = TokenCache(app.config["RADSEG_TOKEN_CACHE_SECONDS"])
    limits.init_app(app)
    app.before_request(_authenticate_bearer)
    app.before_request(_gate_bodies)  # before the CSRF check reads a byte of the body
    app.before_request(_protect_forms(csrf))


def _forbidden(roles: Iterable[Role]) -> Forbidden:
    names = [r.value for r in Role if r in set(roles)]
    return Forbidden(f"this page is for: {', '.join(names)}")


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
                raise _forbidden(roles)
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


def clock() -> datetime:
    """Now, as the login throttle and the jobs' time left see it (tests set ``RADSEG_CLOCK``
    in the Flask config)."""
    now: Callable[[], datetime] = current_app.config.get("RADSEG_CLOCK", utcnow)
    return now()


def login_key(username: str) -> str:
    """The failed-login records' key for ``username`` (:func:`radseg.users.account_key`)."""
    return workflows_users.login_key(current_platform(), username)
