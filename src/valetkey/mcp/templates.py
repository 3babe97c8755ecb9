"""Resource templates over a tool call's arguments: `crm:deals/{deal_id}` names the record a
call touches, so policies, mandates (`crm:deals/*`) and approvals can name it too.

A value only fills a placeholder when it is a plain identifier-like string or a whole
number (`[A-Za-z0-9][A-Za-z0-9_.@+:=-]*`, at most 128 characters): no `/`, `*`, spaces or
control characters, so an argument can never walk the resource out of its template
(`7/../../contacts`) or widen it into a pattern. Pure; no I/O."""

import re
from collections.abc import Mapping
from typing import Any

from valetkey.policy.intent import MAX_RESOURCE

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}")
_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+:=-]{0,127}")


class TemplateError(ValueError):
    """The template, or the arguments it is filled with, cannot name a resource."""


def check_template(template: str) -> tuple[str, ...]:
    """The template's placeholders, or TemplateError."""
    if not template or len(template) > MAX_RESOURCE or not template.isprintable():
        raise TemplateError(f"a resource template is 1-{MAX_RESOURCE} printable characters")
    if any(c in PLACEHOLDER.sub("", template) for c in "{}"):
        raise TemplateError("braces only surround an argument's name, e.g. crm:deals/{deal_id}")
    return tuple(PLACEHOLDER.findall(template))


def render(template: str, arguments: Mapping[str, Any]) -> str:
    """The resource for these arguments, or TemplateError naming what is missing or unfit."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in arguments:
            raise TemplateError(f"the argument {name!r} is required (the resource names it)")
        raw = arguments[name]
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise TemplateError(f"the argument {name!r} must be a string or a whole number")
        text = str(raw)
        if not _VALUE.fullmatch(text):
            raise TemplateError(
                f"the argument {name!r} must be an identifier (letters, digits and _ . @ + : = -, "
                "at most 128 characters)"
            )
        return text

    resource = PLACEHOLDER.sub(value, template)
    if len(resource) > MAX_RESOURCE:
        raise TemplateError(f"the resource is longer than {MAX_RESOURCE} characters")
    return resource
