"""The list pages at a site's scale: 10,000 studies and 50,000 jobs (with predictions, reviews
and 20,000 audit events), inserted in bulk once per database, on SQLite and on PostgreSQL.

Each page must show the right rows for its search, filters, sort and page, link to the next
page with the same filters, count what matches (bounded: "more than 10,000"), keep the
review queue's priority order and the rule that a clinician sees only some jobs, and refuse a
bad parameter with a 400 that says what is allowed. Which rows are right follows from the
rules in tests/list_data.py.
"""

from __future__ import annotations

import html as html_lib
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import create_engine, delete, func, select, text

from radseg.core import Platform
from radseg.db.models import (
    AuditEvent,
    Dataset,
    DatasetMember,
    Job,
    JobEvent,
    JobState,
    Prediction,
)
from radseg.errors import InputError
from radseg.roles import CLINICIAN_KINDS
from radseg.settings import load_settings
from radseg.web import create_app
from radseg.workflows.studies import StudyFilters, matching_study_ids
from tests import list_data as data
from tests.conftest import POSTGRES_URL
from tests.support import migrated_platform, require
from tests.web_support import DEMO, get_json, log_in_as

STUDIES, JOBS = 10_000, 50_000


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def big(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_problem: str | None,
) -> Iterator[Platform]:
    """One database per backend for the whole module, filled once (a few seconds)."""
    home = tmp_path_factory.mktemp("big")
    schema = ""
    if request.param == "sqlite":
        url = f"sqlite:///{home / 'radseg.db'}"
    else:
        require(postgres_problem is None, postgres_problem or "")
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with create_engine(POSTGRES_URL).begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    settings = load_settings({"home": home / "home", "database_url": url}, environ={})
    platform = migrated_platform(settings, autoload=False, plugins=[DEMO])
    data.fill(platform, studies=STUDIES, jobs=JOBS)
    yield platform
    platform.close()
    if schema:
        engine = create_engine(POSTGRES_URL)
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def client(big: Platform) -> FlaskClient:
    return create_app(big, {"TESTING": True, "WTF_CSRF_ENABLED": False}).test_client()


