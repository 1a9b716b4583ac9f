"""The query API on both engines: ``Oban.list_jobs`` (filters, keyset paging), ``count_jobs``
and ``nodes``.

Jobs are inserted through the public API and, where a test needs other states, moved there
with one plain UPDATE both engines accept. Expected results are computed in the test from
the jobs it inserted, never from the implementation's own helpers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from oban import Job, JobCounts, JobPage, JobState, NodeInfo, Oban, job, worker
from oban._engines._payloads import UnreadableJob
from oban.worker import worker_name
from tests.helpers import eventually

# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------

T = TypeVar("T")
GATE = threading.Event()
STARTED: set[int] = set()


@pytest.fixture(autouse=True)
def _clean_state() -> Iterator[None]:
    GATE.clear()
    STARTED.clear()
    yield
    GATE.set()  # a failed test must not leave a job waiting


@worker(queue="confq_a")
class ConfQAlpha:
    async def process(self, job: Job) -> None:
        return None


@worker(queue="confq_a")
class ConfQBeta:
    async def process(self, job: Job) -> None:
        return None


@job(queue="confq_a")
def confq_gamma(i: int = 0) -> None:
    return None


@worker(queue="confq_nodes_a")
class ConfQBlocking:
    """Runs until the test sets ``GATE`` (10 s at most)."""

    async def process(self, job: Job) -> None:
        assert job.id is not None
        STARTED.add(job.id)
        deadline = time.monotonic() + 10
        while not GATE.is_set() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


ALPHA = worker_name(ConfQAlpha)
BETA = worker_name(ConfQBeta)
GAMMA = worker_name(confq_gamma)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _id(job: Job) -> int:
    assert job.id is not None, "the job was never inserted"
    return job.id


def _ids(jobs: list[Job]) -> list[int]:
    return [_id(job) for job in jobs]


def _newest_first(ids: Any) -> list[int]:
    return sorted(ids, reverse=True)


async def _set_state(oban: Oban, sql: Callable[..., Any], ids: list[int], state: str) -> None:
    """Move ``ids`` to ``state`` (a plain UPDATE: the query API reads the column only)."""
    assert state in {s.value for s in JobState}
    if ids:
        listed = ", ".join(str(int(i)) for i in ids)
        await sql(oban, f"UPDATE oban_jobs SET state = '{state}' WHERE id IN ({listed})")


async def _pages(oban: Oban, limit: int, **filters: Any) -> list[list[int]]:
    """Every page of ``list_jobs`` with ``filters``, following ``next`` to the end."""
    pages: list[list[int]] = []
    after: str | None = None
    while True:
        page = await oban.list_jobs(limit=limit, after=after, **filters)
        assert isinstance(page, JobPage)
        assert len(page.jobs) <= limit
        pages.append(_ids(page.jobs))
        if page.next is None:
            return pages
        assert len(page.jobs) == limit, "a page before the last one is not full"
        assert page.next == str(page.jobs[-1].id), "next is not the last id of the page"
        after = page.next
        assert len(pages) < 10_000, "paging does not end"


async def _listed(oban: Oban, **filters: Any) -> list[int]:
    """The ids ``list_jobs`` returns for ``filters`` (one page: all of them)."""
    page = await oban.list_jobs(limit=1000, **filters)
    assert page.next is None
    return _ids(page.jobs)


# ---------------------------------------------------------------------------------------------
# Paging
# ---------------------------------------------------------------------------------------------


async def test_paging_returns_every_job_once_newest_first(oban: Oban) -> None:
    inserted = _ids(await oban.enqueue_many([ConfQAlpha.new({"n": n}) for n in range(23)]))
    pages = await _pages(oban, 5)

    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    flat = [i for page in pages for i in page]
    assert flat == _newest_first(inserted), "paging skipped, repeated or misordered jobs"
    first = await oban.list_jobs(limit=5)
    assert _ids(first.jobs) == pages[0]
    assert first.jobs[0].args == {"n": 22}, "the first page does not start with the newest job"


async def test_next_is_none_when_the_last_page_is_exactly_full(oban: Oban) -> None:
    inserted = _ids(await oban.enqueue_many([ConfQAlpha.new({"n": n}) for n in range(20)]))

    pages = await _pages(oban, 5)
    assert [len(page) for page in pages] == [5, 5, 5, 5], "an empty page after a full one"
    assert [i for page in pages for i in page] == _newest_first(inserted)

    whole = await oban.list_jobs(limit=20)
    assert _ids(whole.jobs) == _newest_first(inserted) and whole.next is None
    one_short = await oban.list_jobs(limit=19)
    assert one_short.next == str(_newest_first(inserted)[18])


async def test_paging_with_a_filter_skips_nothing_between_pages(oban: Oban) -> None:
    jobs = await oban.enqueue_many(
        [(ConfQAlpha if n % 3 else ConfQBeta).new({"n": n}) for n in range(40)]
    )
    betas = [_id(j) for j in jobs if j.worker == BETA]
    assert len(betas) == 14

    pages = await _pages(oban, 4, worker=ConfQBeta)
    assert [len(page) for page in pages] == [4, 4, 4, 2]
    assert [i for page in pages for i in page] == _newest_first(betas)


async def test_paging_is_stable_while_jobs_are_inserted_and_deleted(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    inserted = _ids(await oban.enqueue_many([ConfQAlpha.new({"n": n}) for n in range(15)]))
    first = await oban.list_jobs(limit=5)
    # Newer jobs arrive and a job of the first page goes: later pages do not shift.
    await oban.enqueue_many([ConfQAlpha.new({"late": n}) for n in range(7)])
    await sql(oban, "DELETE FROM oban_jobs WHERE id = %s", (_ids(first.jobs)[0],))
    rest: list[int] = []
    after = first.next
    while after is not None:
        page = await oban.list_jobs(limit=5, after=after)
        rest += _ids(page.jobs)
        after = page.next
    assert _ids(first.jobs) + rest == _newest_first(inserted)


async def _scanned_pages(oban: Oban, scan: int, limit: int, **filters: Any) -> list[JobPage]:
    """Every page of a bounded scan, following ``next`` to the end."""
    pages: list[JobPage] = []
    after: str | None = None
    while True:
        page = await oban.list_jobs(limit=limit, after=after, scan=scan, **filters)
        pages.append(page)
        if page.next is None:
            return pages
        after = page.next
        assert len(pages) < 1_000, "a bounded scan does not end"


async def test_a_bounded_scan_examines_only_its_window_and_resumes_below_it(oban: Oban) -> None:
    jobs = await oban.enqueue_many(
        [(ConfQBeta if n % 7 == 0 else ConfQAlpha).new({"n": n}) for n in range(40)]
    )
    ids = _ids(jobs)
    assert ids == list(range(ids[0], ids[0] + 40)), "enqueue_many gave non-consecutive ids"
    betas = [_id(j) for j in jobs if j.worker == BETA]

    pages = await _scanned_pages(oban, 5, 50, worker=ConfQBeta)
    # Every page holds the matches of exactly its window of 5 ids below the cursor.
    top = ids[-1] + 1
    for page in pages[:-1]:
        assert page.next == str(top - 5), "the next cursor does not resume below the window"
        assert _ids(page.jobs) == [i for i in _newest_first(betas) if top - 5 <= i < top]
        top -= 5
    assert [i for page in pages for i in _ids(page.jobs)] == _newest_first(betas)
    assert len(pages) == 8, "40 ids in windows of 5 make 8 pages"
    assert any(page.jobs == [] and page.next is not None for page in pages), (
        "a window without a match must still give a cursor"
    )


async def test_a_bounded_scan_page_that_fills_pages_as_usual(oban: Oban) -> None:
    ids = _ids(await oban.enqueue_many([ConfQAlpha.new({"n": n}) for n in range(12)]))
    page = await oban.list_jobs(limit=3, scan=10)
    assert _ids(page.jobs) == _newest_first(ids)[:3]
    assert page.next == str(_newest_first(ids)[2]), "a full page's cursor is its last id"
    # A scan wider than the table is no bound at all.
    whole = await oban.list_jobs(limit=50, scan=1_000_000)
    assert _ids(whole.jobs) == _newest_first(ids) and whole.next is None


async def test_a_bounded_scan_jumps_over_deleted_ids(oban: Oban, sql: Callable[..., Any]) -> None:
    ids = _ids(await oban.enqueue_many([ConfQAlpha.new({"n": n}) for n in range(30)]))
    # Keep the 5 newest and the 5 oldest: a gap of 20 ids between them.
    gone = ids[5:25]
    await sql(oban, f"DELETE FROM oban_jobs WHERE id IN ({', '.join(map(str, gone))})")

    first = await oban.list_jobs(limit=50, scan=5)
    assert _ids(first.jobs) == _newest_first(ids[25:])
    # The cursor skips the gap: the next page's window starts at the next older job.
    assert first.next == str(ids[4] + 1)
    second = await oban.list_jobs(limit=50, scan=5, after=first.next)
    assert _ids(second.jobs) == _newest_first(ids[:5])
    assert second.next is None, "no job is older than the last window"


async def test_the_largest_possible_id_is_listed_with_and_without_a_scan(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    top = 2**63 - 1
    await sql(
        oban,
        "INSERT INTO oban_jobs (id, state, queue, worker, args, meta, tags, errors, attempted_by) "
        f"VALUES ({top}, 'available', 'q', 'app.W', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}')",
    )
    assert _ids((await oban.list_jobs()).jobs) == [top]
    scanned = await oban.list_jobs(scan=100)
    assert _ids(scanned.jobs) == [top] and scanned.next is None


async def test_a_bounded_scan_of_an_empty_table_ends_at_once(oban: Oban) -> None:
    page = await oban.list_jobs(scan=10)
    assert page.jobs == [] and page.next is None


@pytest.mark.parametrize("scan", [0, -5])
async def test_list_jobs_refuses_a_scan_below_one(oban: Oban, scan: int) -> None:
    with pytest.raises(ValueError, match="scan"):
        await oban.list_jobs(scan=scan)


async def test_an_empty_table_gives_an_empty_last_page(oban: Oban) -> None:
    page = await oban.list_jobs()
    assert page.jobs == [] and page.next is None


async def test_list_jobs_returns_whole_jobs(oban: Oban) -> None:
    inserted = await oban.enqueue(
        ConfQAlpha.new({"x": [1, {"y": None}]}, queue="confq_b", tags=["t1"], meta={"m": 1})
    )
    [listed] = (await oban.list_jobs()).jobs
    stored = await oban.get_job(_id(inserted))
    assert stored is not None
    for name in ("id", "worker", "queue", "state", "args", "meta", "tags", "inserted_at"):
        assert getattr(listed, name) == getattr(stored, name), name
    assert listed.args == {"x": [1, {"y": None}]}
    assert listed.tags == ["t1"] and listed.queue == "confq_b"


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------

QUEUES = ["confq_a", "confq_b", "confq_c", "confq_d"]
STATES = ["available", "scheduled", "completed", "discarded", "cancelled", "retryable"]
TAGS = [["red"], ["red", "blue"], [], ["blue", "green"], ["Red", " Green "]]
LABELS = ["Apple Pie", "banana split", "CHERRY tart", "plain", "plain"]


@dataclass
class Spec:
    """One inserted job as the test knows it."""

    i: int
    worker: str
    queue: str
    state: str
    tags: list[str]
    args: dict[str, Any]
    meta: dict[str, Any]
    id: int = field(default=0)


def _spec(i: int) -> Spec:
    return Spec(
        i=i,
        worker=[ALPHA, BETA, GAMMA][i % 3],
        queue=QUEUES[i % 4],
        state=STATES[i % 6],
        tags=sorted({t.strip().lower() for t in TAGS[i % 5]}),
        args={
            "i": i,
            "parity": "even" if i % 2 == 0 else "odd",
            "nested": {"mod3": i % 3, "deep": {"x": i % 2 == 0}},
            "list": [i % 4, f"t{i % 5}"],
            "label": LABELS[i % 5],
        },
        meta={"tenant": f"tenant{i % 2}", "batch": {"n": i % 3}},
    )


async def _dataset(oban: Oban, sql: Callable[..., Any], count: int = 30) -> list[Spec]:
    specs = [_spec(i) for i in range(count)]
    jobs = [
        Job(s.worker, queue=s.queue, tags=TAGS[s.i % 5], args=s.args, meta=s.meta) for s in specs
    ]
    for spec, inserted in zip(specs, await oban.enqueue_many(jobs), strict=True):
        spec.id = _id(inserted)
        assert inserted.tags == spec.tags
    for state in STATES:
        await _set_state(oban, sql, [s.id for s in specs if s.state == state], state)
    return specs


#: (filters, which specs they select, what the case is about)
SINGLE_FILTERS: list[tuple[dict[str, Any], Callable[[Spec], bool]]] = [
    ({"state": "completed"}, lambda s: s.state == "completed"),
    ({"state": JobState.SCHEDULED}, lambda s: s.state == "scheduled"),
    ({"state": ["available", JobState.CANCELLED]}, lambda s: s.state in {"available", "cancelled"}),
    ({"state": ("retryable",)}, lambda s: s.state == "retryable"),
    ({"queue": "confq_b"}, lambda s: s.queue == "confq_b"),
    ({"queue": ["confq_b", "confq_d"]}, lambda s: s.queue in {"confq_b", "confq_d"}),
    ({"queue": "confq_missing"}, lambda s: False),
    ({"worker": BETA}, lambda s: s.worker == BETA),
    ({"worker": ConfQAlpha}, lambda s: s.worker == ALPHA),
    ({"worker": confq_gamma}, lambda s: s.worker == GAMMA),
    ({"worker": [ConfQAlpha, confq_gamma]}, lambda s: s.worker in {ALPHA, GAMMA}),
    ({"worker": [BETA, ConfQAlpha]}, lambda s: s.worker in {ALPHA, BETA}),
    ({"tags": ["red"]}, lambda s: "red" in s.tags),
    ({"tags": "green"}, lambda s: "green" in s.tags),
    ({"tags": ["red", "blue"]}, lambda s: {"red", "blue"} <= set(s.tags)),
    ({"tags": ["RED", " Green"]}, lambda s: {"red", "green"} <= set(s.tags)),
    ({"tags": ["red", "purple"]}, lambda s: False),
    ({"args": {"parity": "even"}}, lambda s: s.i % 2 == 0),
    ({"args": {"nested": {"mod3": 1}}}, lambda s: s.i % 3 == 1),
    ({"args": {"nested": {"deep": {"x": True}}}}, lambda s: s.i % 2 == 0),
    ({"args": {"list": ["t2"]}}, lambda s: s.i % 5 == 2),
    ({"args": {"list": [3, "t1"]}}, lambda s: s.i % 4 == 3 and s.i % 5 == 1),
    ({"args": {"i": 7}}, lambda s: s.i == 7),
    ({"args": {}}, lambda s: True),
    ({"meta": {"tenant": "tenant1"}}, lambda s: s.i % 2 == 1),
    ({"meta": {"batch": {"n": 2}}}, lambda s: s.i % 3 == 2),
    ({"search": "confqbeta"}, lambda s: s.worker == BETA),
    ({"search": "CONFQ_GAMMA"}, lambda s: s.worker == GAMMA),
    ({"search": "apple pie"}, lambda s: s.i % 5 == 0),
    ({"search": "TART"}, lambda s: s.i % 5 == 2),
    ({"search": "tenant1"}, lambda s: False),  # meta is not searched
    ({"search": "confq_c"}, lambda s: False),  # nor is the queue
]


async def test_each_filter_alone(oban: Oban, sql: Callable[..., Any]) -> None:
    specs = await _dataset(oban, sql)
    everything = _newest_first(s.id for s in specs)
    assert await _listed(oban) == everything
    for filters, selects in SINGLE_FILTERS:
        expected = _newest_first(s.id for s in specs if selects(s))
        assert await _listed(oban, **filters) == expected, filters


async def test_ids_filter(oban: Oban, sql: Callable[..., Any]) -> None:
    specs = await _dataset(oban, sql)
    jobs = (await oban.list_jobs(limit=1000)).jobs
    chosen = [specs[3].id, specs[16].id, specs[29].id]

    assert await _listed(oban, ids=chosen) == _newest_first(chosen)
    mixed = [jobs[0], specs[5].id]  # a Job and an id
    assert await _listed(oban, ids=mixed) == _newest_first([_id(jobs[0]), specs[5].id])
    assert await _listed(oban, ids=[max(chosen) + 1000]) == []
    assert await _listed(oban, ids=chosen, state=specs[16].state) == [specs[16].id]
    pages = await _pages(oban, 2, ids=[s.id for s in specs[:7]])
    assert [i for page in pages for i in page] == _newest_first(s.id for s in specs[:7])


async def test_empty_lists_select_nothing_and_empty_tags_everything(
    oban: Oban, sql: Callable[..., Any]
) -> None:
    specs = await _dataset(oban, sql, count=6)
    for name in ("state", "queue", "worker", "ids"):
        assert await _listed(oban, **{name: []}) == [], f"{name}=[] matched jobs"
    # Every job has all of no tags; every args object contains {}.
    assert await _listed(oban, tags=[]) == _newest_first(s.id for s in specs)
    assert await _listed(oban, search="") == _newest_first(s.id for s in specs)


#: Combinations of filters: all must hold.
COMBINED: list[tuple[dict[str, Any], Callable[[Spec], bool]]] = [
    (
        {"state": ["available", "completed", "cancelled"], "queue": ["confq_a", "confq_c"]},
        lambda s: (
            s.state in {"available", "completed", "cancelled"} and s.queue in {"confq_a", "confq_c"}
        ),
    ),
    (
        {"worker": [ConfQAlpha, confq_gamma], "tags": ["red"]},
        lambda s: s.worker in {ALPHA, GAMMA} and "red" in s.tags,
    ),
    (
        {"args": {"parity": "even"}, "meta": {"tenant": "tenant0"}, "queue": "confq_c"},
        lambda s: s.i % 2 == 0 and s.queue == "confq_c",
    ),
    (
        {"search": "apple", "state": ["available", "scheduled", "completed"]},
        lambda s: s.i % 5 == 0 and s.state in {"available", "scheduled", "completed"},
    ),
    (
        {"search": "plain", "worker": ConfQBeta, "args": {"nested": {"mod3": 1}}},
        lambda s: s.i % 5 in {3, 4} and s.worker == BETA,
    ),
    (
        {"queue": "confq_a", "args": {"parity": "odd"}},  # confq_a holds even i only
        lambda s: False,
    ),
]


async def test_filters_combine_with_and(oban: Oban, sql: Callable[..., Any]) -> None:
    specs = await _dataset(oban, sql, count=60)
    for filters, selects in COMBINED:
        expected = _newest_first(s.id for s in specs if selects(s))
        assert await _listed(oban, **filters) == expected, filters
        if len(expected) > 2:
            pages = await _pages(oban, 2, **filters)
            assert [i for page in pages for i in page] == expected, filters
    # The combinations are not vacuous: each but the last selects a proper subset.
    for filters, selects in COMBINED[:-1]:
        chosen = [s for s in specs if selects(s)]
        assert 0 < len(chosen) < len(specs), filters


# ---------------------------------------------------------------------------------------------
# JSON containment (as PostgreSQL's jsonb @>)
# ---------------------------------------------------------------------------------------------

CONTAINMENT_ARGS: list[dict[str, Any]] = [
    {"user": {"id": 7, "role": "admin"}, "items": [1, 2, 3], "flag": True, "n": 1},
    {"user": {"id": 7}, "items": [3], "flag": 1, "n": True},
    {"user": {"id": 8, "role": "admin"}, "items": [[1, 2]], "flag": False, "n": 1.0},
    {"user": "7", "items": [{"sku": "a", "qty": 2}, {"sku": "b"}], "opt": None, "n": "1"},
    {"items": [], "flag": 0, "n": 0},
]

#: args filter -> indexes of CONTAINMENT_ARGS it matches.
CONTAINMENT: list[tuple[dict[str, Any], set[int]]] = [
    ({"user": {"id": 7}}, {0, 1}),
    ({"user": {"role": "admin"}}, {0, 2}),
    ({"user": {}}, {0, 1, 2}),  # an object contains the empty object; "7" is no object
    ({"user": "7"}, {3}),
    ({"user": {"id": 7, "role": "admin"}}, {0}),
    ({"items": [3]}, {0, 1}),  # arrays by element
    ({"items": [3, 1]}, {0}),  # every element, in any order
    ({"items": [2, 2]}, {0}),  # duplicates need no second copy
    ({"items": []}, {0, 1, 2, 3, 4}),
    ({"items": [[1]]}, {2}),  # nested arrays, element by element
    ({"items": 3}, set()),  # a scalar is not contained in a nested array
    ({"items": [{"sku": "b"}]}, {3}),  # objects inside arrays match by key
    ({"items": [{"sku": "a", "qty": 2}]}, {3}),
    ({"items": [{"sku": "a", "qty": 3}]}, set()),
    ({"flag": True}, {0}),  # true is not 1
    ({"flag": 1}, {1}),  # 1 is not true
    ({"flag": False}, {2}),  # false is not 0
    ({"flag": 0}, {4}),
    ({"n": 1}, {0, 2}),  # 1 and 1.0 are the same number
    ({"n": 1.0}, {0, 2}),
    ({"n": True}, {1}),
    ({"n": "1"}, {3}),  # a string is not a number
    ({"opt": None}, {3}),  # null matches null, not a missing key
    ({"missing": None}, set()),
    ({"user": {"id": 7}, "flag": True}, {0}),
]


async def test_args_containment_follows_jsonb(oban: Oban) -> None:
    jobs = await oban.enqueue_many([ConfQAlpha.new(args) for args in CONTAINMENT_ARGS])
    ids = _ids(jobs)
    for want, matches in CONTAINMENT:
        expected = _newest_first(ids[index] for index in matches)
        assert await _listed(oban, args=want) == expected, want


async def test_meta_containment_follows_jsonb(oban: Oban) -> None:
    jobs = await oban.enqueue_many(
        [ConfQAlpha.new({"i": i}, meta=meta) for i, meta in enumerate(CONTAINMENT_ARGS)]
    )
    ids = _ids(jobs)
    for want, matches in CONTAINMENT:
        expected = _newest_first(ids[index] for index in matches)
        assert await _listed(oban, meta=want) == expected, want
    assert await _listed(oban, meta={"flag": True}, args={"i": 0}) == [ids[0]]
    assert await _listed(oban, meta={"flag": True}, args={"i": 1}) == []


# ---------------------------------------------------------------------------------------------
# Search
# ---------------------------------------------------------------------------------------------

SEARCH_ARGS: list[dict[str, Any]] = [
    {"code": "50%_off"},
    {"code": "50xyoff"},
    {"code": "50%xoff"},
    {"path": "C:\\dir"},
    {"path": "dir"},
    {"note": "Zebra Crossing"},
    {"note": "naïve café"},
]

#: search -> indexes of SEARCH_ARGS whose args text holds it (the worker name matches none).
SEARCHES: list[tuple[str, set[int]]] = [
    ("%_off", {0}),  # % and _ are literal
    ("0%x", {2}),
    ("50%", {0, 2}),
    ("%", {0, 2}),
    ("xy", {1}),
    ("\\d", {3}),  # \ is literal, not an escape: "\d" is not "d"
    ("C:\\", {3}),
    ("zEBRA cROSSING", {5}),  # case-insensitive
    ("café", {6}),
    ("nothing like this", set()),
]


async def test_search_is_a_literal_case_insensitive_substring(oban: Oban) -> None:
    jobs = await oban.enqueue_many([ConfQAlpha.new(args) for args in SEARCH_ARGS])
    ids = _ids(jobs)
    assert "%" not in ALPHA and "\\" not in ALPHA and "xy" not in ALPHA.lower()
    for text, matches in SEARCHES:
        expected = _newest_first(ids[index] for index in matches)
        assert await _listed(oban, search=text) == expected, text


async def test_search_ignores_case_beyond_ascii(oban: Oban) -> None:
    # PostgreSQL's ILIKE folds case by the database's LC_CTYPE (C.UTF-8 in the test setup).
    naive = await oban.enqueue(ConfQAlpha.new({"note": "naïve café"}))
    await oban.enqueue(ConfQAlpha.new({"note": "naive cafe"}))
    assert await _listed(oban, search="NAÏVE CAFÉ") == [_id(naive)]
    assert await _listed(oban, search="Ï") == [_id(naive)]


async def test_search_matches_the_worker_name_or_the_args(oban: Oban) -> None:
    alpha = await oban.enqueue(ConfQAlpha.new({"word": "needle"}))
    beta = await oban.enqueue(ConfQBeta.new({"word": "hay"}))
    gamma = await oban.enqueue(confq_gamma.new(i=5))

    assert await _listed(oban, search="needle") == [_id(alpha)]
    assert await _listed(oban, search="ConfQBeta") == [_id(beta)]
    assert await _listed(oban, search="test_query_conformance") == _newest_first(
        _ids([alpha, beta, gamma])
    )
    assert await _listed(oban, search="needle", worker=ConfQBeta) == []
    assert await _listed(oban, search="hay", worker=ConfQBeta) == [_id(beta)]


# ---------------------------------------------------------------------------------------------
# Hostile rows
# ---------------------------------------------------------------------------------------------

WORKER = ALPHA
DEEP = '{"a": ' + "[" * 1100 + "]" * 1100 + "}"
BIG_INTEGER = '{"n": ' + "9" * 400 + "}"

#: name -> (engines, column, SQL value expression per engine)
POISONS: dict[str, tuple[tuple[str, ...], str, dict[str, str]]] = {
    "deep-args": (("postgres", "sqlite"), "args", {"postgres": f"'{DEEP}'", "sqlite": f"'{DEEP}'"}),
    "deep-meta": (("postgres", "sqlite"), "meta", {"postgres": f"'{DEEP}'", "sqlite": f"'{DEEP}'"}),
    "big-integer-args": (
        ("postgres", "sqlite"),
        "args",
        {"postgres": f"'{BIG_INTEGER}'", "sqlite": f"'{BIG_INTEGER}'"},
    ),
    "infinite-timestamp": (("postgres",), "inserted_at", {"postgres": "'infinity'"}),
    "args-not-json": (("sqlite",), "args", {"sqlite": "'not json'"}),
    "args-array": (("sqlite",), "args", {"sqlite": "'[1, 2]'"}),
    "meta-array": (("sqlite",), "meta", {"sqlite": "'[1, 2]'"}),
    "tags-not-json": (("sqlite",), "tags", {"sqlite": "'[1,'"}),
    "invalid-utf8-args": (("sqlite",), "args", {"sqlite": "CAST(x'7b226e223a22ff227d' AS TEXT)"}),
    "invalid-utf8-meta": (("sqlite",), "meta", {"sqlite": "CAST(x'7b226d223a22ff227d' AS TEXT)"}),
    "invalid-utf8-tags": (("sqlite",), "tags", {"sqlite": "CAST(x'5b2274ff225d' AS TEXT)"}),
    "invalid-utf8-worker": (("sqlite",), "worker", {"sqlite": "CAST(x'48ff' AS TEXT)"}),
    "invalid-utf8-queue": (("sqlite",), "queue", {"sqlite": "CAST(x'51ff' AS TEXT)"}),
    "garbage-timestamp": (("sqlite",), "inserted_at", {"sqlite": "'yesterday-ish'"}),
}


def _poison_cases() -> list[Any]:
    return [
        pytest.param(engine, name, id=f"{engine}-{name}")
        for name, (engines, _column, _values) in POISONS.items()
        for engine in engines
    ]


async def _insert_hostile(oban: Oban, sql: Callable[..., Any], column: str, value: str) -> int:
    columns = {"state": "'available'", "queue": "'confq_a'", "worker": f"'{WORKER}'"}
    columns[column] = value
    names, values = ", ".join(columns), ", ".join(columns.values())
    rows = await sql(oban, f"INSERT INTO oban_jobs ({names}) VALUES ({values}) RETURNING id")
    return int(rows[0][0])


async def _answers(call: str, pending: Awaitable[T]) -> T:
    """``pending``'s result; an exception fails the test naming ``call``."""
    try:
        return await pending
    except Exception as error:
        raise AssertionError(f"{call} raised {type(error).__name__}: {error}") from error


