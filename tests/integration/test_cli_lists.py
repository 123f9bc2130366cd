"""The command line's list commands search, filter, sort and page as the list pages do (the
same use cases), print the columns a person reads, and refuse a bad value saying what is
allowed. A few hundred rows laid out by the rules of tests/list_data.py, on SQLite and
PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result

from radseg.cli import main
from radseg.core import Platform
from tests import list_data as data

STUDIES, JOBS, VERSIONS, EVENTS = 300, 400, 25, 60

Cli = Callable[..., Result]


@pytest.fixture
def cli(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Cli:
    data.fill(platform, studies=STUDIES, jobs=JOBS, events=EVENTS, versions=VERSIONS)
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, ["--home", str(platform.home), *args])

    return invoke


def ok(result: Result) -> list[str]:
    """The rows a command printed on stdout."""
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def first_numbers(lines: list[str], column: int = 0) -> list[int]:
    return [int(line.split()[column]) for line in lines]


def refused(result: Result, says: str) -> None:
    assert result.exit_code == 2, result.output
    assert says in result.stderr, result.stderr


def test_studies_list_searches_filters_sorts_and_pages_like_the_studies_page(cli: Cli) -> None:
    first = cli("studies", "list", "--limit", "20")
    assert first_numbers(ok(first)) == list(range(STUDIES, STUDIES - 20, -1))
    assert first.stderr.strip() == "studies 1–20 of 300; more: --page 2"

    mr = data.expected(lambda n: data.description(n) == "MR brain", STUDIES)
    second = cli(
        "studies", "list", "--modality", "MR", "--sort", "oldest", "--limit", "10", "--page", "2"
    )
    lines = ok(second)
    assert first_numbers(lines) == mr[10:20]
    assert second.stderr.strip() == f"studies 11–20 of {len(mr)}; more: --page 3"
    assert (
        first_numbers(
            ok(
                cli(
                    "studies",
                    "list",
                    "--modality",
                    "MR",
                    "--sort",
                    "oldest",
                    "--limit",
                    "10",
                    "--offset",
                    "15",
                )
            )
        )
        == mr[15:25]
    )
    # the columns a person reads: pseudonym, modality, shifted date, counts, review, description
    n = mr[10]
    assert lines[0].split()[1:3] == [data.pseudonym(n)[:12], "MR"]
    dated = data.study_date(n)
    assert (f"{dated.isoformat()} (shifted)" if dated else "no date") in lines[0]
    assert lines[0].endswith("  MR brain") and f"2.25.{n}" not in lines[0]

    labelled = sorted(data.expected(data.labelled, STUDIES), reverse=True)
    whole = cli("studies", "list", "--show", "labelled", "--limit", "500")
    assert first_numbers(ok(whole)) == labelled and whole.stderr == ""  # all of it: no count line
    key = data.pseudonym(77)[:10]
    (found,) = ok(cli("studies", "list", "--search", key))
    assert found.split()[0] == "77" and "1 label" not in found

    page = json.loads(
        cli("studies", "list", "--show", "predicted", "--limit", "5", "--json").stdout
    )
    predicted = sorted(data.expected(data.predicted, STUDIES), reverse=True)
    assert [s["id"] for s in page["studies"]] == predicted[:5]
    assert page["page"] == {
        "total": len(predicted),
        "total_capped": False,
        "limit": 5,
        "offset": 0,
        "has_next": True,
    }
    with_series = ok(cli("studies", "list", "--limit", "1", "--series"))
    assert with_series[1:] == [
        f"        study 2.25.{STUDIES}",
        f"        series 2.25.{STUDIES}.1  CT  ",
    ]

    refused(
        cli("studies", "list", "--show", "everything"),
        "'everything' is not one of 'all', 'labelled'",
    )
    refused(
        cli("studies", "list", "--page", "2", "--offset", "5"), "give --page or --offset, not both"
    )
    refused(cli("studies", "list", "--limit", "0"), "0 is not in the range 1<=x<=500")
    refused(
        cli("studies", "list", "--modality", "XR"),
        "no series has modality 'XR'; there are: CT, MR, PT",
    )


def test_jobs_list_filters_by_state_kind_and_owner_and_pages(cli: Cli) -> None:
    failed_train = sorted(
        (
            n
            for n in range(1, JOBS + 1)
            if data.job_state(n).value == "failed" and data.job_kind(n) == "train"
        ),
        reverse=True,
    )
    result = cli(
        "jobs", "list", "--state", "failed", "--kind", "train", "--limit", "5", "--page", "2"
    )
    lines = ok(result)
    assert first_numbers(lines) == failed_train[5:10]
    assert result.stderr.strip().startswith(f"jobs 6–10 of {len(failed_train)}")
    assert lines[0].split()[1:3] == ["train", "failed"]
    assert f" {data.job_owner(failed_train[5]):<12} " in lines[0]  # the owner

    alice = [n for n in range(JOBS, 0, -1) if data.job_owner(n) == "alice"]
    assert first_numbers(ok(cli("jobs", "list", "--search", "ali", "--limit", "500"))) == alice
    assert first_numbers(ok(cli("jobs", "list", "--search", "#42"))) == [42]
    assert first_numbers(ok(cli("jobs", "list", "--sort", "oldest", "--limit", "3"))) == [1, 2, 3]

    refused(cli("jobs", "list", "--kind", "mining"), "unknown job kind 'mining'; use one of: ")
    refused(cli("jobs", "list", "--state", "lost"), "'lost' is not one of 'queued'")
    refused(
        cli("jobs", "list", "--sort", "priority"), "'priority' is not one of 'newest', 'oldest'"
    )


def test_models_list_searches_filters_and_pages(cli: Cli) -> None:
    # version 1 is fpn-big's; versions 2 to 25 belong to unet-0 (2–11), unet-1, unet-2
    result = cli("models", "list", "--search", "UNET-1", "--limit", "4")
    lines = ok(result)
    assert first_numbers(lines) == [21, 20, 19, 18]
    assert result.stderr.strip() == "model versions 1–4 of 10; more: --page 2"
    assert lines[0].split()[1] == "unet-1"
    by_model = first_numbers(ok(cli("models", "list", "--sort", "model", "--limit", "2")))
    assert by_model == [1, 11]  # fpn-big, then unet-0 newest first
    assert ok(cli("models", "list", "--search", "resnet")) == ["no model versions match"]
    refused(
        cli("models", "list", "--status", "retired"),
        "'retired' is not one of 'candidate', 'promoted'",
    )


def test_the_review_queue_on_the_command_line_filters_and_pages_in_priority_order(
    cli: Cli,
) -> None:
    awaiting = [n for n in range(1, STUDIES + 1) if data.predicted(n) and not data.accepted(n)]
    scored = sorted(
        (n for n in awaiting if data.priority(n) is not None), key=lambda n: (-data.priority(n), n)
    )
    order = scored + [n for n in awaiting if data.priority(n) is None]
    result = cli("predictions", "queue", "--limit", "10", "--page", "5")
    lines = ok(result)
    series = [int(line.split("series 2.25.")[1].split(".")[0]) for line in lines]
    assert series == order[40:50]  # series n is study n's
    assert result.stderr.strip() == f"predictions 41–50 of {len(order)}; more: --page 6"
    n = order[40]
    dated = data.study_date(n)
    assert f"  patient {data.pseudonym(n)[:12]}  " in lines[0]
    assert (f"{dated.isoformat()} (shifted)" if dated else "no date") in lines[0]
    assert "  fpn-big v1  " in lines[0]

    accepted = ok(
        cli("predictions", "queue", "--state", "accepted", "--sort", "oldest", "--limit", "500")
    )
    wanted = [n for n in range(1, STUDIES + 1) if data.predicted(n) and data.accepted(n)]
    assert [int(line.split("series 2.25.")[1].split(".")[0]) for line in accepted] == wanted
    key = data.pseudonym(order[3])[:10]
    (one,) = ok(cli("predictions", "queue", "--study", key))
    assert f"series 2.25.{order[3]}.1" in one
    assert ok(cli("predictions", "queue", "--model", "unet-0")) == []
    refused(cli("predictions", "queue", "--state", "maybe"), "'maybe' is not one of 'awaiting'")


def test_audit_list_filters_by_actor_action_and_time_and_pages(cli: Cli) -> None:
    views = [
        n
        for n in range(EVENTS, 0, -1)
        if data.audit_actor(n) == "clinician" and data.audit_action(n) == "study.view"
    ]
    result = cli("audit", "list", "--actor", "clinician", "--action", "study", "--limit", "2")
    lines = ok(result)
    assert first_numbers(lines) == views[:2]
    assert lines[0].split()[1:6] == [
        "2026-01-01",
        f"00:00:{views[0]:02d}",
        "clinician",
        "study.view",
        f"study:{views[0] % STUDIES + 1}",
    ]
    assert result.stderr.strip() == f"events 1–2 of {len(views)}; more: --page 2"
    since = ok(cli("audit", "list", "--since", "2026-01-01T00:00:50", "--sort", "oldest"))
    assert first_numbers(since) == list(range(50, EVENTS + 1))
    before = ok(cli("audit", "list", "--until", "2026-01-01T00:00:03+00:00"))
    assert first_numbers(before) == [2, 1]
    refused(cli("audit", "list", "--since", "yesterday"), "--since must be a date like 2026-01-31")
    refused(cli("audit", "list", "--sort", "up"), "'up' is not one of 'newest', 'oldest'")
