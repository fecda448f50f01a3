"""The dashboard's front door: read-only methods, the bearer token, the Host, safe headers.

A pure ASGI middleware, so it wraps every response, the error pages included.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["LOOPBACK_HOSTS", "SECURITY_HEADERS", "Guard", "token_matches"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
"""The names a browser uses for this machine: the only Host a server without a token answers."""

SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    # Pages may hold payloads (with --payloads): never keep them in a cache.
    (b"cache-control", b"no-store"),
)
"""Headers on every response: no script runs (the dashboard has none), nothing is cached."""

_READ_METHODS = frozenset({"GET", "HEAD"})
_CHALLENGE = 'Bearer realm="ecl-db", Basic realm="ecl-db"'


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def token_matches(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token``, compared in constant time.

    ``Bearer TOKEN`` for scripts; ``Basic`` with the token as the password
    (any user name) for a browser, which asks for it after a 401.
    """
    scheme, _, credentials = (authorization or "").partition(" ")
    given: str | None = None
    if scheme.lower() == "bearer":
        given = credentials.strip()
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        given = decoded.partition(":")[2]
    # Digests of equal length: the comparison says nothing of the token's length.
    return given is not None and hmac.compare_digest(_digest(given), _digest(token))


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class Guard:
    """Refuse writes (405), check the token (401) or the Host (421), add the safe headers."""

    def __init__(self, app: ASGIApp, *, token: str | None, hosts: Iterable[str] | None) -> None:
        """``hosts``: the Host names answered without a token (``None``: any)."""
        self._app = app
        self._token = token
        self._hosts = None if hosts is None else frozenset(h.lower() for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one ASGI connection: refuse it, or pass it on with the safe headers."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self._app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope) -> PlainTextResponse | None:
        if scope["method"] not in _READ_METHODS:
            return PlainTextResponse(
                "405 the dashboard only reads\n", 405, headers={"allow": "GET, HEAD"}
            )
        headers = Headers(scope=scope)
        if self._token is not None:
            if not token_matches(headers.get("authorization"), self._token):
                return PlainTextResponse(
                    "401 this dashboard needs its token\n",
                    401,
                    headers={"www-authenticate": _CHALLENGE},
                )
            return None
        # Without a token only this machine's names are answered: a web page
        # elsewhere cannot point its own name at 127.0.0.1 and read the data.
        if (
            self._hosts is not None
            and _host_name(headers.get("host", "")).lower() not in self._hosts
        ):
            return PlainTextResponse("421 unexpected Host\n", 421)
        return None
