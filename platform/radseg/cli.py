"""The ``radseg`` command line.

Every command builds its own platform through :func:`radseg.core.create_platform`, owns its
database transaction, prints one line ``error: …`` and exits 1 on bad input, and shows a
progress bar on long work.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from radseg.core import Platform, create_platform
from radseg.db.models import Job, JobState, Prediction, Role, Series, Study, User
from radseg.errors import IngestFailed, RadsegError
from radseg.imaging.channels import ChannelRecipe
from radseg.settings import load_settings

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("radseg")


class Progress:
    """A tqdm bar driven by :data:`radseg.contracts.ProgressFn` calls."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.message = ""
        self.bar = tqdm(
            total=1000,
            desc=description,
            leave=True,
            file=sys.stderr,
            # tqdm writes the postfix as ", <message>": after the elapsed time that reads well
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}",
        )

    def __call__(self, fraction: float, message: str) -> None:
        self.bar.n = int(max(0.0, min(fraction, 1.0)) * 1000)
        if message != self.message:
            self.message = message
            self.bar.set_postfix_str(message[:60], refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _platform(ctx: click.Context) -> Platform:
    obj = ctx.ensure_object(dict)
    if "platform" not in obj:
        obj["platform"] = create_platform(load_settings(obj.get("overrides") or {}))
        ctx.call_on_close(obj["platform"].close)
    platform: Platform = obj["platform"]
    return platform


def handle_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RadsegError as exc:
            raise click.ClickException(str(exc)) from exc
        except SQLAlchemyError as exc:
            detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise click.ClickException(
                f"database error ({detail}); is the database set up? run `radseg init` "
                "or `radseg db upgrade`, and check RADSEG_DATABASE_URL"
            ) from exc

    return wrapper  # type: ignore[return-value]


@click.group()
@click.option("--home", type=click.Path(path_type=Path), help="RADSEG_HOME (default ./var)")
@click.option("-v", "--verbose", is_flag=True, help="log at INFO level")
@click.version_option(package_name="radseg")
@click.pass_context
def main(ctx: click.Context, home: Path | None, verbose: bool) -> None:
    """radseg: segment medical images with detectron2 through plugins."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.ensure_object(dict)["overrides"] = {"home": home} if home else {}


# -- set-up -------------------------------------------------------------------------------------


#: length of a generated first-admin password, in bytes of randomness (base64: 20 characters)
ADMIN_PASSWORD_BYTES = 15


@main.command()
@click.option("--admin-user", default="admin", show_default=True)
@click.option(
    "--admin-password",
    envvar="RADSEG_ADMIN_PASSWORD",
    help="password of the first admin (env RADSEG_ADMIN_PASSWORD); without it a random one is "
    "generated and printed once",
)
@click.pass_context
@handle_errors
def init(ctx: click.Context, admin_user: str, admin_password: str | None) -> None:
    """Create RADSEG_HOME, migrate the database and create the first admin."""
    import secrets

    from radseg.db.migrate import upgrade
    from radseg.users import create_user

    platform = _platform(ctx)
    platform.ensure_home()
    upgrade(platform.engine)
    generated = not admin_password
    password = secrets.token_urlsafe(ADMIN_PASSWORD_BYTES) if generated else admin_password
    with platform.sessions.begin() as session:
        exists = session.scalars(select(User).where(User.username == admin_user)).first()
        if exists is None:
            create_user(session, admin_user, str(password), Role.ADMIN)
    # after the commit: a password is only shown for an account that exists. click.echo, never
    # logging: it goes to this terminal and nowhere else.
    if exists is not None:
        click.echo(f"admin user {admin_user!r} already exists (its password is unchanged)")
    elif generated:
        click.echo(
            f"created admin user {admin_user!r} with the password\n\n    {password}\n\n"
            "It is shown only this once and stored only as a hash: log in and change it on "
            "the Account page."
        )
    else:
        click.echo(f"created admin user {admin_user!r}")
    click.echo(f"radseg home: {platform.home.resolve()}")


@main.group()
def db() -> None:
    """Database schema (Alembic)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
@handle_errors
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Migrate the database to REVISION."""
    from radseg.db.migrate import current_revision, upgrade

    platform = _platform(ctx)
    upgrade(platform.engine, revision)
    click.echo(f"database at revision {current_revision(platform.engine)}")


@main.group()
def users() -> None:
    """User accounts."""


@users.command("create")
@click.argument("username")
@click.option(
    "--role", type=click.Choice([r.value for r in Role]), default="researcher", show_default=True
)
@click.password_option(envvar="RADSEG_NEW_PASSWORD", help="password (prompted if not given)")
@click.pass_context
@handle_errors
def users_create(ctx: click.Context, username: str, role: str, password: str) -> None:
    """Create a user with ROLE."""
    from radseg.audit import record
    from radseg.users import create_user

    platform = _platform(ctx)
    with platform.sessions.begin() as session:
        create_user(session, username, password, Role(role))
        record(session, "cli", "user.create", username, role=role)
    click.echo(f"created {role} {username!r}")


@users.command("unlock")
@click.argument("username")
@click.pass_context
@handle_errors
def users_unlock(ctx: click.Context, username: str) -> None:
    """Forget USERNAME's failed logins: the login throttle lets them in again at once."""
    from radseg.audit import record
    from radseg.users import account_key, clear_login_failures, get_user

    platform = _platform(ctx)
    key = account_key(username, platform.settings.secret("secret_key"))
    with platform.sessions.begin() as session:
        user = get_user(session, username)
        cleared = clear_login_failures(session, key)
        record(session, "cli", "user.login_failures.clear", f"user:{user.id}", cleared=cleared)
    click.echo(f"cleared {cleared} failed login{'s' if cleared != 1 else ''} of {username!r}")


@main.command("demo-data")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--patients", default=3, show_default=True, help="number of synthetic patients")
@click.option("--slices", default=40, show_default=True)
@click.option("--size", default=128, show_default=True, help="rows and columns per slice")
@click.option("--seed", default=0, show_default=True)
@handle_errors
def demo_data(directory: Path, patients: int, slices: int, size: int, seed: int) -> None:
    """Write synthetic CT studies (real DICOM files + NIfTI labels) into DIRECTORY.

    Each patient gets DIRECTORY/patient-N/dicom/ and DIRECTORY/patient-N/labels.nii.gz.
    """
    from radseg.imaging.synthetic import write_synthetic_ct

    for i in tqdm(range(patients), desc="writing studies", unit="study", file=sys.stderr):
        study = write_synthetic_ct(
            directory / f"patient-{i + 1}",
            seed=seed + i,
            patient_name=f"Demo^Patient{i + 1}",
            patient_id=f"DEMO{i + 1:04d}",
            shape=(slices, size, size),
        )
        click.echo(f"{study.dicom_dir}  labels: {study.label_path}")


# -- data -----------------------------------------------------------------------------------


@main.command()
# PATH is checked by the workflow: for --source dicomweb it is a query, not a file.
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--labels",
    type=click.Path(exists=True, path_type=Path),
    help="label source, for every --source: NIfTI/NRRD volume, Slicer .seg.nrrd, DICOM SEG or "
    "RTSTRUCT, a folder of PNG masks, or (nifti-pairs) a folder of label volumes named like the "
    "images",
)
@click.option(
    "--class-map",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='JSON class map for the labels: {"classes": [{"id": 1, "name": "liver", '
    '"color": [r, g, b]}]} or {"1": "liver"}; labels that name their classes (SEG, RTSTRUCT, '
    ".seg.nrrd) are renumbered by name",
)
@click.option("--dataset", help="add the series to this dataset (created if missing)")
@click.option("--source", default="dicom-folder", show_default=True, help="dataset plugin")
@click.option("--json", "as_json", is_flag=True, help="print the ingest report as JSON")
@click.option(
    "--allow-burned-in",
    is_flag=True,
    default=None,
    help="ingest instances declaring burned-in annotation (pixels are not cleaned)",
)
@click.pass_context
@handle_errors
def ingest(
    ctx: click.Context,
    path: Path,
    labels: Path | None,
    class_map: Path | None,
    dataset: str | None,
    source: str,
    as_json: bool,
    allow_burned_in: bool | None,
) -> None:
    """De-identify and store the DICOM series under PATH (a folder or a .zip).

    With --source nifti-pairs PATH is a folder of image/label volumes paired by name (case +
    case_seg, case_image + case_label, case.nrrd + case.seg.nrrd, nnU-Net's case_0000, or
    images/ + labels/) or one image volume; with --source dicomweb it is a query such as
    StudyInstanceUID=1.2.3 or PatientID=123&ModalitiesInStudy=CT.
    """
    from radseg.workflows.ingest import ingest as run_ingest

    platform = _platform(ctx)
    bar = Progress("ingest")
    try:
        report = run_ingest(
            platform,
            path,
            labels=labels,
            class_map=class_map,
            dataset=dataset,
            source=source,
            allow_burned_in=allow_burned_in or None,
            progress=bar,
        )
    except IngestFailed as exc:
        # every file and reason, by the names the user gave the files; then the one-line error
        bar.close()
        for line in exc.details:
            click.echo(f"  {line}", err=True)
        raise click.ClickException(exc.headline) from exc
    finally:
        bar.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(report.summary())
    for study in report.studies:
        for line in study.lines():
            click.echo(f"  {line}")
    for problem in report.unassigned:
        # not "skipped": a nifti-pairs image read without labels is reported here too
        click.echo(f"  {report.names.shown(problem)}: {problem.reason}")