def page(client: FlaskClient, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, (url, response.get_data(as_text=True)[:500])
    return response.get_data(as_text=True)


def count_text(html: str) -> str:
    match = re.search(r'<span class="count"[^>]*>\s*(.*?)\s*</span>', html, re.S)
    assert match, "the page has no pager"
    return " ".join(match.group(1).split())


def link(html: str, rel: str) -> str:
    match = re.search(rf'<a rel="{rel}" href="([^"]+)"', html)
    assert match, f"no {rel} link"
    return html_lib.unescape(match.group(1))


def newest_first(numbers: list[int]) -> list[int]:
    return sorted(numbers, reverse=True)


# --- studies --------------------------------------------------------------------------------


def test_the_studies_list_pages_newest_first_and_links_the_next_page(
    client: FlaskClient, big: Platform
) -> None:
    log_in_as(client, big, "clinician")
    first = page(client, "/studies")
    assert data.rows(first, "study") == list(range(STUDIES, STUDIES - 50, -1))
    assert count_text(first) == "Studies 1–50 of 10,000"
    assert 'href="/studies?page=200"' in first  # the last page is known: the count is exact
    # a person reads pseudonym, modality, shifted date, description, counts, review state
    n = 9996  # CT chest, dated, predicted (scored), not reviewed
    row = re.search(rf'<tr data-study="{n}">.*?</tr>', first, re.S)
    assert row is not None
    cells = row.group(0)
    assert data.pseudonym(n)[:12] in cells and "<td>CT</td>" in cells
    assert f"{data.study_date(n)} <span" in cells and "(shifted)" in cells
    assert data.description(n) in cells and f"2.25.{n}" not in cells  # no UIDs in lists
    assert "1 awaiting" in cells and f"{data.priority(n):.2f}" in cells

    deep = page(client, "/studies?page=150")
    start = STUDIES - 149 * 50
    assert data.rows(deep, "study") == list(range(start, start - 50, -1))
    assert count_text(deep) == "Studies 7,451–7,500 of 10,000"

    filtered = "/studies?modality=MR&sort=oldest&per_page=20"
    second = page(client, link(page(client, filtered), "next"))
    mr = data.expected(lambda n: data.description(n) == "MR brain", STUDIES)
    assert data.rows(second, "study") == mr[20:40]
    assert count_text(second) == f"Studies 21–40 of {len(mr):,}"
    assert data.rows(page(client, link(second, "prev")), "study") == mr[:20]


def test_studies_are_found_by_pseudonym_description_or_uid(
    client: FlaskClient, big: Platform
) -> None:
    log_in_as(client, big, "researcher")
    key = data.pseudonym(data.RARE_STUDY)
    sharing = data.expected(lambda n: data.pseudonym(n).startswith(key[:6]), STUDIES)
    assert data.rows(page(client, f"/studies?q={key[:6]}"), "study") == newest_first(sharing)
    assert data.rows(page(client, "/studies?q=sarcoma"), "study") == [data.RARE_STUDY]
    assert data.rows(page(client, f"/studies?q=2.25.{data.RARE_STUDY}"), "study") == [
        data.RARE_STUDY
    ]
    found = page(client, "/studies?q=mr+BRAIN")
    assert count_text(found).endswith(f"of {STUDIES // 4:,}")
    assert page(client, "/studies?q=%25").count("data-study=") == 0  # % is a character here

    api = get_json(client, f"/api/studies?q={key}")
    (row,) = api["studies"]
    assert (row["id"], row["patient_key"], row["description"]) == (
        data.RARE_STUDY,
        key,
        data.RARE,
    )
    assert row["study_date"] == data.study_date(data.RARE_STUDY).isoformat()  # type: ignore[union-attr]
    assert row["study_date_shifted"] is True and row["modalities"] == ["CT"]
    assert api["page"] == {
        "total": 1,
        "total_capped": False,
        "limit": 100,
        "offset": 0,
        "has_next": False,
    }


@pytest.mark.parametrize(
    ("show", "rule"),
    [
        ("labelled", data.labelled),
        ("unlabelled", lambda n: not data.labelled(n)),
        ("predicted", data.predicted),
        ("awaiting_review", lambda n: data.predicted(n) and not data.accepted(n)),
        ("reviewed", lambda n: data.predicted(n) and data.accepted(n)),
    ],
)
def test_studies_filter_by_labels_predictions_and_review(
    client: FlaskClient, big: Platform, show: str, rule: Any
) -> None:
    log_in_as(client, big, "clinician")
    wanted = newest_first(data.expected(rule, STUDIES))
    html = page(client, f"/studies?show={show}&modality=CT&per_page=30&page=3")
    ct = [n for n in wanted if data.description(n).startswith("CT") or n == data.RARE_STUDY]
    assert data.rows(html, "study") == ct[60:90]
    assert count_text(html) == f"Studies 61–90 of {len(ct):,}"
    api = get_json(client, f"/api/studies?show={show}&modality=CT&limit=30&offset=60")
    assert [s["id"] for s in api["studies"]] == ct[60:90]
    assert api["page"]["total"] == len(ct)


def test_studies_sort_by_date_pseudonym_and_description(client: FlaskClient, big: Platform) -> None:
    log_in_as(client, big, "clinician")
    numbers = list(range(1, STUDIES + 1))
    dated = [n for n in numbers if data.study_date(n)]
    by_date = sorted(dated, key=lambda n: (data.study_date(n), n))
    assert data.rows(page(client, "/studies?sort=date_oldest&per_page=10"), "study") == by_date[:10]
    newest = sorted(dated, key=lambda n: (data.study_date(n), n), reverse=True)
    assert data.rows(page(client, "/studies?sort=date_newest&per_page=10"), "study") == newest[:10]
    undated = sorted((n for n in numbers if not data.study_date(n)), reverse=True)
    last = page(client, "/studies?sort=date_newest&per_page=100&page=100")
    assert data.rows(last, "study") == undated[-100:]  # studies without a date come last
    by_key = sorted(numbers, key=data.pseudonym)
    assert data.rows(page(client, "/studies?sort=patient&per_page=10"), "study") == by_key[:10]
    by_text = sorted(numbers, key=lambda n: (data.description(n), n))
    deep = page(client, "/studies?sort=description&per_page=10&page=400")
    assert data.rows(deep, "study") == by_text[3990:4000]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("/studies?sort=uid", "sort: Input should be 'newest', 'oldest', 'date_newest'"),
        ("/studies?per_page=201", "per_page: Input should be less than or equal to 200"),
        ("/studies?page=0", "page: Input should be greater than or equal to 1"),
        ("/studies?show=everything", "show: Input should be 'all', 'labelled'"),
        ("/studies?modality=CT%27--", "modality: String should match pattern"),
        ("/studies?q=a&q=b", "q: give it once, not 2 times"),
        ("/api/studies?limit=501", "limit: Input should be less than or equal to 500"),
        ("/jobs?kind=mining", "kind: unknown job kind 'mining'; use one of: agreement, "),
        ("/api/jobs?state=lost", "state: Input should be 'queued', "),
        ("/jobs?sort=priority", "sort: Input should be 'newest' or 'oldest'"),
        ("/review?sort=random", "sort: Input should be 'priority', 'oldest' or 'newest'"),
        ("/review?per_page=1000", "per_page: Input should be less than or equal to 200"),
        ("/models?status=retired", "status: Input should be 'candidate' or 'promoted'"),
        ("/api/model-versions?sort=best", "sort: Input should be 'newest', 'oldest' or 'model'"),
        ("/admin/audit?since=yesterday", "since must be a date like 2026-01-31"),
        ("/admin/audit?sort=up", "sort: Input should be 'newest' or 'oldest'"),
        ("/api/audit?until=soon", "until must be a date like 2026-01-31"),
        ("/api/audit?limit=0", "limit: Input should be greater than or equal to 1"),
    ],
)
def test_bad_list_parameters_answer_400_saying_what_is_allowed(
    client: FlaskClient, big: Platform, url: str, says: str
) -> None:
    log_in_as(client, big, "admin")
    response = client.get(url, headers={"Accept": "application/json"})
    assert response.status_code == 400, url
    assert says in response.get_data(as_text=True), response.get_data(as_text=True)


