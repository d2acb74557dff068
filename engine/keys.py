"""Attune's key-value store (``/api/v1/keys``): keys with JSON values, sealed at rest when
``encrypted``, gone when their TTL runs out.

Who may do what, Attune's permission sets mapped onto our roles:

============  ================  =======================  ============================
role          list and read     an encrypted value       create, update, delete
============  ================  =======================  ============================
viewer        yes               reads as ``null``        no (403)
operator      yes               yes                      yes
admin         yes               yes                      yes
============  ================  =======================  ============================

Attune's ``core.viewer`` and ``core.executor`` read keys without ``decrypt``, and an encrypted
value then reads as ``null`` (not an error), as here. Its ``core.editor`` (like our operator:
writes rules, runs actions) reads, updates and decrypts; our operators may also create and
delete, as the actions they run keep their state here. A key owned by an identity
(``owner_type: identity``) is that identity's alone, as in Attune: it is left out of everyone
else's lists, reads as missing (404) for them, and they may not change it (403).

An action's execution token (engine/execution_tokens.py) acts for the execution's requester,
with that requester's role at most. A TTL (``ttl`` seconds, ours beside Attune's fields) makes
the key read as missing from then on; a read removes it, and the sweep removes the rest.
Values never reach the audit log or the server log.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.audit import AuditEntry, AuditLog
from engine.auth import Principal
from engine.clock import now_utc
from engine.crypto import SecretBox
from engine.errors import Conflict, Forbidden, InvalidRequest, NotFound
from engine.key_records import KeyChange, KeyContent, KeyValue, NewKey
from engine.storage import Store
from engine.storage.keys import key_repository
from engine.storage.keys import live_clause as live_clause

OwnerType = Literal["system", "identity", "pack", "action", "sensor"]
OWNER_TYPES: tuple[OwnerType, ...] = ("system", "identity", "pack", "action", "sensor")
#: Roles that read encrypted values (the others read them as null).
DECRYPTING_ROLES = frozenset({"admin", "operator"})
#: Longest TTL (ten years); longer is surely a mistake in units.
MAX_TTL_S = 10 * 365 * 24 * 3600
#: Largest id a database column holds (signed 64 bits).
_MAX_ID = 2**63 - 1
#: A ref is one path segment of ``/api/v1/keys/{ref}``: no ``/`` and no control characters.
_REF_PATTERN = r"^[^/\x00-\x1f\x7f]+$"
#: Fields of a key in list views (Attune's KeySummary), ours (``updated``, ``expires_at``) beside.
SUMMARY_FIELDS = (
    "id",
    "ref",
    "owner_type",
    "owner",
    "name",
    "encrypted",
    "created",
    "updated",
    "expires_at",
)
#: Fields of one key (Attune's KeyResponse, without ``value``), ``expires_at`` beside.
KEY_FIELDS = (
    "id",
    "ref",
    "owner_type",
    "owner",
    "owner_identity",
    "owner_pack",
    "owner_pack_ref",
    "owner_action",
    "owner_action_ref",
    "owner_sensor",
    "owner_sensor_ref",
    "name",
    "encrypted",
    "created",
    "updated",
    "expires_at",
)


class KeyCreate(BaseModel):
    """Attune's CreateKeyRequest, plus ``ttl``; fields nobody defines are ignored."""

    model_config = ConfigDict(extra="ignore")

    ref: str = Field(min_length=1, max_length=255, pattern=_REF_PATTERN)
    owner_type: OwnerType
    owner: str | None = Field(default=None, max_length=255)
    owner_identity: int | None = Field(default=None, ge=1, le=_MAX_ID)
    owner_pack: int | None = Field(default=None, ge=1, le=_MAX_ID)
    owner_pack_ref: str | None = Field(default=None, max_length=255)
    owner_action: int | None = Field(default=None, ge=1, le=_MAX_ID)
    owner_action_ref: str | None = Field(default=None, max_length=255)
    owner_sensor: int | None = Field(default=None, ge=1, le=_MAX_ID)
    owner_sensor_ref: str | None = Field(default=None, max_length=255)
    name: str = Field(min_length=1, max_length=255)
    #: Any JSON: text, number, boolean, object, list.
    value: Any
    encrypted: bool = False
    #: Seconds until the key expires (reads as missing and is removed); none: never.
    ttl: int | None = Field(default=None, gt=0, le=MAX_TTL_S)


