"""``make bench`` ends with one table of every benchmark's goals (tests/bench/summary.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench import summary


def test_rows_recorded_by_the_benchmarks_make_one_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "bench-results" / "summary.jsonl"
    monkeypatch.setenv(summary.ENV, str(rows))
    summary.record("jobs: submit → start latency p50", "≤ 1×", 0.8, True)
    summary.record("ingest: full ingest / bare read", "≤ 3×", 5.214, False)
    summary.record("web_load: slice PNG p95", "≤ 50 ms", "45.5 ms", True)

    assert summary.main(["inference"]) == 1  # a benchmark that failed fails make bench
    out = capsys.readouterr().out
    assert "machine: " in out and " cores" in out
    table = out[out.index("| benchmark |") :].splitlines()
    assert table[2:] == [
        "| jobs: submit → start latency p50 | ≤ 1× | 0.80× | yes |",
        "| ingest: full ingest / bare read | ≤ 3× | 5.21× | **no** |",
        "| web_load: slice PNG p95 | ≤ 50 ms | 45.5 ms | yes |",
        "| inference | – | exited with an error | **no** |",
    ]
    assert summary.main([]) == 0


def test_a_benchmark_run_on_its_own_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(summary.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    summary.record("jobs: latency", "≤ 1×", 1.2, False)
    assert list(tmp_path.iterdir()) == []