def _same_reading(listed: Job, got: Job) -> None:
    assert type(listed) is type(got), f"list_jobs gives {type(listed)}, get_job {type(got)}"
    assert listed.id == got.id
    if isinstance(got, UnreadableJob):
        assert isinstance(listed, UnreadableJob)
        assert listed.unreadable == got.unreadable


@pytest.mark.parametrize(("engine", "poison"), _poison_cases(), indirect=["engine"])
async def test_a_hostile_row_breaks_no_listing_filter_or_count(
    oban: Oban, sql: Callable[..., Any], engine: str, poison: str
) -> None:
    _engines, column, values = POISONS[poison]
    before = await oban.enqueue_many(
        [ConfQAlpha.new({"n": n, "word": "findme"}, tags=["t"], meta={"m": n}) for n in range(4)]
    )
    bad = await _insert_hostile(oban, sql, column, values[engine])
    after = await oban.enqueue_many(
        [ConfQAlpha.new({"n": n, "word": "findme"}, tags=["t"], meta={"m": n}) for n in range(4, 8)]
    )
    good = _ids(before) + _ids(after)
    got = await oban.get_job(bad)

    # The hostile row is listed exactly when get_job answers for it, and reads the same.
    pages = await _answers("list_jobs(limit=3) paging", _pages(oban, 3))
    flat = [i for page in pages for i in page]
    assert [i for i in flat if i != bad] == _newest_first(good)
    assert flat.count(bad) == (0 if got is None else 1)
    by_id = (await oban.list_jobs(ids=[bad])).jobs
    assert len(by_id) == (0 if got is None else 1)
    if got is not None:
        _same_reading(by_id[0], got)

    # Every filter answers; the good rows come back exactly, the hostile row at most once.
    filters: list[tuple[dict[str, Any], list[int]]] = [
        ({"state": "available"}, good),
        ({"queue": "confq_a"}, good),
        ({"worker": ConfQAlpha}, good),
        ({"tags": ["t"]}, good),
        ({"args": {"n": 1}}, [_id(before[1])]),
        ({"args": {"a": []}}, []),
        ({"meta": {"m": 5}}, [_id(after[1])]),
        ({"search": "findme"}, good),
        ({"search": "a"}, good),
        ({"ids": [*good, bad]}, good),
    ]
    for where, expected in filters:
        found = await _answers(f"list_jobs(**{where})", _listed(oban, **where))
        assert [i for i in found if i != bad] == _newest_first(expected), where
        assert found.count(bad) <= 1, where
        if bad in found:
            assert got is not None, f"{where}: list_jobs shows a row get_job does not"
            _same_reading(next(j for j in (await oban.list_jobs(ids=[bad])).jobs), got)

    # Counting sees every row.
    for by in (("state",), ("queue",), ("state", "queue"), ()):
        counts = await _answers(f"count_jobs({by})", oban.count_jobs(by))
        assert counts.total() == len(good) + 1, by
    available = await _answers("count_jobs(state=...)", oban.count_jobs(state="available"))
    assert available.total() == len(good) + 1


