"""An upstream MCP server on 127.0.0.1 with the tools the conformance suite's server
scenarios call (those of the suite's reference "everything" server), built with the
official `mcp` SDK's low-level server like tests/support/mcp_upstream.py. No credential:
ValetKey adds it as an upstream without `--provider`.

Behind ValetKey these tools are listed as `conf__TOOL`; the suite calls them by their bare
names (see baseline.yml). The tools that talk back to the client (log messages, progress,
sampling, elicitation) really do, on the call's stream: this upstream keeps sessions and
answers with SSE (unlike ValetKey's stateless, JSON-only `/mcp`), so whatever ValetKey may
one day relay, it can send. A client that cannot sample or elicit gets a tool error."""

import base64
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.message import ServerMessageMetadata

PREFIX = "conf__"
# A 1x1 transparent PNG and a 44-byte silent WAV header: small, valid payloads.
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5E"
    "rkJggg=="
)
WAV = base64.b64encode(
    b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00D\xac\x00\x00\x88X\x01\x00"
    b"\x02\x00\x10\x00data\x00\x00\x00\x00"
).decode()
SCHEMA_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_EMPTY: dict[str, Any] = {"type": "object", "properties": {}}


def _tool(name: str, description: str, schema: dict[str, Any] | None = None) -> types.Tool:
    return types.Tool(name=name, description=description, input_schema=schema or _EMPTY)


TOOLS = [
    _tool("test_simple_text", "Returns one text block."),
    _tool("test_image_content", "Returns one PNG image block."),
    _tool("test_audio_content", "Returns one audio/wav block."),
    _tool("test_embedded_resource", "Returns one embedded text resource."),
    _tool("test_multiple_content_types", "Returns text, an image and a resource."),
    _tool("test_tool_with_logging", "Sends three log messages, then returns."),
    _tool("test_error_handling", "Always fails with a tool error."),
    _tool("test_tool_with_progress", "Reports progress three times, then returns."),
    _tool("test_sampling", "Asks the client to sample an LLM.",
          {"type": "object", "properties": {"prompt": {"type": "string"}}}),
    _tool("test_elicitation", "Asks the client for the user's details.",
          {"type": "object", "properties": {"message": {"type": "string"}}}),
    _tool("test_elicitation_sep1034_defaults", "Elicits fields that have defaults (SEP-1034)."),
    _tool("test_elicitation_sep1330_enums", "Elicits enum fields (SEP-1330)."),
    _tool("test_reconnection", "Returns one text block (SSE polling scenario)."),
    _tool("json_schema_2020_12_tool", "Takes a JSON Schema 2020-12 input (SEP-1613).", {
        "$schema": SCHEMA_2020_12, "type": "object",
        "$defs": {"address": {"type": "object", "properties": {
            "street": {"type": "string"}, "city": {"type": "string"}}}},
        "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
        "additionalProperties": False,
    }),
]  # fmt: skip

_SEP1034 = {"type": "object", "properties": {
    "name": {"type": "string", "default": "John Doe"},
    "age": {"type": "integer", "default": 30},
    "score": {"type": "number", "default": 95.5},
    "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
    "verified": {"type": "boolean", "default": True},
}}  # fmt: skip
_SEP1330 = {"type": "object", "properties": {
    "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
    "titledSingle": {"type": "string", "oneOf": [
        {"const": "value1", "title": "First"}, {"const": "value2", "title": "Second"}]},
    "legacyEnum": {"type": "string", "enum": ["opt1", "opt2"],
                   "enumNames": ["Option 1", "Option 2"]},
    "untitledMulti": {"type": "array", "items": {"type": "string",
                                                 "enum": ["option1", "option2"]}},
    "titledMulti": {"type": "array", "items": {"anyOf": [
        {"const": "value1", "title": "First"}, {"const": "value2", "title": "Second"}]}},
}}  # fmt: skip


def _text(text: str, error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=error)


def _resource() -> types.EmbeddedResource:
    inner = types.TextResourceContents(
        uri="test://embedded-resource", mime_type="text/plain", text="An embedded resource."
    )
    return types.EmbeddedResource(type="resource", resource=inner)


