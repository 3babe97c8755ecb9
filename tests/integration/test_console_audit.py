"""The console's audit pages for admins: the filtered log read page by page with a keyset
cursor, one task's timeline by its correlation id, export (JSON Lines and CSV) and the
chain's verification; all of it the admin's own tenant's, over HTTP as a browser does.
The last test checks the search under those pages on the store itself, against a scan."""

import asyncio
import csv
import html
import io
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import TenantSetup
from tests.integration.helpers import (
    access_token,
    add_crm_actions,
    audit_events,
    make_tenant,
    token_request,
)
from tests.support.console import PASSWORD, signed_in_as
from tests.support.databases import BACKENDS, new_database_url
from valetkey.audit.events import DECISIONS, AuditEvent, AuditQuery
from valetkey.storage.audit_store import ORDER_SLACK, SqlAuditStore
from valetkey.storage.database import Database
from valetkey.storage.migrate import upgrade

SAM = "sam@acme.example"
_SEQ = re.compile(r'<tr id="e(\d+)">')


_OPEN: list[httpx.Client] = []


def console(setup: TenantSetup, email: str = SAM) -> httpx.Client:
    """A browser signed in to the console as `email` (a password is set first); closed
    after the test."""
    setup.server.cli("users", "set-password", email, "--tenant", setup.name,
                     input=PASSWORD + "\n")  # fmt: skip
    client = httpx.Client(base_url=setup.server.base_url, timeout=30)
    _OPEN.append(client)
    signed_in_as(client, setup.name, email, "/console/audit")
    return client


@pytest.fixture(autouse=True)
def _close_browsers() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def seqs(page: str) -> list[int]:
    """The chain positions of the events a log page lists, top to bottom."""
    return [int(s) for s in _SEQ.findall(page)]