# ---------------------------------------------------------------------------------------------
# count_jobs
# ---------------------------------------------------------------------------------------------

#: (queue, state) -> how many jobs
COUNTS: dict[tuple[str, str], int] = {
    ("confq_a", "available"): 3,
    ("confq_a", "completed"): 4,
    ("confq_b", "available"): 2,
    ("confq_b", "discarded"): 1,
    ("confq_c", "scheduled"): 5,
    ("confq_c", "completed"): 1,
}


async def _counted_jobs(oban: Oban, sql: Callable[..., Any]) -> None:
    for (queue, state), count in COUNTS.items():
        jobs = await oban.enqueue_many(
            [ConfQAlpha.new({"n": n}, queue=queue) for n in range(count)]
        )
        await _set_state(oban, sql, _ids(jobs), state)


def _group(by: tuple[str, ...], **only: set[str]) -> dict[tuple[str, ...], int]:
    grouped: dict[tuple[str, ...], int] = {}
    for (queue, state), count in COUNTS.items():
        if state not in only.get("state", {state}) or queue not in only.get("queue", {queue}):
            continue
        values = {"state": state, "queue": queue}
        key = tuple(values[name] for name in by)
        grouped[key] = grouped.get(key, 0) + count
    return grouped


@pytest.mark.parametrize("by", [("state",), ("queue",), ("state", "queue"), ()])
async def test_count_jobs_groups(oban: Oban, sql: Callable[..., Any], by: tuple[str, ...]) -> None:
    await _counted_jobs(oban, sql)
    counts = await oban.count_jobs(by)
    assert isinstance(counts, JobCounts)
    assert dict(counts) == _group(by)
    assert counts.estimated == frozenset()
    assert counts.total() == sum(COUNTS.values())


