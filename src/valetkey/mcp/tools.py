"""How an upstream's tool becomes one of ValetKey's, and a call to it an intent. Pure.

- **Name**: `UPSTREAM__TOOL` (upstream names hold no `_`, so the first `__` splits).
- **Class**: the admin's override; else `read` for `readOnlyHint`, `delete` for
  `destructiveHint`, otherwise `write`. The listed tool's annotations are rewritten to
  match the class, so a client's own confirmations line up with ValetKey's.
- **Action**: `mcp:UPSTREAM.TOOL`, registered in the tenant in that class, needing the
  scope `mcp:<class>`.
- **Resource**: the override's template over the arguments (`crm:deals/{deal_id}`), else
  `mcp:UPSTREAM/TOOL`.
- **Context**: channel `mcp`, the upstream and tool, the arguments (as JSON, up to 2 KiB;
  a preview beyond) and their SHA-256, which binds an approval to these very arguments.
"""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mcp_types as types

from valetkey.gateway.sanitize import sanitize
from valetkey.mcp.templates import render
from valetkey.mcp.upstreams import SEPARATOR, TOOL_RE, ToolOverride, Upstream, action_name
from valetkey.policy.decision import Decision
from valetkey.policy.intent import Intent

MAX_ARGUMENTS_IN_CONTEXT = 2048
APPROVAL_META = "valetkey/approval"
DIGEST_KEY = "arguments_sha256"
_HTML_HINTS = ("<html", "<body", "<div", "<p>", "<p ", "<span", "<!--", "<style", "<br", "<td")


def tool_class(annotations: types.ToolAnnotations | None, override: ToolOverride | None) -> str:
    if override is not None and override.klass is not None:
        return override.klass
    if annotations is not None:
        if annotations.read_only_hint:
            return "read"
        if annotations.destructive_hint:
            return "delete"
    return "write"


def split_name(name: str) -> tuple[str, str] | None:
    upstream, sep, tool = name.partition(SEPARATOR)
    return (upstream, tool) if sep and upstream and tool else None


@dataclass(frozen=True, slots=True)
class UpstreamTool:
    """One tool of one upstream, as ValetKey offers and decides it."""

    upstream: Upstream
    tool: types.Tool

    @property
    def override(self) -> ToolOverride | None:
        return self.upstream.override(self.tool.name)

    @property
    def klass(self) -> str:
        return tool_class(self.tool.annotations, self.override)

    @property
    def action(self) -> str:
        return action_name(self.upstream.name, self.tool.name)

    @property
    def public_name(self) -> str:
        return self.upstream.prefix + self.tool.name

    @property
    def template(self) -> str:
        found = self.override
        if found is not None and found.resource is not None:
            return found.resource
        return f"mcp:{self.upstream.name}/{self.tool.name}"

    @property
    def sanitizing(self) -> bool:
        found = self.override
        if found is not None and found.sanitize is not None:
            return found.sanitize
        return self.upstream.sanitize

    def listed(self) -> types.Tool:
        """The tool as ValetKey lists it: namespaced, annotated with its class."""
        klass = self.klass
        given = self.tool.annotations or types.ToolAnnotations()
        annotations = given.model_copy(update={
            "read_only_hint": klass == "read",
            "destructive_hint": None if klass == "read" else klass != "write",
        })  # fmt: skip
        meta = {**(self.tool.meta or {}), "valetkey/action": self.action, "valetkey/class": klass}
        return self.tool.model_copy(
            update={"name": self.public_name, "annotations": annotations, "meta": meta}
        )


def exposable(tool: types.Tool) -> bool:
    """Tools whose names can become action names (MCP's alphabet, at most 64 characters)."""
    return bool(TOOL_RE.fullmatch(tool.name))


def canonical_arguments(arguments: Mapping[str, Any]) -> str:
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def arguments_digest(arguments: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_arguments(arguments).encode()).hexdigest()


