"""Signing in to the console, from a browser (Playwright) or from httpx."""

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from playwright.sync_api import Page

from tests.conftest import TenantSetup

PASSWORD = "correct horse battery staple"


def person(setup: TenantSetup, email: str, role: str | None = None) -> None:
    """A user of the tenant with PASSWORD (the CLI runs in-process: before any browser)."""
    args = ["users", "create", email, "--tenant", setup.name]
    setup.server.cli(*args, *(("--role", role) if role else ()))
    setup.server.cli("users", "set-password", email, "--tenant", setup.name,
                     input=PASSWORD + "\n")  # fmt: skip


def sign_in(page: Page, base_url: str, tenant: str, email: str, path: str = "/console") -> None:
    page.goto(f"{base_url}/console/login?next={path}")
    page.get_by_label("Organization", exact=True).fill(tenant)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}{path}**")


@contextmanager
def http_session(base_url: str, tenant: str, email: str) -> Iterator[httpx.Client]:
    """An httpx client signed in to the console as `email` (whose password is PASSWORD)."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield signed_in_as(client, tenant, email)


def signed_in_as(
    client: httpx.Client, tenant: str, email: str, next_: str = "/console"
) -> httpx.Client:
    form = client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None, form.text
    signed = client.post("/console/login", data={
        "csrf": csrf.group(1), "tenant": tenant, "email": email, "password": PASSWORD,
        "next": next_,
    })  # fmt: skip
    assert signed.status_code == 303, signed.text
    return client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


@contextmanager
def signed_in(setup: TenantSetup, email: str, next_: str = "/console") -> Iterator[httpx.Client]:
    """An existing user of the tenant, given PASSWORD here, signed in over HTTP."""
    setup.server.cli("users", "set-password", email, "--tenant", setup.name,
                     input=PASSWORD + "\n")  # fmt: skip
    with httpx.Client(base_url=setup.server.base_url, timeout=30) as client:
        yield signed_in_as(client, setup.name, email, next_)
