"""A stand-in downstream platform (a "CRM with OAuth"): node-oidc-provider in a subprocess on
127.0.0.1, so that ValetKey's vault is tested as an OAuth client against an independent,
widely used authorization server rather than against our own assumptions.

The server is tests/support/oidc_platform/server.mjs (oidc-provider pinned in its
package-lock.json; `scripts/test.sh` runs `npm ci` there). It has one confidential client
(client_secret_basic or client_secret_post), the authorization code grant with PKCE S256 only,
rotating refresh tokens (presenting a consumed one is answered `invalid_grant` and revokes the
whole grant), RFC 7009 revocation, and a bearer-protected API under /api that logs every
request with all its headers."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

PLATFORM_DIR = Path(__file__).resolve().parent / "oidc_platform"
_FORM_ACTION = re.compile(r'<form method="post" action="([^"]+)"')


@dataclass
class OidcPlatform:
    """A running platform. `stats()` counts what happened at its token endpoint and API."""

    base: str
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    access_ttl: int
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def issuer(self) -> str:
        return self.base

    @property
    def authorize_url(self) -> str:
        return self.base + "/auth"

    @property
    def token_url(self) -> str:
        return self.base + "/token"

    @property
    def revoke_url(self) -> str:
        return self.base + "/token/revocation"

    @property
    def api_base(self) -> str:
        return self.base + "/api"

    def stats(self) -> dict[str, int]:
        """Counters since start: code_grants, refresh_grants (successful token responses),
        grant_errors, reuse_detected (a consumed refresh token presented again), grants_revoked,
        revocations (RFC 7009 calls), api_calls (accepted), api_rejected (401s)."""
        return dict(self._get("/_stats"))

    def api_log(self) -> list[dict[str, Any]]:
        """Recent API requests, oldest first: {"method", "path", "query", "headers" (lower-case
        names), "body" (raw text), "status"}; rejected ones included."""
        return list(self._get("/_log"))

    def reset_log(self) -> None:
        httpx.post(self.base + "/_reset", timeout=5).raise_for_status()

    def log(self) -> str:
        """The node process's stdout and stderr (warnings, grant errors, crashes)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _get(self, path: str) -> Any:
        response = httpx.get(self.base + path, timeout=5)
        response.raise_for_status()
        return response.json()


def node_available() -> bool:
    """Whether the platform can run here: node on PATH and `npm ci` done (for a skip)."""
    return (
        shutil.which("node") is not None and (PLATFORM_DIR / "node_modules/oidc-provider").is_dir()
    )


@contextmanager
def running_oidc_platform(
    client_id: str, client_secret: str, redirect_uris: list[str], access_ttl: int = 60
) -> Iterator[OidcPlatform]:
    """Start `node server.mjs` (it picks its own port and reports it in a ready file, so two
    platforms never race for one), wait until it answers, and kill its process group after.
    Node's output goes to a log file: `OidcPlatform.log()`, and stderr if the body raises."""
    node = shutil.which("node")
    if node is None or not node_available():
        raise RuntimeError(
            "the OIDC platform needs node and `npm ci --prefix tests/support/oidc_platform` "
            "(scripts/test.sh does both)"
        )
    workdir = Path(tempfile.mkdtemp(prefix="valetkey-oidc-platform."))
    ready_file = workdir / "ready.json"
    log_path = workdir / "node.log"
    config = {"client_id": client_id, "client_secret": client_secret,
              "redirect_uris": redirect_uris, "access_ttl": access_ttl,
              "ready_file": str(ready_file)}  # fmt: skip
    env = {**os.environ, "OIDC_PLATFORM_CONFIG": json.dumps(config)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [node, "server.mjs"],
            cwd=PLATFORM_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        port = _wait_ready(process, ready_file, log_path)
        yield OidcPlatform(
            f"http://127.0.0.1:{port}",
            client_id,
            client_secret,
            list(redirect_uris),
            access_ttl,
            log_path,
            process,
        )
    except BaseException:
        # The body failed: show what node said (pytest prints captured stderr with the failure).
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        sys.stderr.write(f"--- OIDC platform log ---\n{text}--- end of OIDC platform log ---\n")
        raise
    finally:
        _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(
    process: subprocess.Popen[bytes], ready_file: Path, log_path: Path, timeout: float = 20.0
) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = log_path.read_text(errors="replace")
            raise RuntimeError(f"OIDC platform exited {process.returncode}:\n{log}")
        if ready_file.exists():
            port = int(json.loads(ready_file.read_text())["port"])
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/_stats", timeout=1)
                if response.status_code == 200:
                    return port
            except httpx.TransportError:
                pass
        time.sleep(0.02)
    raise RuntimeError(f"OIDC platform did not start:\n{log_path.read_text(errors='replace')}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the whole group (node and anything it spawned), SIGKILL if it lingers, and a
    last SIGKILL for stragglers of a group whose leader already exited."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def login_and_consent(client: httpx.Client, authorize_url_with_params: str, user: str) -> str:
    """Play the browser: open the authorization URL, sign in as `user` on the platform's form
    (which also grants every requested scope), follow the platform's own redirects with the
    cookies kept in `client`, and return the first Location that leaves the platform — the
    redirect_uri with `code` and `state` (or `error`) — without following it."""
    origin = _origin(authorize_url_with_params)
    response = client.get(authorize_url_with_params, follow_redirects=False)
    for _ in range(12):
        if response.is_redirect:
            location = urljoin(str(response.url), response.headers["location"])
            if _origin(location) != origin:
                return location
            response = client.get(location, follow_redirects=False)
            continue
        action = _FORM_ACTION.search(response.text) if response.status_code == 200 else None
        if action is None:
            raise AssertionError(
                f"the platform answered {response.status_code} at {response.url}:\n"
                f"{response.text[:2000]}"
            )
        target = urljoin(str(response.url), unescape(action.group(1)))
        response = client.post(target, data={"login": user}, follow_redirects=False)
    raise AssertionError(f"no redirect back to the client after 12 steps (last: {response.url})")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc
