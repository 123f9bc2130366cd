"""The one table ``make bench`` ends with: each benchmark's goal, this run's ratio, met or not.

Each benchmark module calls :func:`record` for the goals it measures; a row is appended, as one
JSON line, to the file that ``RADSEG_BENCH_SUMMARY`` names (``make bench`` sets it and empties
it first). A benchmark run on its own, without the variable, records nothing. At the end::

    .venv/bin/python -m tests.bench.summary [NAME ...]

prints the rows as a Markdown table (the NAMEs: benchmarks that failed, shown as such), with
the machine it ran on; docs/benchmarks.md opens with that table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as stdlib_platform
from pathlib import Path

#: the environment variable naming the JSON Lines file the rows go to
ENV = "RADSEG_BENCH_SUMMARY"


def record(name: str, goal: str, ratio: float | str, met: bool) -> None:
    """Add a row: ``name`` (what was measured), ``goal`` (e.g. ``"≤ 3× (a)"``), ``ratio``
    (this run's, a float shown as ``1.23×``, or a text for a goal that is not a ratio, e.g.
    ``"45.5 ms"``) and whether the goal is ``met``. Does nothing unless ``RADSEG_BENCH_SUMMARY``
    is set."""
    path = os.environ.get(ENV)
    if not path:
        return
    shown = f"{ratio:.2f}×" if isinstance(ratio, float | int) else ratio
    row = {"name": name, "goal": goal, "ratio": shown, "met": bool(met)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as out:  # one write per row: whole lines only
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


def machine() -> str:
    """The machine in a few words: CPU, cores, memory, load (the ratios move with the load)."""
    cpu = stdlib_platform.processor() or stdlib_platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB"
    except (OSError, ValueError):
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}, Python {stdlib_platform.python_version()}; "
        f"load average {load} at the end"
    )


def table(rows: list[dict[str, object]], failed: list[str]) -> str:
    lines = ["| benchmark | goal | this run | met |", "|---|---|---|:---:|"]
    lines += [
        f"| {r['name']} | {r['goal']} | {r['ratio']} | {'yes' if r['met'] else '**no**'} |"
        for r in rows
    ]
    lines += [f"| {name} | – | exited with an error | **no** |" for name in failed]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("failed", nargs="*", help="benchmarks that exited with an error")
    args = parser.parse_args(argv)
    path = os.environ.get(ENV)
    if not path:
        parser.error(f"{ENV} is not set: which file holds the rows?")
    source = Path(path)
    text = source.read_text(encoding="utf-8") if source.exists() else ""
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    print(f"\n## Summary of this run\n\nmachine: {machine()}\n")
    print(table(rows, args.failed))
    return 1 if args.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
