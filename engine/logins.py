"""Logins are names people read: two that look alike must be one identity.

A login is stored as given once normalised (:func:`normal_login`: Unicode NFKC, surrounding
spaces removed), and compared by its key (:func:`login_key`: the normal form case-folded), so
``admin``, ``ADMIN``, `` admin `` and ``admin`` in full-width letters are one login: logging in is
case-insensitive, and a new login whose key is taken is refused (409, naming the login it
collides with). Logins with invisible or control characters, and logins that mix letters of
the scripts that imitate each other (Latin, Greek, Cyrillic...), are refused outright (``paypal``
with a Cyrillic ``a``). A login written wholly in another script is accepted: that
is a different name, not a forgery of one.
"""

from __future__ import annotations

import unicodedata

from engine.errors import InvalidRequest

#: Longest login (the column's size).
MAX_LOGIN_CHARS = 128
#: Scripts whose letters are drawn alike: one login may use letters of only one of them.
LOOKALIKE_SCRIPTS = frozenset({"LATIN", "GREEK", "CYRILLIC", "ARMENIAN", "CHEROKEE", "COPTIC"})
#: Unicode categories never allowed in a login: control, format (zero-width joiners, direction
#: marks), separators other than the plain space, private use, surrogates, unassigned.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})


def normal_login(login: str) -> str:
    """The form a login is stored and shown in: NFKC, surrounding white space removed."""
    return unicodedata.normalize("NFKC", login).strip()


def login_key(login: str) -> str:
    """What logins are compared by: the normal form, case-folded (and NFKC again, as folding
    may leave a form NFKC changes)."""
    return unicodedata.normalize("NFKC", normal_login(login).casefold())


def _script(char: str) -> str | None:
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    script = name.split(" ", 1)[0]
    return script if script in LOOKALIKE_SCRIPTS else None


def check_login(login: str) -> str:
    """The normal form of a new login; InvalidRequest (naming the problem) when it may not
    be one."""
    normal = normal_login(login)
    if not normal or len(normal) > MAX_LOGIN_CHARS:
        raise InvalidRequest(f"login must be 1 to {MAX_LOGIN_CHARS} characters")
    for char in normal:
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES or (category == "Zs" and char != " "):
            raise InvalidRequest(
                f"login may not contain the invisible or control character U+{ord(char):04X}"
            )
    scripts = sorted({s for s in map(_script, normal) if s is not None})
    if len(scripts) > 1:
        raise InvalidRequest(
            f"login mixes letters of the {' and '.join(s.title() for s in scripts)} scripts, "
            "which look alike; use letters of one script"
        )
    return normal