@main.group()
def datasets() -> None:
    """Datasets and their immutable versions."""


def parse_windows(text: str) -> ChannelRecipe:
    """``soft_tissue,liver,bone`` or ``400/40,1500/-600`` (width/level in HU), mixed freely."""
    from radseg.imaging.channels import Channel

    channels = []
    for item in (part.strip() for part in text.split(",")):
        width, sep, level = item.partition("/")
        if sep:
            try:
                channels.append(Channel(f"w{width}l{level}", float(width), float(level)))
            except ValueError:
                raise click.BadParameter(
                    f"{item!r} is not WIDTH/LEVEL", param_hint="--windows"
                ) from None
        else:
            channels.append(Channel.preset(item))
    return ChannelRecipe(tuple(channels))


@datasets.command("build")
@click.argument("name")
@click.option("--seed", default=0, show_default=True, help="seed of the patient-level split")
@click.option(
    "--windows",
    default="soft_tissue,lung,bone",
    show_default=True,
    help="one image channel per CT window: preset names (soft_tissue, lung, bone, liver, "
    "brain) or WIDTH/LEVEL in HU",
)
@click.option(
    "--recipe",
    "recipe_name",
    type=click.Choice(["ct", "ct-2.5d", "mr", "mr-2.5d"]),
    help="a named channel recipe instead of --windows: CT windows, MR percentile "
    "normalisation, or 2.5D (the slice and its neighbours as channels)",
)
@click.option(
    "--polygons",
    is_flag=True,
    help="COCO polygons instead of RLE masks (holes are lost; the manifest states the loss)",
)
@click.pass_context
@handle_errors
def datasets_build(
    ctx: click.Context,
    name: str,
    seed: int,
    windows: str,
    recipe_name: str | None,
    polygons: bool,
) -> None:
    """Build the next version of dataset NAME as COCO slices (from the HU cache: no DICOM read)."""
    from radseg.imaging.channels import named_recipe
    from radseg.workflows.datasets import build_version

    platform = _platform(ctx)
    recipe = named_recipe(recipe_name) if recipe_name else parse_windows(windows)
    bar = Progress(f"build {name}")
    try:
        version = build_version(
            platform, name, recipe=recipe, seed=seed, progress=bar, polygons=polygons
        )
        number, path, digest = version.version, version.path, version.content_hash
    finally:
        bar.close()
    click.echo(f"dataset {name} v{number}: {platform.resolve(path)} (sha256 {digest[:12]})")


