"""A real ValetKey server in a subprocess on 127.0.0.1, and the real CLI against its database."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from typer.testing import CliRunner

from valetkey.cli.main import app as cli_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CliFailed(AssertionError):
    pass


@dataclass
class RunningServer:
    base_url: str
    env: dict[str, str]
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    runner: CliRunner = field(default_factory=CliRunner)

    @property
    def issuer(self) -> str:
        return self.base_url

    def cli_raw(self, *args: str, input: str | None = None) -> Any:
        """Run `valetkey ARGS` in-process against this server's database."""
        return self.runner.invoke(cli_app, list(args), env=self.env, input=input)

    def cli(self, *args: str, input: str | None = None) -> Any:
        """Run `valetkey ARGS --json` and return the parsed JSON; fail on a non-zero exit."""
        result = self.cli_raw(*args, "--json", input=input)
        if result.exit_code != 0:
            raise CliFailed(f"valetkey {' '.join(args)} exited {result.exit_code}: {result.output}")
        return orjson.loads(result.stdout)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""


def server_env(database_url: str, data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    return {
        "VALETKEY_DATA_DIR": str(data_dir),
        "VALETKEY_DATABASE_URL": database_url,
        "VALETKEY_ISSUER": f"http://127.0.0.1:{port}",
        "VALETKEY_LOG_LEVEL": "warning",
        **extra,
    }


@contextmanager
def running_server(
    database_url: str, data_dir: Path, *, workers: int = 1, **extra_env: str
) -> Iterator[RunningServer]:
    port = free_port()
    env = server_env(database_url, data_dir, port, **extra_env)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "valetkey",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(f"http://127.0.0.1:{port}", env, data_dir, process, log_path)
    try:
        _wait_healthy(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_healthy(server: RunningServer, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process is not None
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.base_url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server did not become healthy:\n{server.log()}")
