"""Secret handling: encryption of secret parameters at rest and the secret key's life cycle."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from engine.errors import EngineError
from engine.private_files import make_private_dir

SECRET_KEY_FILE = "secret.key"  # noqa: S105 (a file name)


def load_or_create_secret_key(data_dir: Path) -> str:
    """Read the generated secret key from ``data_dir``, creating it (mode 0600) on first start."""
    path = data_dir / SECRET_KEY_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    make_private_dir(data_dir)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(key)
    return key


class SecretBox:
    """Encrypts a mapping of secret values into one opaque string, and back."""

    def __init__(self, secret_key: str) -> None:
        digest = hashlib.sha256(b"attune-secrets:" + secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))
        self._tag_key = hashlib.sha256(b"attune-tags:" + secret_key.encode()).digest()

    def tag(self, text: str, length: int) -> str:
        """``length`` hex digits that only holders of the secret key can compute from
        ``text`` (HMAC-SHA256): the same text gives the same tag in every process."""
        return hmac.new(self._tag_key, text.encode(), hashlib.sha256).hexdigest()[:length]

    def seal(self, values: dict[str, Any]) -> str | None:
        if not values:
            return None
        return self._fernet.encrypt(json.dumps(values).encode()).decode()

    def open(self, sealed: str | None) -> dict[str, Any]:
        if not sealed:
            return {}
        try:
            data: dict[str, Any] = json.loads(self._fernet.decrypt(sealed.encode()))
        except InvalidToken as exc:
            raise EngineError(
                "secret parameters cannot be decrypted: wrong ATTUNE_SECRET_KEY?"
            ) from exc
        return data
