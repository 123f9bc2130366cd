"""The command line's one error table (radseg.cli.common.ERROR_OUTPUTS): every error a use case
raises becomes one ``Error:`` line and its exit code, never a traceback."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from sqlalchemy.exc import OperationalError

from radseg.cli.common import ERROR_OUTPUTS, handle_errors
from radseg.errors import (
    Conflict,
    IngestFailed,
    InputError,
    JobNotFound,
    NotFound,
    PermissionDenied,
)


def _run(error: Exception) -> tuple[int, str]:
    @click.command()
    @handle_errors
    def command() -> None:
        raise error

    result = CliRunner().invoke(command, [])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_no_entry_of_the_table_is_hidden_behind_its_base() -> None:
    classes = [cls for cls, _ in ERROR_OUTPUTS]
    for i, first in enumerate(classes):
        for later in classes[i + 1 :]:
            assert not issubclass(later, first), f"{later} comes after its base {first}"


@pytest.mark.parametrize(
    "error",
    [
        InputError("seed must be a whole number"),
        NotFound("there is no job 7"),
        JobNotFound("there is no job 8"),
        PermissionDenied("only an admin can create users"),
        Conflict("job 3 is running: only a finished job can be retried"),
    ],
)
def test_a_use_case_error_is_one_line_and_exit_1(error: Exception) -> None:
    code, output = _run(error)
    assert code == 1
    assert output == f"Error: {error}\n"


def test_a_refused_ingest_lists_every_file_before_its_headline() -> None:
    error = IngestFailed("nothing ingested", "2 files refused", ["a.dcm: no pixels", "b.txt: ?"])
    code, output = _run(error)
    assert code == 1
    assert output == "  a.dcm: no pixels\n  b.txt: ?\nError: nothing ingested\n"


def test_a_database_error_says_how_to_set_the_database_up() -> None:
    code, output = _run(OperationalError("SELECT 1", {}, Exception("no such table: job")))
    assert code == 1
    assert output.startswith("Error: database error (no such table: job); ")
    assert "run `radseg init`" in output