# --- jobs -----------------------------------------------------------------------------------


def test_the_jobs_list_pages_filters_and_searches(client: FlaskClient, big: Platform) -> None:
    log_in_as(client, big, "researcher")
    first = page(client, "/jobs")
    assert data.rows(first, "id") == list(range(JOBS, JOBS - 50, -1))
    assert count_text(first) == "Jobs 1–50 of more than 10,000"
    deep = page(client, "/jobs?page=900")
    assert data.rows(deep, "id") == list(range(JOBS - 899 * 50, JOBS - 900 * 50, -1))

    failed_trains = data.expected(
        lambda n: data.job_kind(n) == "train" and data.job_state(n) == JobState.FAILED, JOBS
    )
    html = page(client, "/jobs?state=failed&kind=train&sort=oldest&per_page=25")
    assert data.rows(html, "id") == failed_trains[:25]
    assert count_text(html) == f"Jobs 1–25 of {len(failed_trains):,}"
    following = page(client, link(html, "next"))
    assert data.rows(following, "id") == failed_trains[25:50]
    # the page's script polls the API for exactly these rows
    poll = re.search(r'data-url="([^"]+)"', following)
    assert poll is not None
    polled = get_json(client, html_lib.unescape(poll.group(1)))
    assert [j["id"] for j in polled["jobs"]] == failed_trains[25:50]

    assert data.rows(page(client, "/jobs?q=%23123"), "id") == [123]
    alices = newest_first(data.expected(lambda n: data.job_owner(n) == "alice", JOBS))
    assert data.rows(page(client, "/jobs?q=ali&per_page=10"), "id") == alices[:10]