async def test_count_jobs_default_is_by_state(oban: Oban, sql: Callable[..., Any]) -> None:
    await _counted_jobs(oban, sql)
    assert dict(await oban.count_jobs()) == _group(("state",))


async def test_count_jobs_filters(oban: Oban, sql: Callable[..., Any]) -> None:
    await _counted_jobs(oban, sql)
    by_pair = ("state", "queue")
    assert dict(await oban.count_jobs(by_pair, state="available")) == _group(
        by_pair, state={"available"}
    )
    assert dict(await oban.count_jobs(("queue",), state=[JobState.COMPLETED, "discarded"])) == (
        _group(("queue",), state={"completed", "discarded"})
    )
    assert dict(await oban.count_jobs(("state",), queue="confq_c")) == _group(
        ("state",), queue={"confq_c"}
    )
    both = await oban.count_jobs((), state="completed", queue=["confq_a", "confq_b"])
    assert dict(both) == {(): 4} and both.total() == 4
    assert dict(await oban.count_jobs(state="executing")) == {}
    assert (await oban.count_jobs((), queue="confq_missing")).total() == 0


async def test_count_jobs_on_an_empty_table(oban: Oban) -> None:
    for by in (("state",), ("queue",), ("state", "queue"), ()):
        counts = await oban.count_jobs(by)
        assert dict(counts) == {} and counts.total() == 0 and counts.estimated == frozenset()


