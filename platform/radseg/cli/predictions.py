"""Predicted masks: ``predict`` queues prediction jobs; ``predictions list`` shows what exists;
``predictions queue`` is the review queue, the most doubtful first."""

from __future__ import annotations

import click
from sqlalchemy import select

from radseg.cli.common import handle_errors, platform_of, wait_for_job
from radseg.cli.listing import echo_count, study_date_text, window_options
from radseg.db.models import Prediction
from radseg.db.paging import Window
from radseg.model_registry import current_version, get_model
from radseg.roles import CLI_ACTOR
from radseg.workflows import review
from radseg.workflows.prediction import request_predictions

#: above this many jobs, ``predict`` prints one summary line instead of a line per job
LISTED_JOBS = 20


@click.command()
@click.option("--model-version", "model_version_id", type=int)
@click.option("--model", "model_name", help="a model's name: predict with its current version")
@click.option("--series", "series_uid", help="SeriesInstanceUID (pseudonymised, as listed)")
@click.option(
    "--all-series",
    is_flag=True,
    help="predict every ingested series (one job each, shared by all workers)",
)
@click.option("--wait", is_flag=True, help="follow the jobs until they finish")
@click.pass_context
@handle_errors
def predict(
    ctx: click.Context,
    model_version_id: int | None,
    model_name: str | None,
    series_uid: str | None,
    all_series: bool,
    wait: bool,
) -> None:
    """Queue prediction of a series with a trained model version (or a model's current one:
    its newest promoted version)."""
    platform = platform_of(ctx)
    if not series_uid and not all_series:
        raise click.UsageError("give --series UID or --all-series")
    if (model_version_id is None) == (model_name is None):
        raise click.UsageError("give --model-version ID or --model NAME")
    if model_name is not None:
        with platform.sessions() as session:
            current = current_version(session, get_model(session, model_name))
            if current is None:
                raise click.ClickException(f"model {model_name!r} has no promoted version")
            model_version_id = current.id
    assert model_version_id is not None
    jobs = request_predictions(
        platform,
        CLI_ACTOR,
        model_version_id=model_version_id,
        series_uids=[series_uid] if series_uid and not all_series else [],
        all_series=all_series,
    )
    if len(jobs) > LISTED_JOBS:
        click.echo(
            f"queued {len(jobs)} prediction jobs ({jobs[0].id} to {jobs[-1].id}), one per "
            "series; every worker shares them (`radseg jobs list --state queued`)"
        )
    else:
        for job in jobs:
            click.echo(
                f"queued prediction job {job.id} for series {job.payload['series_instance_uid']}"
            )
    if wait:
        for job in jobs:
            result = wait_for_job(platform, job.id, f"predict job {job.id}")
            dice = (result.get("metrics") or {}).get("mean_dice")
            extra = f", mean Dice {dice:.3f}" if isinstance(dice, float) else ""
            if isinstance(result.get("priority"), float):
                extra += f", review priority {result['priority']:.2f}: {result['priority_reason']}"
            click.echo(f"prediction {result['prediction_id']}{extra}")


@click.group()
def predictions() -> None:
    """Predicted masks."""


@predictions.command("list")
@click.pass_context
@handle_errors
def predictions_list(ctx: click.Context) -> None:
    """List predictions with their model version and Dice when labels exist."""
    platform = platform_of(ctx)
    with platform.sessions() as session:
        for p in session.scalars(select(Prediction).order_by(Prediction.id)):
            dice = p.metrics.get("mean_dice")
            score = f"  mean Dice {dice:.3f}" if isinstance(dice, float) else ""
            click.echo(
                f"prediction {p.id}  model version {p.model_version_id}  "
                f"series {p.series.series_instance_uid}{score}"
            )


@predictions.command("queue")
@click.option(
    "--state",
    type=click.Choice(review.QUEUE_FILTERS),
    default="awaiting",
    show_default=True,
    help="awaiting a decision, one decision, or all",
)
@click.option("--model", help="a model's name")
@click.option(
    "--study",
    help="the start of a patient pseudonym, part of a description, or a StudyInstanceUID",
)
@click.option(
    "--sort",
    type=click.Choice(review.QUEUE_SORTS),
    default="priority",
    show_default=True,
    help="review priority (highest first), oldest or newest first",
)
@window_options
@click.pass_context
@handle_errors
def predictions_queue(
    ctx: click.Context,
    state: str,
    model: str | None,
    study: str | None,
    sort: str,
    window: Window,
) -> None:
    """The review queue as its page shows it: each prediction with its review priority, the
    patient pseudonym, study date (shifted), model, series and the reason for the priority."""
    filters = review.QueueFilters(
        state=state, model=(model or "").strip(), study=(study or "").strip(), sort=sort
    )
    platform = platform_of(ctx)
    with platform.sessions() as session:
        listed = review.review_queue_page(session, filters, window)
        for p in listed.rows:
            score = f"{p.priority:.2f}" if p.priority is not None else "-"
            reason = f"  {p.priority_reason}" if p.priority_reason else ""
            version = p.model_version
            click.echo(
                f"prediction {p.id}  priority {score}  patient {p.series.study.patient_key[:12]}"
                f"  {study_date_text(p.series.study.study_date)}  {p.series.modality}"
                f"  {version.model.name} v{version.id}  series {p.series.series_instance_uid}"
                f"{reason}"
            )
    echo_count(listed, "predictions")


COMMANDS = (predict, predictions)
