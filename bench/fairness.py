"""Fairness: a victim family's latency while another family (or no one) attacks.

The victim, in its own process, runs all along: a closed loop of one small authenticated
query, and a few members who each change a person ~1.5 times a second (within the default
mutation budget) while the admin's socket receives every change through `familyEvents`
(commit-to-receipt: receipt time minus the event's `at`). Phases follow each other: idle,
then each attack class (`bench/attacks.py`) with an idle re-measurement after it. Each
sample is counted in the phase in which it started (a query sent, a change committed).

The API runs with production settings, and with the real default limits (only the access
token lives longer): the attacker meets what a deployment would. Accounts are made before
the first phase, from another address than the victim's and the attacker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import psutil
from rich.table import Table

from bench import wsclient
from bench.attacks import CLASSES, stop
from bench.harness import (
    HTTP,
    PROTOCOL,
    Server,
    api_env,
    api_server,
    cpu_mark,
    cpu_use,
    dsn,
    gql,
    login,
    metrics_page,
    summarize,
)
from bench.report import Options, Outcome, Target, ms, pct
from bench.workers import Channel, Crew

VICTIM_QUERY = "{ me { id } persons(first: 5) { edges { node { id name } } } }"
VICTIM_SUBSCRIPTION = ("subscription { familyEvents { seq at node { ... on Person { notes } } } }")
UPDATE_NOTES = ("mutation($p: ID!, $n: String!) { updatePerson(id: $p, input: {notes: $n}) "
                "{ id } }")
REGISTER = ("mutation($i: RegisterUserInput!) { registerUser(input: $i) { id } }")
SIGN_UP = "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }"
LOGIN = ("mutation($e: String!, $p: String!) { login(email: $e, password: $p) "
         "{ accessToken } }")
CREATE_PERSON = "mutation($n: String!) { createPerson(input: {name: $n}) { id } }"
PASSWORD = "fairness-password-123"  # noqa: S105 - the benchmark's own throwaway accounts

VICTIM_WRITERS = 6  # members of the victim family who change a person
VICTIM_PACE = 1.4  # changes per second per member (budgets: 2/s per user, 10/s per family)
ATTACKERS = 6  # the attacker's concurrent connections (and members of its family)
ATTACKER_PERSONS = 500  # people in the attacker's family: what its searches scan
STALLED_NOTES = 1000  # bytes of notes per change while the stalled sockets don't read
SETTINGS_LIMITS = ("max_query_tokens", "max_aliases", "max_socket_message_bytes",
                   "max_search_length", "max_subscriptions_per_connection")
# api_env raises these for the load benchmarks; here the attacker meets the defaults.
RAISED = ("GIFTGRAPH_MUTATION_RATE", "GIFTGRAPH_FAMILY_MUTATION_RATE",
          "GIFTGRAPH_MAX_SOCKETS_PER_USER", "GIFTGRAPH_MAX_SUBSCRIPTIONS_PER_USER",
          "GIFTGRAPH_SIGNUP_IP_RATE", "GIFTGRAPH_TOKEN_IP_RATE", "GIFTGRAPH_LOGIN_IP_RATE",
          "GIFTGRAPH_LOGIN_RATE", "GIFTGRAPH_MAX_CONNECTIONS", "GIFTGRAPH_MAX_CONNECTIONS_PER_IP",
          "GIFTGRAPH_SOCKET_CONNECT_IP_RATE", "GIFTGRAPH_MAX_REQUESTS_PER_CALLER")
RSS_CAP = 1536 * 2**20  # an attack phase ends early once the server grew this much
SETTLE_MAX = 60.0  # seconds to wait for the server to go quiet after an attack
SETTLE_ANSWER = 0.2  # seconds: a prompt /health answer
TARGET_RATIO = 3.0
VICTIM_SOURCE, ATTACKER_SOURCE = "127.0.0.2", "127.0.0.3"


def fairness_env(database_url: str) -> dict[str, str]:
    """Production settings with the default limits (tokens outlive the run)."""
    return {k: v for k, v in api_env(database_url).items() if k not in RAISED}


# ---------------------------------------------------------------- pure helpers


def ratio(value: float, baseline: float) -> float:
    """value / baseline; NaN when either is unknown or the baseline is 0."""
    if math.isnan(value) or math.isnan(baseline) or baseline <= 0:
        return float("nan")
    return value / baseline


def baseline(p99s: list[float]) -> float:
    """The idle p99: the median of the idle phases' p99s (one noisy idle phase on a shared
    machine moves it less than a pooled p99, which its slowest samples would set)."""
    known = sorted(v for v in p99s if not math.isnan(v))
    return statistics.median(known) if known else float("nan")


def within(samples: list[tuple[float, float]], windows: list[tuple[float, float]]
           ) -> list[float]:
    """Values of (time, value) samples whose time falls in any of `windows`."""
    return [v for t, v in samples if any(a <= t <= b for a, b in windows)]


def schedule(classes: tuple[str, ...], duration: float) -> list[tuple[str, float]]:
    """(phase, seconds): idle, then each class followed by a shorter idle re-measurement."""
    again = max(2.0, duration / 2)
    phases = [("idle", duration)]
    for kind in classes:
        phases += [(kind, duration), ("idle", again)]
    return phases


REFUSED = re.compile(r'^giftgraph_admission_refused_total\{bound="([^"]+)"\} (\S+)$')


def refusals(metrics_text: str) -> dict[str, float]:
    """giftgraph_admission_refused_total by bound, from a /metrics page."""
    found = {}
    for line in metrics_text.splitlines():
        if m := REFUSED.match(line):
            found[m.group(1)] = float(m.group(2))
    return found


PAUSE = re.compile(r'^giftgraph_(gc_pause|event_loop_lag)_seconds_bucket\{(?:generation="(\d)",)?'
                   r'le="([^"]+)"\} (\S+)$')
LONG_PAUSE_S = "0.01"  # a histogram bucket bound: pauses longer than this are counted


def pauses(metrics_text: str) -> dict[str, float]:
    """How many garbage collections (by generation) and event-loop wake-ups took longer than
    LONG_PAUSE_S so far, from a /metrics page (cumulative buckets: +Inf minus le), and how
    many database connections the server opened."""
    buckets: dict[tuple[str, str], dict[str, float]] = {}
    for line in metrics_text.splitlines():
        if m := PAUSE.match(line):
            name = "loop lag" if m.group(1) == "event_loop_lag" else f"gc gen{m.group(2)}"
            buckets.setdefault((name, ""), {})[m.group(3)] = float(m.group(4))
    found = {name: b.get("+Inf", 0.0) - b.get(LONG_PAUSE_S, 0.0)
             for (name, _), b in buckets.items()}
    for line in metrics_text.splitlines():
        if line.startswith("giftgraph_db_connections_opened_total "):
            found["db connects"] = float(line.split()[-1])
    return found


# ---------------------------------------------------------------- the victim (a worker)


async def victim(p: dict[str, Any], ch: Channel) -> dict[str, Any]:
    """Runs until stopped; every sample with its CLOCK_MONOTONIC start."""
    queries: list[tuple[float, float]] = []
    events: list[tuple[float, float]] = []
    writes: list[tuple[float, float]] = []
    errors: list[tuple[float, str]] = []
    transport = httpx.AsyncHTTPTransport(local_address=p["source"], limits=httpx.Limits(
        max_connections=16, keepalive_expiry=2.0))
    url = p["url"] + "/graphql"

    committed: dict[str, float] = {}  # a change's notes: when it was sent
    received: set[str | None] = set()  # the notes of the changes whose event arrived

    async def call(client: httpx.AsyncClient, token: str, body: bytes,
                   log: list[tuple[float, float]]) -> bool:
        t0 = time.monotonic()
        try:
            r = await client.post(url, content=body, headers={
                "authorization": f"Bearer {token}", "content-type": "application/json"})
        except httpx.HTTPError as exc:
            # the time it took to fail counts too: the victim waited that long
            log.append((t0, time.monotonic() - t0))
            errors.append((t0, f"{type(exc).__name__}: {exc}"[:200]))
            return False
        log.append((t0, time.monotonic() - t0))
        if r.status_code != 200 or b'"errors"' in r.content:
            errors.append((t0, f"{r.status_code} {r.text[:200]}"))
            return False
        return True

    async def query_loop(client: httpx.AsyncClient) -> None:
        body = orjson.dumps({"query": VICTIM_QUERY})
        while True:
            await call(client, p["token"], body, queries)

    async def writer(client: httpx.AsyncClient, token: str, person: str, k: int) -> None:
        step = 1 / p["pace"]
        due = time.monotonic() + k * step / len(p["writers"])  # spread over the interval
        n = 0
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            due = max(due + step, time.monotonic())
            n += 1
            t0, notes = time.monotonic(), f"victim {k} change {n}"
            if await call(client, token, orjson.dumps({"query": UPDATE_NOTES, "variables": {
                    "p": person, "n": notes}}), writes):
                committed[notes] = t0

    def on_text(raw: bytes) -> None:
        arrived, mono = time.time(), time.monotonic()
        msg = orjson.loads(raw)
        if msg.get("type") != "next" or msg["payload"].get("errors"):
            errors.append((mono, raw[:200].decode(errors="replace")))
            return
        event = msg["payload"]["data"]["familyEvents"]
        lag = arrived - datetime.fromisoformat(event["at"]).timestamp()
        events.append((mono - lag, lag))
        received.add((event.get("node") or {}).get("notes"))

    async def subscriber() -> None:
        while True:
            acked = asyncio.get_running_loop().create_future()

            def first(raw: bytes, acked: asyncio.Future[None] = acked) -> None:
                if acked.done():
                    on_text(raw)
                elif orjson.loads(raw).get("type") == "connection_ack":
                    acked.set_result(None)
            try:
                ws = await wsclient.connect(p["ws"] + "/graphql", first, subprotocol=PROTOCOL,
                                            local_addr=(p["source"], 0))
                ws.send_text(orjson.dumps({"type": "connection_init",
                                           "payload": {"token": p["token"]}}))
                await asyncio.wait_for(acked, 30)
                ws.send_text(orjson.dumps({"id": "1", "type": "subscribe",
                                           "payload": {"query": VICTIM_SUBSCRIPTION}}))
                subscribed.set()
                await ws.closed
                errors.append((time.monotonic(), f"victim socket closed ({ws.close_code})"))
            except (OSError, TimeoutError) as exc:
                errors.append((time.monotonic(), f"victim socket: {exc!r}"[:200]))
                await asyncio.sleep(0.5)

    subscribed = asyncio.Event()
    async with httpx.AsyncClient(transport=transport, timeout=300) as client:
        sub = asyncio.create_task(subscriber())
        await asyncio.wait_for(subscribed.wait(), 60)
        await asyncio.sleep(0.2)
        ch.send("ready")
        await ch.start_time()
        tasks = [sub, asyncio.create_task(query_loop(client))]
        tasks += [asyncio.create_task(writer(client, token, person, k))
                  for k, (token, person) in enumerate(p["writers"])]
        await ch.until_stopped(lambda: len(queries))
        await stop(tasks[1:])
        deadline = time.monotonic() + 5  # the last changes' events
        while time.monotonic() < deadline and not committed.keys() <= received:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await stop(tasks)
    return {"queries": queries, "events": events, "writes": writes, "errors": errors,
            "undelivered": [t0 for notes, t0 in committed.items() if notes not in received]}


# ---------------------------------------------------------------- set-up


@dataclass
class Accounts:
    victim_token: str
    victim_writers: list[tuple[str, str]]  # (token, person id)
    attacker_tokens: list[str]
    attacker_persons: list[str]


def login_as(base: str, email: str) -> str:
    return str(gql(base, LOGIN, {"e": email, "p": PASSWORD})["login"]["accessToken"])


def members(base: str, admin: str, prefix: str, n: int) -> list[str]:
    """`n` new members of `admin`'s family, logged in: their tokens."""
    tokens = []
    for i in range(n):
        email = f"{prefix}-{i}-{uuid.uuid4().hex[:6]}@fairness.example.com"
        gql(base, REGISTER, {"i": {"email": email, "password": PASSWORD,
                                   "displayName": f"{prefix} {i}"}}, token=admin)
        tokens.append(login_as(base, email))
    return tokens


