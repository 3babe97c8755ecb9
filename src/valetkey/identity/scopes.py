"""Scope syntax (RFC 6749 §3.3) and the implication hierarchy (`deals:admin` ⊃ `deals:write`).

Pure functions over a resource's declared scopes; no I/O.
"""

import re
from collections.abc import Iterable, Mapping

# scope-token = 1*( %x21 / %x23-5B / %x5D-7E ); we also reject '>' which the CLI uses.
_SCOPE_RE = re.compile(r"^[\x21\x23-\x3d\x3f-\x5b\x5d-\x7e]{1,128}$")
_LADDER = ("admin", "write", "read")


def valid_scope(scope: str) -> bool:
    return bool(_SCOPE_RE.match(scope))


def parse_scope_param(value: str) -> list[str]:
    """Split a space-delimited `scope` parameter, keeping order and dropping repeats."""
    seen: dict[str, None] = {}
    for item in value.split(" "):
        if item:
            seen.setdefault(item, None)
    return list(seen)


def conventional_implications(scopes: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """`X:admin` implies `X:write` implies `X:read` whenever both ends are declared."""
    declared = set(scopes)
    implies: dict[str, tuple[str, ...]] = {}
    for scope in declared:
        prefix, _, level = scope.rpartition(":")
        if not prefix or level not in _LADDER:
            continue
        for lower in _LADDER[_LADDER.index(level) + 1 :]:
            candidate = f"{prefix}:{lower}"
            if candidate in declared:
                implies[scope] = (candidate,)
                break
    return implies


def closure(scopes: Iterable[str], implies: Mapping[str, Iterable[str]]) -> set[str]:
    """Every scope that `scopes` grant, following implications transitively."""
    result: set[str] = set()
    stack = list(scopes)
    while stack:
        scope = stack.pop()
        if scope in result:
            continue
        result.add(scope)
        stack.extend(implies.get(scope, ()))
    return result


def check_acyclic(implies: Mapping[str, Iterable[str]]) -> None:
    """Raise ValueError on a cycle: `a` implies `b` implies `a` would make both meaningless."""
    for start in implies:
        stack = list(implies[start])
        seen: set[str] = set()
        while stack:
            scope = stack.pop()
            if scope == start:
                raise ValueError(f"scope implication cycle through {start!r}")
            if scope not in seen:
                seen.add(scope)
                stack.extend(implies.get(scope, ()))
