"""GraphQL over HTTP (graphql-over-http spec): media types, status codes, request errors."""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from giftgraph.tracing import current_trace_id

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"

log = logging.getLogger("giftgraph.errors")


# RFC 9110 qvalue: 0 to 1 with at most three decimals (float() would also take "nan",
# "inf", "1e3", "1_0" and other scripts' digits).
_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")


def media_type(value: str) -> str:
    """The `type/subtype` of a media range or Content-Type, lower case, without parameters."""
    return value.split(";", 1)[0].strip().lower()


def is_json_body(content_type: str | None) -> bool:
    """A request body in `application/json` (parameters such as charset allowed): the media
    type itself, not any type that merely contains it (`application/jsonx`)."""
    return content_type is not None and media_type(content_type) == JSON


def negotiate(accept: str | None) -> str | None:
    """The response media type for an Accept header; None when nothing acceptable."""
    if not accept or not accept.strip():
        return JSON  # legacy clients send no Accept: answer as they expect
    offers: list[tuple[float, int, str]] = []
    for i, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                value = value.strip()
                q = float(value) if _QVALUE.fullmatch(value) else 0.0
        if q <= 0:
            continue
        media = media.lower()
        if media == GRAPHQL_RESPONSE:
            offers.append((q, -i, GRAPHQL_RESPONSE))
        elif media in (JSON, "application/*", "*/*"):
            offers.append((q, -i, JSON))
    return max(offers)[2] if offers else None


def error_body(message: str, code: str = "BAD_USER_INPUT", **extensions: Any) -> bytes:
    """A request error refused before any operation: a fresh traceId, logged with it."""
    trace_id = current_trace_id() or uuid.uuid4().hex
    log.info("request refused: %s (code=%s, traceId=%s)", message, code, trace_id)
    return orjson.dumps({"errors": [{"message": message, "extensions": {
        "code": code, **extensions, "traceId": trace_id}}]})


def request_error(status: int, message: str, media: str = JSON,
                  headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(message), status_code=status, media_type=media, headers=headers)


def rate_limited(exc: Any, media: str) -> Response:
    """A request refused by a rate or in-flight bound before it ran: RATE_LIMITED with
    `retryAfter` and `Retry-After`; 429 under graphql-response+json, as `finish` does."""
    retry = int(exc.extensions.get("retryAfter", 1))
    body = error_body(exc.message, "RATE_LIMITED", retryAfter=retry)
    return Response(body, status_code=429 if media == GRAPHQL_RESPONSE else 200,
                    media_type=media, headers={"Retry-After": str(retry)})


def is_request_error(body: dict[str, Any]) -> bool:
    """Parse, validation and variable errors: no execution happened (no `data`, no `path`)."""
    errors = body.get("errors") or []
    return bool(errors) and body.get("data") is None and all("path" not in e for e in errors)


# An HTTP request's answers that carry no errors, as `GraphQLApp.encode_json` wrote them
# (a result without `errors`, within its bound): a body equal to one needs no search for
# errors. Searching a nested read's 70 KB for `"errors"` took ~50 µs; comparing, ~3. Set
# by the request (`clean_answers`) for its own task only: sockets and streams keep none.
CLEAN_ANSWERS: ContextVar[list[bytes] | None] = ContextVar("giftgraph_clean_answers",
                                                           default=None)
# Set on the responses `finish` found no errors in, for `is_refusal`.
NO_ERRORS = "giftgraph_no_errors"