async def test_count_jobs_past_the_limit(oban: Oban, sql: Callable[..., Any], engine: str) -> None:
    await oban.enqueue_many([ConfQAlpha.new({"n": n}, queue="confq_big") for n in range(20)])
    small = await oban.enqueue_many([ConfQAlpha.new({"n": n}, queue="confq_a") for n in range(3)])
    await _set_state(oban, sql, _ids(small), "completed")

    pairs = await oban.count_jobs(("state", "queue"), limit=5)
    by_state = await oban.count_jobs(("state",), limit=5)
    total = await oban.count_jobs((), limit=5)
    if engine == "postgres":
        assert pairs.estimated == {("available", "confq_big")}
        assert pairs[("available", "confq_big")] >= 6
        assert by_state.estimated == {("available",)} and by_state[("available",)] >= 6
        assert total.estimated == {()} and total[()] >= 9
    else:  # SQLite always counts exactly
        assert pairs.estimated == by_state.estimated == total.estimated == frozenset()
        assert pairs[("available", "confq_big")] == 20
        assert by_state[("available",)] == 20 and total[()] == 23
    # The pair within the limit is exact on both engines.
    assert pairs[("completed", "confq_a")] == 3
    assert ("completed", "confq_a") not in pairs.estimated
    assert by_state[("completed",)] == 3 and ("completed",) not in by_state.estimated
    exact = await oban.count_jobs(("state", "queue"), limit=20)
    assert dict(exact) == {("available", "confq_big"): 20, ("completed", "confq_a"): 3}
    assert exact.estimated == frozenset()
    assert (await oban.count_jobs(("state", "queue"))).estimated == frozenset()


