"""The OpenID AuthZEN interop "Todo" scenario over real HTTP: every official decision vector
(tests/conformance/authzen) against `/access/v1/evaluation` and `/access/v1/evaluations`, with
the scenario's Cedar policies and user directory pushed to a tenant; the PDP metadata
document; and the refusals (no or wrong credentials, no `pdp` right, malformed bodies)."""

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TenantSetup
from tests.integration.helpers import http, make_tenant
from tests.support.server import RunningServer

AUTHZEN = Path(__file__).resolve().parents[1] / "conformance" / "authzen"
POLICIES = AUTHZEN / "todo.cedar"
ENTITIES = AUTHZEN / "todo-entities.json"
VECTOR_FILES = sorted(AUTHZEN.glob("decisions-*.json"))
EVALUATION = "/access/v1/evaluation"
EVALUATIONS = "/access/v1/evaluations"

# PID -> email, to name the users in failure messages.
NAMES = {e["uid"]["id"]: e["attrs"]["email"] for e in json.loads(ENTITIES.read_text())}


def _vectors(path: Path, section: str) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text()).get(section) or [])


def _describe(request: dict[str, Any]) -> str:
    subject, resource = request.get("subject") or {}, request.get("resource") or {}
    who = NAMES.get(subject.get("id"), subject.get("id"))
    what = f"{resource.get('type')}:{resource.get('id')}" if resource else "(per item)"
    owner = (resource.get("properties") or {}).get("ownerID")
    return f"{who} {request['action']['name']} {what}" + (f" owner={owner}" if owner else "")


class Pdp:
    """A tenant with the Todo policies and directory, and a client holding the pdp right."""

    def __init__(self, tenant: TenantSetup, client: dict[str, Any]) -> None:
        self.tenant = tenant
        self.client = client

    @property
    def server(self) -> RunningServer:
        return self.tenant.server

    @property
    def auth(self) -> tuple[str, str]:
        return self.client["client_id"], self.client["client_secret"]

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        auth: tuple[str, str] | None = None,
        content: bytes | None = None,
        anonymous: bool = False,
    ) -> httpx.Response:
        extra: dict[str, Any] = {}
        if not anonymous:
            extra["auth"] = auth or self.auth
        if content is not None:
            extra["content"] = content
            extra["headers"] = {"Content-Type": "application/json"}
        else:
            extra["json"] = body
        return http.post(self.server.base_url + path, **extra)


@pytest.fixture(scope="module")
def pdp(server: RunningServer) -> Pdp:
    """Read-only for the tests below, so one tenant per backend for the whole module."""
    tenant = make_tenant(server)
    pushed = server.cli("policies", "push", str(POLICIES), "--tenant", tenant.name,
                        "--entities", str(ENTITIES), "--note", "AuthZEN interop Todo")  # fmt: skip
    assert pushed["active"] is True, pushed
    client = server.cli("clients", "create", "todo-pep", "--tenant", tenant.name,
                        "--right", "pdp")  # fmt: skip
    assert client["client_id"] and client["client_secret"], client
    return Pdp(tenant, dict(client))


def _json_ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return dict(response.json())


def test_the_vectors_are_there() -> None:
    # VECTOR_FILES is a glob: the tests below must not silently parametrize over nothing.
    assert VECTOR_FILES, f"no decisions-*.json under {AUTHZEN}"
    for path in VECTOR_FILES:
        assert _vectors(path, "evaluation"), f"{path.name} has no evaluation vectors"


# the official vectors -------------------------------------------------------------------------
@pytest.mark.parametrize("path", VECTOR_FILES, ids=[p.name for p in VECTOR_FILES])
def test_evaluation_vectors(pdp: Pdp, path: Path) -> None:
    """Each `evaluation` vector, one request at a time; every mismatch is listed."""
    mismatches = []
    vectors = _vectors(path, "evaluation")
    for index, vector in enumerate(vectors):
        response = pdp.post(EVALUATION, vector["request"])
        if response.status_code != 200:
            got: Any = f"HTTP {response.status_code} {response.text[:200]}"
        else:
            body = _json_ok(response)
            got = body.get("decision")
            assert isinstance(got, bool), body
        if got != vector["expected"]:
            mismatches.append(
                f"  #{index} {_describe(vector['request'])}: "
                f"expected {vector['expected']}, got {got}"
            )
    assert not mismatches, (
        f"{len(mismatches)} of {len(vectors)} evaluation vectors in {path.name} differ:\n"
        + "\n".join(mismatches)
    )


