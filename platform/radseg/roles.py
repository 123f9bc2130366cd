"""Who may do what: the acting user, the role sets, and which jobs each role sees.

One module for every rule about roles, so the web pages, the JSON API, the CLI and the use cases
(:mod:`radseg.workflows`) ask the same questions and get the same answers.

- admins do everything;
- researchers upload, build datasets, train, predict, evaluate, and start, cancel and retry jobs;
- clinicians look at studies and predictions, review and correct them, and see the model work
  whose output they review (train, predict, evaluate jobs) without its payload or log.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_

from radseg.db.models import Job, Role
from radseg.errors import PermissionDenied

#: everyone who may look at studies, series and predictions
VIEWERS = (Role.ADMIN, Role.RESEARCHER, Role.CLINICIAN)
#: who may start, cancel and retry jobs (upload, build, train, predict, evaluate)
OPERATORS = (Role.ADMIN, Role.RESEARCHER)
#: who may record a review decision or correct a prediction
REVIEWERS = (Role.CLINICIAN, Role.ADMIN)
#: who manages users, plugins and reads the audit trail
ADMINS = (Role.ADMIN,)
#: the kinds of other people's jobs a clinician sees: the model work whose output they review
CLINICIAN_KINDS = ("train", "predict", "evaluate", "retrain")


@dataclass(frozen=True)
class Actor:
    """The person (or program) a use case acts for: audited by ``username``, allowed by ``role``."""

    username: str
    role: Role

    def may(self, roles: tuple[Role, ...]) -> bool:
        return self.role in roles


#: the command line: whoever can run it on the server already holds the database and the files
CLI_ACTOR = Actor("cli", Role.ADMIN)


def may_see_job(job: Job, actor: Actor) -> bool:
    return actor.role != Role.CLINICIAN or (
        job.created_by == actor.username or job.kind in CLINICIAN_KINDS
    )


def shows_job_details(job: Job, actor: Actor) -> bool:
    """Whether ``actor`` sees the job's payload, result and log (and so may retry it)."""
    return actor.role == Role.ADMIN or (
        actor.role == Role.RESEARCHER and job.created_by == actor.username
    )


def visible_jobs_condition(actor: Actor) -> ColumnElement[bool] | None:
    """The SQL condition for the jobs ``actor`` may see (``None``: all of them)."""
    if actor.role == Role.CLINICIAN:
        return or_(Job.created_by == actor.username, Job.kind.in_(CLINICIAN_KINDS))
    return None


def role_names(roles: tuple[Role, ...]) -> str:
    """``"admin or researcher"``: for messages that say who may do something."""
    names = [r.value for r in roles]
    return " or ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} or {names[-1]}"


def require_role(actor: Actor, roles: tuple[Role, ...], what: str) -> None:
    """:class:`PermissionDenied` unless ``actor`` has one of ``roles``; ``what`` is the action,
    as in "only a clinician or admin can {what}"."""
    if not actor.may(roles):
        names = role_names(roles)
        article = "an" if names[0] in "aeiou" else "a"
        raise PermissionDenied(f"only {article} {names} can {what}")