@main.group()
def studies() -> None:
    """Ingested studies."""


@studies.command("list")
@click.pass_context
@handle_errors
def studies_list(ctx: click.Context) -> None:
    """List studies and their series (pseudonymised identifiers only)."""
    platform = _platform(ctx)
    with platform.sessions() as session:
        for study in session.scalars(select(Study).order_by(Study.id)):
            click.echo(f"study {study.id}  patient {study.patient_key}  {study.study_instance_uid}")
            for series in study.series:
                size = "×".join(str(v) for v in series.geometry["size"])
                click.echo(f"  series {series.series_instance_uid}  {series.modality}  {size}")


@main.group()
def predictions() -> None:
    """Predicted masks."""


@predictions.command("list")
@click.pass_context
@handle_errors
def predictions_list(ctx: click.Context) -> None:
    """List predictions with their model version and Dice when labels exist."""
    platform = _platform(ctx)
    with platform.sessions() as session:
        for p in session.scalars(select(Prediction).order_by(Prediction.id)):
            dice = p.metrics.get("mean_dice")
            score = f"  mean Dice {dice:.3f}" if isinstance(dice, float) else ""
            click.echo(
                f"prediction {p.id}  model version {p.model_version_id}  "
                f"series {p.series.series_instance_uid}{score}"
            )


