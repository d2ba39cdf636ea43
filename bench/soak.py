"""Soak: a long mixed load (reads, writes, subscriptions that reconnect with `since`, replays)
on several families, sampling the server's RSS and open file descriptors.

Every subscription keeps the seqs it received, across its socket's reconnects. At the end,
with the writers stopped and the last events delivered, each is compared with the events its
family's `events(topic:)` query lists after the seq it started from: none may be missing
and none may come twice. Only the listing's order is used, never seq arithmetic, so the
check holds for one global sequence as for one sequence per family. A replay (a second
subscription `since` an earlier seq, completed after a while) must receive exactly the
listed events after its `since`, in order.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from rich.table import Table

from bench import wsclient
from bench.attacks import stop
from bench.harness import PROTOCOL, api_server, cpu_mark, cpu_use, gql, login
from bench.report import Options, Outcome, Target, pct
from bench.workers import Channel, Crew, split

FAMILIES = 4  # the demo family and three signed up
SOCKETS = 3  # per family, each with a familyEvents and a personEvents subscription
WRITE_PACE = 2.0  # mutations per second per family
READ_PACE = 5.0  # reads per second per family
RECONNECT = (15.0, 45.0)  # seconds a socket stays before it reconnects (uniform)
REPLAY_EVERY = 20.0  # seconds between replays, per family
REPLAY_BACK = 20  # a replay starts this many events back
REPLAY_FOR = 2.0  # seconds a replay subscription lives
SAMPLE_EVERY = 10.0  # seconds between RSS/fd samples (shorter runs: 30 samples)
DRAIN = 30.0  # seconds to wait for the last events once the writers stop
FLAT = 0.05  # "flat": the fitted growth over the last two thirds within 5% of the mean
PASSWORD = "soak-password-123"  # noqa: S105 - the benchmark's own throwaway accounts

EVENT = "seq"
SUBSCRIPTIONS = {
    "family": "subscription($s: String) { familyEvents(since: $s) { seq } }",
    "person": "subscription($p: ID!, $s: String) { personEvents(personId: $p, since: $s) "
              "{ seq } }",
}
READS = (
    "{ persons(first: 20) { edges { node { id name interests } } } }",
    "{ dashboard { pipeline { idea selected purchased received } spent } }",
    "{ events(first: 10) { edges { node { seq kind entityType } } } }",
    "{ lists(first: 5) { edges { node { name items(first: 5) { edges { node { status } } } } } } }",
    "{ me { id displayName } family { name } }",
)
UPDATE = "mutation($p: ID!, $n: String!) { updatePerson(id: $p, input: {notes: $n}) { id } }"
COMMENT = ("mutation($p: ID!, $b: String!) { addComment(input: {target: PERSON, targetId: $p, "
           "body: $b}) { id } }")
EVENTS_PAGE = ("query($t: String, $a: String) { events(first: 100, after: $a, topic: $t) "
               "{ edges { node { seq } } pageInfo { hasNextPage endCursor } } }")


# ---------------------------------------------------------------- pure helpers


def newer_than(listing: Sequence[str], start: str | None) -> list[str]:
    """The seqs of `listing` (newest first) after `start`, oldest first. KeyError if
    `start` is not listed."""
    if start is None:
        return list(reversed(listing))
    try:
        return list(reversed(listing[:list(listing).index(start)]))
    except ValueError:
        raise KeyError(start) from None


def check_delivery(expected: Sequence[str], received: Sequence[str]) -> dict[str, Any]:
    """Lost, duplicated and unexpected events of one subscription."""
    got = Counter(received)
    want = set(expected)
    lost = [s for s in expected if s not in got]
    unexpected = [s for s in got if s not in want]
    return {"expected": len(expected), "received": len(received), "lost": len(lost),
            "duplicates": sum(n - 1 for n in got.values() if n > 1),
            "unexpected": len(unexpected), "lost_sample": lost[:5],
            "unexpected_sample": unexpected[:5]}


def replay_ok(after_since: Sequence[str], seqs: Sequence[str]) -> bool:
    """A replay received the events after its `since` in order, none missing or twice (it
    was completed before the end, so it may have received only the first ones)."""
    return list(seqs) == list(after_since[:len(seqs)])


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points; NaN with fewer than two distinct x."""
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def tail(points: Sequence[tuple[float, float]], fraction: float = 2 / 3
         ) -> list[tuple[float, float]]:
    """The points of the last `fraction` of the time span (after the warm-up)."""
    if not points:
        return []
    first, last = points[0][0], points[-1][0]
    cut = last - fraction * (last - first)
    return [p for p in points if p[0] >= cut]


