"""Identities, passwords and bearer tokens.

Passwords are hashed with scrypt. Tokens are shown once; only their SHA-256 is stored, so a
database leak yields no usable token, and a token is accepted only while it is stored (that is
how one is revoked). A login (or a registration) starts a session: an access token that expires
after ``token_ttl_s`` and a refresh token that lives ``refresh_token_ttl_s`` and is used once
(each use issues a new pair). These two are JWTs with Attune's claims
(:mod:`engine.session_tokens`), so a web client can read when its access token expires; the
integration tokens of ``attune token create`` are opaque random strings (``att_...``).
Changing a password or disabling the user ends every session of theirs; a disabled user's
tokens are refused, the integration tokens included. User administration (the
``attune user`` commands, ``/auth/me``, change-password) is in :mod:`engine.users`.
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
from typing import Any, cast

from cachetools import TTLCache

from engine import backoff
from engine.clock import now_utc
from engine.errors import (
    EngineError,
    Forbidden,
    InvalidRequest,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from engine.identity import ROLES as ROLES
from engine.identity import IdentityRepository, StoredUser
from engine.identity import Role as Role
from engine.identity import User as User
from engine.logins import MAX_LOGIN_CHARS as MAX_LOGIN_CHARS
from engine.logins import check_login as check_login
from engine.logins import login_key
from engine.session_tokens import SessionTokens, expiry, looks_like_jwt
from engine.storage import Conn, Store
from engine.storage.identity import identity_repository

#: Prefix of the integration tokens of ``attune token create`` (session tokens are JWTs).
TOKEN_PREFIX = "att_"  # noqa: S105 (a prefix, not a secret)
#: Name of the access tokens of login sessions (what the audit log shows as ``token:login``);
#: these are ended with the session, unlike integration tokens named by ``attune token create``.
SESSION_TOKEN_NAME = "login"  # noqa: S105 (a name, not a secret)
#: Attune's bounds on a new password (RegisterRequest, ChangePasswordRequest).
MIN_PASSWORD_CHARS, MAX_PASSWORD_CHARS = 8, 128
#: scrypt cost parameters (about 50 ms per hash on these machines).
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


class ValidationFailed(EngineError):
    """A well-formed request whose values are refused (a weak password): 422, as Attune."""

    code = "VALIDATION_ERROR"
    http_status = 422


@dataclass(frozen=True)
class Principal:
    login: str
    role: Role
    token_name: str
    #: The user's id (Attune's identity id), None for tokens that stand for no user row.
    user_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Session:
    """A login session's tokens (shown once) and whose they are."""

    access_token: str
    refresh_token: str
    expires_in: int
    user: User

    def token_response(self) -> dict[str, Any]:
        """Attune's ``TokenResponse``."""
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "user": self.user.info(),
        }


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


def check_new_password(password: str) -> None:
    """ValidationFailed (422) unless ``password`` may be set: Attune's rule, 8 to 128
    characters."""
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise ValidationFailed(
            f"password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters long"
        )


def lower_role(a: Role, b: Role) -> Role:
    """The less powerful of two roles."""
    return a if ROLES.index(a) > ROLES.index(b) else b


#: Checked against when the login is unknown, so a wrong login costs as long as a wrong password.
_DUMMY_HASH = "scrypt$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 86 + "=="


#: First wait of a (login, client address) pair past its ``max_failures`` free failures; each
#: further failure doubles it, up to the window.
LOGIN_BACKOFF_BASE_S = 15.0
#: The looser limits, as multiples of ``max_failures``: one login from all addresses together
#: (so a guesser elsewhere cannot lock its owner out on their own), one address for all logins
#: (an office or a proxy shares one).
LOGIN_FACTOR = 10
ADDRESS_FACTOR = 10


def throttle_keys(login: str, client: str) -> list[str]:
    """What a login attempt counts against: the (login, client address) pair, the login, the
    address."""
    key = login_key(login)
    return [f"pair:{client}\x00{key}", f"login:{key}", f"client:{client}"]


class LoginThrottle:
    """Counts failed logins per key (:func:`throttle_keys`) in a sliding window of ``window_s``.
    A (login, address) pair backs off: past ``max_failures`` failures it waits
    :data:`LOGIN_BACKOFF_BASE_S` after its last failure, twice as long per further failure, at
    most the window. A login (all addresses) and an address (all logins) have looser walls,
    ``max_failures`` times their factor, until their oldest failure leaves the window."""

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        address_factor: int = ADDRESS_FACTOR,
        login_factor: int = LOGIN_FACTOR,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.address_factor = address_factor
        self.login_factor = login_factor
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    def _wait_s(self, key: str, failures: deque[float], now: float) -> float:
        if key.startswith("pair:"):
            extra = len(failures) - self.max_failures
            if extra < 0:
                return 0.0
            delay_s = backoff.delay_s(extra, base_s=LOGIN_BACKOFF_BASE_S, cap_s=self.window_s)
            return failures[-1] + delay_s - now
        factor = self.address_factor if key.startswith("client:") else self.login_factor
        if len(failures) < self.max_failures * factor:
            return 0.0
        return failures[0] + self.window_s - now

    def check(self, keys: list[str]) -> None:
        now = time.monotonic()
        for key in keys:
            wait_s = self._wait_s(key, self._recent(key, now), now)
            if wait_s > 0:
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


