"""The browser tests drive the console's pages and flows once, against the SQLite server:
what differs between backends (every store, every query) is tested on both by the
contract and integration tests, and a browser run costs seconds a test. Deselected, not
overridden: the session's servers stay keyed by the one `backend` parameter."""

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        mine = Path(str(item.path)).is_relative_to(_HERE)
        if mine and callspec is not None and callspec.params.get("backend") == "postgresql":
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
