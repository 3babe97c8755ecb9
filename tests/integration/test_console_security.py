"""The console's guards, over plain HTTP: who may open what, the headers every page
carries, forms that did not come from the console, hostile input (never a 500), and
open redirects."""

import httpx
import pytest

from tests.conftest import TenantSetup
from tests.support.console import csrf_of, http_session, person

PAGES = ["/console/approvals", "/console/delegations", "/console/connections",
         "/console/agents", "/console/audit", "/console/policies"]  # fmt: skip
POSTS = ["/console/approvals/apr_x", "/console/delegations/del_x/revoke",
         "/console/connections/con_x/disconnect", "/console/logout",
         "/console/agents/agt_x/suspend", "/console/policies",
         "/console/audit/verify"]  # fmt: skip
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def test_signed_out_everything_leads_to_the_sign_in_page(tenant: TenantSetup) -> None:
    with httpx.Client(base_url=tenant.server.base_url) as anonymous:
        for path in ["/console", *PAGES, "/console/agents/agt_x", "/console/audit/task/x"]:
            response = anonymous.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/console/login?next=")
        for path in POSTS:
            assert anonymous.post(path, data={"csrf": "x"}).status_code == 303, path


def test_roles_and_headers(tenant: TenantSetup) -> None:
    for email, role in (("ann@acme.example", "approver"), ("mia@acme.example", None),
                        ("ada@acme.example", "admin")):  # fmt: skip
        person(tenant, email, role)
    allowed = {
        "ann@acme.example": {
            "/console/approvals",
            "/console/delegations",
            "/console/connections",
            "/console/agents",
        },
        "mia@acme.example": {"/console/delegations", "/console/connections", "/console/agents"},
        "ada@acme.example": set(PAGES),
    }
    for email, pages in allowed.items():
        with http_session(tenant.server.base_url, tenant.name, email) as client:
            for path in PAGES:
                response = client.get(path)
                expected = 200 if path in pages else 403
                assert response.status_code in {
                    expected,
                    200 if path.endswith("agents") and expected == 403 else expected,
                }, (email, path)
                assert response.headers["content-security-policy"] == CSP
                assert response.headers["x-frame-options"] == "DENY"
                assert response.headers["cache-control"] == "no-store"
                assert "<script>" not in response.text and " style=" not in response.text


def test_forms_need_the_console_token_and_origin(tenant: TenantSetup) -> None:
    person(tenant, "ada@acme.example", "admin")
    with http_session(tenant.server.base_url, tenant.name, "ada@acme.example") as client:
        token = csrf_of(client.get("/console/approvals").text)
        for path in POSTS:
            assert client.post(path, data={}).status_code == 403, path
            assert client.post(path, data={"csrf": token + "x"}).status_code == 403, path
            cross = client.post(path, data={"csrf": token},
                                headers={"Sec-Fetch-Site": "cross-site"})  # fmt: skip
            assert cross.status_code == 403, path
            elsewhere = client.post(path, data={"csrf": token},
                                    headers={"Origin": "http://evil.example"})  # fmt: skip
            assert elsewhere.status_code == 403, path
        # Still signed in: none of those did anything, not even the sign-out.
        assert client.get("/console/approvals").status_code == 200


@pytest.mark.parametrize("next_", ["//evil.example/x", "https://evil.example", "/\\evil.example",
                                   "/console//evil.example", "javascript:alert(1)"])  # fmt: skip
def test_no_open_redirect_after_sign_in(tenant: TenantSetup, next_: str) -> None:
    person(tenant, "ada@acme.example", "admin")
    with httpx.Client(base_url=tenant.server.base_url) as client:
        token = csrf_of(client.get("/console/login").text)
        done = client.post("/console/login", data={
            "csrf": token, "tenant": tenant.name, "email": "ada@acme.example",
            "password": "correct horse battery staple", "next": next_,
        })  # fmt: skip
        assert done.status_code == 303 and done.headers["location"] == "/console"