def test_a_clinician_pages_through_only_the_jobs_they_may_see(
    client: FlaskClient, big: Platform
) -> None:
    log_in_as(client, big, "clinician")
    visible = newest_first(
        data.expected(
            lambda n: data.job_owner(n) == "clinician" or data.job_kind(n) in CLINICIAN_KINDS,
            JOBS,
        )
    )
    html = page(client, "/jobs?per_page=200&page=60")
    assert data.rows(html, "id") == visible[59 * 200 : 60 * 200]
    ingests = [n for n in visible if data.job_kind(n) == "ingest"]  # the clinician's own only
    api = get_json(client, "/api/jobs?kind=ingest&limit=500&offset=0")
    assert [j["id"] for j in api["jobs"]] == ingests[:500]
    assert api["page"]["total"] == len(ingests)


# --- review queue ---------------------------------------------------------------------------


def test_the_review_queue_keeps_its_priority_order_across_pages(
    client: FlaskClient, big: Platform
) -> None:
    log_in_as(client, big, "clinician")
    awaiting = data.expected(lambda n: data.predicted(n) and not data.accepted(n), STUDIES)
    scored = sorted(
        (n for n in awaiting if data.priority(n) is not None),
        key=lambda n: (-(data.priority(n) or 0), n),  # ties: oldest prediction first
    )
    unscored = [n for n in awaiting if data.priority(n) is None]
    order = scored + unscored
    first = page(client, "/review?per_page=100")
    assert count_text(first) == f"Predictions 1–100 of {len(awaiting):,}"
    with big.sessions() as session:
        series_of = dict(session.execute(select(Prediction.id, Prediction.series_id)).all())
    studies_on = [series_of[p] for p in data.rows(first, "prediction")]
    assert studies_on == order[:100]
    boundary = page(client, f"/review?per_page=100&page={len(scored) // 100 + 1}")
    start = len(scored) // 100 * 100
    assert [series_of[p] for p in data.rows(boundary, "prediction")] == order[start : start + 100]

    key = data.pseudonym(awaiting[7])
    found = page(client, f"/review?study={key[:10]}")
    assert [series_of[p] for p in data.rows(found, "prediction")] == [awaiting[7]]
    api = get_json(client, f"/api/review-queue?study={key[:10]}&state=all")
    assert len(api["predictions"]) == 1 and api["page"]["total"] == 1


# --- the Research page's study chooser ------------------------------------------------------


def buttons(html: str, rel: str) -> int:
    """The page a chooser's ``prev``/``next`` button asks for."""
    match = re.search(
        rf'<button type="submit" class="link" name="page" value="(\d+)" '
        rf'data-rel="{rel}">',
        html,
    )
    assert match, f"no {rel} button"
    return int(match.group(1))


def ticked(html: str) -> tuple[list[int], list[int]]:
    """The studies ticked on the page's rows, and those carried from other pages."""
    boxes = re.findall(r'<input type="checkbox" name="study" value="(\d+)"[^>]*?(checked)?>', html)
    carried = re.findall(r'<input type="hidden" name="study" value="(\d+)">', html)
    return [int(n) for n, on in boxes if on], [int(n) for n in carried]