def set_up(api: Server, database_url: str) -> Accounts:
    base = api.base
    victim = login(base)  # the demo family's admin
    people = gql(base, "{ persons(first: 20) { edges { node { id } } } }", token=victim)
    person_ids = [e["node"]["id"] for e in people["persons"]["edges"]]
    writers = list(zip(members(base, victim, "victim", VICTIM_WRITERS), person_ids,
                       strict=False))
    email = f"attacker-{uuid.uuid4().hex[:6]}@fairness.example.com"
    attacker = gql(base, SIGN_UP, {"i": {"familyName": "Attackers", "email": email,
                                         "password": PASSWORD, "displayName": "Attacker"}})
    tokens = [attacker["signUp"]["accessToken"],
              *members(base, attacker["signUp"]["accessToken"], "attacker", ATTACKERS - 1)]
    persons = [gql(base, CREATE_PERSON, {"n": f"Target {i}"}, token=t)["createPerson"]["id"]
               for i, t in enumerate(tokens)]

    async def more_people() -> None:  # a family this size is ordinary; its searches scan it
        conn = await asyncpg.connect(dsn(database_url))
        try:
            await conn.execute(
                "INSERT INTO persons (id, family_id, name, interests, created_at, updated_at) "
                "SELECT gen_random_uuid(), u.family_id, 'Relative ' || g, '{}', now(), now() "
                "FROM users u, generate_series(1, $2) g WHERE lower(u.email) = lower($1)",
                email, ATTACKER_PERSONS)
        finally:
            await conn.close()

    asyncio.run(more_people())
    return Accounts(victim, writers, tokens, persons)