def link(page: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', page)
    return html.unescape(found.group(1)) if found else None


def walk(client: httpx.Client, start: str) -> list[list[int]]:
    """Every page from `start`, following "Older" links."""
    pages, url = [], start
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.text
        pages.append(seqs(response.text))
        url = link(response.text, "next") or ""
        assert len(pages) < 50
    return pages


def cid() -> str:
    return "it-audit-" + secrets.token_hex(6)


@pytest.fixture
def setup(tenant: TenantSetup) -> TenantSetup:
    server, name = tenant.server, tenant.name
    tenant.agent = tenant.new_agent("ops-bot", "deals:read", "deals:write")
    add_crm_actions(tenant)
    server.cli("users", "create", "mia@acme.example", "--tenant", name)
    return tenant


def _authorize(setup: TenantSetup, token: str, correlation: str, **intent: Any) -> dict[str, Any]:
    response = httpx.post(
        setup.server.base_url + "/v1/authorize", json=intent, timeout=30,
        headers={"Authorization": f"Bearer {token}", "X-Correlation-Id": correlation},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return dict(response.json())


def _tenant_events(setup: TenantSetup, *args: str) -> list[dict[str, Any]]:
    return audit_events(setup.server, "--tenant", setup.name, *args)


# the log: filters and pages ---------------------------------------------------------------
def test_pages_walk_the_whole_log_without_repeating_or_skipping(setup: TenantSetup) -> None:
    for _ in range(60):  # with the set-up's events, three pages of 50
        assert token_request(setup.server, setup.agent, setup.crm).status_code == 200
    client = console(setup)
    everything = sorted((e["seq"] for e in _tenant_events(setup)), reverse=True)
    pages = walk(client, "/console/audit")
    assert len(pages) >= 2 and all(len(p) == 50 for p in pages[:-1])
    listed = [s for p in pages for s in p]
    # Newest first, nothing twice, nothing skipped (the sign-in came after the CLI read).
    assert listed == sorted(set(listed), reverse=True)
    assert [s for s in listed if s <= everything[0]] == everything
    # "Newer" from the last page goes back through the same pages, to the first one.
    last = client.get(_page_url(client, len(pages) - 1))
    url, back = link(last.text, "prev"), [seqs(last.text)]
    while url:
        page = client.get(url).text
        back.append(seqs(page))
        url = link(page, "prev")
    assert back[::-1] == pages
    assert 'rel="prev"' not in client.get("/console/audit").text


def _page_url(client: httpx.Client, n: int) -> str:
    url = "/console/audit"
    for _ in range(n):
        found = link(client.get(url).text, "next")
        assert found
        url = found
    return url


def test_filters_narrow_the_log(setup: TenantSetup) -> None:
    server = setup.server
    other = setup.new_agent("reader", "deals:read")
    token = access_token(setup)
    allowed = _authorize(setup, token, cid(), action="crm:deals.read", resource="crm:deals/1")
    denied = _authorize(setup, token, cid(), action="crm:deals.nuke", resource="crm:deals/1")
    assert allowed["decision"] == "allow" and denied["decision"] == "deny"
    marker = cid()
    assert token_request(server, other, setup.crm,
                         headers={"X-Correlation-Id": marker}).status_code == 200  # fmt: skip
    client = console(setup)

    def listed(query: str) -> list[int]:
        response = client.get("/console/audit?" + query)
        assert response.status_code == 200, response.text
        return seqs(response.text)

    def expected(*args: str) -> list[int]:
        return [e["seq"] for e in _tenant_events(setup, *args)][:50]

    assert listed(f"agent={other['id']}") == expected("--agent", other["id"])
    assert listed("agent=reader") == expected("--agent", other["id"])  # by name too
    assert listed(f"correlation={marker}") == expected("--correlation-id", marker)
    assert len(listed(f"correlation={marker}")) == 1
    assert listed("type=decision.made") == expected("--type", "decision.made")
    deny = listed("decision=deny")
    assert deny and set(deny) == {
        e["seq"] for e in _tenant_events(setup, "--type", "decision.made")
        if e["data"]["decision"] == "deny"
    }  # fmt: skip
    allow = listed(f"decision=allow&agent={setup.agent['id']}")
    assert allow and not set(allow) & set(deny)
    sam = setup.sponsor["id"]
    assert listed(f"user={SAM}") == [e["seq"] for e in _tenant_events(setup, "--user", sam)][:50]
    assert listed("user=nobody@acme.example") == []
    assert (
        "No user nobody@acme.example"
        in client.get("/console/audit?user=nobody%40acme.example").text
    )
    # A time range, to the second (`datetime-local` values are UTC).
    time.sleep(1.1)
    since = datetime.now(UTC).replace(microsecond=0)
    time.sleep(1.1)
    late = cid()
    assert token_request(server, other, setup.crm,
                         headers={"X-Correlation-Id": late}).status_code == 200  # fmt: skip
    window = f"since={since:%Y-%m-%dT%H:%M:%S}&agent={other['id']}"
    [only] = listed(window)
    assert only == expected("--correlation-id", late)[0]
    before = listed(f"until={since:%Y-%m-%dT%H:%M:%S}&agent={other['id']}")
    assert only not in before and len(before) == len(expected("--agent", other["id"])) - 1


def test_bad_filters_are_explained_not_500(setup: TenantSetup) -> None:
    client = console(setup)
    for query, words in (
        ("since=yesterday", "is not a date and time"),
        ("until=2026-13-45T25:61", "is not a date and time"),
        ("since=2026-06-02T10:00&until=2026-06-01T10:00", "must be after"),
        ("decision=maybe", "Choose allow, deny or approval required"),
        ("type=DROP%20TABLE", "An event type looks like"),
        ("before=12abc", "page link is damaged"),
    ):
        response = client.get("/console/audit?" + query)
        assert response.status_code == 400, query
        assert words in html.unescape(response.text), query
        assert 'role="alert"' in response.text
    bad_export = client.get("/console/audit/export?format=xml")
    assert bad_export.status_code == 400 and "Export as jsonl or csv" in bad_export.text


# one task ---------------------------------------------------------------------------------
def test_the_timeline_shows_a_whole_task(setup: TenantSetup) -> None:
    server, task = setup.server, cid()
    response = token_request(server, setup.agent, setup.crm, headers={"X-Correlation-Id": task})
    token = response.json()["access_token"]
    intent = {"action": "crm:deals.delete", "resource": "crm:deals/7",
              "context": {"user_request": "remove the duplicate Initech deal"}}  # fmt: skip
    asked = _authorize(setup, token, task, **intent)
    assert asked["decision"] == "approval_required"
    server.cli("approvals", "approve", asked["approval"]["id"], "--by", SAM, "--reason", "dup")
    done = _authorize(setup, token, task, **intent, approval_id=asked["approval"]["id"])
    assert done["decision"] == "allow"
    _authorize(setup, token, cid(), action="crm:deals.read", resource="crm:deals/8")  # not it

    client = console(setup)
    page = client.get(f"/console/audit/task/{task}")
    assert page.status_code == 200, page.text
    text = html.unescape(page.text)
    steps = [
        "ops-bot got an access token for " + setup.crm,
        "ValetKey held for a person's approval: delete deals (crm)",
        "ops-bot asked a person to approve: delete deals (crm)",
        "A person approved: delete deals (crm)",
        "ValetKey allowed: delete deals (crm)",
        "ops-bot used the approval",
    ]
    at = [text.find(step) for step in steps]
    assert -1 not in at, [s for s, i in zip(steps, at, strict=True) if i < 0]
    # In chain order; a decision's own event follows what it caused (the approval request,
    # the approval spent), each pair is in whichever order it committed.
    assert at[0] < min(at[1:3]) and max(at[1:3]) < at[3] < min(at[4:])
    assert "remove the duplicate Initech deal" in text and "dup" in text
    timeline = text.split('<ol class="timeline">', 1)[1].split("</ol>", 1)[0]
    assert timeline.count("<li") == 6  # the read under another correlation id is not in it
    # The log links each event's correlation id to this page.
    log = client.get(f"/console/audit?correlation={task}").text
    assert f'href="/console/audit/task/{task}"' in log


# export ------------------------------------------------------------------------------------
def test_export_streams_the_filtered_events(setup: TenantSetup) -> None:
    for _ in range(3):
        assert token_request(setup.server, setup.agent, setup.crm).status_code == 200
    client = console(setup)
    agent = setup.agent["id"]
    wanted = _tenant_events(setup, "--agent", agent)
    jsonl = client.get(f"/console/audit/export?agent={agent}&format=jsonl")
    assert jsonl.status_code == 200
    assert jsonl.headers["content-disposition"].startswith("attachment; filename=")
    assert jsonl.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in jsonl.content.splitlines()]
    assert lines == wanted  # the same fields as `valetkey audit search --json`, hashes too
    as_csv = client.get(f"/console/audit/export?agent={agent}&format=csv")
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [int(r["seq"]) for r in rows] == [e["seq"] for e in wanted]
    assert {r["agent_id"] for r in rows} == {agent}
    assert (
        orjson.loads(rows[0]["data"]) == wanted[0]["data"] and rows[0]["hash"] == wanted[0]["hash"]
    )
    # Exporting is itself in the log.
    [exported, *_] = _tenant_events(setup, "--type", "audit.exported")
    assert exported["user_id"] == setup.sponsor["id"]
    assert exported["data"] == {"format": "csv", "filters": {"agent": agent}}


# who may see what -------------------------------------------------------------------------
def test_only_admins_and_only_their_own_tenant(setup: TenantSetup) -> None:
    server, task = setup.server, cid()
    token_request(server, setup.agent, setup.crm, headers={"X-Correlation-Id": task})
    member = console(setup, "mia@acme.example")
    for path in ("/console/audit", f"/console/audit/task/{task}",
                 "/console/audit/export?format=jsonl"):  # fmt: skip
        refused = member.get(path)
        assert refused.status_code == 403, path
        assert task not in refused.text
    stranger = make_tenant(server)
    other = console(stranger)
    assert other.get(f"/console/audit/task/{task}").status_code == 404
    for query in (f"correlation={task}", f"agent={setup.agent['id']}",
                  f"user={setup.sponsor['id']}"):  # fmt: skip
        page = other.get("/console/audit?" + query)
        assert page.status_code == 200 and seqs(page.text) == [], query
    exported = other.get(f"/console/audit/export?correlation={task}&format=jsonl")
    assert exported.status_code == 200 and exported.content == b""
    mine = {e["id"] for e in _tenant_events(setup)}
    theirs = other.get("/console/audit/export?format=jsonl").content.splitlines()
    assert theirs and not {orjson.loads(line)["id"] for line in theirs} & mine
    signed_out = httpx.get(server.base_url + "/console/audit", follow_redirects=False)
    assert signed_out.status_code == 303
    assert signed_out.headers["location"].startswith("/console/login?next=")


# the chain --------------------------------------------------------------------------------
def test_verify_the_chain_from_the_console(setup: TenantSetup) -> None:
    client = console(setup)
    page = client.get("/console/audit").text
    head = _tenant_events(setup)[0]
    assert f"position {head['seq']}, hash <code>{head['hash'][:16]}" in page
    assert "Not verified since this server started" in page
    missing = client.post("/console/audit/verify", data={})
    assert missing.status_code == 403
    forged = client.post("/console/audit/verify", data={"csrf": "x" * 43})
    assert forged.status_code == 403
    csrf = re.search(r'action="/console/audit/verify">\s*<input type="hidden" name="csrf" '
                     r'value="([^"]+)"', page)  # fmt: skip
    assert csrf
    cross = client.post("/console/audit/verify", data={"csrf": csrf.group(1)},
                        headers={"Sec-Fetch-Site": "cross-site"})  # fmt: skip
    assert cross.status_code == 403
    done = client.post("/console/audit/verify", data={"csrf": csrf.group(1)})
    assert done.status_code == 303 and done.headers["location"] == "/console/audit#chain"
    result = client.get("/console/audit").text
    assert re.search(r'<span class="badge ok">intact</span> verified \d+ s ago: every link of '
                     r"[\d,]+ events holds", result), result  # fmt: skip


# the store's search, on both backends ---------------------------------------------------
@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlAuditStore]:
    """A fresh database of its own (not the server's): events with chosen timestamps."""
    url = await asyncio.to_thread(new_database_url, request.param, tmp_path)
    database = Database(url)
    await upgrade(database)
    yield SqlAuditStore(database)
    await database.dispose()


