"""The browser tests drive the console's pages and flows once, against the SQLite server:
what differs between backends (every store, every query) is tested on both by the
contract and integration tests, and a browser run costs ten seconds a test."""

import pytest


@pytest.fixture(scope="session")
def backend() -> str:
    return "sqlite"