#: Tokens remembered at most.
_TOKEN_CACHE_SIZE = 10_000


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def user_row(
    conn: Conn, login: str, repo: IdentityRepository | None = None
) -> StoredUser | None:
    """The user whose login is ``login`` as logins are compared (:mod:`engine.logins`: no
    case, no surrounding spaces, NFKC); the exact login first (a user left without a key by
    migration 0013 is found by it)."""
    repo = repo or identity_repository()
    return await repo.find_user(conn, login, login_key(login))


class AuthService:
    def __init__(
        self,
        store: Store,
        *,
        token_ttl_s: int,
        refresh_token_ttl_s: int = 7 * 24 * 3600,
        login_max_failures: int = 5,
        login_window_s: float = 300.0,
        cache_s: float = 0.0,
        secret_key: str | None = None,
    ) -> None:
        self.store = store
        self.repo = identity_repository()
        #: Signs the session JWTs (a random key without ``secret_key``: this process only).
        self.session_tokens = SessionTokens(secret_key)
        self.token_ttl_s = token_ttl_s
        self.refresh_token_ttl_s = refresh_token_ttl_s
        self.throttle = LoginThrottle(login_max_failures, login_window_s)
        self.cache_s = cache_s
        #: token hash -> (principal, expiry), for ``cache_s``: valid tokens only. Past the bound
        #: the least recently used goes.
        self._cache: TTLCache[str, tuple[Principal, datetime | None]] = TTLCache(
            maxsize=_TOKEN_CACHE_SIZE, ttl=cache_s
        )

    async def ensure_admin(self, login: str, password: str | None) -> str | None:
        """Create the first administrator if there are no users; return a generated password."""
        async with self.store.write() as conn:
            if await self.repo.has_users(conn):
                return None
            generated = None
            if not password:
                password = generated = secrets.token_urlsafe(12)
            login = check_login(login)
            await self.repo.add_user(
                conn,
                login=login,
                key=login_key(login),
                password_hash=hash_password(password),
                role="admin",
                display_name="Administrator",
                created=now_utc(),
            )
        return generated

    async def create_user(
        self, login: str, password: str, role: Role = "viewer", display_name: str | None = None
    ) -> User:
        """A new user: :meth:`engine.users.Users.create`."""
        from engine.users import Users  # it builds on this module

        return await Users(self).create(login, password, role, display_name)

    # -- sessions ----------------------------------------------------------------------------

    async def login(self, login: str, password: str, client: str = "") -> Session:
        """Check a password; start a session.

        Failures are counted per (login, client address), per login and per address
        (TooManyRequests past a limit: :class:`LoginThrottle`); a success clears only its
        pair. scrypt runs in a thread so a login does not stall other requests. A disabled
        user with the right password is Forbidden."""
        keys = throttle_keys(login, client)
        self.throttle.check(keys)
        async with self.store.read() as conn:
            row = await self.repo.find_user(conn, login, login_key(login))
        stored = row.password_hash if row is not None else _DUMMY_HASH
        if not await asyncio.to_thread(verify_password, password, stored) or row is None:
            self.throttle.failed(keys)
            raise Unauthorized("invalid login or password")
        self.throttle.succeeded(keys[:1])
        user = row.user
        if user.disabled:
            raise Forbidden(f"the account '{login}' is disabled")
        return await self.start_session(user)

    async def start_session(self, user: User) -> Session:
        """A new access token and refresh token for ``user``; the user's expired session
        tokens are deleted on the way, so the tables stay bounded."""
        async with self.store.write() as conn:
            return await self._session(conn, user)

    async def _session(self, conn: Conn, user: User) -> Session:
        now = now_utc()
        await self.repo.delete_expired_sessions(conn, user.id, SESSION_TOKEN_NAME, now)
        access_expires = expiry(now, self.token_ttl_s)
        refresh_expires = expiry(now, self.refresh_token_ttl_s)
        access = self.session_tokens.issue(user.id, user.login, "access", now, access_expires)
        refresh = self.session_tokens.issue(user.id, user.login, "refresh", now, refresh_expires)
        await self.repo.add_token(
            conn,
            token_hash=token_hash(access),
            user_id=user.id,
            name=SESSION_TOKEN_NAME,
            role=user.role,
            expires_at=access_expires,
            created=now,
        )
        await self.repo.add_refresh_token(
            conn,
            token_hash=token_hash(refresh),
            user_id=user.id,
            expires_at=refresh_expires,
            created=now,
        )
        return Session(access, refresh, self.token_ttl_s, user)

    async def refresh(self, refresh_token: str) -> Session:
        """Trade a refresh token for a new session (access and refresh token). A refresh token
        works once: a used, unknown, expired, revoked or forged one is Unauthorized (one that
        is no JWT, issued before session tokens were, is looked up all the same)."""
        invalid = Unauthorized("invalid or expired refresh token")
        if looks_like_jwt(refresh_token):
            try:
                self.session_tokens.verify(refresh_token, "refresh")
            except Unauthorized:
                raise invalid from None
        async with self.store.write() as conn:
            # Used once: of two concurrent uses, one takes the row and the other finds none.
            grant = await self.repo.take_refresh_token(conn, token_hash(refresh_token))
            if grant is None:
                raise invalid
            if not grant.taken or grant.expires_at <= now_utc() or grant.user.disabled:
                raise invalid
            return await self._session(conn, grant.user)

    async def end_sessions(self, conn: Conn, user_id: int, login: str) -> None:
        """Revoke every session of a user (access tokens of logins and refresh tokens);
        integration tokens stay. This process forgets its cached copies at once."""
        await self.repo.end_sessions(conn, user_id, SESSION_TOKEN_NAME)
        self.forget(login)

    async def revoke(self, token: str) -> None:
        """End one token (a logout of the execution pages): refused from now on, in this
        process at once, in others within ``cache_s``."""
        key = token_hash(token)
        async with self.store.write() as conn:
            await self.repo.delete_token(conn, key)
        self._cache.pop(key, None)

    def forget(self, login: str) -> None:
        """Drop this process's cached tokens of ``login`` (other processes trust theirs for at
        most ``cache_s``)."""
        key_of = login_key(login)
        for key in [k for k, v in self._cache.items() if login_key(v[0].login) == key_of]:
            self._cache.pop(key, None)

    # -- tokens ------------------------------------------------------------------------------

    async def issue_token(
        self, login: str, *, name: str, role: Role | None = None, ttl_s: int | None = None
    ) -> str:
        """A new token for ``login`` (role at most the user's own); ``ttl_s=None`` never expires."""
        async with self.store.write() as conn:
            user = await self.repo.find_user(conn, login, login_key(login))
            if user is None:
                raise NotFound(f"user '{login}' not found")
            if user.disabled:
                raise InvalidRequest(f"user '{login}' is disabled")
            if role is not None and ROLES.index(role) < ROLES.index(user.role):
                raise InvalidRequest(
                    f"user '{login}' is {user.role} and cannot hold a {role} token"
                )
            token = TOKEN_PREFIX + secrets.token_urlsafe(32)
            expires = now_utc() + timedelta(seconds=ttl_s) if ttl_s else None
            await self.repo.add_token(
                conn,
                token_hash=token_hash(token),
                user_id=user.id,
                name=name,
                role=role or user.role,
                expires_at=expires,
                created=now_utc(),
            )
        return token

    async def authenticate(self, token: str) -> Principal:
        """The principal a bearer token stands for; Unauthorized if unknown, revoked, expired
        or its user is disabled. Its role is the token's, lowered to the user's own when the
        user was given a lesser role since.

        A session's JWT must bear this server's signature and be an access token; the
        signature is checked before the lookup, so a forged token costs no query. A valid
        token is remembered for ``cache_s`` (its expiry is checked on every call), under its
        SHA-256: the same string, so it is not verified again."""
        key = token_hash(token)
        cached = self._cache.get(key)
        if cached is not None:
            principal, expires_at = cached
        else:
            if looks_like_jwt(token):
                self.session_tokens.verify(token, "access")
            async with self.store.read() as conn:
                row = await self.repo.token_holder(conn, key)
            if row is None:
                raise Unauthorized("invalid token")
            if row.disabled:
                raise Unauthorized(f"the account '{row.login}' is disabled")
            principal = Principal(
                login=row.login,
                role=lower_role(cast(Role, row.token_role), cast(Role, row.user_role)),
                token_name=row.token_name,
                user_id=row.user_id,
            )
            expires_at = row.expires_at
            if self.cache_s > 0:
                self._cache[key] = (principal, expires_at)
        if expires_at is not None and expires_at <= now_utc():
            self._cache.pop(key, None)
            raise Unauthorized("token expired; log in again")
        return principal