def trend(points: Sequence[tuple[float, float]], tolerance: float = FLAT,
          floor: float = 0.0) -> dict[str, Any]:
    """Over the last two thirds: the fitted growth (slope x span), the mean, and whether
    it is flat (growth within `tolerance` of the mean, or within `floor`)."""
    t = tail(points)
    s = slope(t)
    span = t[-1][0] - t[0][0] if t else 0.0
    mean = sum(y for _, y in t) / len(t) if t else float("nan")
    growth = s * span if span else float("nan")
    flat = None if growth != growth else growth <= max(tolerance * mean, floor)
    return {"slope_per_hour": s * 3600, "growth": growth, "mean": mean, "flat": flat,
            "points": len(t)}


# ---------------------------------------------------------------- the load (a worker)


@dataclass
class Sub:
    """One subscription of one socket, kept across reconnects."""

    family: str
    topic: str
    query: str
    variables: dict[str, Any]
    start: str
    received: list[str] = field(default_factory=list)


async def family_load(p: dict[str, Any], ch: Channel) -> dict[str, Any]:
    """Writers, readers and subscribed sockets of `p["families"]`, until stopped."""
    counts: Counter[str] = Counter()
    made: Counter[str] = Counter()  # acknowledged mutations by family
    errors: list[str] = []
    subs: list[Sub] = []
    replays: list[dict[str, Any]] = []
    state = {"reconnecting": True, "closing": False}
    rng = random.Random(p["seed"])  # noqa: S311 - load shape, not security
    transport = httpx.AsyncHTTPTransport(local_address=p["source"], limits=httpx.Limits(
        max_connections=32, keepalive_expiry=2.0))

    def error(what: str) -> None:
        counts["errors"] += 1
        if len(errors) < 20:
            errors.append(what[:300])

    async def call(client: httpx.AsyncClient, token: str, query: str,
                   variables: dict[str, Any] | None = None) -> dict[str, Any] | None:
        try:
            r = await client.post(p["url"] + "/graphql", content=orjson.dumps(
                {"query": query, "variables": variables or {}}), headers={
                "authorization": f"Bearer {token}", "content-type": "application/json"})
        except httpx.HTTPError as exc:
            error(f"{type(exc).__name__}: {exc}")
            return None
        body = orjson.loads(r.content) if r.status_code == 200 else {}
        if r.status_code != 200 or body.get("errors"):
            error(f"{r.status_code} {r.text}")
            return None
        return body["data"]  # type: ignore[no-any-return]

    async def paced(pace: float, step: Any) -> None:
        period, due = 1 / pace, time.monotonic() + rng.random() / pace
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            due = max(due + period, time.monotonic())
            await step()

    def writer(client: httpx.AsyncClient, fam: dict[str, Any]) -> Any:
        n = 0

        async def step() -> None:
            nonlocal n
            n += 1
            person = fam["persons"][n % len(fam["persons"])]
            if n % 5:
                ok = await call(client, fam["token"], UPDATE, {"p": person, "n": f"soak {n}"})
            else:
                ok = await call(client, fam["token"], COMMENT, {"p": person, "b": f"soak {n}"})
            counts["mutations"] += ok is not None
            made[fam["name"]] += ok is not None
        return step

    def reader(client: httpx.AsyncClient, fam: dict[str, Any]) -> Any:
        n = 0

        async def step() -> None:
            nonlocal n
            n += 1
            counts["reads"] += await call(client, fam["token"], READS[n % len(READS)]) is not None
        return step

    async def socket_loop(fam: dict[str, Any], mine: list[Sub]) -> None:
        by_id: dict[str, Sub] = {}
        replay_ids: dict[str, dict[str, Any]] = {}

        def on_text(raw: bytes) -> None:
            msg = orjson.loads(raw)
            kind, op = msg.get("type"), msg.get("id")
            if kind == "connection_ack":
                acked.set_result(None) if not acked.done() else None
            elif kind == "next" and not msg["payload"].get("errors"):
                seq = next(iter(msg["payload"]["data"].values()))["seq"]
                counts["events"] += 1
                if op in by_id:
                    by_id[op].received.append(seq)
                elif op in replay_ids and replay_ids[op]["open"]:
                    replay_ids[op]["seqs"].append(seq)
            elif kind == "ping":  # the protocol's keep-alive: answered
                if current:
                    current[0].send_text(b'{"type": "pong"}')
            elif kind == "pong" or (kind == "complete" and op in replay_ids):
                pass
            else:
                error(f"socket: {raw[:200].decode(errors='replace')}")

        generation = 0
        current: list[wsclient.LeanSocket] = []  # the socket now open
        while not state["closing"]:
            generation += 1
            acked = asyncio.get_running_loop().create_future()
            try:
                ws = await wsclient.connect(p["ws"] + "/graphql", on_text, subprotocol=PROTOCOL,
                                            local_addr=(p["source"], 0))
                ws.send_text(orjson.dumps({"type": "connection_init",
                                           "payload": {"token": fam["token"]}}))
                await asyncio.wait_for(acked, 30)
            except (OSError, TimeoutError) as exc:
                error(f"socket open: {exc!r}")
                await asyncio.sleep(1)
                continue
            current[:] = [ws]
            by_id.clear()
            for k, sub in enumerate(mine):
                op = f"{generation}-{k}"
                by_id[op] = sub
                since = sub.received[-1] if sub.received else sub.start
                ws.send_text(orjson.dumps({"id": op, "type": "subscribe", "payload": {
                    "query": sub.query, "variables": {**sub.variables, "s": since}}}))
            sockets.append((fam["name"], ws, mine, replay_ids))
            stay = rng.uniform(*p["reconnect"])
            until = time.monotonic() + stay
            while not ws.closed.done() and not state["closing"] and (  # noqa: ASYNC110 - a timer
                    time.monotonic() < until or not state["reconnecting"]):
                await asyncio.sleep(0.2)
            sockets.remove((fam["name"], ws, mine, replay_ids))
            if ws.closed.done():
                error(f"socket closed by the server ({ws.close_code}, {ws.error})")
            else:
                await ws.close()
                counts["reconnects"] += not state["closing"]
            if not state["closing"]:
                await asyncio.sleep(rng.uniform(0.2, 2.0))  # events go on meanwhile

    sockets: list[tuple[str, wsclient.LeanSocket, list[Sub], dict[str, Any]]] = []

    async def replayer(fam: dict[str, Any]) -> None:
        n = 0
        while True:
            await asyncio.sleep(p["replay_every"] * rng.uniform(0.5, 1.5))
            mine = [s for s in sockets if s[0] == fam["name"]]
            if not mine:
                continue
            _, ws, socket_subs, replay_ids = rng.choice(mine)
            sub = socket_subs[0]  # familyEvents
            if len(sub.received) < 2:
                continue
            n += 1
            op = f"r{n}"
            record = {"family": fam["name"], "topic": sub.topic, "open": True, "seqs": [],
                      "since": sub.received[-min(len(sub.received), p["replay_back"])]}
            replay_ids[op] = record
            replays.append(record)
            ws.send_text(orjson.dumps({"id": op, "type": "subscribe", "payload": {
                "query": sub.query, "variables": {**sub.variables, "s": record["since"]}}}))
            await asyncio.sleep(p["replay_for"])
            record["open"] = False
            ws.send_text(orjson.dumps({"id": op, "type": "complete"}))
            counts["replays"] += 1

    async with httpx.AsyncClient(transport=transport, timeout=60) as client:
        for fam in p["families"]:
            for topic, start in fam["starts"].items():
                variables = {} if topic == "family" else {"p": fam["watched"]}
                kind = "family" if topic == "family" else "person"
                group = [Sub(fam["name"], topic, SUBSCRIPTIONS[kind], variables, start)
                         for _ in range(p["sockets"])]
                subs.extend(group)
        per_socket = {(s.family, k): [] for k in range(p["sockets"]) for s in subs}
        counter: Counter[tuple[str, str]] = Counter()
        for s in subs:
            per_socket[(s.family, counter[(s.family, s.topic)])].append(s)
            counter[(s.family, s.topic)] += 1
        fams = {f["name"]: f for f in p["families"]}
        socket_tasks = [asyncio.create_task(socket_loop(fams[name], group))
                        for (name, _), group in per_socket.items()]
        while len(sockets) < len(socket_tasks) and counts["errors"] < 10:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        ch.send("ready")
        await ch.start_time()
        load = [asyncio.create_task(paced(p["write_pace"], writer(client, f)))
                for f in p["families"]]
        load += [asyncio.create_task(paced(p["read_pace"], reader(client, f)))
                 for f in p["families"]]
        load += [asyncio.create_task(replayer(f)) for f in p["families"]]
        await ch.until_stopped(lambda: dict(counts))  # type: ignore[arg-type, return-value]
        await stop(load)
        # The last events: wait until every subscription has its topic's newest one.
        state["reconnecting"] = False
        newest = {}
        for f in p["families"]:
            for topic in f["starts"]:
                data = await call(client, f["token"], EVENTS_PAGE, {"t": topic, "a": None})
                edges = data["events"]["edges"] if data else []
                newest[(f["name"], topic)] = edges[0]["node"]["seq"] if edges else None
        deadline = time.monotonic() + p["drain"]
        while time.monotonic() < deadline and any(  # noqa: ASYNC110 - polls the subscriptions
                (s.received[-1] if s.received else s.start) != newest[(s.family, s.topic)]
                for s in subs):
            await asyncio.sleep(0.2)
        state["closing"] = True
        await asyncio.wait(socket_tasks, timeout=10)
        await stop(socket_tasks)
    return {"subs": [vars(s) for s in subs],
            "replays": [{k: v for k, v in r.items() if k != "open"} for r in replays],
            "counts": dict(counts), "errors": errors, "mutations": dict(made)}


