"""Policies (admins): the tenant's Cedar policies and their version history; edit, validate
and push a new version with the errors shown next to the text; roll back; and "try an
intent" — one case through `PolicyService.test`, against the active version or the text in
the editor — showing the decision, its reasons and the policies that decided it.

Everything goes through `PolicyService`, as the CLI does; this module only adds where an
error points in the text (which policy, on which line), to show it next to the editor."""

import re
from dataclasses import dataclass, field
from typing import Any

import cedarpy
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from valetkey.errors import InvalidInput, NotFound
from valetkey.identity.models import CLASSES, Client
from valetkey.policy.service import CaseResult, PolicyService
from valetkey.web.console.base import ADMIN, Viewer, cid, form, redirect, render, runtime_of, viewer

router = APIRouter(prefix="/console/policies", include_in_schema=False)
MAX_SHOWN_ERRORS = 50
_NAMED = re.compile(r"^\[(policy\d+)\]")


# where an error points -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Problem:
    """One error as the service reports it (`message`), and the policy it names, if any:
    Cedar's id (`policy3`), its `@id` annotation and the line its statement starts on."""

    message: str
    policy: str | None = None
    label: str | None = None
    line: int | None = None


def _statements(text: str) -> list[tuple[int, str]]:
    """The policy statements of `text` in order, each with the line it starts on: split
    at `;` outside string literals and `//` comments (Cedar has no other comments)."""
    found: list[tuple[int, str]] = []
    start: int | None = None
    line, i, n = 1, 0, len(text)
    begin = 0
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
        elif ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif start is None and not ch.isspace():
            start, begin = line, i
        if ch == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\":
                    i += 1
                elif text[i] == "\n":
                    line += 1
                i += 1
        elif ch == ";" and start is not None:
            found.append((start, text[begin : i + 1]))
            start = None
        i += 1
    if start is not None:
        found.append((start, text[begin:]))
    return found


def _labels(text: str) -> dict[str, str]:
    """Cedar's policy ids (`policy0`, …) to their `@id` annotations."""
    try:
        parsed = orjson.loads(cedarpy.policies_to_json_str(text))
    except ValueError:
        return {}
    found: dict[str, str] = {}
    for group in ("staticPolicies", "templates"):
        for pid, policy in (parsed.get(group) or {}).items():
            label = (policy.get("annotations") or {}).get("id")
            if isinstance(label, str):
                found[pid] = label
    return found


def locate(text: str, errors: list[str]) -> list[Problem]:
    """Each error with the policy and line it names; a parse error gets the line of the
    first statement that does not parse on its own."""
    statements = _statements(text)
    labels = _labels(text) if any(_NAMED.match(e) for e in errors) else {}
    problems = []
    for error in errors[:MAX_SHOWN_ERRORS]:
        named = _NAMED.match(error)
        if named:
            pid = named.group(1)
            index = int(pid.removeprefix("policy"))
            line = statements[index][0] if index < len(statements) else None
            problems.append(Problem(error, pid, labels.get(pid), line))
        elif error.startswith("does not parse"):
            problems.append(Problem(error, line=_unparsable(statements)))
        else:
            problems.append(Problem(error))
    return problems


def _unparsable(statements: list[tuple[int, str]]) -> int | None:
    for line, statement in statements:
        try:
            cedarpy.PolicySet.from_str(statement)
        except ValueError:
            return line
    return None


# the page's state ------------------------------------------------------------------------
@dataclass
class Trial:
    """The "try an intent" form: what was entered, the field errors, and the outcome."""

    agent: str = ""
    user: str = ""
    action: str = ""
    resource: str = ""
    context: str = ""
    draft: bool = False
    errors: dict[str, str] = field(default_factory=dict)
    result: CaseResult | None = None
    against: str = ""  # which text decided: "version 3", "the defaults", "the editor's text"

    @classmethod
    def from_form(cls, fields: dict[str, str]) -> "Trial":
        return cls(
            agent=fields.get("agent", "").strip(),
            user=fields.get("user", "").strip(),
            action=fields.get("action", "").strip(),
            resource=fields.get("resource", "").strip(),
            context=fields.get("context", ""),
            draft=fields.get("draft") == "on",
        )


@dataclass
class Editor:
    text: str
    note: str = ""
    problems: list[Problem] = field(default_factory=list)
    total_errors: int = 0
    valid: bool = False  # "Validate only" found no error


def _editor(fields: dict[str, str]) -> Editor:
    """The editor's text as posted (a browser sends CRLF line ends) and the note."""
    text = fields.get("text", "").replace("\r\n", "\n")
    return Editor(text, fields.get("note", "").strip()[:256])


async def _page(
    request: Request,
    who: Viewer,
    editor: Editor | None = None,
    trial: Trial | None = None,
    status: int = 200,
) -> Response:
    runtime = runtime_of(request)
    service = runtime.policies(cid(request))
    current = await service.show(who.tenant.id)
    history = await service.history(who.tenant.id)
    active = next((v for v in history if v["active"]), None)
    agents = await runtime.identity(cid(request)).list_agents(who.tenant.id)
    actions = await service.list_actions(who.tenant.id)
    names = sorted({a.name for a in actions} | set(CLASSES))
    return render(
        request, who, "policies.html", status, title="Policies", current=current,
        active=active, history=history, editor=editor or Editor(str(current["text"])),
        trial=trial or Trial(), agents=agents, actions=names,
    )  # fmt: skip