# -- jobs ---------------------------------------------------------------------------------------


def _submit(platform: Platform, kind: str, payload: dict[str, Any]) -> int:
    from radseg.jobs.store import submit

    with platform.sessions.begin() as session:
        job = submit(
            session, kind, payload, max_attempts=platform.settings.max_attempts, created_by="cli"
        )
        return job.id


def _wait(platform: Platform, job_id: int, description: str) -> dict[str, Any]:
    """Follow a job with a progress bar until it is final; its result, or exit 1 on failure."""
    bar = Progress(description)
    waited_queued = 0.0
    try:
        while True:
            with platform.sessions() as session:
                job = session.get(Job, job_id)
                assert job is not None
                state, progress, message = job.state, job.progress, job.message
            bar(progress, f"{state.value} {message}")
            if state.is_final:
                break
            if state == JobState.QUEUED:
                waited_queued += 1
                if waited_queued == 30:
                    tqdm.write(
                        f"job {job_id} is still queued: is a worker running? (radseg worker)"
                    )
            time.sleep(1.0)
    finally:
        bar.close()
    with platform.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
    if job.state != JobState.SUCCEEDED:
        raise click.ClickException(f"job {job_id} {job.state.value}: {job.message}")
    return job.result or {}


@main.command()
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
    wait: bool,
) -> None:
    """Queue a training job on the latest version of DATASET."""
    from radseg.workflows.datasets import get_dataset, latest_version

    platform = _platform(ctx)
    backend_cls = platform.plugins.models.get(backend)
    if architecture and architecture not in backend_cls.architectures:
        raise click.ClickException(
            f"backend {backend!r} has no architecture {architecture!r}; "
            f"choose one of: {', '.join(backend_cls.architectures)}"
        )
    with platform.sessions() as session:
        latest_version(session, get_dataset(session, dataset))  # fail now, not in the worker
    config: dict[str, Any] = dict(_parse_override(o) for o in options)
    if architecture:
        config["architecture"] = architecture
    if iterations:
        config["iterations"] = iterations
    if overrides:
        config["overrides"] = dict(_parse_override(o) for o in overrides)
    job_id = _submit(platform, "train", {"dataset": dataset, "backend": backend, "config": config})
    click.echo(f"queued training job {job_id}")
    if wait:
        result = _wait(platform, job_id, f"train job {job_id}")
        click.echo(f"model version {result['model_version_id']}: {_val_summary(result['metrics'])}")


def _val_summary(metrics: dict[str, Any]) -> str:
    val = metrics.get("val") or {}
    if not isinstance(val.get("mean_dice"), float):
        return "trained (no validation images to score it on)"
    per_class = ", ".join(
        f"{name} {scores['dice']:.3f}"
        for name, scores in (val.get("per_class") or {}).items()
        if isinstance(scores.get("dice"), float)
    )
    return f"val mean Dice {val['mean_dice']:.3f} ({per_class})"


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="--set")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


@main.command()
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
    platform = _platform(ctx)
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
        job_id = _submit(
            platform,
            "predict",
            {"model_version_id": model_version_id, "series_instance_uid": uid},
        )
        click.echo(f"queued prediction job {job_id} for series {uid}")
        jobs.append(job_id)
    if wait:
        for job_id in jobs:
            result = _wait(platform, job_id, f"predict job {job_id}")
            dice = (result.get("metrics") or {}).get("mean_dice")
            extra = f", mean Dice {dice:.3f}" if isinstance(dice, float) else ""
            click.echo(f"prediction {result['prediction_id']}{extra}")


@main.command()
@click.option("--model-version", "model_version_id", type=int, required=True)
@click.option(
    "--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"])
)
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
    from radseg.model_registry import get_version

    platform = _platform(ctx)
    with platform.sessions() as session:
        get_version(session, model_version_id)  # fail now, not in the worker
    payload: dict[str, Any] = {"model_version_id": model_version_id, "split": split}
    if dataset_version_id:
        payload["dataset_version_id"] = dataset_version_id
    job_id = _submit(platform, "evaluate", payload)
    click.echo(f"queued evaluation job {job_id}")
    if wait:
        result = _wait(platform, job_id, f"evaluate job {job_id}")
        dice = result.get("mean_dice")
        click.echo(
            f"evaluation {result['evaluation_id']}: mean Dice {dice:.4f}"
            if isinstance(dice, float)
            else f"evaluation {result['evaluation_id']}"
        )
        click.echo(f"report: {platform.resolve(result['report_path'])}")


