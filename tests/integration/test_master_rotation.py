"""`valetkey keys rotate-master`: every sealed record re-wrapped under a new master key,
nothing lost when the rotation is interrupted, and the old key kept as `.previous`."""

from pathlib import Path

import pytest
import sqlalchemy as sa

from valetkey.config import Settings
from valetkey.notify.service import Notifications
from valetkey.runtime import Runtime
from valetkey.storage.provider_store import SqlProviderStore
from valetkey.storage.tables import providers, signing_keys, webhooks


async def _setup(data_dir: Path) -> tuple[Runtime, str]:
    rt = await Runtime.open(Settings(data_dir=data_dir, database_url=""))
    await rt.keys.ensure()
    await rt.identity("cor_t").create_tenant("acme")
    await rt.providers("cor_t").add("acme", "crm", client_id="c", client_secret="prov-secret-1",
                                    preset="hubspot")  # fmt: skip
    hook = await Notifications(
        rt.identity("cor_t"), rt.notify_store, rt.clock, "cor_t"
    ).add_webhook("acme", "https://hooks.example/x")
    return rt, hook.secret


async def _key_ids(rt: Runtime) -> set[str]:
    found = set()
    async with rt.db.read() as conn:
        for table, column in ((signing_keys, "private_key"), (webhooks, "secret"),
                              (providers, "client_secret")):  # fmt: skip
            for (value,) in await conn.execute(sa.select(table.c[column])):
                found.add(str(value).split(".")[1])
    return found


async def _readable(rt: Runtime, webhook_secret: str) -> None:
    hooks = await rt.notify_store.list_webhooks((await rt.identity("x").tenant("acme")).id)
    assert hooks[0].secret == webhook_secret
    provider = await rt.providers("x").show("acme", "crm")
    assert await SqlProviderStore(rt.db, rt.envelope).client_secret(provider) == "prov-secret-1"
    await rt.keys.signer(None)  # the signing key decrypts


async def test_rotation_rewraps_everything(tmp_path: Path) -> None:
    rt, secret = await _setup(tmp_path)
    old_id = rt.master_key.key_id
    assert await _key_ids(rt) == {old_id}
    seen: list[tuple[int, int]] = []
    result = await rt.rotate_master(lambda done, total: seen.append((done, total)))
    await rt.close()
    assert result["rewrapped"] == result["records"] == 4 and seen[-1] == (4, 4)
    assert (tmp_path / "master.key.previous").exists() and not (
        tmp_path / "master.key.next"
    ).exists()
    again = await Runtime.open(Settings(data_dir=tmp_path, database_url=""))
    assert again.master_key.key_id == result["key_id"] != old_id
    assert await _key_ids(again) == {result["key_id"]}
    await _readable(again, secret)
    await again.close()


async def test_an_interrupted_rotation_loses_nothing_and_resumes(tmp_path: Path) -> None:
    rt, secret = await _setup(tmp_path)

    def operator_interrupts(done: int, total: int) -> None:
        if done == 2:  # Ctrl-C while the progress bar shows 2 of 4
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await rt.rotate_master(operator_interrupts)
    await rt.close()
    # Mid-rotation: records under two keys, and every one still readable.
    middle = await Runtime.open(Settings(data_dir=tmp_path, database_url=""))
    assert len(await _key_ids(middle)) == 2
    assert (tmp_path / "master.key.next").exists()
    await _readable(middle, secret)
    result = await middle.rotate_master(lambda done, total: None)
    await middle.close()
    assert result["rewrapped"] == 2  # the other two were already done
    done = await Runtime.open(Settings(data_dir=tmp_path, database_url=""))
    assert await _key_ids(done) == {result["key_id"]}
    await _readable(done, secret)
    await done.close()