# ---------------------------------------------------------------- the run


def server_counters(base: str) -> tuple[dict[str, float], dict[str, float]]:
    """The server's refusals by bound and its long pauses so far (`pauses`)."""
    try:
        text = metrics_page(base)
    except httpx.HTTPError:
        return {}, {}
    return refusals(text), pauses(text)


def settle(server: Server, limit: float) -> float | None:
    """Seconds until the server answers /health promptly again (twice in a row, each
    within `SETTLE_ANSWER` s: its loop is free and the database answers); None if it
    didn't within `limit`. (Its CPU can't tell: the victim keeps it busy meanwhile.)"""
    started = time.monotonic()
    prompt = 0
    while time.monotonic() - started < limit and prompt < 2:
        t0 = time.monotonic()
        try:
            ok = HTTP.get(server.base + "/health", timeout=min(5.0, limit)).status_code == 200
        except httpx.HTTPError:
            ok = False
        prompt = prompt + 1 if ok and time.monotonic() - t0 <= SETTLE_ANSWER else 0
        time.sleep(max(0.0, 0.25 - (time.monotonic() - t0)))
    return time.monotonic() - started if prompt >= 2 else None


class Api:
    """The server under test; restarted on the same port when an attack left it busy."""

    def __init__(self, database_url: str) -> None:
        served = api_server(database_url)  # as `giftgraph serve` runs it
        self.server = Server(served.app, fairness_env(database_url), args=served.args)
        self.restarts = 0

    def __enter__(self) -> Api:
        self.server.__enter__()
        self.proc = psutil.Process(self.server.pid)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.__exit__()

    def rss(self) -> int:
        """The server's RSS; 0 once it has exited."""
        try:
            return int(self.proc.memory_info().rss)
        except psutil.Error:
            return 0

    def restart(self) -> None:
        old = self.server
        if old.proc is not None:
            old.proc.kill()  # a server stuck in one computation never sees SIGTERM
            old.proc.wait()
        old.__exit__()
        self.server = Server(old.app, old.env, old.health, old.args)
        self.server.port, self.server.base, self.server.ws = old.port, old.base, old.ws
        self.__enter__()
        self.restarts += 1