@pytest.mark.parametrize("path", VECTOR_FILES, ids=[p.name for p in VECTOR_FILES])
def test_evaluations_vectors(pdp: Pdp, path: Path) -> None:
    """Each batch `evaluations` vector (top-level defaults, items overriding them), in order."""
    vectors = _vectors(path, "evaluations")
    if not vectors:
        pytest.skip(f"{path.name} has no batch (evaluations) vectors")
    mismatches = []
    for index, vector in enumerate(vectors):
        request, expected = vector["request"], vector["expected"]
        response = pdp.post(EVALUATIONS, request)
        if response.status_code != 200:
            got: Any = f"HTTP {response.status_code} {response.text[:200]}"
        else:
            body = _json_ok(response)
            answers = body.get("evaluations")
            assert isinstance(answers, list), body
            got = [{"decision": a.get("decision")} for a in answers]
        if got != [{"decision": e["decision"]} for e in expected]:
            mismatches.append(
                f"  #{index} {_describe(request)} x{len(request['evaluations'])}: "
                f"expected {expected}, got {got}"
            )
    assert not mismatches, (
        f"{len(mismatches)} of {len(vectors)} evaluations vectors in {path.name} differ:\n"
        + "\n".join(mismatches)
    )


@pytest.mark.parametrize("path", VECTOR_FILES, ids=[p.name for p in VECTOR_FILES])
def test_evaluation_vectors_as_one_batch(pdp: Pdp, path: Path) -> None:
    """The same single vectors as the items of one batch: the answers come back in order."""
    vectors = _vectors(path, "evaluation")
    body = _json_ok(pdp.post(EVALUATIONS, {"evaluations": [v["request"] for v in vectors]}))
    decisions = [answer.get("decision") for answer in body["evaluations"]]
    assert len(decisions) == len(vectors), body
    mismatches = [
        f"  #{i} {_describe(v['request'])}: expected {v['expected']}, got {got}"
        for i, (v, got) in enumerate(zip(vectors, decisions, strict=True))
        if got != v["expected"]
    ]
    assert not mismatches, "batch answers differ:\n" + "\n".join(mismatches)


def test_decisions_come_from_the_callers_tenant(pdp: Pdp) -> None:
    """A pdp client of a tenant without the Todo policies gets its own tenant's answer."""
    other = make_tenant(pdp.server)
    stranger = pdp.server.cli("clients", "create", "other-pep", "--tenant", other.name,
                              "--right", "pdp")  # fmt: skip
    rick_reads = _vectors(VECTOR_FILES[0], "evaluation")[2]["request"]
    assert rick_reads["action"]["name"] == "can_read_todos"
    assert _json_ok(pdp.post(EVALUATION, rick_reads))["decision"] is True
    auth = (stranger["client_id"], stranger["client_secret"])
    assert _json_ok(pdp.post(EVALUATION, rick_reads, auth=auth))["decision"] is False


# metadata ----------------------------------------------------------------------------------
def test_well_known_authzen_configuration(pdp: Pdp) -> None:
    response = http.get(pdp.server.base_url + "/.well-known/authzen-configuration")
    meta = _json_ok(response)
    issuer = pdp.server.issuer
    assert meta["policy_decision_point"] == issuer
    assert meta["access_evaluation_endpoint"] == issuer + EVALUATION
    assert meta["access_evaluations_endpoint"] == issuer + EVALUATIONS


# refusals ----------------------------------------------------------------------------------
SAMPLE = {
    "subject": {"type": "user", "id": next(iter(NAMES))},
    "action": {"name": "can_read_todos"},
    "resource": {"type": "todo", "id": "todo-1"},
}


def _refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    try:
        body = response.json()
    except ValueError:
        return
    assert not isinstance(body, dict) or ("decision" not in body and "evaluations" not in body)