def finish(response: Response, request: Request, media: str) -> Response:
    """Apply the negotiated media type; request errors are 400 under graphql-response+json
    and carry no `data` (they never executed)."""
    if response.media_type not in (JSON, None) or response.status_code != 200:
        return response
    raw = response.body
    if isinstance(raw, bytes) and raw.startswith(b"{") and (
            raw in (CLEAN_ANSWERS.get() or ()) or b'"errors"' not in raw):
        # No errors (the answer as written without any, or no `errors` key anywhere: it
        # can't be written without these bytes): nothing to mask and no request error, so
        # the body goes out as it is, not decoded and re-encoded (a nested read's body is
        # tens of kilobytes).
        clean = Response(raw, media_type=media, headers=_passed_on(response),
                         background=response.background)
        setattr(clean, NO_ERRORS, True)
        return clean
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return response
    if not isinstance(body, dict):
        return response
    masked = [_mask(e) for e in body.get("errors") or []]
    if masked:
        body["errors"] = masked
    status = 200
    headers = _passed_on(response)
    codes = {(e.get("extensions") or {}).get("code") for e in body.get("errors") or []}
    if codes == {"RATE_LIMITED"}:
        # Refused before execution (the mutation budget) or by a field (login, signUp's
        # throttles): either way the client learns when to retry from the header too.
        retry = (body["errors"][0].get("extensions") or {}).get("retryAfter", 1)
        headers["Retry-After"] = str(retry)
    if is_request_error(body):
        body.pop("data", None)
        if codes == {"RATE_LIMITED"}:
            status = 429 if media == GRAPHQL_RESPONSE else 200
        elif media == GRAPHQL_RESPONSE:
            status = 400
    return Response(orjson.dumps(body), status_code=status, media_type=media, headers=headers,
                    background=response.background)


# What refuses a caller's input (a bound or a budget): not an error of ours, nor an
# outcome of the data (NOT_FOUND, CONFLICT, INVALID_TRANSITION), nor an expired token.
REFUSING = frozenset(("BAD_USER_INPUT", "QUERY_TOO_COMPLEX", "RATE_LIMITED",
                      "PERSISTED_QUERY_NOT_ALLOWED"))


def is_refusal(response: Response) -> bool:
    """Whether `response` (as `finish` made it) refuses the request: a request error
    (nothing ran: 4xx, or errors without `data`), or no data at all and every error one
    of REFUSING (a search over its bound, a spent budget). What `admission.requests.Pace`
    counts per caller."""
    if 400 <= response.status_code < 500 or "retry-after" in response.headers:
        return True
    if getattr(response, NO_ERRORS, False):  # `finish` found none
        return False
    raw = getattr(response, "body", None)  # a streamed response (a subscription) has none
    if not isinstance(raw, bytes) or b'"errors"' not in raw:
        return False
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(body, dict) or not body.get("errors"):
        return False
    if "data" not in body:
        return True
    return body["data"] is None and all(
        isinstance(e, dict) and (e.get("extensions") or {}).get("code") in REFUSING
        for e in body["errors"])


def _passed_on(response: Response) -> dict[str, str]:
    """The headers of Strawberry's response that still hold for the one we send."""
    return {k: v for k, v in response.headers.items()
            if k.lower() not in ("content-length", "content-type")}


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        seen = 0
        too_large = False

        async def limited() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_large = True
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except BodyTooLarge:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = error_body("Request body too large")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", JSON.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    pass


def _mask(error: Any) -> Any:
    """Safety net: an error that escaped FormatErrors (no code) is masked here."""
    if isinstance(error, dict) and (error.get("extensions") or {}).get("code"):
        return error
    trace_id = uuid.uuid4().hex
    log.error("an error without a code was masked (traceId=%s): %r", trace_id, error)
    return {"message": "Internal server error",
            "extensions": {"code": "INTERNAL_SERVER_ERROR", "traceId": trace_id}}


def persisted_refusal(exc: Exception, media: str) -> Response:
    """A request refused while its document was looked up (giftgraph.persisted): the
    GraphQL error shape with its code; 200 under application/json (what Apollo's
    persisted-queries link reads, as Apollo Server answers), 400 under
    graphql-response+json, as every request error (nothing ran)."""
    code = getattr(exc, "code", "BAD_USER_INPUT")
    message = getattr(exc, "message", str(exc))
    return Response(error_body(message, code),
                    status_code=400 if media == GRAPHQL_RESPONSE else 200, media_type=media)
