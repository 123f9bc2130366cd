"""CLI commands that manage the platform (the pipeline itself is in test_pipeline.py)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from radseg.cli import main
from radseg.core import Platform
from radseg.db.models import AuditEvent, User


@pytest.fixture
def cli(platform: Platform, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(main, ["--home", str(platform.home), *args], input=input)

    return invoke


def _statuses(cli) -> dict[str, str]:
    result = cli("plugins", "list", "--json")
    assert result.exit_code == 0, result.output
    return {p["name"]: p["status"] for p in json.loads(result.output)}


def test_plugins_disable_and_enable_take_effect_in_the_next_process(
    cli, platform: Platform
) -> None:
    assert _statuses(cli)["nifti"] == "enabled"
    assert cli("plugins", "disable", "nifti").exit_code == 0
    assert _statuses(cli)["nifti"] == "disabled"  # a new process reads the database
    refused = cli("export", "--prediction", "1", "--format", "nifti", "--out", "x.nii.gz")
    assert refused.exit_code == 1 and "exporter 'nifti' is not registered" in refused.output
    assert cli("plugins", "enable", "nifti").exit_code == 0
    assert _statuses(cli)["nifti"] == "enabled"
    unknown = cli("plugins", "disable", "nope")
    assert unknown.exit_code == 1 and "installed plugins: " in unknown.output
    with platform.sessions() as session:
        actions = [e.action for e in session.query(AuditEvent).order_by(AuditEvent.id)]
    assert actions == ["plugin.disable", "plugin.enable"]


def test_init_migrates_and_creates_the_first_admin_once(cli, platform: Platform) -> None:
    first = cli("init", "--admin-password", "a-long-password")
    assert first.exit_code == 0 and "created admin user 'admin'" in first.output
    again = cli("init", "--admin-password", "a-long-password")
    assert again.exit_code == 0 and "already exists" in again.output
    created = cli(
        "users", "create", "carol", "--role", "clinician", input="pw-for-carol\npw-for-carol\n"
    )
    assert created.exit_code == 0, created.output
    taken = cli("users", "create", "carol", input="pw-for-carol\npw-for-carol\n")
    assert taken.exit_code == 1
    with platform.sessions() as session:
        roles = {u.username: u.role.value for u in session.query(User)}
    assert roles == {"admin": "admin", "carol": "clinician"}


def test_a_database_that_was_never_set_up_gets_a_one_line_hint(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        main, ["--home", str(tmp_path / "fresh"), "jobs", "list"], env={"RADSEG_DATABASE_URL": ""}
    )
    assert result.exit_code == 1
    assert "run `radseg init`" in result.output
    assert "Traceback" not in result.output


def test_training_summary_names_each_class_dice() -> None:
    from radseg.cli.models import val_summary

    metrics = {
        "val": {"mean_dice": 0.9, "per_class": {"liver": {"dice": 0.95}, "lung": {"dice": 0.85}}}
    }
    assert val_summary(metrics) == "val mean Dice 0.900 (liver 0.950, lung 0.850)"
    assert "no validation images" in val_summary({"iterations": 10})