def intent_for(item: UpstreamTool, arguments: Mapping[str, Any]) -> Intent:
    """The call's intent; TemplateError when the arguments cannot fill the resource."""
    resource = render(item.template, arguments)
    text = canonical_arguments(arguments)
    context: dict[str, Any] = {
        "channel": "mcp", "upstream": item.upstream.name, "tool": item.tool.name,
        DIGEST_KEY: hashlib.sha256(text.encode()).hexdigest(),
    }  # fmt: skip
    if len(text.encode()) <= MAX_ARGUMENTS_IN_CONTEXT:
        context["arguments"] = dict(arguments)
    else:
        context["arguments_preview"] = text[:MAX_ARGUMENTS_IN_CONTEXT]
    return Intent(item.action, resource, context=context)


def approved_digest(intent: Mapping[str, Any]) -> str | None:
    """The arguments digest an approval's stored intent was asked with."""
    context = intent.get("context")
    found = context.get(DIGEST_KEY) if isinstance(context, dict) else None
    return found if isinstance(found, str) else None


def error_result(text: str, **meta: Any) -> types.CallToolResult:
    """A tool error the model can read (and act on)."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], is_error=True,
        _meta={f"valetkey/{k}": v for k, v in meta.items()} or None,
    )  # fmt: skip


def refusal_text(decision: Decision) -> str:
    """What a model is told when ValetKey does not let a call through."""
    reasons = "; ".join(f"{r.code}: {r.message}" for r in decision.reasons) or "denied"
    if decision.decision == "approval_required" and decision.approval is not None:
        approval = decision.approval
        return (
            f"ValetKey held this call for a human's approval (approval {approval['id']}, "
            f"expires {approval['expires_at']}). Tell the user it is waiting for approval at "
            f"{approval['url']}. Once a human approves it, call this tool again with exactly "
            "the same arguments: the approved call then goes through, once. "
            f"(decision {decision.id}: {reasons})"
        )
    if decision.limits.get("retry_after") is not None:
        return (
            f"ValetKey refused this call: {reasons}. Retry after "
            f"{max(1, int(decision.limits['retry_after']))} seconds. (decision {decision.id})"
        )
    return (
        f"ValetKey refused this call: {reasons}. Do not retry it as it is; tell the user "
        f"what was refused and why. (decision {decision.id})"
    )


def _looks_html(text: str) -> bool:
    head = text[:4096].lower()
    return any(hint in head for hint in _HTML_HINTS)


def _clean(text: str, media: str | None, removed: dict[str, int]) -> str:
    cleaned = sanitize(text, media or ("text/html" if _looks_html(text) else "text/plain"))
    for kind, count in cleaned.removed.items():
        removed[kind] = removed.get(kind, 0) + count
    return cleaned.body


def _clean_json(value: Any, removed: dict[str, int]) -> Any:
    if isinstance(value, str):
        return _clean(value, None, removed)
    if isinstance(value, list):
        return [_clean_json(v, removed) for v in value]
    if isinstance(value, dict):
        return {k: _clean_json(v, removed) for k, v in value.items()}
    return value


def sanitized(result: types.CallToolResult) -> tuple[types.CallToolResult, dict[str, int]]:
    """The result with hidden content stripped from its text (HTML parsed when it looks like
    HTML or says so), and what was removed, by kind."""
    removed: dict[str, int] = {}
    blocks: list[types.ContentBlock] = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            block = block.model_copy(update={"text": _clean(block.text, None, removed)})
        elif isinstance(block, types.EmbeddedResource) and isinstance(
            block.resource, types.TextResourceContents
        ):
            inner = block.resource
            text = _clean(inner.text, inner.mime_type, removed)
            block = block.model_copy(update={"resource": inner.model_copy(update={"text": text})})
        blocks.append(block)
    structured = result.structured_content
    if structured is not None:
        structured = _clean_json(structured, removed)
    cleaned = result.model_copy(update={"content": blocks, "structured_content": structured})
    return cleaned, removed


def removed_header(removed: Mapping[str, int]) -> str:
    """The same summary as the HTTP gateway's `X-ValetKey-Sanitized`."""
    return ", ".join(f"{kind}={count}" for kind, count in sorted(removed.items())) or "none"
