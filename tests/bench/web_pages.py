"""The list pages at a site's scale: 10,000 studies, 50,000 jobs, 20,000 audit events and 2,000
model versions; the p95 of each page's first page, a deep page and a search (and the Research
page's study chooser, with studies ticked on other pages).

``python -m tests.bench.web_pages [--requests 40] [--database-url URL]``

The rows are inserted in bulk (tests/list_data.py, the same rules the tests check pages
against) into a migrated database (SQLite in a temporary folder unless ``--database-url`` names
another, e.g. the PostgreSQL of the tests). Each page is requested through the WSGI app in this
process, one request at a time, as its user (a researcher; an admin for the audit log), after
three warm-up requests; the time is the whole request: routing, login check, queries, template.
On PostgreSQL the tables are analysed after the load, as autovacuum would do within a minute.
Goal: p95 ≤ 100 ms for every page. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

from radseg.core import create_platform
from radseg.db.migrate import upgrade
from radseg.settings import load_settings
from radseg.web import create_app
from tests import list_data as data
from tests.bench.summary import machine, record
from tests.web_support import log_in_as

P95_TARGET_MS = 100.0
STUDIES, JOBS, EVENTS, VERSIONS = 10_000, 50_000, 20_000, 2_000


def cases() -> list[tuple[str, str, str]]:
    """(list, case, url) of every measured page."""
    key = data.pseudonym(data.RARE_STUDY)[:8]
    ticked = "&".join(f"study={n}" for n in range(1, 101))
    return [
        ("studies", "first page", "/studies"),
        ("studies", "deep page (150 of 200)", "/studies?page=150"),
        ("studies", "search a pseudonym", f"/studies?q={key}"),
        ("studies", "search a description", "/studies?q=brain&sort=date_newest"),
        ("studies", "filter awaiting review", "/studies?show=awaiting_review&modality=CT"),
        ("review queue", "first page", "/review"),
        ("review queue", "deep page (50 of 60)", "/review?page=50"),
        ("review queue", "search a pseudonym", f"/review?study={key}"),
        ("jobs", "first page", "/jobs"),
        ("jobs", "deep page (900 of 1,000)", "/jobs?page=900"),
        ("jobs", "search an owner", "/jobs?q=alice&state=failed"),
        ("models", "first page", "/models"),
        ("models", "deep page (35 of 40)", "/models?page=35"),
        ("models", "search a name", "/models?q=unet-19"),
        ("audit log", "first page", "/admin/audit"),
        ("audit log", "deep page (300 of 400)", "/admin/audit?page=300"),
        ("audit log", "filter a target", "/admin/audit?target=study:42"),
        ("research", "first page", "/datasets"),
        ("research", "deep page (150 of 200), 100 ticked", f"/datasets?page=150&{ticked}"),
        ("research", "search, labelled", "/datasets?q=brain&show=labelled&sort=date_newest"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40, help="timed requests per page")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        overrides: dict[str, object] = {"home": home}
        if args.database_url:
            overrides["database_url"] = args.database_url
        platform = create_platform(load_settings(overrides, environ={}), autoload=False)
        upgrade(platform.engine)
        platform.ensure_home()
        started = time.perf_counter()
        data.fill(platform, studies=STUDIES, jobs=JOBS, events=EVENTS, versions=VERSIONS)
        filled = time.perf_counter() - started
        if platform.engine.dialect.name == "postgresql":
            # what autovacuum does within a minute of a bulk load: without statistics, the
            # planner guesses a few rows per table and picks nested loops over 10,000 rows
            with platform.engine.begin() as connection:
                connection.execute(text("ANALYZE"))
        backend = platform.engine.dialect.name
        app = create_app(platform, {"TESTING": True})
        clients = {}
        for user in ("researcher", "admin"):
            clients[user] = app.test_client()
            log_in_as(clients[user], platform, user)
        print(f"{machine()}; {backend}; rows inserted in {filled:.1f} s\n")
        print("| list | page | p50 ms | p95 ms | goal |")
        print("|---|---|---|---|---|")
        for name, case, url in cases():
            client = clients["admin" if name == "audit log" else "researcher"]
            times = []
            for i in range(3 + args.requests):
                t0 = time.perf_counter()
                response = client.get(url)
                elapsed = (time.perf_counter() - t0) * 1000
                if response.status_code != 200:
                    raise SystemExit(f"{url}: {response.status_code}")
                if i >= 3:
                    times.append(elapsed)
            p50, p95 = np.percentile(times, [50, 95])
            met = p95 <= P95_TARGET_MS
            print(f"| {name} | {case} | {p50:.1f} | {p95:.1f} | {'met' if met else 'MISSED'} |")
            record(
                f"web_pages: {name}, {case} p95 ({backend})",
                f"≤ {P95_TARGET_MS:.0f} ms",
                f"{p95:.1f} ms",
                met,
            )
        platform.close()


if __name__ == "__main__":
    main()
