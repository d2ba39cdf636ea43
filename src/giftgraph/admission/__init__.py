"""The admission layer: every bound on what one request, socket, user or IP may cost.

Each bound is named here once, with the setting that sets it. It is checked before the work
it protects (parsing, analysis, hashing, a query, a replay), and each refusal is counted in
`giftgraph_admission_refused_total{bound}`. The checks themselves live beside this module:

- `documents`: a GraphQL document's tokens, depth, aliases, cost, overlaps and root
  mutation fields, measured in one pass per fragment (linear in the document);
- `sockets`: new sockets per IP (HTTP subscription streams too), socket message size and
  shape, sockets per user (streams too), subscriptions per socket and per user, replay
  turns per user, the bytes a socket (or an HTTP answer) owes its client;
- `pace`: what a family starts per second (mutation fields, socket operations);
- `throttle`: per-IP budgets of the anonymous mutations and the bound on concurrent
  password hashing;
- `server`: connections, header bytes, header and idle timeouts of `giftgraph serve`;
- `requests`: GraphQL requests over HTTP in flight per caller (until their answers are
  sent), and the pace of a caller whose requests are refused;
- `answers`: the bytes of one answer, and of the results live queries keep.

Replay (`since`), search and page sizes are bounded where those reads are built, under the
names below. docs/hardening.md lists every bound with its default.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter


@dataclass(frozen=True, slots=True)
class Bound:
    """One limit: its metric label, its `Settings` field and what it bounds."""

    name: str
    setting: str
    what: str


BOUNDS: tuple[Bound, ...] = (
    Bound("body_bytes", "max_body_bytes", "an HTTP request body (413)"),
    Bound("json_depth", "max_json_depth", "levels of arrays and objects in an HTTP "
          "request's JSON (body, GET variables and extensions)"),
    Bound("query_length", "max_query_chars", "a document's characters (comments, "
          "whitespace and strings included), before it is parsed"),
    Bound("tokens", "max_query_tokens", "a document's tokens; the parser stops there"),
    Bound("depth", "max_query_depth", "a selection's depth, fragments expanded"),
    Bound("aliases", "max_aliases", "aliases in the expanded selection"),
    Bound("cost", "max_query_cost", "fields in the expanded selection, a connection's "
          "subtree counted once per node it may return"),
    Bound("overlaps", "max_query_overlaps", "what validation compares pairwise: fields of "
          "one response name in a selection set, fragments spread in one, through their "
          "selections"),
    Bound("mutation_rate", "mutation_rate", "root mutation fields per user, fragments "
          "expanded"),
    Bound("family_mutation_rate", "family_mutation_rate", "root mutation fields of a "
          "family, all its members together, fragments expanded"),
    Bound("family_mutation_pace", "family_mutation_burst", "root mutation fields of a "
          "family started at once; past them, at family_mutation_rate's average pace (the "
          "rest wait their turn, up to request_wait_seconds)"),
    Bound("login_rate", "login_rate", "login attempts per IP and email"),
    Bound("login_ip_rate", "login_ip_rate", "login attempts per IP"),
    Bound("known_login_rate", "known_login_rate", "failed logins that went ahead of the "
          "hashing queue (because they came from a network the account has signed in "
          "from: login, signUp, refreshToken, within refresh_token_ttl_seconds, or with a "
          "device token), per network (or device): past it their logins wait their turn "
          "with the others"),
    Bound("signup_ip_rate", "signup_ip_rate", "signUp per IP"),
    Bound("token_ip_rate", "token_ip_rate", "refreshToken and logout per IP"),
    Bound("requests_per_caller", "max_requests_per_caller", "GraphQL requests over HTTP "
          "one caller (its family, else its IP) runs at once (the next waits up to "
          "request_wait_seconds, then RATE_LIMITED)"),
    Bound("refusals_per_caller", "refusal_rate", "requests of one caller (its family, "
          "else its IP) that are refused (a request error, or no data and only errors that "
          "refuse the input, e.g. RATE_LIMITED): past a burst "
          "of refusal_burst, refusal_rate a second; each request past it waits for its "
          "turn before its body is read"),
    Bound("analysis_seconds", "analysis_seconds_per_caller", "seconds of parsing and "
          "validation of documents not seen before, per caller (its family, else its IP): "
          "past a burst of analysis_burst_seconds, this share of a second each second; a "
          "new document past it is RATE_LIMITED before it is parsed"),
    Bound("hashing", "max_concurrent_hashes", "password hashes computed at once, one per "
          "caller (family or IP) at a time (others wait, up to hash_wait_seconds, then "
          "RATE_LIMITED); a free thread goes to a login from a known network first "
          "(known_login_rate)"),
    Bound("socket_reauth_rate", "socket_reauth_rate", "pings that re-authenticate a socket, "
          "per user (each a token check and a database read)"),
    Bound("socket_connect_rate", "socket_connect_ip_rate", "new WebSockets and HTTP "
          "subscription streams per client IP, one budget, refused before a socket's "
          "handshake (closed before accept: HTTP 403) or a stream's token is read (429)"),
    Bound("socket_message_bytes", "max_socket_message_bytes", "one WebSocket message "
          "(close 1009)"),
    Bound("socket_message_rate", "socket_message_rate", "messages one socket sends per "
          "second (a faster socket is read more slowly)"),
    Bound("sockets_per_user", "max_sockets_per_user", "open WebSockets and HTTP "
          "subscription streams per user, together (4429; a stream: 429)"),
    Bound("subscriptions_per_socket", "max_subscriptions_per_connection",
          "operations on one socket"),
    Bound("subscription_starts_per_family", "family_subscription_start_burst",
          "operations a family starts over its sockets at once; past them, "
          "family_subscription_start_rate a second (the socket is read more slowly)"),
    Bound("subscriptions_per_user", "max_subscriptions_per_user", "operations open on all "
          "of one user's sockets (each mutation of a family is one delivery per open "
          "subscription of its members)"),
    Bound("subscription_cost_per_family", "max_subscription_cost_per_family", "the costs "
          "of one family's open subscriptions in one process, together (each measured as "
          "`cost` measures a document; live queries aside): each event is rendered once "
          "per selection, so past it a new one is RATE_LIMITED"),
    Bound("live_queries_per_family", "max_live_queries_per_family", "distinct live "
          "queries (caller, document, variables) of one family in one process, each "
          "executed once per relevant change: past it a new one is RATE_LIMITED"),
    Bound("live_cost_per_family", "max_live_cost_per_family", "the costs of one family's "
          "distinct live queries in one process, together (each measured as `cost` "
          "measures a document): past it a new one is RATE_LIMITED"),
    Bound("live_seconds", "live_seconds_per_family", "seconds of live-query execution one "
          "family uses a second (wall time, charged after each run), and all families "
          "together `live_seconds_per_process`: past them its live queries run later, their "
          "changes folded into the next run"),
    Bound("live_bytes", "max_live_bytes_per_family", "bytes of the results one family's "
          "live queries keep between runs in one process (each its latest result), and "
          "with max_live_bytes all families' together, past which a family keeping more "
          "than an equal share is refused: a result past either is not kept, its "
          "subscribers get RATE_LIMITED instead until a later one fits"),
    Bound("persisted_documents", "max_persisted_documents", "documents stored by hash "
          "(APQ) on every instance together: past it the oldest registrations give way"),
    Bound("persisted_register_rate", "persisted_register_rate", "documents one user (else "
          "one IP) registers by hash (APQ): past it the request runs, nothing is stored"),
    Bound("search_length", "max_search_length", "a `search` argument's characters"),
    Bound("page_size", "max_page_size", "`first`/`last` of a connection (capped)"),
    Bound("replay_events", "max_replay_events", "events a `since` may replay; further "
          "back is refused: refetch and resume from now"),
    Bound("connections", "max_connections", "open connections of `giftgraph serve`"),
    Bound("connections_per_ip", "max_connections_per_ip", "open HTTP connections of one "
          "client address (trusted proxies aside)"),
    Bound("header_timeout", "http_header_timeout_seconds", "time to send a request's "
          "headers, and as long again for its body"),
    Bound("header_bytes", "max_header_bytes", "a request's line and headers as received "
          "(431, connection closed)"),
    Bound("idle_timeout", "http_idle_timeout_seconds", "an idle keep-alive connection"),
    Bound("ws_pings", "max_ws_pings_per_second", "pings one WebSocket's client sends a "
          "second (as many at once), each parsed and answered by the event loop: past them "
          "the socket is reset"),
    Bound("send_timeout", "http_send_timeout_seconds", "an HTTP answer the client does not "
          "read: no byte of it taken for that long while the connection's buffer is full, "
          "and the connection is cut"),
    Bound("answer_bytes", "answer_bytes_rate", "bytes of the answers one caller (its "
          "family, else its IP network) is sent, over HTTP and its sockets' operations: "
          "past a burst of answer_bytes_burst, answer_bytes_rate a second; its next request "
          "or operation waits until it has paid (RATE_LIMITED after request_wait_seconds "
          "over HTTP)"),
    Bound("answer_values", "answer_values_rate", "values (objects, lists, strings, "
          "numbers, booleans, nulls) of the executed answers one caller is sent, as "
          "answer_bytes: past a burst of answer_values_burst, answer_values_rate a second "
          "(a compiled read's answer, written by PostgreSQL, has none)"),
    Bound("socket_owed_bytes", "max_socket_owed_bytes", "what a WebSocket's client, or an "
          "HTTP answer's (a subscription stream's too), has not taken: its messages "
          "waiting to be written (their memory) and its transport's buffer; with "
          "max_owed_bytes, all sockets' and answers' waiting messages together: past "
          "max_socket_owed_bytes that connection is cut (reset); past max_owed_bytes, the "
          "connection owing most of the family (else client network) owing most"),
    Bound("response_bytes", "max_response_bytes", "one answer serialized (an HTTP "
          "response, one result of a subscription or live query): past it "
          "QUERY_TOO_COMPLEX instead (max_query_cost counts fields, not their bytes)"),
)
BY_NAME: dict[str, Bound] = {b.name: b for b in BOUNDS}


class Refusals:
    """`giftgraph_admission_refused_total{bound}` of one app."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counter = Counter("giftgraph_admission_refused",
                               "Requests, sockets and messages refused by a bound",
                               ["bound"], registry=registry)
        for bound in BOUNDS:  # every label present from the start, at 0
            self.counter.labels(bound.name)

    def count(self, bound: str) -> None:
        """One refusal by `bound` (a name of BOUNDS)."""
        self.counter.labels(BY_NAME[bound].name).inc()