@main.group()
def models() -> None:
    """Trained model versions: list, model cards, comparisons."""


@models.command("list")
@click.pass_context
@handle_errors
def models_list(ctx: click.Context) -> None:
    from radseg.model_registry import list_versions

    platform = _platform(ctx)
    with platform.sessions() as session:
        rows = list_versions(session)
    if not rows:
        click.echo("no model versions yet; train one with `radseg train --dataset NAME`")
    for r in rows:
        dice = r["val_mean_dice"]
        score = f"val Dice {dice:.3f}" if isinstance(dice, float) else "no val score"
        click.echo(
            f"{r['id']:>4}  {r['model']}  {r['architecture']}  "
            f"{r['dataset']} v{r['dataset_version']}  {score}  {r['created_by']} {r['created_at']}"
        )


@models.command("show")
@click.argument("model_version_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="the model card as JSON")
@click.pass_context
@handle_errors
def models_show(ctx: click.Context, model_version_id: int, as_json: bool) -> None:
    """The model card of a model version: lineage, classes, input recipe, metrics."""
    from radseg.model_registry import get_version, model_card

    platform = _platform(ctx)
    with platform.sessions() as session:
        card = model_card(session, get_version(session, model_version_id))
    if as_json:
        click.echo(json.dumps(card, indent=2))
        return
    lineage = card["lineage"]
    click.echo(f"model version {model_version_id}: {lineage['model']} ({card['architecture']})")
    for key in ("dataset", "dataset_version", "dataset_content_hash", "config_hash",
                "code_version", "trained_by", "trained_at", "iterations"):  # fmt: skip
        click.echo(f"  {key}: {lineage[key]}")
    click.echo(f"  modality: {', '.join(card['intended_modality']) or '-'}")
    click.echo("  classes: " + ", ".join(f"{c['id']} {c['name']}" for c in card["classes"]))
    val = card["validation"]
    if isinstance(val.get("mean_dice"), float):
        click.echo(f"  validation mean Dice: {val['mean_dice']:.4f}")
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

    platform = _platform(ctx)
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


@main.group()
def uploads() -> None:
    """Raw web uploads waiting for their ingest job."""


@uploads.command("reap")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    help="seconds an upload no job uses is kept after its last change "
    "(default: the upload_grace_seconds setting)",
)
@click.pass_context
@handle_errors
def uploads_reap(ctx: click.Context, grace: float | None) -> None:
    """Remove the uploads no queued or running job needs (workers do it every minute)."""
    from radseg.workflows.uploads import reap_uploads

    platform = _platform(ctx)
    grace = platform.settings.upload_grace_seconds if grace is None else grace
    removed = reap_uploads(platform, grace_seconds=grace)
    click.echo(f"{len(removed)} upload{'s' if len(removed) != 1 else ''} removed")
    for name in removed:
        click.echo(f"  {name}")


@main.group()
def jobs() -> None:
    """Background jobs."""


@jobs.command("list")
@click.option("--state", type=click.Choice([s.value for s in JobState]))
@click.option("--limit", default=50, show_default=True)
@click.pass_context
@handle_errors
def jobs_list(ctx: click.Context, state: str | None, limit: int) -> None:
    """List jobs, newest first; a running job with progress shows its time left."""
    from radseg.jobs.eta import estimate, remaining_text

    platform = _platform(ctx)
    with platform.sessions() as session:
        query = select(Job).order_by(Job.id.desc()).limit(limit)
        if state:
            query = query.where(Job.state == JobState(state))
        for job in session.scalars(query):
            eta = estimate(session, job)
            left = f"  ({remaining_text(eta)})" if eta is not None else ""
            click.echo(
                f"{job.id:>5}  {job.kind:<14} {job.state.value:<10} {job.progress * 100:5.1f}%  "
                f"attempt {job.attempts}/{job.max_attempts}  {job.message[:60]}{left}"
            )