def chosen_classes(value: str | None) -> tuple[str, ...]:
    """The attack classes named in `value` (comma-separated, in CLASSES' order), else all."""
    if not value or not value.strip():
        return CLASSES
    names = {v.strip() for v in value.split(",") if v.strip()}
    if unknown := names - set(CLASSES):
        raise SystemExit(f"unknown attack classes {sorted(unknown)}; known: {CLASSES}")
    return tuple(c for c in CLASSES if c in names)


def run(database_url: str, opt: Options) -> Outcome:
    from giftgraph.config import Settings

    limits = {name: Settings.model_fields[name].default for name in SETTINGS_LIMITS}
    classes = chosen_classes(os.environ.get("GIFTGRAPH_BENCH_FAIRNESS_CLASSES"))
    phases = schedule(classes, opt.duration)
    rows: list[dict[str, Any]] = []
    with Api(database_url) as api, opt.progress() as progress:
        accounts = set_up(api.server, database_url)
        with Crew("bench.fairness:victim", [{
                "url": api.server.base, "ws": api.server.ws, "source": VICTIM_SOURCE,
                "pace": VICTIM_PACE, "token": accounts.victim_token,
                "writers": accounts.victim_writers}]) as crew:
            crew.wait_ready(120)
            crew.go()
            time.sleep(1.0)  # warm-up
            task = progress.add_task("phases", total=len(phases))
            for n, (kind, seconds) in enumerate(phases):
                progress.update(task, description=f"{kind} ({seconds:g} s)", completed=n)
                rows.append(phase(api, kind, seconds, crew, accounts, limits, opt))
                opt.console.print(f"{kind}: done ({pct(rows[-1]['server_cpu_share'])} server "
                                  "CPU" + (", server restarted" if rows[-1].get("restarted")
                                           else "") + ")")
            victim_data = crew.finish()[0]
    results = analyse(rows, victim_data)
    table = make_table(results, opt)
    targets = []
    for r in results:
        if r["phase"] == "idle":
            continue
        for measure in ("query", "delivery"):
            x = r[measure]
            lost = r["undelivered"] if measure == "delivery" else 0
            if measure == "delivery" and not x["count"] and r["victim_writes"]["count"]:
                lost = r["victim_writes"]["count"]  # tried, and none got through
            targets.append(Target(f"{r['phase']}: victim {measure} p99 vs idle",
                                  f"{x['ratio']:.1f}x ({ms(x['p99_ms'])} ms)"
                                  + (f", {lost} never delivered" if lost else ""),
                                  f"≤ {TARGET_RATIO:g}x" + (", all delivered" if measure ==
                                                            "delivery" else ""),
                                  False if lost else None if math.isnan(x["ratio"])
                                  else x["ratio"] <= TARGET_RATIO))
    settle_limit = SETTLE_MAX / (4 if opt.quick else 1)
    notes = [f"{r['phase']}: the server was still slow {settle_limit:g} s after the attack "
             "ended; it was killed and started again (its refusal counts are lost)"
             for r in results if r.get("restarted")]
    notes += [f"{r['phase']}: the attack was stopped early: {r['stopped_early']}"
              for r in results if r.get("stopped_early")]
    notes += [f"{r['phase']}: victim errors, e.g. {r['victim_error_sample'][0]}"
              for r in results if r["victim_errors"]]
    notes += [f"{r['phase']}: the attacker crashed: {r['attacker']['crashed'][0]}"
              for r in results if r.get("attacker", {}).get("crashed")]
    notes.append("ratio: the phase's p99 over the median of the idle phases' p99s; query: "
                 f"`{VICTIM_QUERY}` in a closed loop; delivery: a victim member's change to "
                 "its arrival on the admin's familyEvents socket (event `at` to receipt); a "
                 "failed victim request counts with the time it took to fail; not delivered: "
                 "victim changes acknowledged in the phase whose event never arrived; "
                 "server CPU: one core = 100%; settle: seconds after the attack until the "
                 f"server answered /health within {SETTLE_ANSWER:g} s twice in a row")
    return Outcome("fairness", "Fairness under attack",
                   {"phase_s": opt.duration, "phases": phases, "quick": opt.quick,
                    "attacker_connections": ATTACKERS, "victim_writers": VICTIM_WRITERS,
                    "victim_pace_per_writer": VICTIM_PACE, "attacker_persons": ATTACKER_PERSONS,
                    "limits": limits, "victim_query": VICTIM_QUERY, "target_ratio": TARGET_RATIO,
                    "settle_limit_s": settle_limit},
                   results, table, targets, plot, notes)


