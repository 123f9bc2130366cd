"""``export``: a prediction (or its correction) to a file or a PACS, checked by reading it back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from radseg.cli.common import Progress, handle_errors, platform_of
from radseg.roles import CLI_ACTOR


@click.command()
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
            platform_of(ctx),
            prediction_id=prediction_id,
            fmt=fmt,
            out=Path(out) if out is not None else None,
            to_pacs=to_pacs,
            options=parse_options(options),
            with_images=with_images,
            corrected=corrected,
            actor=CLI_ACTOR.username,
            progress=bar,
        )
    except ExportCheckFailed as exc:
        bar.close()
        _echo_checks(exc.outcome.checks)  # every check, then the one-line error
        raise
    finally:
        bar.close()
    _echo_checks(outcome.checks)
    if outcome.out is not None:
        click.echo(f"wrote {outcome.out} (export {outcome.export_id}, {outcome.status})")
    if to_pacs is not None:
        sent = len((outcome.remote or {}).get("instances", []))
        click.echo(f"sent {sent} object(s) to PACS {to_pacs} (export {outcome.export_id})")


def _echo_checks(checks: list[Any]) -> None:
    """One line per read-back check: ok, FAIL or n/a, its name and what it found."""
    marks = {True: "ok  ", False: "FAIL", None: "n/a "}
    for check in checks:
        click.echo(f"  {marks[check.passed]} {check.name}: {check.detail}")


COMMANDS = (export,)