# ---------------------------------------------------------------------------------------------
# nodes
# ---------------------------------------------------------------------------------------------

NODE_OPTIONS: dict[str, Any] = {
    "refresher": {"interval": 0.2, "max_age": 5},
    "notifier": {"poll_interval": 0.1},
}


async def test_nodes_lists_running_instances_with_their_queues_and_jobs(
    make_oban: Callable[..., Oban],
) -> None:
    a = make_oban(
        name="ConfQNodes", node="confq-node-a", queues={"confq_nodes_a": 3}, **NODE_OPTIONS
    )
    b = make_oban(
        name="ConfQNodes",
        node="confq-node-b",
        queues={"confq_nodes_b": 2, "confq_nodes_c": 1},
        **NODE_OPTIONS,
    )
    other = make_oban(
        name="ConfQOtherName", node="confq-node-x", queues={"confq_nodes_x": 1}, **NODE_OPTIONS
    )
    client = make_oban(name="ConfQNodes", node="confq-client")
    for instance in (a, b, other):
        await instance.start()

    on_a = await client.enqueue_many([ConfQBlocking.new({"n": n}) for n in range(2)])
    on_b = await client.enqueue(ConfQBlocking.new({"n": 9}, queue="confq_nodes_b"))
    waiting = set(_ids(on_a)) | {_id(on_b)}
    await eventually(lambda: waiting <= STARTED, timeout=10, message="the jobs run")

    nodes = await eventually(
        lambda: _nodes_when(client, {"confq-node-a": 2, "confq-node-b": 1}),
        timeout=10,
        message="nodes() shows the running jobs",
    )
    assert [n.node for n in nodes] == ["confq-node-a", "confq-node-b"]
    node_a, node_b = nodes
    assert isinstance(node_a, NodeInfo)
    assert node_a.queues == ["confq_nodes_a"]
    assert node_b.queues == ["confq_nodes_b", "confq_nodes_c"]
    assert (node_a.running, node_b.running) == (2, 1)
    assert node_a.started_at is not None and node_b.started_at is not None
    assert [n.node for n in await other.nodes()] == ["confq-node-x"]

    GATE.set()
    await eventually(
        lambda: _nodes_when(client, {"confq-node-a": 0, "confq-node-b": 0}),
        timeout=10,
        message="nodes() shows the jobs finished",
    )
    await b.stop()
    await eventually(
        lambda: _node_names(client, ["confq-node-a"]), timeout=10, message="b leaves nodes()"
    )