@jobs.command("cancel")
@click.argument("job_id", type=int)
@click.pass_context
@handle_errors
def jobs_cancel(ctx: click.Context, job_id: int) -> None:
    """Cancel a queued job, or stop a running one."""
    from radseg.jobs.store import cancel
    from radseg.workflows.uploads import discard_upload

    platform = _platform(ctx)
    with platform.sessions.begin() as session:
        job = cancel(session, job_id, actor="cli")
        running = job.state == JobState.RUNNING
    discard_upload(platform, job)  # a queued ingest ended here: its upload goes now
    click.echo(f"job {job_id}: {'cancel requested' if running else job.state.value}")


@jobs.command("resubmit")
@click.argument("job_id", type=int)
@click.pass_context
@handle_errors
def jobs_resubmit(ctx: click.Context, job_id: int) -> None:
    """Queue a finished (failed, cancelled) job again as a new job linked to it."""
    from radseg.jobs.store import resubmit

    platform = _platform(ctx)
    with platform.sessions.begin() as session:
        job = resubmit(session, job_id, actor="cli")
        click.echo(f"job {job_id} resubmitted as job {job.id}")


@jobs.command("tail")
@click.argument("job_id", type=int)
@click.option("--follow", "-f", is_flag=True, help="keep printing until the job finishes")
@click.pass_context
@handle_errors
def jobs_tail(ctx: click.Context, job_id: int, follow: bool) -> None:
    """Print a job's log ($RADSEG_HOME/logs/job-ID.log); --follow streams it while it runs."""
    from radseg.jobs.logs import read_job_log

    platform = _platform(ctx)
    offset = 0
    while True:
        with platform.sessions() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise click.ClickException(f"job {job_id} does not exist; see `radseg jobs list`")
            final = job.state.is_final
        while True:
            text, offset = read_job_log(platform.settings, job_id, offset)
            if not text:
                break
            click.echo(text, nl=False)
        if not follow or final:
            return
        time.sleep(0.5)


@main.command()
@click.option("--burst", is_flag=True, help="exit when no job is runnable")
@click.option("--kinds", help="comma-separated job kinds to take (default: all)")
@click.option("--gpus", help="comma-separated GPU indices; one GPU job per GPU at a time")
@click.option("--gpu", help="one GPU index (same as --gpus N)", hidden=True)
@click.option(
    "--concurrency",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="CPU-only jobs run at once (alongside the GPU jobs)",
)
@click.option(
    "--inline-kinds",
    default="",
    help="comma-separated kinds (a plugin's, taking milliseconds) run inside the worker, "
    "in batches, instead of in a child process (default: none)",
)
@click.option(
    "--grace",
    type=float,
    default=30.0,
    show_default=True,
    help="on SIGTERM, seconds running jobs get to finish before they are requeued",
)
@click.pass_context
@handle_errors
def worker(
    ctx: click.Context,
    burst: bool,
    kinds: str | None,
    gpus: str | None,
    gpu: str | None,
    concurrency: int,
    inline_kinds: str,
    grace: float,
) -> None:
    """Run jobs from the queue, each in a child process."""
    from radseg.jobs.worker import Worker

    def split(text: str | None) -> list[str]:
        return [part.strip() for part in (text or "").split(",") if part.strip()]

    logging.getLogger().setLevel(logging.INFO)
    platform = _platform(ctx)
    w = Worker(
        platform,
        kinds=split(kinds) or None,
        burst=burst,
        gpus=split(gpus) or split(gpu),
        concurrency=concurrency,
        inline_kinds=split(inline_kinds),
        grace_seconds=grace,
    )
    w.install_signal_handlers()
    count = w.run()
    click.echo(f"worker {w.worker_id} ran {count} job(s)")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True)
@click.option("--threads/--no-threads", default=True, show_default=True)
@click.pass_context
@handle_errors
def serve(ctx: click.Context, host: str, port: int, threads: bool) -> None:
    """Serve the web UI (use a WSGI server such as gunicorn in production)."""
    from werkzeug.serving import run_simple

    from radseg.web import create_app

    platform = _platform(ctx)
    app = create_app(platform, bound_to=host)
    click.echo(f"radseg UI on http://{host}:{port}/")
    if app.config["SESSION_COOKIE_SECURE"]:
        # this server speaks plain http: a browser keeps a Secure cookie only over https
        # (or on localhost), so logging in from another machine needs a TLS proxy in front
        click.echo(
            "session cookies are Secure: serve the UI to other machines through an https "
            "reverse proxy (or set RADSEG_SECURE_COOKIES=false on a trusted network only)"
        )
    run_simple(host, port, app, threaded=threads, use_reloader=False)


