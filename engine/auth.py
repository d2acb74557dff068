"""Identities and bearer tokens.

Passwords are hashed with scrypt. Tokens are opaque random strings shown once; only their
SHA-256 is stored, so a database leak yields no usable token. Login tokens expire after
``token_ttl_s``; integration tokens made with ``attune token create`` may live longer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import bindparam, insert, select

from engine.errors import Conflict, InvalidRequest, NotFound, TooManyRequests, Unauthorized
from engine.storage import Store
from engine.storage.tables import now_utc, tokens, users

Role = Literal["admin", "operator", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "operator", "viewer")
TOKEN_PREFIX = "att_"  # noqa: S105 (a prefix, not a secret)
#: scrypt cost parameters (about 50 ms per hash on these machines).
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


@dataclass(frozen=True)
class Principal:
    login: str
    role: Role
    token_name: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return f"scrypt${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, salt_b64, digest_b64 = stored.split("$", 2)
    digest = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt_b64), n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P
    )
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


#: Checked against when the login is unknown, so a wrong login costs as long as a wrong password.
_DUMMY_HASH = "scrypt$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 86 + "=="


class LoginThrottle:
    """Counts failed logins per key (login, client address) in a sliding window; past
    ``max_failures`` the key is locked out until its oldest failure leaves the window."""

    def __init__(self, max_failures: int, window_s: float, address_factor: int = 10) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        #: Many people may share an address (an office, a proxy): a looser limit per address.
        self.address_factor = address_factor
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    def check(self, keys: list[str]) -> None:
        now = time.monotonic()
        for key in keys:
            failures = self._recent(key, now)
            limit = self.max_failures * (self.address_factor if key.startswith("client:") else 1)
            if len(failures) >= limit:
                wait_s = failures[0] + self.window_s - now
                raise TooManyRequests(
                    f"too many failed logins; try again in {max(1, round(wait_s))} s", wait_s
                )

    def failed(self, keys: list[str]) -> None:
        now = time.monotonic()
        for key in keys:
            self._recent(key, now).append(now)
        if len(self._failures) > 10_000:  # forget idle keys so memory stays bounded
            for key in [k for k, v in self._failures.items() if not self._recent(k, now)]:
                del self._failures[key]

    def succeeded(self, keys: list[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)


#: Tokens remembered at most (the cache is emptied when full).
_TOKEN_CACHE_SIZE = 10_000
_TOKEN_LOOKUP = (
    select(tokens.c.role, tokens.c.name, tokens.c.expires_at, users.c.login)
    .join(users, users.c.id == tokens.c.user_id)
    .where(tokens.c.token_hash == bindparam("token_hash"))
)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AuthService:
    def __init__(
        self,
        store: Store,
        *,
        token_ttl_s: int,
        login_max_failures: int = 5,
        login_window_s: float = 300.0,
        cache_s: float = 0.0,
    ) -> None:
        self.store = store
        self.token_ttl_s = token_ttl_s
        self.throttle = LoginThrottle(login_max_failures, login_window_s)
        self.cache_s = cache_s
        #: token hash -> (when looked up, principal, expiry): valid tokens only.
        self._cache: dict[str, tuple[float, Principal, datetime | None]] = {}

    async def ensure_admin(self, login: str, password: str | None) -> str | None:
        """Create the first administrator if there are no users; return a generated password."""
        async with self.store.write() as conn:
            if (await conn.execute(select(users.c.id).limit(1))).first() is not None:
                return None
            generated = None
            if not password:
                password = generated = secrets.token_urlsafe(12)
            await conn.execute(
                insert(users).values(
                    login=login,
                    password_hash=hash_password(password),
                    role="admin",
                    display_name="Administrator",
                    created=now_utc(),
                )
            )
        return generated

    async def create_user(self, login: str, password: str, role: Role = "viewer") -> None:
        if not login.strip() or len(password) < 8:
            raise InvalidRequest("login must not be empty and password needs 8+ characters")
        async with self.store.write() as conn:
            if (await conn.execute(select(users.c.id).where(users.c.login == login))).first():
                raise Conflict(f"user '{login}' already exists")
            await conn.execute(
                insert(users).values(
                    login=login, password_hash=hash_password(password), role=role, created=now_utc()
                )
            )

    async def login(self, login: str, password: str, client: str = "") -> tuple[str, int]:
        """Check a password; return a new token and its lifetime in seconds.

        Failures are counted per login and per client address (TooManyRequests past the
        limit); scrypt runs in a thread so a login does not stall other requests."""
        keys = [f"login:{login}", f"client:{client}"]
        self.throttle.check(keys)
        async with self.store.read() as conn:
            user = (await conn.execute(select(users).where(users.c.login == login))).first()
        stored = user.password_hash if user is not None else _DUMMY_HASH
        if not await asyncio.to_thread(verify_password, password, stored) or user is None:
            self.throttle.failed(keys)
            raise Unauthorized("invalid login or password")
        self.throttle.succeeded(keys[:1])
        token = await self.issue_token(login, name="login", ttl_s=self.token_ttl_s)
        return token, self.token_ttl_s

    async def issue_token(
        self, login: str, *, name: str, role: Role | None = None, ttl_s: int | None = None
    ) -> str:
        """A new token for ``login`` (role at most the user's own); ``ttl_s=None`` never expires."""
        async with self.store.write() as conn:
            user = (await conn.execute(select(users).where(users.c.login == login))).first()
            if user is None:
                raise NotFound(f"user '{login}' not found")
            if role is not None and ROLES.index(role) < ROLES.index(user.role):
                raise InvalidRequest(
                    f"user '{login}' is {user.role} and cannot hold a {role} token"
                )
            token = TOKEN_PREFIX + secrets.token_urlsafe(32)
            expires = now_utc() + timedelta(seconds=ttl_s) if ttl_s else None
            await conn.execute(
                insert(tokens).values(
                    token_hash=token_hash(token),
                    user_id=user.id,
                    name=name,
                    role=role or user.role,
                    expires_at=expires,
                    created=now_utc(),
                )
            )
        return token

    async def authenticate(self, token: str) -> Principal:
        """The principal a bearer token stands for; Unauthorized if unknown or expired.

        A valid token is remembered for ``cache_s`` (tokens are never changed in place; their
        expiry is checked on every call)."""
        key = token_hash(token)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self.cache_s:
            _, principal, expires_at = cached
        else:
            async with self.store.read() as conn:
                row = (await conn.execute(_TOKEN_LOOKUP, {"token_hash": key})).first()
            if row is None:
                raise Unauthorized("invalid token")
            principal = Principal(login=row.login, role=row.role, token_name=row.name)
            expires_at = row.expires_at
            if self.cache_s > 0:
                if len(self._cache) >= _TOKEN_CACHE_SIZE:
                    self._cache.clear()
                self._cache[key] = (now, principal, expires_at)
        if expires_at is not None and expires_at <= now_utc():
            self._cache.pop(key, None)
            raise Unauthorized("token expired; log in again")
        return principal