async def _nodes_when(client: Oban, running: dict[str, int]) -> list[NodeInfo] | None:
    nodes = await client.nodes()
    return nodes if {n.node: n.running for n in nodes} == running else None


async def _node_names(client: Oban, names: list[str]) -> bool:
    return [n.node for n in await client.nodes()] == names


async def test_nodes_is_empty_without_running_queues(oban: Oban) -> None:
    assert await oban.nodes() == []


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _param_id(options: dict[str, Any]) -> str:
    return ",".join(f"{key}={value!r:.24}" for key, value in options.items())


@pytest.mark.parametrize(
    "options",
    [
        {"limit": 0},
        {"limit": 1001},
        {"limit": -5},
        {"after": "abc"},
        {"after": ""},
        {"after": "-1"},
        {"after": "1.5"},
        {"after": " 12"},
        {"after": "9" * 30},
        {"after": "9999999999999999999"},  # past the largest job id (2**63 - 1)
        {"after": 12},
        {"state": "nope"},
        {"state": ["available", "Available"]},
        {"ids": [2**63]},  # as get_job: outside the 64-bit range of job ids
    ],
    ids=_param_id,
)
async def test_list_jobs_refuses_bad_values(oban: Oban, options: dict[str, Any]) -> None:
    await oban.enqueue(ConfQAlpha.new({}))
    with pytest.raises(ValueError):
        await oban.list_jobs(**options)


