"""An external KMS replaces the local master key (`VALETKEY_KMS=module:factory`): every
data key is wrapped there, no master key file exists, sign-in and tokens work, and
`keys rotate-master` points to the KMS instead."""

import os
from pathlib import Path

import httpx
import pytest

from tests.integration.helpers import make_tenant
from tests.integration.test_gateway import (
    SECRET,
    add_provider,
    call,
    gateway_agent,
    gateway_token,
    import_for,
)
from tests.support.databases import new_database_url
from tests.support.kms import KEY_ID
from tests.support.platform import running_platform
from tests.support.server import CliFailed, running_server


def test_an_external_kms_wraps_every_data_key(tmp_path: Path, backend: str) -> None:
    key_file, log = tmp_path / "kms.key", tmp_path / "kms.log"
    key_file.write_bytes(os.urandom(32))
    env = {"VALETKEY_KMS": "tests.support.kms:from_env", "TEST_KMS_KEY_FILE": str(key_file),
           "TEST_KMS_LOG": str(log)}  # fmt: skip
    with running_platform(client_secret=SECRET) as platform, running_server(
        new_database_url(backend, tmp_path), tmp_path / "data", **env
    ) as server:  # fmt: skip
        tenant = make_tenant(server)
        add_provider(server, tenant.name, platform)
        agent = gateway_agent(tenant)
        import_for(server, tenant.name, platform, "--agent", agent["id"])
        token = gateway_token(server, agent)
        assert call(server, token, "/deals/1").status_code == 200
        assert httpx.get(server.base_url + "/jwks").json()["keys"]
        with pytest.raises(CliFailed, match="KMS"):
            server.cli("keys", "rotate-master")
        if backend == "sqlite":
            path = Path(server.env["VALETKEY_DATABASE_URL"].split("///", 1)[1])
            raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
            assert f"vk1.{KEY_ID}.".encode() in raw and b"vk1.local-" not in raw
    assert not (tmp_path / "data" / "master.key").exists()
    counts = log.read_text().split()
    assert counts.count("wrap") >= 4 and counts.count("unwrap") >= 2