def phase(api: Api, kind: str, seconds: float, crew: Crew, accounts: Accounts,
          limits: dict[str, Any], opt: Options) -> dict[str, Any]:
    """One phase: its window, the server's CPU, RSS and refusals, the attacker's tally."""
    server = api.server
    before, paused = server_counters(server.base)
    rss0 = peak = api.rss()
    row: dict[str, Any] = {"phase": kind}
    with contextlib.ExitStack() as stack:
        attackers = None
        if kind != "idle":
            attackers = stack.enter_context(Crew("bench.attacks:attack", [{
                "kind": kind, "url": server.base, "ws": server.ws, "source": ATTACKER_SOURCE,
                "connections": ATTACKERS, "tokens": accounts.attacker_tokens,
                "persons": accounts.attacker_persons, "notes_bytes": STALLED_NOTES,
                **limits}]))
            attackers.wait_ready(60, lambda: crew.pump(0.05))
            attackers.go(0.0)
        mark = cpu_mark(server.pid)
        start = time.monotonic()
        row["stopped_early"] = None
        while time.monotonic() < start + seconds:
            crew.pump(0.1)
            if attackers is not None:
                attackers.pump(0.0)
            peak = max(peak, rss := api.rss())
            if rss == 0:
                row["stopped_early"] = "the server exited"
                break
            if peak - rss0 > RSS_CAP:
                row["stopped_early"] = f"server RSS grew by {(peak - rss0) / 2**20:.0f} MB"
                break
        end = time.monotonic()
        row.update(seconds=end - start, window=(start, end), **cpu_use(mark, cpu_mark(server.pid)))
        if attackers is not None:
            row["attacker"] = attackers.finish(timeout=180)[0]
    row.update(rss_before=rss0, rss_peak=peak, rss_after=api.rss())
    if kind != "idle":
        row["settle_s"] = settle(server, SETTLE_MAX / (4 if opt.quick else 1))
        if row["settle_s"] is None:
            api.restart()
            row["restarted"] = True
            time.sleep(3)  # the victim's socket subscribes again (it retries every 0.5 s)
    if row.get("restarted"):
        row["server_refusals"] = row["long_pauses"] = None  # they went with the process
    else:
        after, paused_after = server_counters(server.base)
        row["server_refusals"] = {b: after[b] - before.get(b, 0) for b in after
                                  if after[b] - before.get(b, 0)}
        # Over the phase and its settling: garbage collections and loop wake-ups > 10 ms.
        row["long_pauses"] = {k: v - paused.get(k, 0) for k, v in paused_after.items()}
    return row