# ---------------------------------------------------------------- set-up and the run


def family_accounts(base: str, n: int) -> list[dict[str, Any]]:
    """The demo family and `n - 1` new ones: a token, a few people, the one watched."""
    tokens = [("demo", login(base))]
    for i in range(1, n):
        tag = uuid.uuid4().hex[:6]
        data = gql(base, "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
                   {"i": {"familyName": f"Soak {i}", "email": f"soak-{i}-{tag}@soak.example.com",
                          "password": PASSWORD, "displayName": f"Soak {i}"}})
        token = data["signUp"]["accessToken"]
        for k in range(3):
            gql(base, "mutation($n: String!) { createPerson(input: {name: $n}) { id } }",
                {"n": f"Relative {k}"}, token=token)
        tokens.append((f"soak-{i}", token))
    families = []
    for name, token in tokens:
        people = gql(base, "{ persons(first: 3) { edges { node { id } } } }", token=token)
        persons = [e["node"]["id"] for e in people["persons"]["edges"]]
        gql(base, UPDATE, {"p": persons[0], "n": "watched"}, token=token)  # topics have events
        starts = {}
        for topic in ("family", f"person:{persons[0]}"):
            page = gql(base, EVENTS_PAGE, {"t": topic, "a": None}, token=token)
            starts[topic] = page["events"]["edges"][0]["node"]["seq"]
        families.append({"name": name, "token": token, "persons": persons,
                         "watched": persons[0], "starts": starts})
    return families


