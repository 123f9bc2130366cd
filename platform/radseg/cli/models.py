"""Model work: ``train``, ``evaluate`` and ``retrain`` queue jobs; ``models list|show|compare``
read them."""

from __future__ import annotations

import json
from typing import Any

import click

from radseg.cli.common import handle_errors, parse_assignment, platform_of, wait_for_job
from radseg.cli.listing import echo_count, window_options
from radseg.db.models import ModelVersionStatus
from radseg.db.paging import Window
from radseg.jobs.store import MAX_MACHINES
from radseg.model_registry import VERSION_SORTS
from radseg.roles import CLI_ACTOR
from radseg.workflows.evaluation import EVALUATION_SPLITS, request_evaluation
from radseg.workflows.retrain import request_retrain
from radseg.workflows.training import MAX_GPUS_PER_MACHINE, request_training


@click.command()
@click.option("--dataset", required=True, help="dataset name (its latest version is used)")
@click.option("--model", "backend", default="detectron2", show_default=True, help="model backend")
@click.option("--architecture", help="e.g. semantic_fpn, deeplabv3plus, mask_rcnn")
@click.option("--iterations", type=click.IntRange(min=1), help="training iterations")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="backend config override, e.g. --set MODEL.RESNETS.DEPTH=50 (repeatable)",
)
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="backend option, e.g. --option eval_period=100 --option patience=5 (repeatable)",
)
@click.option(
    "--machines",
    type=click.IntRange(min=1, max=MAX_MACHINES),
    default=1,
    show_default=True,
    help="machines that train together (torch.distributed): that many workers, each on a "
    "machine of its own, run the job at once (docs/operations.md)",
)
@click.option(
    "--gpus-per-machine",
    type=click.IntRange(min=1, max=MAX_GPUS_PER_MACHINE),
    help="GPUs each machine trains on (on a CPU: processes); default 1",
)
@click.option("--wait", is_flag=True, help="follow the job until it finishes")
@click.pass_context
@handle_errors
def train(
    ctx: click.Context,
    dataset: str,
    backend: str,
    architecture: str | None,
    iterations: int | None,
    overrides: tuple[str, ...],
    options: tuple[str, ...],
    machines: int,
    gpus_per_machine: int | None,
    wait: bool,
) -> None:
    """Queue a training job on the latest version of DATASET."""
    platform = platform_of(ctx)
    job = request_training(
        platform,
        CLI_ACTOR,
        dataset=dataset,
        backend=backend,
        architecture=architecture,
        iterations=iterations,
        options=dict(parse_assignment(o, "--option") for o in options),
        overrides=dict(parse_assignment(o) for o in overrides),
        machines=machines,
        gpus_per_machine=gpus_per_machine,
    )
    where = f" on {machines} machines" if machines > 1 else ""
    click.echo(f"queued training job {job.id}{where}")
    if wait:
        result = wait_for_job(platform, job.id, f"train job {job.id}")
        click.echo(f"model version {result['model_version_id']}: {val_summary(result['metrics'])}")


def val_summary(metrics: dict[str, Any]) -> str:
    """``val mean Dice 0.900 (liver 0.950, lung 0.850)``: a trained version's validation score."""
    val = metrics.get("val") or {}
    if not isinstance(val.get("mean_dice"), float):
        return "trained (no validation images to score it on)"
    per_class = ", ".join(
        f"{name} {scores['dice']:.3f}"
        for name, scores in (val.get("per_class") or {}).items()
        if isinstance(scores.get("dice"), float)
    )
    return f"val mean Dice {val['mean_dice']:.3f} ({per_class})"


@click.command()
@click.option("--model-version", "model_version_id", type=int, required=True)
@click.option("--split", default="test", show_default=True, type=click.Choice(EVALUATION_SPLITS))
@click.option("--dataset-version", "dataset_version_id", type=int, help="default: the model's")
@click.option("--wait", is_flag=True, help="follow the job until it finishes")
@click.pass_context
@handle_errors
def evaluate(
    ctx: click.Context,
    model_version_id: int,
    split: str,
    dataset_version_id: int | None,
    wait: bool,
) -> None:
    """Queue an evaluation of a model version on a split; writes a report (table + plots)."""
    platform = platform_of(ctx)
    job = request_evaluation(
        platform,
        CLI_ACTOR,
        model_version_id=model_version_id,
        split=split,
        dataset_version_id=dataset_version_id,
    )
    click.echo(f"queued evaluation job {job.id}")
    if wait:
        result = wait_for_job(platform, job.id, f"evaluate job {job.id}")
        dice = result.get("mean_dice")
        click.echo(
            f"evaluation {result['evaluation_id']}: mean Dice {dice:.4f}"
            if isinstance(dice, float)
            else f"evaluation {result['evaluation_id']}"
        )
        click.echo(f"report: {platform.resolve(result['report_path'])}")


@click.command()
@click.option("--model", "model", required=True, help="model name (see `radseg models list`)")
@click.option(
    "--iterations",
    type=click.IntRange(min=1),
    help="fine-tuning iterations (default: the setting retrain_iterations)",
)
@click.option("--wait", is_flag=True, help="follow the job until it finishes")
@click.pass_context
@handle_errors
def retrain(ctx: click.Context, model: str, iterations: int | None, wait: bool) -> None:
    """Queue a retrain of MODEL: fine-tune its current version on a new dataset version in which
    reviewed label versions win, and promote the result only if no class's test Dice falls more
    than the margin (setting retrain_margin) below its parent's."""
    platform = platform_of(ctx)
    job = request_retrain(platform, CLI_ACTOR, model=model, iterations=iterations)
    click.echo(f"queued retrain job {job.id}")
    if wait:
        result = wait_for_job(platform, job.id, f"retrain job {job.id}")
        click.echo(
            f"model version {result['model_version_id']} ({result['status']}, parent "
            f"{result['parent_id']}): {result['reason']}"
        )


