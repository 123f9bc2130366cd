"""``radseg predictions queue``: the review queue on the command line, the most doubtful first,
with each prediction's priority and reason; ``--sort`` keeps the other orders."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from radseg.cli import main
from radseg.contracts import Geometry
from radseg.core import Platform
from tests.support import add_series_with_prediction


@pytest.fixture
def cli(platform: Platform, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RADSEG_DATABASE_URL", platform.settings.database_url_resolved)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, ["--home", str(platform.home), *args])

    return invoke


def test_the_queue_lists_the_most_doubtful_first_with_the_reason(cli, platform: Platform) -> None:
    geometry = Geometry((4, 4, 2), (1.0, 1.0, 1.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    ids = []
    with platform.sessions.begin() as session:
        for priority, reason in ((None, ""), (0.3, "liver: 30% of it uncertain"), (0.8, "x")):
            row = add_series_with_prediction(
                session,
                platform,
                hu=np.zeros((2, 4, 4), np.float32),
                mask=np.zeros((2, 4, 4), np.uint8),
                geometry=geometry,
                classes=[{"id": 1, "name": "liver"}],
            )
            row.priority, row.priority_reason = priority, reason
            ids.append(row.id)
    unscored, low, high = ids
    result = cli("predictions", "queue")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[1] for line in lines] == [str(high), str(low), str(unscored)]
    assert lines[1].startswith(f"prediction {low}  priority 0.30  patient ")
    assert lines[1].endswith("  liver: 30% of it uncertain")
    assert lines[2].startswith(f"prediction {unscored}  priority -  patient ")
    oldest = cli("predictions", "queue", "--sort", "oldest", "--limit", "1")
    assert oldest.stdout.split()[1] == str(unscored) and len(oldest.stdout.splitlines()) == 1
    assert oldest.stderr.strip() == "predictions 1–1 of 3; more: --page 2"
    refused = cli("predictions", "queue", "--sort", "random")
    assert refused.exit_code == 2 and "'random' is not one of" in refused.output
