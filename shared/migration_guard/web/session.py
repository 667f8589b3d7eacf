"""The dashboard's logins, kept server-side in the service's store (Redis, or the demo's embedded one).

- A **session** is opened by a valid bearer token (one of MIGRATION_GUARD_API_TOKENS) entered once on
  the login form. The browser keeps only a random session id in an HttpOnly, SameSite=Strict cookie;
  the store keeps, under the id's SHA-256 (a copy of the store gives no usable cookie), the token's
  SHA-256 and the session's CSRF token, expiring after MIGRATION_GUARD_WEB_SESSION_TTL_S. A session
  whose token was taken out of MIGRATION_GUARD_API_TOKENS ends at its next request.
- A **one-time login code** (``serve --demo`` prints a link with one) stands for a token for
  ``CODE_TTL_S`` seconds and is redeemed once (GETDEL): the token itself never appears in a URL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

KEY_PREFIX = "migration-guard:web:"
#: the session cookie (its value: the random session id)
COOKIE = "mg_session"
#: the login form's CSRF cookie (double submit: the form carries the same value)
LOGIN_COOKIE = "mg_login"
#: seconds a one-time login code stays redeemable
CODE_TTL_S = 300


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    token_digest: str
    csrf: str


class Sessions:
    """Sessions and one-time codes in ``store`` (the service's ``Store``: ``run`` maps a Redis
    failure to StoreUnavailable); ``tokens``: the accepted bearer tokens."""

    def __init__(self, store: Any, tokens: tuple[str, ...], ttl_s: float) -> None:
        self.store = store
        self.ttl_s = int(ttl_s)
        self._digests = tuple(digest(t) for t in tokens if t)

    def token_digest(self, given: str) -> str | None:
        """The SHA-256 of ``given`` when it is one of the tokens, else None (compared with every
        token: the time does not tell which one matched)."""
        mine = digest(given.strip())
        ok = False
        for known in self._digests:
            ok |= hmac.compare_digest(mine, known)
        return mine if ok and given.strip() else None

    def _valid(self, token_digest: str) -> bool:
        ok = False
        for known in self._digests:
            ok |= hmac.compare_digest(token_digest, known)
        return ok

    async def open(self, token_digest: str) -> Session:
        session = Session(secrets.token_urlsafe(32), token_digest, secrets.token_urlsafe(32))
        value = json.dumps({"token": token_digest, "csrf": session.csrf})
        key = KEY_PREFIX + "session:" + digest(session.id)
        await self.store.run(lambda r: r.set(key, value, ex=self.ttl_s))
        return session

    async def get(self, session_id: str | None) -> Session | None:
        """The session of cookie value ``session_id``; None when absent, expired or its token revoked."""
        if not session_id or len(session_id) > 128:
            return None
        key = KEY_PREFIX + "session:" + digest(session_id)
        raw = await self.store.run(lambda r: r.get(key))
        if not raw:
            return None
        try:
            data: dict[str, Any] = json.loads(raw)
            session = Session(session_id, str(data["token"]), str(data["csrf"]))
        except (ValueError, KeyError, TypeError):
            return None
        if not self._valid(session.token_digest):  # the token was taken out of the settings
            await self.close(session_id)
            return None
        return session

    async def close(self, session_id: str) -> None:
        key = KEY_PREFIX + "session:" + digest(session_id)
        await self.store.run(lambda r: r.delete(key))

    async def new_code(self, token: str) -> str:
        """A one-time login code standing for ``token`` (which must be one of the tokens)."""
        token_digest = self.token_digest(token)
        if token_digest is None:
            raise ValueError("a login code is made for an accepted token only")
        code = secrets.token_urlsafe(24)
        key = KEY_PREFIX + "code:" + digest(code)
        await self.store.run(lambda r: r.set(key, token_digest, ex=CODE_TTL_S))
        return code

    async def redeem(self, code: str) -> str | None:
        """The token digest of a one-time ``code``, once: the code is deleted as it is read."""
        if not code or len(code) > 128:
            return None
        key = KEY_PREFIX + "code:" + digest(code)
        token_digest = await self.store.run(lambda r: r.getdel(key))
        if not token_digest or not self._valid(str(token_digest)):
            return None
        return str(token_digest)


def same_secret(given: str | None, expected: str) -> bool:
    """A CSRF token check in constant time; an empty or missing value never matches."""
    return bool(given) and bool(expected) and hmac.compare_digest(str(given).encode(), expected.encode())