async def test_search_pages_and_time_ranges_match_a_full_scan(store: SqlAuditStore) -> None:
    """Keyset pages and time ranges give exactly what filtering every event would, even
    where events were chained minutes after their time was taken (up to ORDER_SLACK)."""
    rng = random.Random(7)
    events = []
    for i in range(600):
        # stamped, then chained a little later; now and then much later (a long transaction)
        jitter = -rng.uniform(0, 0.95) * ORDER_SLACK if i % 7 == 0 else -rng.uniform(0, 1)
        tenant = "ten_b" if i % 5 == 0 else "ten_a"
        verdict = rng.choice(DECISIONS)
        events.append(AuditEvent(
            "decision.made" if i % 3 else "token.issued", tenant, 1_700_000_000 + i * 10 + jitter,
            f"cor_{i // 4}", agent_id=f"agt_{i % 4}", user_id=f"usr_{i % 6}",
            data={"decision": verdict} if i % 3 else {},
        ))  # fmt: skip
    for start in range(0, len(events), 100):
        await store.append(events[start : start + 100])
    stored = [e async for e in store.iterate("ten_a")]
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))

    def scan(**want: Any) -> list[int]:
        since, until = want.pop("since", None), want.pop("until", None)
        return [e.seq for e in reversed(stored)
                if all(getattr(e, k) == v for k, v in want.items())
                and (since is None or e.ts_us >= since * 1e6)
                and (until is None or e.ts_us < until * 1e6)]  # fmt: skip

    async def pages(**want: Any) -> list[int]:
        got: list[int] = []
        query = AuditQuery(tenant_id="ten_a", limit=17, **want)
        while True:
            page = await store.search(query)
            got += [e.seq for e in page]
            if len(page) < 17:
                return got
            query = replace(query, before_seq=page[-1].seq)

    t0 = 1_700_000_000
    for want in (
        {}, {"agent_id": "agt_1"}, {"decision": "deny"}, {"agent_id": "agt_2", "decision": "allow"},
        {"since": t0 + 1000}, {"until": t0 + 3000}, {"since": t0 + 1234.5, "until": t0 + 1900},
        {"since": t0 + 2000, "until": t0 + 4000, "user_id": "usr_3"},
        {"since": t0 + 9000}, {"until": t0 - 1}, {"correlation_id": "cor_33"},
    ):  # fmt: skip
        column = {"agent_id": "agent_id", "user_id": "user_id", "decision": "decision",
                  "correlation_id": "correlation_id"}  # fmt: skip
        expected = scan(**{column.get(k, k): v for k, v in want.items()})
        assert await pages(**want) == expected, want
    for _ in range(25):
        since = t0 + rng.uniform(-100, 6100)
        until = since + rng.uniform(1, 2000)
        assert await pages(since=since, until=until) == scan(since=since, until=until)
    # "Newer": the page just above a cursor, still newest first.
    newer = await store.search(AuditQuery(tenant_id="ten_a", after_seq=100, limit=10))
    assert [e.seq for e in newer] == list(range(110, 100, -1))
    assert await store.task("ten_a", "cor_33") == [
        e for e in stored if e.correlation_id == "cor_33"
    ]
    [theirs] = await store.task("ten_b", "cor_33")  # one of the task's four is ten_b's
    assert theirs.tenant_id == "ten_b" and await store.task("ten_a", "cor_nope") == []
