"""Predicted masks: ``predict`` queues prediction jobs; ``predictions list`` shows what exists."""

from __future__ import annotations

import click
from sqlalchemy import select

from radseg.cli.common import handle_errors, platform_of, wait_for_job
from radseg.db.models import Prediction
from radseg.roles import CLI_ACTOR
from radseg.workflows.prediction import request_predictions

#: above this many jobs, ``predict`` prints one summary line instead of a line per job
LISTED_JOBS = 20


@click.command()
@click.option("--model-version", "model_version_id", type=int, required=True)
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
    ctx: click.Context, model_version_id: int, series_uid: str | None, all_series: bool, wait: bool
) -> None:
    """Queue prediction of a series with a trained model version."""
    platform = platform_of(ctx)
    if not series_uid and not all_series:
        raise click.UsageError("give --series UID or --all-series")
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


COMMANDS = (predict, predictions)