def stats(values: list[float], baseline: float) -> dict[str, Any]:
    s = summarize(values)
    return {"count": s["count"], "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
            "max_ms": s["max_ms"], "ratio": ratio(s["p99_ms"], baseline)}


def analyse(rows: list[dict[str, Any]], data: dict[str, Any]) -> list[dict[str, Any]]:
    """Each phase's victim figures, with ratios to the idle p99 (`baseline`)."""
    idle = [[r["window"]] for r in rows if r["phase"] == "idle"]
    base_q = baseline([summarize(within(data["queries"], w))["p99_ms"] for w in idle])
    base_d = baseline([summarize(within(data["events"], w))["p99_ms"] for w in idle])
    for r in rows:
        w = [r["window"]]
        r["query"] = stats(within(data["queries"], w), base_q)
        r["delivery"] = stats(within(data["events"], w), base_d)
        r["victim_writes"] = stats(within(data["writes"], w), float("nan"))
        # changes made in the phase whose event never reached the victim's socket
        r["undelivered"] = sum(w[0][0] <= t <= w[0][1] for t in data["undelivered"])
        errs = [e for t, e in data["errors"] if w[0][0] <= t <= w[0][1]]
        r["victim_errors"], r["victim_error_sample"] = len(errs), errs[:3]
        if "attacker" in r:
            v = r["attacker"]["variants"].values()
            r["attacker_totals"] = {k: sum(x[k] for x in v) for k in ("made", "ok", "refused",
                                                                      "failed")}
    return rows