async def _ask(ctx: ServerRequestContext[Any, Any], request: Any, result: Any) -> Any:
    """A request to the client on this call's stream, or a tool error when it cannot be
    asked (no back-channel, no answer within 5 s)."""
    metadata = ServerMessageMetadata(related_request_id=ctx.request_id)
    try:
        return await ctx.session.send_request(request, result, 5.0, metadata)
    except Exception as exc:
        return _text(f"the client could not be asked: {type(exc).__name__}: {exc}", error=True)


async def _elicit(
    ctx: ServerRequestContext[Any, Any], message: str, schema: dict[str, Any]
) -> types.CallToolResult:
    params = types.ElicitRequestFormParams(message=message, requested_schema=schema)
    answer = await _ask(ctx, types.ElicitRequest(params=params), types.ElicitResult)
    if isinstance(answer, types.CallToolResult):
        return answer
    return _text(f"elicitation {answer.action}: {answer.content}")


async def _call(
    ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    name, arguments = params.name, dict(params.arguments or {})
    image = types.ImageContent(type="image", data=PNG, mime_type="image/png")
    if name in ("test_simple_text", "test_reconnection"):
        return _text("This is a simple text response for testing.")
    if name == "test_image_content":
        return types.CallToolResult(content=[image])
    if name == "test_audio_content":
        audio = types.AudioContent(type="audio", data=WAV, mime_type="audio/wav")
        return types.CallToolResult(content=[audio])
    if name == "test_embedded_resource":
        return types.CallToolResult(content=[_resource()])
    if name == "test_multiple_content_types":
        block = types.TextContent(type="text", text="Multiple content types:")
        return types.CallToolResult(content=[block, image, _resource()])
    if name == "test_tool_with_logging":
        for step in ("starting", "working", "done"):
            note = types.LoggingMessageNotification(
                params=types.LoggingMessageNotificationParams(level="info", data=step)
            )
            await ctx.session.send_notification(note, ctx.request_id)
            await anyio.sleep(0.05)
        return _text("Logged three messages.")
    if name == "test_error_handling":
        return _text("This tool intentionally returns an error for testing", error=True)
    if name == "test_tool_with_progress":
        for done in (0, 50, 100):
            await ctx.session.report_progress(done, 100, f"{done}%")
            await anyio.sleep(0.05)
        return _text("Progress reported.")
    if name == "test_sampling":
        message = types.SamplingMessage(role="user", content=types.TextContent(
            type="text", text=str(arguments.get("prompt", "Test prompt"))))  # fmt: skip
        request = types.CreateMessageRequest(
            params=types.CreateMessageRequestParams(messages=[message], max_tokens=100)
        )
        answer = await _ask(ctx, request, types.CreateMessageResult)
        if isinstance(answer, types.CallToolResult):
            return answer
        return _text(f"LLM response: {answer.content}")
    if name == "test_elicitation":
        schema = {"type": "object", "properties": {
            "username": {"type": "string"}, "email": {"type": "string"}}}  # fmt: skip
        return await _elicit(ctx, str(arguments.get("message", "Your details?")), schema)
    if name == "test_elicitation_sep1034_defaults":
        return await _elicit(ctx, "Please review and update the form fields", _SEP1034)
    if name == "test_elicitation_sep1330_enums":
        return await _elicit(ctx, "Please pick", _SEP1330)
    if name == "json_schema_2020_12_tool":
        return _text(f"received {sorted(arguments)}")
    return _text(f"no such tool {name!r}", error=True)


def _server() -> Server[Any]:
    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=TOOLS)

    return Server("conformance-tools", version="1.0", on_list_tools=list_tools, on_call_tool=_call)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_conformance_upstream() -> Iterator[str]:
    """The upstream on 127.0.0.1 for the block (uvicorn in a thread); its `/mcp` URL."""
    port = _free_port()
    app = _server().streamable_http_app(stateless_http=False, json_response=False)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none",
                            lifespan="on")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the conformance upstream did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(10)
