"""Datasets: ``datasets build`` makes the next immutable version of a dataset as COCO slices."""

from __future__ import annotations

import click

from radseg.cli.common import Progress, handle_errors, platform_of
from radseg.imaging.channels import named_recipe, parse_windows


@click.group()
def datasets() -> None:
    """Datasets and their immutable versions."""


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
    from radseg.workflows.datasets import build_version

    platform = platform_of(ctx)
    recipe = named_recipe(recipe_name) if recipe_name else parse_windows(windows)
    bar = Progress(f"build {name}")
    try:
        version = build_version(
            platform, name, recipe=recipe, seed=seed, progress=bar, polygons=polygons
        )
    finally:
        bar.close()
    click.echo(
        f"dataset {name} v{version.version}: {platform.resolve(version.path)} "
        f"(content hash {version.content_hash[:12]})"
    )


COMMANDS = (datasets,)