@click.group()
def models() -> None:
    """Trained model versions: list, model cards, comparisons."""


@models.command("list")
@click.option("--search", "-q", help="part of a model's name or backend (any case)")
@click.option("--status", type=click.Choice([s.value for s in ModelVersionStatus]))
@click.option(
    "--sort",
    type=click.Choice(VERSION_SORTS),
    default="newest",
    show_default=True,
    help="newest or oldest first, or by model name",
)
@window_options
@click.pass_context
@handle_errors
def models_list(
    ctx: click.Context, search: str | None, status: str | None, sort: str, window: Window
) -> None:
    """List the trained model versions as the models page does: model, architecture, dataset,
    validation Dice, status, who trained it and when."""
    from radseg.model_registry import VersionFilters, trained_by, version_page

    filters = VersionFilters(
        q=(search or "").strip(),
        status=ModelVersionStatus(status) if status else None,
        sort=sort,
    )
    platform = platform_of(ctx)
    with platform.sessions() as session:
        listed = version_page(session, filters, window)
    if not listed.rows and window.offset == 0:
        if filters == VersionFilters(sort=sort):
            click.echo("no model versions yet; train one with `radseg train --dataset NAME`")
        else:
            click.echo("no model versions match")
    for r in listed.rows:
        dice = r["val_mean_dice"]
        score = f"val Dice {dice:.3f}" if isinstance(dice, float) else "no val score"
        click.echo(
            f"{r['id']:>4}  {r['model']}  {r['architecture']}  "
            f"{r['dataset']} v{r['dataset_version']}  {score}  {r['status']}  "
            f"{trained_by(r['created_by'])} {r['created_at']}"
        )
    echo_count(listed, "model versions")


@models.command("show")
@click.argument("model_version_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="the model card as JSON")
@click.pass_context
@handle_errors
def models_show(ctx: click.Context, model_version_id: int, as_json: bool) -> None:
    """The model card of a model version: lineage, classes, input recipe, metrics."""
    from radseg.model_registry import get_version, model_card

    platform = platform_of(ctx)
    with platform.sessions() as session:
        card = model_card(session, get_version(session, model_version_id))
    if as_json:
        click.echo(json.dumps(card, indent=2))
        return
    lineage = card["lineage"]
    click.echo(f"model version {model_version_id}: {lineage['model']} ({card['architecture']})")
    for key in ("dataset", "dataset_version", "dataset_content_hash", "config_hash",
                "code_version", "trained_by", "trained_at", "iterations", "status",
                "parent_id"):  # fmt: skip
        click.echo(f"  {key}: {lineage[key]}")
    click.echo(f"  modality: {', '.join(card['intended_modality']) or '-'}")
    click.echo("  classes: " + ", ".join(f"{c['id']} {c['name']}" for c in card["classes"]))
    val = card["validation"]
    if isinstance(val.get("mean_dice"), float):
        click.echo(f"  validation mean Dice: {val['mean_dice']:.4f}")
    inference = card.get("inference")
    if inference:
        engine = inference.get("engine")
        shown = engine if engine in ("bf16", "int8") else "float32"
        click.echo(f"  CPU engine: {shown} ({inference.get('reason', 'not measured yet')})")
        for name, facts in (inference.get("engines") or {}).items():
            words = f" ({facts['recipe_words']})" if facts.get("recipe_words") else ""
            click.echo(f"    {name}{words}: {facts.get('reason', 'not measured yet')}")
    for e in card["evaluations"]:
        dice = e["mean_dice"]
        click.echo(
            f"  evaluation {e['id']} ({e['split']}, dataset version {e['dataset_version_id']}): "
            + (f"mean Dice {dice:.4f}" if isinstance(dice, float) else "no score")
        )


@models.command("compare")
@click.argument("a", type=int)
@click.argument("b", type=int)
@click.option("--split", default="test", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def models_compare(ctx: click.Context, a: int, b: int, split: str, as_json: bool) -> None:
    """Compare model versions A and B on their evaluations of the same split."""
    from radseg.model_registry import compare

    platform = platform_of(ctx)
    with platform.sessions() as session:
        result = compare(session, a, b, split=split)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(
        f"{split} split of dataset version {result['dataset_version_id']}, "
        f"{len(result['series'])} series"
    )
    click.echo(f"{'class':<20} {'metric':<13} {'A=' + str(a):>10} {'B=' + str(b):>10} {'B-A':>9}")
    for row in result["rows"]:
        cells = [
            f"{v:10.4f}" if isinstance(v, float) else f"{'-':>10}" for v in (row["a"], row["b"])
        ]
        diff = f"{row['diff']:+9.4f}" if isinstance(row["diff"], float) else f"{'-':>9}"
        mark = {"a": "  A better", "b": "  B better"}.get(row["better"] or "", "")
        click.echo(f"{row['class']:<20} {row['metric']:<13} {cells[0]} {cells[1]} {diff}{mark}")


COMMANDS = (train, evaluate, retrain, models)
