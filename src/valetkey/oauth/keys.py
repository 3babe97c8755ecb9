"""Signing keys: ES256 by default (EdDSA available), rotated without breaking a verifier.

Three states. `next` is already published in `/jwks` before it signs anything, so verifiers
that cache the key set know it in advance; `keys rotate` makes `next` the `active` signer,
retires the old one and publishes a new `next`. A retired key stays in `/jwks` until every
token it signed has expired (`publish_until`), then it is deleted. Private keys are stored
only as envelope ciphertext.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from joserfc.jwk import ECKey, OKPKey

from valetkey.audit.events import SYSTEM_TENANT, AuditEvent
from valetkey.clock import Clock
from valetkey.errors import Conflict
from valetkey.identity.models import MAX_TOKEN_LIFETIME
from valetkey.vault.cipher import Envelope

JoseKey = ECKey | OKPKey
ALGORITHMS = ("ES256", "EdDSA")
PUBLISH_SLACK = 300  # clock skew allowance past the longest token lifetime


@dataclass(frozen=True, slots=True)
class StoredKey:
    kid: str
    alg: str
    status: str  # next | active | retired
    private_key: str  # envelope ciphertext of the private JWK
    public_jwk: dict[str, Any]
    created_at: float
    activated_at: float | None = None
    retired_at: float | None = None
    publish_until: float | None = None


class KeyStore(Protocol):
    async def list_keys(self) -> list[StoredKey]: ...

    async def insert_keys(self, keys: Sequence[StoredKey]) -> None:
        """Insert atomically; raise Conflict if any kid or the `active` slot is taken."""
        ...

    async def rotate(
        self,
        expected_active: str | None,
        updates: Sequence[StoredKey],
        inserts: Sequence[StoredKey],
        purge_before: float,
        events: Sequence[AuditEvent] = (),
    ) -> None:
        """Apply one rotation and its audit events atomically, only while `expected_active`
        is still the active kid (else raise Conflict); drop retired keys whose
        `publish_until` is before `purge_before`."""
        ...


def generate_key(alg: str) -> JoseKey:
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True)
    if alg == "EdDSA":
        return OKPKey.generate_key("Ed25519", private=True)
    raise ValueError(f"unsupported signing algorithm {alg!r}")


def import_private(jwk: dict[str, Any]) -> JoseKey:
    if jwk["kty"] == "EC":
        return ECKey.import_key(jwk)
    return OKPKey.import_key(jwk)


class KeyManager:
    def __init__(self, store: KeyStore, envelope: Envelope, clock: Clock, alg: str = "ES256"):
        self._store = store
        self._envelope = envelope
        self._clock = clock
        self._alg = alg
        self._signers: dict[str, tuple[str, JoseKey]] = {}

    def _new(self, status: str, alg: str, now: float) -> StoredKey:
        key = generate_key(alg)
        kid = key.thumbprint()
        public = dict(key.as_dict(private=False))
        public.update({"kid": kid, "alg": alg, "use": "sig"})
        private = json.dumps(key.as_dict(private=True)).encode()
        return StoredKey(
            kid=kid,
            alg=alg,
            status=status,
            private_key=self._envelope.encrypt(private, f"signing_key:{kid}"),
            public_jwk=public,
            created_at=now,
            activated_at=now if status == "active" else None,
        )

    async def ensure(self) -> StoredKey:
        """Make sure an active and a next key exist (first start); return the active one."""
        keys = await self._store.list_keys()
        active = [k for k in keys if k.status == "active"]
        if active:
            return active[0]
        now = self._clock.now()
        first = self._new("active", self._alg, now)
        try:
            await self._store.insert_keys([first, self._new("next", self._alg, now)])
        except Conflict:  # another node created them first
            keys = await self._store.list_keys()
            return next(k for k in keys if k.status == "active")
        return first

    async def rotate(
        self, alg: str | None = None, correlation_id: str = "cor_keys"
    ) -> tuple[StoredKey, StoredKey | None]:
        """Promote `next` to active, retire the active key, publish a new `next`."""
        alg = alg or self._alg
        if alg not in ALGORITHMS:
            raise ValueError(f"unsupported signing algorithm {alg!r}")
        await self.ensure()
        keys = await self._store.list_keys()
        now = self._clock.now()
        active = next((k for k in keys if k.status == "active"), None)
        pending = next((k for k in keys if k.status == "next"), None)
        updates: list[StoredKey] = []
        if pending is None or pending.alg != alg:
            # Nothing pre-published for this algorithm: publish and activate a fresh key.
            promoted = self._new("active", alg, now)
            if pending is not None:
                updates.append(
                    replace(pending, status="retired", retired_at=now, publish_until=now)
                )
            fresh = [promoted, self._new("next", alg, now)]
        else:
            promoted = replace(pending, status="active", activated_at=now)
            updates.append(promoted)
            fresh = [self._new("next", alg, now)]
        if active is not None:
            updates.append(
                replace(
                    active,
                    status="retired",
                    retired_at=now,
                    publish_until=now + MAX_TOKEN_LIFETIME + PUBLISH_SLACK,
                )
            )
        # The old active key must leave its slot before the promoted one takes it.
        updates.sort(key=lambda k: k.status != "retired")
        event = AuditEvent(
            "signing_key.rotated",
            SYSTEM_TENANT,
            now,
            correlation_id,
            data={"kid": promoted.kid, "alg": alg, "previous_kid": active.kid if active else None},
        )
        await self._store.rotate(active.kid if active else None, updates, fresh, now, [event])
        self._signers.clear()
        return promoted, active

    async def published(self) -> list[StoredKey]:
        now = self._clock.now()
        return [
            k
            for k in await self._store.list_keys()
            if k.status in ("active", "next") or (k.publish_until or 0) > now
        ]

    async def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk for k in await self.published()]}

    async def signer(self, active_kid: str | None) -> tuple[str, str, JoseKey]:
        """The (kid, alg, private key) to sign with; reloads when the active kid changed."""
        if active_kid is not None and active_kid in self._signers:
            alg, key = self._signers[active_kid]
            return active_kid, alg, key
        keys = await self._store.list_keys()
        active = next((k for k in keys if k.status == "active"), None)
        if active is None:
            active = await self.ensure()
        plaintext = self._envelope.decrypt(active.private_key, f"signing_key:{active.kid}")
        key = import_private(json.loads(plaintext))
        self._signers = {active.kid: (active.alg, key)}
        return active.kid, active.alg, key