@pytest.mark.parametrize(
    "options",
    [
        {"state": 5},
        {"state": [None]},
        {"queue": 5},
        {"queue": ["a", 1]},
        {"worker": 5},
        {"worker": [object()]},
        {"tags": 5},
        {"tags": [1]},
        {"args": [1]},
        {"args": "x"},
        {"args": {"when": object()}},
        {"meta": ["m"]},
        {"search": 5},
        {"search": b"x"},
        {"ids": ["1"]},
        {"ids": [True]},
        {"ids": [1.0]},
        {"scan": True},
        {"scan": "5"},
        {"scan": 5.0},
    ],
    ids=_param_id,
)
async def test_list_jobs_refuses_wrong_types(oban: Oban, options: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        await oban.list_jobs(**options)


async def test_list_jobs_accepts_the_limits_edges(oban: Oban) -> None:
    jobs = await oban.enqueue_many([ConfQAlpha.new({"n": n}) for n in range(3)])
    one = await oban.list_jobs(limit=1)
    assert _ids(one.jobs) == [_id(jobs[2])] and one.next == str(_id(jobs[2]))
    most = await oban.list_jobs(limit=1000)
    assert _ids(most.jobs) == _newest_first(_ids(jobs)) and most.next is None
    # A cursor past every id (but a valid one) lists from the newest; "0" lists nothing.
    assert _ids((await oban.list_jobs(after=str(_id(jobs[2]) + 100))).jobs) == _newest_first(
        _ids(jobs)
    )
    assert (await oban.list_jobs(after="0")).jobs == []


@pytest.mark.parametrize(
    ("by", "options"),
    [
        (("bogus",), {}),
        (("queue", "bogus"), {}),
        (("state", "state"), {}),
        (("worker",), {}),
        (("state",), {"limit": 0}),
        (("state",), {"limit": -1}),
        (("state",), {"state": "nope"}),
    ],
)
async def test_count_jobs_refuses_bad_values(
    oban: Oban, by: tuple[str, ...], options: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        await oban.count_jobs(by, **options)


@pytest.mark.parametrize("options", [{"state": 5}, {"queue": 5}, {"queue": [None]}], ids=_param_id)
async def test_count_jobs_refuses_wrong_types(oban: Oban, options: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        await oban.count_jobs(**options)
