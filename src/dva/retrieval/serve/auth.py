"""The api key that guards the write routes (``POST /items``, ``DELETE /items/{id}``).

A server started without a key is read-only (403 on the write routes). With one, a client sends
it as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; a missing or wrong key is 401. Both
sides are hashed before the constant-time comparison, so not even the key's length leaks.
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from fastapi import HTTPException

API_KEY_ENV = "DVA_API_KEY"
_READ_ONLY = f"read-only server: start it with an api key ({API_KEY_ENV}) to allow writes"
_BAD_KEY = "missing or wrong api key: send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"


def check_api_key(key: str | None) -> bytes | None:
    """The api key as bytes (None: read-only); refuses one no HTTP header can carry.

    Raises:
        ValueError: an empty key, or one with spaces or control characters.
    """
    if key is None:
        return None
    if not key or not key.isprintable() or not key.isascii() or any(c.isspace() for c in key):
        raise ValueError(f"the api key ({API_KEY_ENV} or --api-key) must be non-empty printable ASCII without "
                         "spaces, e.g. the output of: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return key.encode()


def presented_key(headers: Mapping[bytes, bytes]) -> bytes | None:
    """The key of ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (raw ASGI headers, names lower-case)."""
    auth = headers.get(b"authorization", b"")
    scheme, _, token = auth.partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        return token.strip()
    key = headers.get(b"x-api-key", b"").strip()
    return key or None


def auth_error(api_key: bytes | None, headers: Mapping[bytes, bytes]) -> HTTPException | None:
    """403 on a read-only server, 401 without the right key (which of the two is not said), else None."""
    if api_key is None:
        return HTTPException(403, _READ_ONLY)
    given = presented_key(headers)
    if given is None or not hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(api_key).digest()):
        return HTTPException(401, _BAD_KEY, headers={"WWW-Authenticate": "Bearer"})
    return None