@pytest.mark.parametrize("path", [EVALUATION, EVALUATIONS])
def test_no_or_wrong_credentials_are_401(pdp: Pdp, path: str) -> None:
    body = SAMPLE if path == EVALUATION else {**SAMPLE, "evaluations": [{}]}
    _refused(pdp.post(path, body, anonymous=True), 401)
    _refused(pdp.post(path, body, auth=(pdp.client["client_id"], "not-the-secret")), 401)
    _refused(pdp.post(path, body, auth=("no-such-client", "whatever")), 401)


def test_clients_without_the_pdp_right_are_403(pdp: Pdp) -> None:
    """Authenticated, but not a PDP caller: an introspector, a client with no rights, and an
    agent (the tenant's `invoice-bot`, which has a secret)."""
    introspector = pdp.tenant.introspector("todo-introspector")
    plain = pdp.server.cli("clients", "create", "todo-plain", "--tenant", pdp.tenant.name)
    for caller in (introspector, plain, pdp.tenant.agent):
        auth = (caller["client_id"], caller["client_secret"])
        _refused(pdp.post(EVALUATION, SAMPLE, auth=auth), 403)
        _refused(pdp.post(EVALUATIONS, {**SAMPLE, "evaluations": [{}]}, auth=auth), 403)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (EVALUATION, b"{not json"),
        (EVALUATION, b"[]"),
        (EVALUATION, json.dumps({k: v for k, v in SAMPLE.items() if k != "action"}).encode()),
        (EVALUATION, json.dumps({**SAMPLE, "subject": "rick"}).encode()),
        (EVALUATION, json.dumps({**SAMPLE, "resource": {"type": "todo"}}).encode()),
        (EVALUATION, json.dumps({**SAMPLE, "context": [1]}).encode()),
        (EVALUATIONS, b"{not json"),
        (EVALUATIONS, json.dumps({**SAMPLE, "evaluations": {"1": {}}}).encode()),
        (EVALUATIONS, json.dumps({"evaluations": [{"action": {"name": "x"}}]}).encode()),
    ],
    ids=[
        "not-json",
        "array",
        "no-action",
        "subject-not-object",
        "resource-without-id",
        "context-not-object",
        "batch-not-json",
        "batch-evaluations-not-array",
        "batch-item-without-subject",
    ],
)
def test_malformed_bodies_are_400(pdp: Pdp, path: str, body: bytes) -> None:
    _refused(pdp.post(path, content=body), 400)


def test_a_caller_cannot_promote_its_subject(pdp: Pdp) -> None:
    """The tenant's directory wins over request properties: claiming the admin role for
    Beth (a viewer... an editor at most) does not let her delete Rick's todo."""
    beth = next(uid for uid, email in NAMES.items() if email.startswith("beth"))
    rick = NAMES[next(uid for uid, email in NAMES.items() if email.startswith("rick"))]
    request = {
        "subject": {"type": "user", "id": beth, "properties": {"roles": ["admin"]}},
        "action": {"name": "can_delete_todo"},
        "resource": {"type": "todo", "id": "t-1", "properties": {"ownerID": rick}},
    }
    assert _json_ok(pdp.post(EVALUATION, request))["decision"] is False


def test_a_callers_context_never_approves(server: RunningServer) -> None:
    """On the default policies an approved context allows risky actions; a PEP's own
    context must not be able to say so."""
    tenant = make_tenant(server)
    client = server.cli("clients", "create", "pep", "--tenant", tenant.name, "--right", "pdp")
    request = {"subject": {"type": "agent", "id": "agt_x"}, "action": {"name": "delete"},
               "resource": {"type": "Resource", "id": "crm:deals/1"},
               "context": {"approved": True}}  # fmt: skip
    answer = http.post(server.base_url + EVALUATION, json=request,
                       auth=(client["client_id"], client["client_secret"]))  # fmt: skip
    assert answer.status_code == 200 and answer.json()["decision"] is False
    read = {**request, "action": {"name": "read"}, "context": {}}
    allowed = http.post(server.base_url + EVALUATION, json=read,
                        auth=(client["client_id"], client["client_secret"]))  # fmt: skip
    assert allowed.json()["decision"] is True  # the default policies do answer