@router.get("")
async def page(request: Request) -> Response:
    who = await viewer(request, ADMIN)
    return await _page(request, who)


@router.post("")
async def save(request: Request) -> Response:
    """Validate the text in the editor only, or validate, save and activate it."""
    who = await viewer(request, ADMIN)
    fields = await form(request)
    service = runtime_of(request).policies(cid(request))
    editor = _editor(fields)
    errors = await service.validate(who.tenant.id, editor.text)
    if errors:
        editor.problems, editor.total_errors = locate(editor.text, errors), len(errors)
        return await _page(request, who, editor, Trial.from_form(fields), 400)
    if fields.get("op") != "push":
        editor.valid = True
        return await _page(request, who, editor, Trial.from_form(fields))
    await service.push(who.tenant.id, editor.text, editor.note)
    return redirect("/console/policies", "pushed")


@router.post("/try")
async def try_intent(request: Request) -> Response:
    """Run one intent through the policies, as `policies test` runs a case."""
    who = await viewer(request, ADMIN)
    fields = await form(request)
    runtime = runtime_of(request)
    service = runtime.policies(cid(request))
    editor = _editor(fields) if "text" in fields else None
    trial = Trial.from_form(fields)
    agents = await runtime.identity(cid(request)).list_agents(who.tenant.id)
    case = await _case(request, who, trial, agents)
    text: str | None = None
    if trial.draft and editor is None:
        trial.errors["draft"] = "There is no text in the editor to try."
    elif trial.draft and editor is not None:
        errors = await service.validate(who.tenant.id, editor.text)
        if errors:
            editor.problems, editor.total_errors = locate(editor.text, errors), len(errors)
            trial.errors["draft"] = (
                "The text in the editor does not validate (see its errors above): fix it, "
                "or try the active version instead."
            )
        text = editor.text
    if case is not None and not trial.errors:
        trial.result, message = await _run(service, who, case, text)
        if message:
            trial.errors[_field_of(message)] = message
    if trial.result is not None:
        trial.against = (
            "the text in the editor" if text is not None else await _active(service, who)
        )
    return await _page(request, who, editor, trial, 400 if trial.errors else 200)


async def _case(
    request: Request, who: Viewer, trial: Trial, agents: list[Client]
) -> dict[str, Any] | None:
    """The one `policies test` case the form describes; field errors go to `trial.errors`."""
    case: dict[str, Any] = {"name": "try", "expect": "allow"}
    if trial.agent:
        found = next((a for a in agents if trial.agent in (a.id, a.name)), None)
        if found is None:
            trial.errors["agent"] = "There is no such agent in this organization."
        else:
            case["agent"] = found.id
    if trial.user:
        try:
            user = await runtime_of(request).identity(cid(request)).user(who.tenant.id, trial.user)
        except (NotFound, InvalidInput):
            trial.errors["user"] = "There is no user with this email in this organization."
        else:
            case["user"] = user.email
    if not trial.action:
        trial.errors["action"] = "Enter an action, such as crm:deals.read, or a class (read)."
    if not trial.resource:
        trial.errors["resource"] = "Enter the resource the action is on, such as crm:deals/1."
    intent: dict[str, Any] = {"action": trial.action, "resource": trial.resource}
    if trial.context.strip():
        try:
            context = orjson.loads(trial.context)
        except orjson.JSONDecodeError as exc:
            trial.errors["context"] = f"The context is not JSON: {exc}."
        else:
            if isinstance(context, dict):
                intent["context"] = context
            else:
                trial.errors["context"] = 'The context is a JSON object, such as {"a": 1}.'
    case["intent"] = intent
    return None if trial.errors else case


async def _run(
    service: PolicyService, who: Viewer, case: dict[str, Any], text: str | None
) -> tuple[CaseResult | None, str]:
    try:
        [result] = await service.test(who.tenant.id, [case], text)
    except (InvalidInput, NotFound) as exc:
        return None, str(exc).removeprefix("try: ")
    return result, ""


def _field_of(message: str) -> str:
    """Which field an error of `parse_intent` (or the service) is about."""
    for name in ("action", "resource", "context", "agent", "user"):
        if message.startswith(name) or f" {name} " in message[:40]:
            return name
    return "form"


async def _active(service: PolicyService, who: Viewer) -> str:
    shown = await service.show(who.tenant.id)
    return "ValetKey's default policies" if shown["default"] else f"version {shown['version']}"


@router.get("/versions/{version}")
async def one_version(request: Request, version: int) -> Response:
    who = await viewer(request, ADMIN)
    service = runtime_of(request).policies(cid(request))
    found = next((v for v in await service.history(who.tenant.id) if v["version"] == version),
                 None)  # fmt: skip
    if found is None:
        raise NotFound(f"no policy version {version}")
    return render(request, who, "policy_version.html", title=f"Policy version {version}",
                  version=found)  # fmt: skip


@router.post("/versions/{version}/rollback")
async def rollback(request: Request, version: int) -> Response:
    who = await viewer(request, ADMIN)
    await form(request)
    await runtime_of(request).policies(cid(request)).rollback(who.tenant.id, version)
    return redirect("/console/policies", "rolled-back")
