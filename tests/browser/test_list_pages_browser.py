"""Search, filters and paging of the list pages in a real browser (Debian's chromium), and the
copy button next to a UID on a study's page.

The rows come from tests/list_data.py (its rules say which rows each page must show), a few
hundred of them: the scale itself is tested through the test client (test_list_pages.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from werkzeug.security import generate_password_hash

from radseg.core import Platform
from radseg.db.models import Dataset, Job
from radseg.settings import load_settings
from tests import list_data as data
from tests.support import migrated_platform
from tests.web_support import serving

pytestmark = pytest.mark.browser

PASSWORD = "browser password"
STUDIES, JOBS = 130, 120


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, str]]:
    home: Path = tmp_path_factory.mktemp("lists") / "home"
    platform = migrated_platform(load_settings({"home": home}, environ={}), autoload=False)
    digest = generate_password_hash(PASSWORD, method="scrypt")
    data.fill(platform, studies=STUDIES, jobs=JOBS, events=30, password_hash=digest)
    try:
        with serving(platform) as url:
            yield platform, url
    finally:
        platform.close()


@pytest.fixture(scope="module")
def base(served: tuple[Platform, str]) -> str:
    return served[1]


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(20_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def log_in(page: Any, base: str, user: str, path: str) -> None:
    page.goto(base + path)
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + path)


def shown(page: Any, attribute: str) -> list[int]:
    return [
        int(v)
        for v in page.eval_on_selector_all(
            f"tr[data-{attribute}]",
            f"""
        rows => rows.map(r => r.dataset.{attribute})""",
        )
    ]


def test_a_clinician_pages_searches_and_filters_the_studies(page: Any, base: str) -> None:
    log_in(page, base, "clinician", "/studies")
    assert shown(page, "study") == list(range(STUDIES, STUDIES - 50, -1))
    assert page.inner_text(".pager .count") == f"Studies 1–50 of {STUDIES}"
    page.click("a[rel=next]")
    page.wait_for_url("**/studies?page=2")
    assert shown(page, "study") == list(range(STUDIES - 50, STUDIES - 100, -1))

    page.fill("#study-filters input[name=q]", data.pseudonym(77)[:20])
    page.press("#study-filters input[name=q]", "Enter")
    page.wait_for_url("**/studies?q=*")
    assert shown(page, "study") == [77]  # a new search starts on the first page

    page.fill("#study-filters input[name=q]", "")
    page.select_option("#study-filters select[name=modality]", "MR")
    page.select_option("#study-filters select[name=sort]", "oldest")
    page.click("#study-filters button[type=submit]")
    page.wait_for_url("**/studies?*modality=MR*")
    mr = data.expected(lambda n: data.description(n) == "MR brain", STUDIES)
    assert shown(page, "study") == mr
    assert page.inner_text(".pager .count") == f"Studies 1–{len(mr)} of {len(mr)}"
    assert page.locator("a[rel=next]").count() == 0


def test_the_jobs_script_keeps_the_filtered_page_it_polls(page: Any, base: str) -> None:
    log_in(page, base, "researcher", "/jobs?kind=train&per_page=10&page=2")
    trains = sorted(data.expected(lambda n: data.job_kind(n) == "train", JOBS), reverse=True)
    assert shown(page, "id") == trains[10:20]
    with page.expect_response(lambda r: "/api/jobs?" in r.url and r.status == 200):
        pass  # the table's next poll
    assert shown(page, "id") == trains[10:20]


def test_a_study_page_copies_its_uid(page: Any, base: str) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    log_in(page, base, "clinician", "/studies/77")
    uid = "2.25.77"
    button = page.locator(f'button[data-copy="{uid}"]')
    button.click()
    page.wait_for_function("b => b.textContent === 'copied'", arg=button.element_handle())
    assert page.evaluate("navigator.clipboard.readText()") == uid


def test_the_research_page_keeps_ticks_across_pages_and_builds_from_them(
    page: Any, served: tuple[Platform, str]
) -> None:
    platform, base = served
    with platform.sessions() as session:
        last_job = session.scalar(select(func.max(Job.id))) or 0
    log_in(page, base, "researcher", "/datasets")
    assert shown(page, "study") == list(range(STUDIES, STUDIES - 50, -1))
    page.check("#choose-studies input[value='130']")
    page.fill("#choose-form input[name=name]", "picked")
    page.click("#choose-form button[data-rel=next]")
    page.wait_for_url("**/datasets?*page=2*")
    assert shown(page, "study") == list(range(STUDIES - 50, STUDIES - 100, -1))
    assert page.input_value("#choose-form input[name=name]") == "picked"  # typed, kept
    assert page.inner_text("#ticked-count") == "1"
    page.check("#choose-studies input[value='75']")
    page.click("#build")
    page.wait_for_url("**/jobs/*")
    assert "Building dataset 'picked'" in page.inner_text("body")
    try:
        with platform.sessions() as session:
            dataset = session.scalars(select(Dataset).where(Dataset.name == "picked")).one()
            assert sorted(m.series_id for m in dataset.members) == [75, 130]

        # or every study matching the search, whichever page is shown
        page.goto(base + "/datasets?modality=MR&per_page=10")
        page.check("#chosen input[value=matching]")
        page.fill("#choose-form input[name=name]", "all-mr")
        page.click("#build")
        page.wait_for_url("**/jobs/*")
        mr = data.expected(lambda n: data.description(n) == "MR brain", STUDIES)
        with platform.sessions() as session:
            dataset = session.scalars(select(Dataset).where(Dataset.name == "all-mr")).one()
            assert sorted(m.series_id for m in dataset.members) == mr
    finally:  # the other tests page through the jobs tests/list_data.py inserted
        with platform.sessions.begin() as session:
            session.execute(delete(Job).where(Job.id > last_job))
