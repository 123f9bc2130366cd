"""``radseg models quality NAME``: a model's review quality by week, its control charts' limits
and alerts; ``--check`` evaluates the alerts now, ``--svg DIR`` writes the charts as images.

The command joins the ``models`` group of :mod:`radseg.cli.models` (attached in
:mod:`radseg.cli`, as the areas never import each other)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from radseg.cli.common import handle_errors, platform_of
from radseg.quality import Column
from radseg.quality_svg import chart_svg
from radseg.roles import CLI_ACTOR
from radseg.storage import atomic_write_text
from radseg.workflows.quality import check_quality, model_versions, version_quality


def echo_report(report: dict[str, Any]) -> None:
    """One version's weekly table (every metric's columns), its charts' centres, its alerts."""
    click.echo(f"{report['model']} version {report['model_version_id']}")
    columns = [Column(**c) for c in report["columns"]]
    widths = [max(len(c.label), 8) for c in columns]
    heading = " ".join(f"{c.label:>{w}}" for c, w in zip(columns, widths, strict=True))
    click.echo(f"  {'week':<9} {heading}")
    for row in report["weeks"]:
        cells = " ".join(f"{c.cell(row):>{w}}" for c, w in zip(columns, widths, strict=True))
        click.echo(f"  {row['week']:<9} {cells}")
    for chart in report["charts"].values():
        weeks = chart["baseline_weeks"]
        click.echo(
            f"  {chart['label']}: centre {chart['center']:.3f} from {weeks[0]}..{weeks[-1]}"
            if chart["center"] is not None
            else f"  {chart['label']}: no limits yet ({chart['note']})"
        )
    for alert in report["alerts"]:
        click.echo(f"  ALERT {alert['message']}")


@click.command("quality")
@click.argument("name")
@click.option("--version", "version_id", type=int, help="one version (default: all of them)")
@click.option("--check", is_flag=True, help="evaluate the alerts now (and announce new ones)")
@click.option(
    "--svg",
    "svg_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="also write each control chart as an SVG image into this folder",
)
@click.option("--json", "as_json", is_flag=True, help="the reports as JSON (as the API gives)")
@click.pass_context
@handle_errors
def quality(
    ctx: click.Context,
    name: str,
    version_id: int | None,
    check: bool,
    svg_dir: Path | None,
    as_json: bool,
) -> None:
    """The weekly review quality of model NAME's versions: decisions, correction sizes, the
    control charts' limits and the alerts."""
    platform = platform_of(ctx)
    if check:
        found = check_quality(platform, CLI_ACTOR, model=name, version_id=version_id)
        click.echo(
            f"checked: {found['sizes_added']} correction sizes computed, "
            f"{len(found['alerts'])} new alerts"
        )
    with platform.sessions() as session:
        versions = [v for v in model_versions(session, name) if version_id in (None, v.id)]
        if not versions:
            raise click.ClickException(f"model {name!r} has no version {version_id}")
        reports = [version_quality(session, platform.settings, v) for v in versions]
    if svg_dir is not None:
        for report in reports:
            for chart_name, chart in report["charts"].items():
                ident = report["model_version_id"]
                target = svg_dir / f"model-version-{ident}-{chart_name}.svg"
                atomic_write_text(target, chart_svg(chart))
                click.echo(f"wrote {target}")
    if as_json:
        click.echo(json.dumps(reports, indent=2))
        return
    for report in reports:
        echo_report(report)


#: attached to the ``models`` group by :mod:`radseg.cli`, not a top-level command
COMMANDS: tuple[click.Command, ...] = ()
SUBCOMMANDS = {"models": (quality,)}