# -- plugins & export -------------------------------------------------------------------------


@main.group()
def plugins() -> None:
    """Installed plugins."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@handle_errors
def plugins_list(ctx: click.Context, as_json: bool) -> None:
    """Show every plugin: name, version, hooks, status and why."""
    infos = _platform(ctx).plugins.list()
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    for info in infos:
        reason = f"  ({info.reason})" if info.reason else ""
        click.echo(
            f"{info.name:<16} {info.version:<8} {info.status:<12} {', '.join(info.hooks)}{reason}"
        )


def _set_plugin(ctx: click.Context, name: str, enabled: bool) -> None:
    from radseg.roles import CLI_ACTOR
    from radseg.workflows.plugins import set_plugin_enabled

    set_plugin_enabled(_platform(ctx), CLI_ACTOR, name, enabled)
    click.echo(f"plugin {name} {'enabled' if enabled else 'disabled'}")


@plugins.command("enable")
@click.argument("name")
@click.pass_context
@handle_errors
def plugins_enable(ctx: click.Context, name: str) -> None:
    """Enable plugin NAME in every process."""
    _set_plugin(ctx, name, True)


@plugins.command("disable")
@click.argument("name")
@click.pass_context
@handle_errors
def plugins_disable(ctx: click.Context, name: str) -> None:
    """Disable plugin NAME in every process."""
    _set_plugin(ctx, name, False)


@main.command()
@click.option("--prediction", "prediction_id", type=int, required=True)
@click.option(
    "--format",
    "fmt",
    default=None,
    help="exporter plugin: dicom-seg, rtstruct, nifti, coco, png, ... "
    "(default nifti; dicom-seg with --to-pacs)",
)
@click.option(
    "--out",
    type=click.Path(),
    help="file, or folder (an existing one, or a name ending in /) to write into",
)
@click.option("--to-pacs", "to_pacs", metavar="NAME", help="send to the [pacs.NAME] destination")
@click.option(
    "--with-images",
    is_flag=True,
    help="with --to-pacs: also send the de-identified source series if the PACS lacks it",
)
@click.option(
    "--corrected",
    is_flag=True,
    help="export the reviewer's latest correction of the prediction instead of the prediction",
)
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="exporter option, e.g. -o seg_type=labelmap (repeatable)",
)
@click.pass_context
@handle_errors
def export(
    ctx: click.Context,
    prediction_id: int,
    fmt: str | None,
    out: str | None,
    to_pacs: str | None,
    with_images: bool,
    corrected: bool,
    options: tuple[str, ...],
) -> None:
    """Export a prediction, check it by reading it back, and write it or send it to a PACS.

    Every export is re-read with an independent reader (and DICOM objects validated with
    dciodvfy); a failed check blocks the export and says why.
    """
    from radseg.workflows.exporting import ExportCheckFailed, parse_options
    from radseg.workflows.exporting import export as run_export

    if out is None and to_pacs is None:
        raise click.UsageError("give --out PATH, --to-pacs NAME, or both")
    fmt = fmt or ("dicom-seg" if to_pacs else "nifti")
    if out is not None and out.endswith("/"):
        Path(out).mkdir(parents=True, exist_ok=True)  # `--out exports/` names a folder
    bar = Progress(f"export {fmt}")
    try:
        outcome = run_export(
            _platform(ctx),
            prediction_id=prediction_id,
            fmt=fmt,
            out=Path(out) if out is not None else None,
            to_pacs=to_pacs,
            options=parse_options(options),
            with_images=with_images,
            corrected=corrected,
            progress=bar,
        )
    except ExportCheckFailed as exc:
        bar.close()
        _echo_checks(exc.outcome.checks)
        raise
    bar.close()
    _echo_checks(outcome.checks)
    if outcome.out is not None:
        click.echo(f"wrote {outcome.out} (export {outcome.export_id}, {outcome.status})")
    if to_pacs is not None:
        sent = len((outcome.remote or {}).get("instances", []))
        click.echo(f"sent {sent} object(s) to PACS {to_pacs} (export {outcome.export_id})")


def _echo_checks(checks: list[Any]) -> None:
    marks = {True: "ok  ", False: "FAIL", None: "n/a "}
    for check in checks:
        click.echo(f"  {marks[check.passed]} {check.name}: {check.detail}")


if __name__ == "__main__":  # pragma: no cover
    main()