def make_table(results: list[dict[str, Any]], opt: Options) -> Table:
    table = Table(title=f"Fairness: the victim family's p99 while another attacks "
                        f"({opt.duration:g} s phases, {ATTACKERS} attacker connections)")
    for col in ("phase", "query p50", "p99 ms", "x idle", "n", "delivery p50", "p99 ms",
                "x idle", "n", "not delivered", "victim errors", "attacker made", "ok",
                "refused", "failed",
                "server refusals", "pauses > 10 ms", "server CPU", "machine", "RSS +MB",
                "settle s"):
        table.add_column(col, justify="right")
    for r in results:
        q, d, a = r["query"], r["delivery"], r.get("attacker_totals")

        def x(v: float) -> str:
            return "-" if math.isnan(v) else f"{v:.1f}x"
        table.add_row(
            r["phase"], ms(q["p50_ms"]), ms(q["p99_ms"]), x(q["ratio"]), str(q["count"]),
            ms(d["p50_ms"]), ms(d["p99_ms"]), x(d["ratio"]), str(d["count"]),
            str(r["undelivered"]), str(r["victim_errors"]),
            *([str(a[k]) for k in ("made", "ok", "refused", "failed")] if a else ["-"] * 4),
            "(restarted)" if r["server_refusals"] is None else
            ", ".join(f"{b} {n:.0f}" for b, n in r["server_refusals"].items()) or "-",
            ", ".join(f"{k} {n:.0f}" for k, n in sorted((r.get("long_pauses") or {}).items())
                      if n) or "-",
            pct(r["server_cpu_share"]), pct(r["machine_busy_share"]),
            f"{(r['rss_peak'] - r['rss_before']) / 2**20:.0f}",
            "-" if "settle_s" not in r else "never" if r["settle_s"] is None
            else f"{r['settle_s']:.1f}")
    return table


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    attacks = [r for r in results if r["phase"] != "idle"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    xs = range(len(attacks))
    for k, (measure, colour) in enumerate((("query", "tab:blue"), ("delivery", "tab:orange"))):
        values = [r[measure]["ratio"] for r in attacks]
        bars = ax.bar([x + (k - 0.5) * 0.4 for x in xs],
                      [0 if math.isnan(v) else v for v in values], 0.4, color=colour,
                      label=f"victim {measure} p99 / idle p99")
        ax.bar_label(bars, fmt="%.1f")
    ax.axhline(TARGET_RATIO, color="tab:red", ls="--", lw=0.8, label=f"target {TARGET_RATIO:g}x")
    ax.set_xticks(list(xs), [r["phase"] for r in attacks])
    ax.set(yscale="log", ylabel="x idle p99", title="The victim's p99 under each attack")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