def test_the_research_page_chooses_studies_a_page_at_a_time_and_keeps_the_ticks(
    client: FlaskClient, big: Platform
) -> None:
    log_in_as(client, big, "researcher")
    first = page(client, "/datasets")
    assert data.rows(first, "study") == list(range(STUDIES, STUDIES - 50, -1))
    assert count_text(first) == "Studies 1–50 of 10,000"
    assert buttons(first, "next") == 2 and 'name="page" value="200">200</button>' in first
    n = 9996
    row = re.search(rf'<tr data-study="{n}">.*?</tr>', first, re.S)
    assert row is not None
    assert data.pseudonym(n)[:12] in row.group(0) and "(shifted)" in row.group(0)
    assert f"2.25.{n}" not in first  # people read pseudonyms and dates, not UIDs

    # the chooser's own search and filters, as the studies list has them
    mr = data.expected(lambda n: data.description(n) == "MR brain", STUDIES)
    base = "/datasets?modality=MR&sort=oldest&per_page=20"
    # page 2 of the MR studies, asked for with one study ticked on page 1 and two elsewhere
    url = f"{base}&page=2&study={mr[0]}&study=7&study={mr[25]}&study=7"
    second = page(client, url)
    assert data.rows(second, "study") == mr[20:40]
    assert count_text(second) == f"Studies 21–40 of {len(mr):,}"
    assert ticked(second) == ([mr[25]], [mr[0], 7])  # each once; the hidden ones go along
    assert '<span id="ticked-count">3</span>' in second
    assert f'<span id="matching-count">{len(mr):,}</span>' in second
    assert buttons(second, "prev") == 1 and buttons(second, "next") == 3
    # the build and predict fields typed before changing page are there again
    kept = page(client, f"{base}&name=chest&channels=lung&seed=4&model_version=1&studies=matching")
    assert 'name="studies" value="matching" checked' in kept
    assert 'name="name" list="dataset-list" value="chest"' in kept
    assert 'name="channels" value="lung"' in kept and 'name="seed" value="4"' in kept
    assert 'name="model_version" min="1" list="model-versions" value="1"' in kept
    assert '<option value="1" label="fpn-big v1 (' in kept  # the newest versions, suggested

    too_many = "&".join(f"study={i}" for i in range(1, 202))
    refused = client.get(f"/datasets?{too_many}", headers={"Accept": "application/json"})
    assert refused.status_code == 400
    assert "study: at most 200 may be ticked" in refused.json["detail"]
    for bad, says in [
        ("study=abc", "study: 'abc' is not an id"),
        ("show=everything", "show: Input should be 'all'"),
        ("per_page=500", "per_page: Input should be less than or equal to 200"),
    ]:
        refused = client.get(f"/datasets?{bad}", headers={"Accept": "application/json"})
        assert refused.status_code == 400 and says in refused.json["detail"], bad
    # "all studies matching the search" has a bound, and says what to do past it
    with big.sessions() as session:
        assert matching_study_ids(session, StudyFilters(q="mr brain", sort="oldest")) == mr
        with pytest.raises(InputError, match="more than 2,499 studies match the search; narrow"):
            matching_study_ids(session, StudyFilters(q="MR"), at_most=len(mr) - 1)


@pytest.fixture
def undone(big: Platform) -> Iterator[None]:
    """Removes what a test adds to the module's database (a dataset, jobs, audit events), so
    the other tests see the rows tests/list_data.py inserted."""
    with big.sessions() as session:
        before = {
            t: session.scalar(select(func.max(t.id))) or 0 for t in (Job, AuditEvent, Dataset)
        }
    yield
    with big.sessions.begin() as session:
        session.execute(delete(DatasetMember).where(DatasetMember.dataset_id > before[Dataset]))
        session.execute(delete(Dataset).where(Dataset.id > before[Dataset]))
        session.execute(delete(JobEvent).where(JobEvent.job_id > before[Job]))
        session.execute(delete(Job).where(Job.id > before[Job]))
        session.execute(delete(AuditEvent).where(AuditEvent.id > before[AuditEvent]))


def test_research_builds_and_predicts_from_the_ticked_studies_or_all_matching_the_search(
    client: FlaskClient, big: Platform, undone: None
) -> None:
    log_in_as(client, big, "researcher")
    json_answer = {"Accept": "application/json"}
    built = client.post(
        "/datasets/build",
        data={
            "name": "mr-labelled",
            "studies": "matching",
            "q": "mr brain",
            "show": "labelled",
            "study": "1",
        },  # a tick is not a choice when the search is
        headers=json_answer,
    )
    assert built.status_code == 202, built.get_data(as_text=True)
    wanted = data.expected(
        lambda n: data.description(n) == "MR brain" and data.labelled(n), STUDIES
    )
    with big.sessions() as session:
        dataset = session.scalars(select(Dataset).where(Dataset.name == "mr-labelled")).one()
        members = sorted(m.series_id for m in dataset.members)
    assert members == wanted  # series n is study n's one series

    predicted = client.post(
        "/predict",
        data={"model_version": "1", "studies": "ticked", "study": ["3", "9", "3"]},
    )
    assert predicted.status_code == 303
    matching = client.post(
        "/predict",
        data={"model_version": "1", "studies": "matching", "q": "sarcoma"},
        headers=json_answer,
    )
    assert matching.status_code == 202
    with big.sessions() as session:
        queued = session.scalars(
            select(Job.payload)
            .where(Job.kind == "predict", Job.state == JobState.QUEUED)
            .order_by(Job.id.desc())
            .limit(3)
        ).all()
    assert [p["series_instance_uid"] for p in queued] == [
        f"2.25.{data.RARE_STUDY}.1",
        "2.25.9.1",
        "2.25.3.1",
    ]

    nothing = client.post(
        "/predict",
        data={"model_version": "1", "studies": "matching", "q": "no such study"},
        headers=json_answer,
    )
    assert nothing.status_code == 400 and "no study matches the search" in nothing.json["detail"]
    for form, says in [
        ({"studies": "some"}, "studies: Input should be 'ticked' or 'matching'"),
        ({"studies": "matching", "show": "odd"}, "show: Input should be 'all'"),
        ({"study": [str(i) for i in range(1, 202)]}, "201 studies are ticked; at most 200"),
    ]:
        refused = client.post("/datasets/build", data={"name": "x", **form}, headers=json_answer)
        assert refused.status_code == 400 and says in refused.json["detail"], form