def listing(base: str, token: str, topic: str, starts: set[str]) -> list[str]:
    """The topic's seqs, newest first, back to the oldest of `starts`."""
    seqs: list[str] = []
    after = None
    while True:
        page = gql(base, EVENTS_PAGE, {"t": topic, "a": after}, token=token)["events"]
        seqs += [e["node"]["seq"] for e in page["edges"]]
        if starts <= set(seqs) or not page["pageInfo"]["hasNextPage"]:
            return seqs
        after = page["pageInfo"]["endCursor"]


def run(database_url: str, opt: Options) -> Outcome:
    every = min(SAMPLE_EVERY, max(1.0, opt.duration / 30))
    scale = min(1.0, opt.duration / 600)  # short runs reconnect and replay more often
    samples: list[dict[str, Any]] = []
    with api_server(database_url) as api, opt.progress() as progress:
        families = family_accounts(api.base, FAMILIES)
        proc = psutil.Process(api.pid)
        groups = [families[sum(split(len(families), 2)[:i]):][:n]
                  for i, n in enumerate(split(len(families), 2))]
        params = [{"url": api.base, "ws": api.ws, "source": f"127.0.0.{10 + i}", "seed": i,
                   "families": g, "sockets": SOCKETS, "write_pace": WRITE_PACE,
                   "read_pace": READ_PACE, "replay_back": REPLAY_BACK, "replay_for": REPLAY_FOR,
                   "reconnect": tuple(max(3.0, r * scale) for r in RECONNECT),
                   "replay_every": max(3.0, REPLAY_EVERY * scale), "drain": DRAIN}
                  for i, g in enumerate(groups) if g]
        task = progress.add_task("soak", total=opt.duration)
        with Crew("bench.soak:family_load", params) as crew:
            crew.wait_ready(120)
            start = crew.go()
            due = start
            mark = cpu_mark(api.pid)
            while (now := time.monotonic()) < start + opt.duration:
                crew.pump(min(0.5, max(0.0, due - now)))
                if time.monotonic() >= due:
                    due += every
                    counts: Counter[str] = Counter()
                    for c in crew.progress:
                        counts.update(c if isinstance(c, dict) else {})
                    new = cpu_mark(api.pid)
                    samples.append({"t": time.monotonic() - start, "rss": proc.memory_info().rss,
                                    "fds": proc.num_fds(), **counts,
                                    "server_cpu_share": cpu_use(mark, new)["server_cpu_share"]})
                    mark = new
                progress.update(task, completed=min(opt.duration, time.monotonic() - start))
            results = crew.finish(timeout=DRAIN + 120)
        checks = verify(api.base, families, results)
    rss = trend([(s["t"], s["rss"]) for s in samples], floor=4 * 2**20)
    fds = trend([(s["t"], s["fds"]) for s in samples], floor=5)
    totals: Counter[str] = Counter()
    for r in results:
        totals.update(r["counts"])
    errors = [e for r in results for e in r["errors"]]
    summary = {"samples": samples, "rss": rss, "fds": fds, "totals": dict(totals),
               "errors": totals["errors"], "error_sample": errors[:5], **checks}
    table = Table(title=f"Soak: {opt.duration / 60:.3g} min of mixed load on {FAMILIES} families "
                        f"({SOCKETS} sockets each, reconnecting with `since`)")
    for col in ("", "first", "last", "growth (last 2/3)", "per hour", "flat"):
        table.add_column(col, justify="right")
    for name, key, unit, t in (("RSS MB", "rss", 2**20, rss), ("open fds", "fds", 1, fds)):
        table.add_row(name, f"{samples[0][key] / unit:.1f}" if samples else "-",
                      f"{samples[-1][key] / unit:.1f}" if samples else "-",
                      f"{t['growth'] / unit:.1f}", f"{t['slope_per_hour'] / unit:.1f}",
                      {True: "yes", False: "NO", None: "-"}[t["flat"]])
    counts_line = ", ".join(f"{k} {v:,}" for k, v in sorted(totals.items()))
    targets = [
        Target("errors", str(totals["errors"]), "0", totals["errors"] == 0),
        Target("events lost", str(checks["lost"]), "0", checks["lost"] == 0),
        Target("events received twice", str(checks["duplicates"]), "0",
               checks["duplicates"] == 0),
        Target("replays not exact", f"{checks['replays_bad']} of {checks['replays']}", "0",
               checks["replays_bad"] == 0),
        Target("RSS flat after warm-up", f"{rss['growth'] / 2**20:+.1f} MB",
               f"≤ {FLAT:.0%} of {rss['mean'] / 2**20:.0f} MB", rss["flat"]),
        Target("open fds flat after warm-up", f"{fds['growth']:+.1f}",
               f"≤ max(5, {FLAT:.0%} of {fds['mean']:.0f})", fds["flat"]),
    ]
    notes = [f"totals: {counts_line}", *[f"error: {e}" for e in errors[:3]]]
    notes += [f"{d['family']} {d['topic']}: lost {d['lost']} e.g. {d['lost_sample']}, "
              f"twice {d['duplicates']}, unexpected {d['unexpected']}"
              for d in checks["deliveries"] if d["lost"] or d["duplicates"] or d["unexpected"]]
    notes += [f"{name}: {listed} family events listed for {made} acknowledged mutations"
              for name, (listed, made) in checks["family_events_vs_mutations"].items()
              if listed != made]
    notes.append(f"server CPU (mean of samples): "
                 f"{pct(sum(s['server_cpu_share'] for s in samples) / max(1, len(samples)))}")
    return Outcome("soak", "Soak",
                   {"duration_s": opt.duration, "families": FAMILIES, "sockets": SOCKETS,
                    "write_pace": WRITE_PACE, "read_pace": READ_PACE, "sample_every_s": every,
                    "reconnect_s": params[0]["reconnect"],
                    "replay_every_s": params[0]["replay_every"], "quick": opt.quick},
                   [summary], table, targets, plot, notes)


