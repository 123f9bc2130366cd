"""The ``radseg`` command line: one click group, one module per area.

Every command builds its own platform through :func:`radseg.core.create_platform`, calls a use
case of :mod:`radseg.workflows` (as :data:`radseg.roles.CLI_ACTOR`) or reads for a listing,
prints one line ``Error: …`` and exits 1 on an error the user can act on
(:mod:`radseg.cli.common`), and shows a progress bar on long work.

Areas: :mod:`~radseg.cli.admin` (init, db, users, plugins, serve), :mod:`~radseg.cli.studies`
(demo-data, ingest, studies, uploads), :mod:`~radseg.cli.datasets`, :mod:`~radseg.cli.models`
(train, evaluate, models), :mod:`~radseg.cli.predictions` (predict, predictions),
:mod:`~radseg.cli.jobs` (jobs), :mod:`~radseg.cli.exports` (export),
:mod:`~radseg.cli.quality` (``models quality``, joined to the ``models`` group here) and
:mod:`~radseg.cli.readings` (worklist, readings, readers). The two commands that start the other
shells, ``serve`` and ``worker``, are added by :mod:`radseg.main` (the ``radseg`` program), so the
command line imports neither the web app nor the worker.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from radseg.cli import (
    admin,
    datasets,
    exports,
    jobs,
    models,
    predictions,
    quality,
    readings,
    studies,
)

__all__ = ["AREAS", "command_line", "main"]

#: the modules of the areas, each with its ``COMMANDS``
AREAS = (admin, studies, datasets, models, predictions, jobs, exports, readings)
# an area may add commands to another area's group without importing it: ``radseg models quality``
for command in quality.SUBCOMMANDS["models"]:
    models.models.add_command(command)


def command_line(*extra: click.Command) -> click.Group:
    """A fresh ``radseg`` group with every area's commands, and ``extra`` ones."""

    @click.group("radseg")
    @click.option("--home", type=click.Path(path_type=Path), help="RADSEG_HOME (default ./var)")
    @click.option("-v", "--verbose", is_flag=True, help="log at INFO level")
    @click.version_option(package_name="radseg")
    @click.pass_context
    def radseg(ctx: click.Context, home: Path | None, verbose: bool) -> None:
        """radseg: segment medical images with detectron2 through plugins."""
        logging.basicConfig(
            level=logging.INFO if verbose else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        ctx.ensure_object(dict)["overrides"] = {"home": home} if home else {}

    for command in (*(c for area in AREAS for c in area.COMMANDS), *extra):
        radseg.add_command(command)
    return radseg


#: the command line's areas (what tests drive); the program adds serve and worker
main = command_line()
