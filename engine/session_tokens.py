"""The tokens of login sessions, as Attune's: JWTs signed HS256.

A web client reads a token's claims (Attune's web UI reads ``exp`` and refreshes ahead of it),
so the access and refresh tokens of a login session are JWTs with Attune's claims
(``Claims`` in Attune's ``crates/common/src/auth/jwt.rs``): ``sub`` (the user's id, as a string),
``login``, ``iat``, ``exp`` and ``token_type`` (``access`` or ``refresh``). Beside them ours:
``jti``, random, so that two tokens issued in the same second differ (their SHA-256 is what the
database keeps).

The key is derived from the secret key, so every API process that shares it accepts the tokens
of the others. A signature only says that the token was issued here; that it was not revoked
since (a password change, a disabled user, a logout) is checked in storage by its SHA-256,
as for every token (:meth:`engine.auth.AuthService.authenticate`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import jwt

from engine.errors import Unauthorized

TokenType = Literal["access", "refresh"]
#: The one algorithm accepted (a token naming another, ``none`` included, is refused).
ALGORITHM = "HS256"
#: Random bytes of a token's ``jti``.
_JTI_BYTES = 16
_REQUIRED_CLAIMS = ["sub", "login", "iat", "exp", "token_type"]


def signing_key(secret_key: str) -> bytes:
    """The key that signs session tokens, derived from the server's secret key."""
    return hmac.new(secret_key.encode(), b"attune-session-tokens", hashlib.sha256).digest()


def expiry(issued: datetime, ttl_s: int) -> datetime:
    """When a token issued at ``issued`` for ``ttl_s`` expires, in whole seconds as ``exp``
    holds it (Attune's arithmetic: ``iat`` plus the lifetime), so that the claim and the
    stored expiry are the same instant."""
    return datetime.fromtimestamp(math.floor(issued.timestamp()) + ttl_s, UTC)


def looks_like_jwt(token: str) -> bool:
    """Whether ``token`` has a JWT's form (the opaque ``att_`` tokens of ``attune token
    create`` and the ``atx_`` execution tokens do not)."""
    return token.startswith("eyJ") and token.count(".") == 2


@dataclass(frozen=True)
class Claims:
    user_id: int
    login: str
    token_type: TokenType
    issued_at: int
    expires_at: int


class SessionTokens:
    """Issues and verifies session JWTs. Without a secret key (a service built for one
    command) the key is random: its tokens are good in this process only."""

    def __init__(self, secret_key: str | None) -> None:
        self._key = signing_key(secret_key) if secret_key else secrets.token_bytes(32)

    def issue(
        self,
        user_id: int,
        login: str,
        token_type: TokenType,
        issued: datetime,
        expires: datetime,
    ) -> str:
        claims = {
            "sub": str(user_id),
            "login": login,
            "iat": int(issued.timestamp()),
            "exp": int(expires.timestamp()),
            "token_type": token_type,
            "jti": secrets.token_urlsafe(_JTI_BYTES),
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, token: str, token_type: TokenType) -> Claims:
        """The claims of a token signed here, of ``token_type``, not expired; Unauthorized
        otherwise (an expired one with a message that says so)."""
        try:
            claims = jwt.decode(
                token, self._key, algorithms=[ALGORITHM], options={"require": _REQUIRED_CLAIMS}
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired; log in again") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("invalid token") from None
        try:
            found = Claims(
                user_id=int(claims["sub"]),
                login=str(claims["login"]),
                token_type=claims["token_type"],
                issued_at=int(claims["iat"]),
                expires_at=int(claims["exp"]),
            )
        except (TypeError, ValueError):
            raise Unauthorized("invalid token") from None
        if found.token_type != token_type:
            if found.token_type == "refresh":  # noqa: S105 (a token type, not a secret)
                raise Unauthorized("a refresh token is no bearer token; trade it at /auth/refresh")
            raise Unauthorized("invalid token")
        return found