class KeyUpdate(BaseModel):
    """Attune's UpdateKeyRequest (a null ``value`` changes nothing, as there), plus ``ttl``
    (seconds from now; 0 removes the expiry)."""

    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(default=None, min_length=1, max_length=255)
    value: Any = None
    encrypted: bool | None = None
    ttl: int | None = Field(default=None, ge=0, le=MAX_TTL_S)


def _expired(row: KeyValue) -> bool:
    return row.expires_at is not None and row.expires_at <= now_utc()


def plain_value(row: Any) -> Any:
    """The value of a key that is not encrypted (``row``: a :class:`KeyValue`, or anything
    with its ``value``)."""
    return row.value.get("v") if isinstance(row.value, dict) else None


def summary(row: KeyValue) -> dict[str, Any]:
    """Attune's ``KeySummary`` of a key."""
    return {name: getattr(row, name) for name in SUMMARY_FIELDS}


def record(row: KeyValue, value: Any) -> dict[str, Any]:
    """Attune's ``KeyResponse`` of a key, with its value as the caller may see it."""
    out = {name: getattr(row, name) for name in KEY_FIELDS}
    out["value"] = value
    return out


class KeyStore:
    def __init__(self, store: Store, box: SecretBox, audit: AuditLog) -> None:
        self.store = store
        self.repo = key_repository(store)
        self.box = box
        self.audit = audit

    # -- reading --------------------------------------------------------------------------

    async def list(
        self,
        who: Principal,
        *,
        owner_type: str | None = None,
        owner: str | None = None,
        page: int = 1,
        per_page: int = 50,
    ) -> tuple[list[dict[str, Any]], int]:
        """Keys the caller may see, by ref, without values (as Attune's list)."""
        if owner_type is not None and owner_type not in OWNER_TYPES:
            raise InvalidRequest(f"owner_type must be one of {', '.join(OWNER_TYPES)}")
        rows, total = await self.repo.page(
            identity=await self._identity(who),
            owner_type=owner_type,
            owner=owner,
            now=now_utc(),
            page=page,
            per_page=per_page,
        )
        return [summary(r) for r in rows], total

    async def get(self, who: Principal, ref: str) -> dict[str, Any]:
        """One key; its value decrypted for a role that may decrypt, else null."""
        row = await self._live(who, ref, changing=False)
        if not row.encrypted:
            return record(row, plain_value(row))
        if who.role not in DECRYPTING_ROLES:
            return record(row, None)
        await self.audit.record(self._entry(who, "key.decrypt", ref))
        return record(row, self._open(row))

    # -- writing --------------------------------------------------------------------------

    async def create(self, who: Principal, spec: KeyCreate) -> dict[str, Any]:
        """A new key (409 when its ref is taken by a key that has not expired)."""
        me = await self._identity(who)
        owner_identity = spec.owner_identity
        if spec.owner_type == "identity":
            owner_identity = owner_identity or me
            if me is None or owner_identity != me:
                raise Forbidden("a key owned by an identity can only be created by that identity")
        owner_pack, owner_action = await self._owners(spec)
        now = now_utc()
        new = NewKey(
            ref=spec.ref,
            owner_type=spec.owner_type,
            owner=spec.owner,
            owner_identity=owner_identity,
            owner_pack=owner_pack,
            owner_pack_ref=spec.owner_pack_ref,
            owner_action=owner_action,
            owner_action_ref=spec.owner_action_ref,
            owner_sensor=spec.owner_sensor,
            owner_sensor_ref=spec.owner_sensor_ref,
            name=spec.name,
            content=self._stored(spec.value, spec.encrypted),
            expires_at=now + timedelta(seconds=spec.ttl) if spec.ttl else None,
            created=now,
        )
        taken = Conflict(f"Key with ref '{spec.ref}' already exists")
        try:
            async with self.store.write() as conn:
                row = await self.repo.add(conn, new)
                if row is None:
                    raise taken
                await self.audit.record(
                    self._entry(who, "key.create", spec.ref, _detail(row)), conn
                )
        except Conflict:
            raise taken from None
        return record(row, spec.value)

    async def update(self, who: Principal, ref: str, spec: KeyUpdate) -> dict[str, Any]:
        row = await self._live(who, ref, changing=True)
        encrypted = row.encrypted if spec.encrypted is None else spec.encrypted
        value = self._open(row) if row.encrypted else plain_value(row)
        content = None
        if spec.value is not None or encrypted != row.encrypted:
            value = value if spec.value is None else spec.value
            content = self._stored(value, encrypted)
        change = KeyChange(
            updated=now_utc(),
            name=spec.name,
            content=content,
            set_expiry=spec.ttl is not None,
            expires_at=now_utc() + timedelta(seconds=spec.ttl) if spec.ttl else None,
        )
        async with self.store.write() as conn:
            changed = await self.repo.change(conn, row.id, change)
            if changed is None:
                raise NotFound(f"Key '{ref}' not found")
            detail = _detail(changed) + ("; value changed" if spec.value is not None else "")
            await self.audit.record(self._entry(who, "key.update", ref, detail), conn)
        return record(changed, value)

    async def delete(self, who: Principal, ref: str) -> None:
        row = await self._live(who, ref, changing=True)
        async with self.store.write() as conn:
            if not await self.repo.remove(conn, row.id):
                raise NotFound(f"Key '{ref}' not found")
            await self.audit.record(self._entry(who, "key.delete", ref, _detail(row)), conn)

    async def purge_expired(self) -> int:
        """Remove every key whose TTL has run out; the number removed."""
        return await self.repo.purge_expired(now_utc())

    # -- helpers --------------------------------------------------------------------------

    async def _identity(self, who: Principal) -> int | None:
        """The caller's user id (owner_identity of their own keys); None for a requester who
        is not a user (a Slack user, a rule)."""
        if who.user_id is not None:  # a login token's principal knows it already
            return who.user_id
        return await self.repo.user_id(who.login)

    async def _live(self, who: Principal, ref: str, *, changing: bool) -> KeyValue:
        """The key, if it exists, has not expired (an expired one is removed) and the caller
        may see it; a key owned by another identity is missing to a reader and forbidden to a
        writer (Attune's answers)."""
        row = await self.repo.by_ref(ref)
        if row is not None and _expired(row):
            await self.repo.drop_if_expired(row.id, now_utc())
            row = None
        if row is None:
            raise NotFound(f"Key '{ref}' not found")
        if row.owner_type == "identity" and row.owner_identity != await self._identity(who):
            if changing:
                raise Forbidden(f"key '{ref}' belongs to another identity")
            raise NotFound(f"Key '{ref}' not found")
        return row

    async def _owners(self, spec: KeyCreate) -> tuple[int | None, int | None]:
        """Owner pack and action ids, looked up from their refs when only those are given
        (400 naming the ref when there is no such pack or action, as Attune)."""
        pack_id, action_id = spec.owner_pack, spec.owner_action
        if spec.owner_type == "pack" and pack_id is None and spec.owner_pack_ref:
            found = await self.repo.pack_id(spec.owner_pack_ref)
            if found is None:
                raise InvalidRequest(f"Pack with ref '{spec.owner_pack_ref}' not found")
            pack_id = found
        if spec.owner_type == "action" and action_id is None and spec.owner_action_ref:
            found = await self.repo.action_id(spec.owner_action_ref)
            if found is None:
                raise InvalidRequest(f"Action with ref '{spec.owner_action_ref}' not found")
            action_id = found
        return pack_id, action_id

    def _stored(self, value: Any, encrypted: bool) -> KeyContent:
        """What holds a value: sealed when encrypted, else as JSON."""
        if encrypted:
            return KeyContent(encrypted=True, value=None, sealed=self.box.seal({"v": value}))
        return KeyContent(encrypted=False, value={"v": value}, sealed=None)

    def _open(self, row: KeyValue) -> Any:
        return self.box.open(row.sealed).get("v")

    @staticmethod
    def _entry(who: Principal, verb: str, ref: str, detail: str | None = None) -> AuditEntry:
        """An audit entry naming the key, never its value."""
        return AuditEntry(
            actor=who.login,
            role=who.role,
            source="api",
            channel=f"token:{who.token_name}",
            verb=verb,
            outcome="completed",
            target=ref[:256],
            detail=detail,
        )


def _detail(row: KeyValue) -> str:
    owner = row.owner_pack_ref or row.owner_action_ref or row.owner_sensor_ref or row.owner
    text = f"owner_type={row.owner_type}" + (f" owner={owner}" if owner else "")
    return text + (" encrypted" if row.encrypted else "")