# --- models and the audit log ---------------------------------------------------------------


def test_models_and_the_audit_log_page_and_filter(client: FlaskClient, big: Platform) -> None:
    log_in_as(client, big, "admin")
    models = page(client, "/models?q=FPN")
    assert data.rows(models, "version") == [1]
    assert data.rows(page(client, "/models?q=unet"), "version") == []
    assert data.rows(page(client, "/models?status=candidate"), "version") == []
    # the same list in the JSON API, as the Models page shows it
    api = get_json(client, "/api/model-versions?q=FPN&sort=model&limit=5")
    (version,) = api["model_versions"]
    assert (version["id"], version["model"], version["dataset"]) == (1, "fpn-big", "big")
    assert api["page"] == {
        "total": 1,
        "total_capped": False,
        "limit": 5,
        "offset": 0,
        "has_next": False,
    }
    assert get_json(client, "/api/model-versions?status=candidate")["model_versions"] == []

    events = 20_000
    html = page(client, "/admin/audit?action=study&actor=clinician&per_page=20")
    wanted = newest_first(
        data.expected(
            lambda n: data.audit_actor(n) == "clinician" and data.audit_action(n) == "study.view",
            events,
        )
    )
    assert data.rows(html, "event") == wanted[:20]
    assert count_text(html) == f"Events 1–20 of {len(wanted):,}"
    following = page(client, link(html, "next"))
    assert data.rows(following, "event") == wanted[20:40]
    api = get_json(client, "/api/audit?action=study&actor=clinician&limit=20&offset=20")
    assert [e["id"] for e in api["events"]] == wanted[20:40]
    assert api["events"][0]["target"] == f"study:{wanted[20] % STUDIES + 1}"
    assert api["page"]["total"] == len(wanted) and api["page"]["has_next"] is True
    since = (data.BASE_TIME + timedelta(seconds=19_990)).strftime("%Y-%m-%dT%H:%M:%S")
    latest = get_json(client, f"/api/audit?since={since}&sort=oldest")
    assert [e["id"] for e in latest["events"]] == list(range(19_990, 20_001))
    oldest = page(client, "/admin/audit?sort=oldest&per_page=10&page=3")
    assert data.rows(oldest, "event") == list(range(21, 31))
    assert count_text(page(client, "/admin/audit")) == "Events 1–50 of more than 10,000"
    log_in_as(client, big, "researcher")
    assert client.get("/api/audit").status_code == 403  # the audit log is for admins


def test_uids_are_on_the_detail_page_with_a_copy_button(client: FlaskClient, big: Platform) -> None:
    log_in_as(client, big, "clinician")
    html = page(client, f"/studies/{data.RARE_STUDY}")
    uid = f"2.25.{data.RARE_STUDY}"
    assert f'<code class="uid">{uid}</code>' in html
    assert f'data-copy="{uid}"' in html and f'data-copy="{uid}.1"' in html
    assert "copy.js" in html
    assert "(shifted)" in html
