"""Getting images in: ``demo-data``, ``ingest``, ``studies list`` and ``uploads reap``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from tqdm import tqdm

from radseg.cli.common import Progress, handle_errors, platform_of, plural
from radseg.cli.listing import echo_count, study_date_text, window_options
from radseg.db.paging import Window
from radseg.workflows.studies import (
    STUDY_SHOWS,
    STUDY_SORTS,
    StudyFilters,
    modalities_present,
    study_rows,
)


@click.command("demo-data")
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


@click.command()
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

    platform = platform_of(ctx)
    bar = Progress("ingest")
    try:
        # a refusal (IngestFailed) lists every file and reason after the bar is gone: common.py
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


@click.group()
def studies() -> None:
    """Ingested studies."""


@studies.command("list")
@click.option(
    "--search",
    "-q",
    help="the start of a patient pseudonym, part of a description (any case), or a whole "
    "StudyInstanceUID",
)
@click.option("--modality", help="studies with a series of this modality, e.g. CT")
@click.option(
    "--show",
    type=click.Choice(STUDY_SHOWS),
    default="all",
    show_default=True,
    help="studies with or without labels, predictions or review decisions",
)
@click.option(
    "--sort",
    type=click.Choice(STUDY_SORTS),
    default="newest",
    show_default=True,
    help="added newest/oldest first, study date newest/oldest first, patient, description",
)
@window_options
@click.option("--series", "with_series", is_flag=True, help="also each study's series and UIDs")
@click.option("--json", "as_json", is_flag=True, help="the rows and the page as JSON")
@click.pass_context
@handle_errors
def studies_list(
    ctx: click.Context,
    search: str | None,
    modality: str | None,
    show: str,
    sort: str,
    window: Window,
    with_series: bool,
    as_json: bool,
) -> None:
    """List studies as the studies page does: patient pseudonym, modalities, study date (shifted
    by de-identification), series, labels, predictions, review states and description."""
    filters = StudyFilters(
        q=(search or "").strip(), modality=(modality or "").strip(), show=show, sort=sort
    )
    platform = platform_of(ctx)
    with platform.sessions() as session:
        listed = study_rows(session, filters, window)
        if as_json:
            rows = [row.to_dict() for row in listed.rows]
            click.echo(json.dumps({"studies": rows, "page": listed.meta()}, indent=2))
            return
        if not listed.rows and filters.modality:
            present = modalities_present(session)
            if filters.modality not in present:
                raise click.BadParameter(
                    f"no series has modality {filters.modality!r}; "
                    f"there are: {', '.join(present) or 'none'}",
                    param_hint="--modality",
                )
        if not listed.rows and window.offset == 0:
            click.echo("no studies match" if filters != StudyFilters(sort=sort) else "no studies")
        for row in listed.rows:
            study = row.study
            review = ", ".join(f"{n} {state}" for state, n in sorted(row.review.states.items()))
            click.echo(
                f"{study.id:>6}  {study.patient_key[:12]}  {','.join(row.modalities) or '-':<6} "
                f"{study_date_text(study.study_date):<21} {row.series_count} series  "
                f"{plural(row.label_count, 'label')}  "
                f"{plural(row.prediction_count, 'prediction')}  {review or 'no review'}  "
                f"{study.description or '-'}"
            )
            if with_series:
                click.echo(f"        study {study.study_instance_uid}")
                for series in study.series:
                    size = "×".join(str(v) for v in series.geometry.get("size", []))
                    click.echo(
                        f"        series {series.series_instance_uid}  {series.modality}  {size}"
                    )
    echo_count(listed, "studies")


@click.group()
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
    from radseg.workflows.upload_folders import reap_uploads

    platform = platform_of(ctx)
    grace = platform.settings.upload_grace_seconds if grace is None else grace
    removed = reap_uploads(platform, grace_seconds=grace)
    click.echo(f"{plural(len(removed), 'upload')} removed")
    for name in removed:
        click.echo(f"  {name}")


COMMANDS = (demo_data, ingest, studies, uploads)
