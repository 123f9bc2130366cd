"""Predicted masks: ``predict`` queues prediction jobs; ``predictions list`` shows what exists."""

from __future__ import annotations

import click
from sqlalchemy import select

from radseg.cli.common import handle_errors, platform_of, submit_job, wait_for_job
from radseg.db.models import Prediction, Series


@click.command()
@click.option("--model-version", "model_version_id", type=int, required=True)
@click.option("--series", "series_uid", help="SeriesInstanceUID (pseudonymised, as listed)")
@click.option("--all-series", is_flag=True, help="predict every ingested series")
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
    with platform.sessions() as session:
        uids = (
            list(session.scalars(select(Series.series_instance_uid).order_by(Series.id)))
            if all_series
            else [series_uid]
        )
    jobs = []
    for uid in uids:
        job_id = submit_job(
            platform,
            "predict",
            {"model_version_id": model_version_id, "series_instance_uid": uid},
        )
        click.echo(f"queued prediction job {job_id} for series {uid}")
        jobs.append(job_id)
    if wait:
        for job_id in jobs:
            result = wait_for_job(platform, job_id, f"predict job {job_id}")
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