def verify(base: str, families: list[dict[str, Any]], results: list[dict[str, Any]]
           ) -> dict[str, Any]:
    """Each subscription's and replay's events against the listing of its topic."""
    tokens = {f["name"]: f["token"] for f in families}
    subs = [s for r in results for s in r["subs"]]
    replays = [x for r in results for x in r["replays"]]
    listings: dict[tuple[str, str], list[str]] = {}
    for key in {(s["family"], s["topic"]) for s in subs}:
        starts = {s["start"] for s in subs if (s["family"], s["topic"]) == key}
        starts |= {x["since"] for x in replays if (x["family"], x["topic"]) == key}
        listings[key] = listing(base, tokens[key[0]], key[1], starts)
    deliveries = []
    for s in subs:
        try:
            expected = newer_than(listings[(s["family"], s["topic"])], s["start"])
        except KeyError:
            expected = []
        d = check_delivery(expected, s["received"])
        deliveries.append({"family": s["family"], "topic": s["topic"], **d})
    bad = 0
    for x in replays:
        try:
            bad += not replay_ok(newer_than(listings[(x["family"], x["topic"])], x["since"]),
                                 x["seqs"])
        except KeyError:
            bad += 1
    # each mutation here writes one `family` event: the listing must hold all of them
    made: Counter[str] = Counter()
    for r in results:
        made.update(r["mutations"])
    starts = {s["family"]: s["start"] for s in subs if s["topic"] == "family"}
    listed = {name: len(newer_than(listings[(name, "family")], start))
              for name, start in starts.items()}
    return {"family_events_vs_mutations": {n: (listed[n], made[n]) for n in listed},
            "deliveries": deliveries, "lost": sum(d["lost"] for d in deliveries),
            "duplicates": sum(d["duplicates"] for d in deliveries),
            "unexpected": sum(d["unexpected"] for d in deliveries),
            "events_checked": sum(d["received"] for d in deliveries),
            "replays": len(replays), "replays_bad": bad,
            "replayed_events": sum(len(x["seqs"]) for x in replays)}


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    samples = results[0]["samples"]
    minutes = [s["t"] / 60 for s in samples]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.plot(minutes, [s["rss"] / 2**20 for s in samples], color="tab:blue")
    left.set(xlabel="minutes", ylabel="MB", title="API process RSS")
    right.plot(minutes, [s["fds"] for s in samples], color="tab:orange")
    right.set(xlabel="minutes", ylabel="open file descriptors", title="API process fds")
    for ax in (left, right):
        ax.axvspan(0, minutes[-1] / 3 if minutes else 0, color="0.9", label="warm-up")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
