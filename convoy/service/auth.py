"""API tokens and roles: who may call what.

Roles nest (``storage.Role``): viewer < dispatcher < operator < admin.

- viewer: read everything (fleet, trucks, platoons, orders, plan, KPIs, takeovers, runs,
  the live WebSocket);
- dispatcher: also create and cancel orders;
- operator (the remote operator): also claim and resolve takeover requests;
- admin: also raise takeover requests by hand, start scenario runs and make tokens.

A request carries ``Authorization: Bearer TOKEN`` (the WebSocket: ``?token=TOKEN``). No
token or an unknown one answers 401, a role below the route's answers 403, both with a
JSON body. Tokens are stored hashed (``Storage.add_token``); ``CONVOY_ADMIN_TOKEN`` is
compared in constant time and never stored.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from convoy.service.storage import Role, Storage

#: How long a checked token's role is remembered [s]: each check costs an scrypt hash
#: (about 6 ms, storage/base.py), too much for every request of a busy console.
CACHE_TTL_S = 30.0
#: Most tokens remembered at once.
CACHE_MAX = 1024

_bearer = HTTPBearer(auto_error=False, description="An API token: cvy.<key_id>.<secret>")


class TokenChecker:
    """Checks tokens against storage (and the admin token from the settings), with a cache."""

    def __init__(self, storage: Storage, admin_token: str | None) -> None:
        self.storage = storage
        self.admin_token = admin_token
        self._cache: dict[str, tuple[Role | None, float]] = {}
        self._lock = threading.Lock()

    def role_of(self, token: str | None) -> Role | None:
        """The role of ``token``, None for no token or an unknown one."""
        if not token or len(token) > 200:
            return None
        if self.admin_token is not None and hmac.compare_digest(
            token.encode(), self.admin_token.encode()
        ):
            return Role.ADMIN
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        role = self.storage.check_token(token)
        with self._lock:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[token] = (role, now + CACHE_TTL_S)
        return role

    def forget(self) -> None:
        """Drop the cache (after a token is revoked)."""
        with self._lock:
            self._cache.clear()


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def require(needed: Role) -> Callable[..., Role]:
    """A FastAPI dependency: the caller's role, which must allow ``needed``."""

    def dep(
        request: Request,
        creds: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
    ) -> Role:
        if creds is None:
            raise _unauthorized("missing token: send 'Authorization: Bearer TOKEN'")
        checker: TokenChecker = request.app.state.tokens
        role = checker.role_of(creds.credentials)
        if role is None:
            raise _unauthorized("unknown or revoked token")
        if not role.allows(needed):
            raise HTTPException(
                403, detail=f"role {role.value!r} may not do this; needs {needed.value!r} or above"
            )
        return role

    dep.__name__ = f"require_{needed.value}"
    return dep


viewer = require(Role.VIEWER)
dispatcher = require(Role.DISPATCHER)
operator = require(Role.OPERATOR)
admin = require(Role.ADMIN)
