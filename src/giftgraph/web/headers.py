"""Browser security headers on every HTTP response (`SecurityHeaders`).

- `Content-Security-Policy`: the pages load only what this server serves. The family app
  (`/`) has no inline script or style (`PAGE_POLICY`); GraphiQL's page (`/graphql` in a
  browser) has one inline script and one inline style, allowed by a nonce fresh for each
  response (`graphiql_policy`), which its script also hands to GraphiQL's bundle
  (`__webpack_nonce__`: the `<style>` its dialogs add at run time). No `'unsafe-inline'`,
  no `'unsafe-eval'`. `connect-src 'self'` covers the page's own WebSocket. Every other
  response (JSON, streams, static files) gets `PAGE_POLICY` too: nothing rendered from it
  may run anything.
- `frame-ancestors 'none'` and `X-Frame-Options: DENY`: no page is framed (clickjacking).
- `X-Content-Type-Options: nosniff`: a JSON answer or a static file is never taken for
  script or HTML.
- `Referrer-Policy: no-referrer`: the pages' URLs (a GraphiQL query in the address bar)
  go nowhere else.

A response that sets its own `Content-Security-Policy` (GraphiQL's) keeps it.
"""

from __future__ import annotations

import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_COMMON = ("default-src 'self'; img-src 'self' data:; font-src 'self' data:; "
           "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
           "frame-ancestors 'none'")
PAGE_POLICY = f"{_COMMON}; script-src 'self'; style-src 'self'"

HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
CSP = b"content-security-policy"


def new_nonce() -> str:
    """A CSP nonce: 128 random bits, base64url."""
    return secrets.token_urlsafe(16)


def graphiql_policy(nonce: str) -> str:
    """GraphiQL's page: its inline script and style by `nonce`, all else as PAGE_POLICY."""
    return f"{_COMMON}; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'nonce-{nonce}'"


class SecurityHeaders:
    """Adds HEADERS, and PAGE_POLICY unless the response has its own policy, to every
    HTTP response (a WebSocket has no response to add them to)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                names = {name.lower() for name, _ in headers}
                headers.extend(h for h in HEADERS if h[0] not in names)
                if CSP not in names:
                    headers.append((CSP, PAGE_POLICY.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