def test_hostile_input_gets_a_page_never_a_500(tenant: TenantSetup) -> None:
    person(tenant, "ada@acme.example", "admin")
    with http_session(tenant.server.base_url, tenant.name, "ada@acme.example") as client:
        token = csrf_of(client.get("/console/approvals").text)
        probes = [
            client.get("/console/approvals/" + "x" * 5000),
            client.get("/console/agents/%00%ff"),
            client.get("/console/audit", params={"since": "yesterday", "decision": "maybe"}),
            client.get("/console/audit/task/" + "é" * 300),
            client.post("/console/approvals/apr_x", content=b"\xff\xfe=\x00",
                        headers={"Content-Type": "application/x-www-form-urlencoded"}),
            client.post("/console/approvals/apr_x", data={"csrf": token, "decision": "maybe"}),
            client.post("/console/approvals/apr_x", data={"csrf": token, "decision": "approve"}),
            client.post("/console/policies", content=b"a=" + b"x" * 300_000,
                        headers={"Content-Type": "application/x-www-form-urlencoded"}),
            # NUL: PostgreSQL cannot store it; the console refuses it before any query
            client.get("/console/approvals/apr_%00"),
            client.get("/console/agents/agt_%00"),
            client.get("/console/audit/task/%00"),
            client.get("/console/audit", params={"agent": "agt_\x00", "user": "usr_\x00"}),
            client.get("/console/login/sso", params={"tenant": "\x00"}),
            client.post("/console/approvals/apr_x", data={"csrf": token, "decision": "deny",
                                                          "reason": "no\x00"}),
        ]  # fmt: skip
        for response in probes:
            assert 400 <= response.status_code < 500, (response.request.url, response.status_code)
            assert response.headers["content-type"].startswith("text/html")
            assert "Traceback" not in response.text


def test_a_wrong_organization_reads_like_a_wrong_password(tenant: TenantSetup) -> None:
    person(tenant, "ada@acme.example", "admin")
    answers = []
    for org, password in ((tenant.name, "wrong"), ("no-such-org", "correct horse battery staple")):
        with httpx.Client(base_url=tenant.server.base_url) as client:
            token = csrf_of(client.get("/console/login").text)
            answers.append(client.post("/console/login", data={
                "csrf": token, "tenant": org, "email": "ada@acme.example", "password": password,
            }))  # fmt: skip
    assert [a.status_code for a in answers] == [401, 401]
    assert all("Wrong organization, email or password." in a.text for a in answers)


def test_the_sign_in_lock_holds_against_parallel_guesses(tenant: TenantSetup) -> None:
    from concurrent.futures import ThreadPoolExecutor

    person(tenant, "ada@acme.example", "admin")

    def attempt(password: str) -> int:
        with httpx.Client(base_url=tenant.server.base_url, timeout=60) as client:
            token = csrf_of(client.get("/console/login").text)
            return client.post("/console/login", data={
                "csrf": token, "tenant": tenant.name, "email": "ada@acme.example",
                "password": password,
            }).status_code  # fmt: skip

    for _ in range(12):  # right passwords give their attempt back: no lock from them
        assert attempt("correct horse battery staple") == 303
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(attempt, [f"guess-{i}" for i in range(16)]))
    assert answers.count(401) == 10 and answers.count(429) == 6, answers
    assert attempt("correct horse battery staple") == 429  # locked, even for the owner


def test_nul_at_the_sign_in_form_is_a_clear_refusal(tenant: TenantSetup) -> None:
    with httpx.Client(base_url=tenant.server.base_url) as client:
        assert client.get("/console/login", params={"tenant": "a\x00"}).status_code == 400
        token = csrf_of(client.get("/console/login").text)
        sent = client.post("/console/login", data={"csrf": token, "tenant": "a\x00b",
                                                   "email": "x@y.z", "password": "p"})  # fmt: skip
        assert sent.status_code == 400 and "Traceback" not in sent.text
