"""W5 tenants (`giftgraph bench tenants`): many small families at once, the real load's shape.

2,000 families x 5 members, one socket each (10,000 sockets), each socket holding three
subscriptions: `familyEvents`, `dashboard` and `listEvents` of its family's list (30,000
in all). Then 100 mutations per second (`updateList`, a rename: an event on the list's
topic and one on the family's), each in a random family, for the phase's duration.
Measured: every event's delivery lag from its commit (`at`, stamped by the database in the
committing transaction, on this machine's clock), events lost and duplicated (each socket's
`familyEvents` and `listEvents` seqs against the events table), the server's CPU per
delivered message and its RSS. Baseline in the same run: the same sockets and the same
publishing rate on a bare Starlette broadcast (bench/tenants_floor.py), no GraphQL, no
database, no broker.

Families, members and lists are written straight into the database (a signUp hashes a
password: 2,000 of them would take minutes and measure nothing of interest here); each
member's tokens are issued by giftgraph.auth as `login` issues them.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from array import array
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.table import Table

from bench import wsclient
from bench.harness import (
    HTTP,
    PROTOCOL,
    Server,
    api_server,
    dsn,
    metrics_page,
    percentile,
    wait_for,
)
from bench.report import Options, Outcome, Target, ms
from bench.workers import WAVE, Channel, Crew, source_address, split

FAMILIES, QUICK_FAMILIES = 2000, 200
MEMBERS = 5  # sockets per family: one per member
RATE = 100.0  # mutations per second, over all families
PER_WORKER = 2500  # sockets per client process
SUBSCRIPTIONS = {
    "f": ("subscription { familyEvents { seq at } }", False),
    "d": ("subscription { dashboard { spent } }", False),
    "l": ("subscription($l: ID!) { listEvents(listId: $l) { seq at } }", True),
}
RENAME = "mutation($l: ID!, $n: String!) { updateList(id: $l, input: {name: $n}) { id } }"


# ---------------------------------------------------------------- setup


async def _seed(database_url: str, secret: str, families: int) -> list[dict[str, Any]]:
    """`families` families of MEMBERS users and one list each; their tokens."""
    from argon2 import PasswordHasher
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from giftgraph.auth import create_access_token, issue_refresh_token
    from giftgraph.config import Settings
    from giftgraph.db.models import Family, GiftList, ListKind, Role, User
    from giftgraph.ids import encode_id

    settings = Settings(_env_file=None, environment="production",
                        database_url=database_url, jwt_secret=secret,
                        access_token_ttl_seconds=7200)
    url = make_url(database_url).set(drivername="postgresql+asyncpg")
    engine = create_async_engine(url)
    password_hash = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(
        "nobody-logs-in")
    out: list[dict[str, Any]] = []
    try:
        async with AsyncSession(engine, expire_on_commit=False) as session:
            for start in range(0, families, 200):
                batch: list[tuple[Family, list[User], GiftList]] = []
                for k in range(start, min(start + 200, families)):
                    family = Family(id=uuid.uuid4(), name=f"Tenant {k}", currency="USD")
                    users = [User(id=uuid.uuid4(), family_id=family.id,
                                  email=f"t{k}-{j}@tenants.bench", display_name=f"T{k} {j}",
                                  role=Role.ADMIN if j == 0 else Role.MEMBER, is_active=True,
                                  password_hash=password_hash, token_epoch=0)
                             for j in range(MEMBERS)]
                    gift_list = GiftList(id=uuid.uuid4(), family_id=family.id,
                                         name=f"List {k}", kind=ListKind.WISHLIST,
                                         owner_id=users[0].id)
                    batch.append((family, users, gift_list))
                session.add_all([f for f, _, _ in batch])
                await session.flush()
                session.add_all([u for _, us, _ in batch for u in us])
                await session.flush()
                session.add_all([g for _, _, g in batch])
                for family, users, gift_list in batch:
                    tokens = []
                    for user in users:
                        _, chain = await issue_refresh_token(session, settings, user)
                        tokens.append(create_access_token(settings, user, chain))
                    out.append({"family": str(family.id), "list": encode_id("GiftList",
                                                                             gift_list.id),
                                "tokens": tokens})
                await session.commit()
            for table in ("families", "users", "gift_lists", "refresh_tokens", "events"):
                await session.execute(text(f"ANALYZE {table}"))
    finally:
        await engine.dispose()
    return out


def seed(database_url: str, secret: str, families: int) -> list[dict[str, Any]]:
    return asyncio.run(_seed(database_url, secret, families))


# ---------------------------------------------------------------- worker processes


async def sockets(p: dict[str, Any], ch: Channel) -> dict[str, Any]:
    """One socket per spec [family index, token, list id]; graphql-transport-ws with the
    three subscriptions, or (protocol "floor") a bare socket of the floor."""
    graphql = p["protocol"] == "graphql"
    received = 0
    bad: list[str] = []
    lags = array("d")
    state: list[dict[str, Any]] = []
    failures: list[str] = []
    opened: list[wsclient.LeanSocket] = []

    def reader(seen: dict[str, Any], ack: asyncio.Future[bytes] | None) -> Any:
        def on_text(raw: bytes) -> None:
            nonlocal received
            if ack is not None and not ack.done():
                ack.set_result(raw)
                return
            now = time.time()
            received += 1
            try:
                msg = orjson.loads(raw)
                if graphql:
                    if msg.get("type") != "next" or msg["payload"].get("errors"):
                        bad.append(raw[:300].decode(errors="replace"))
                        return
                    sub = msg["id"]
                    if sub == "d":
                        seen["d"] += 1
                        return
                    event = next(iter(msg["payload"]["data"].values()))
                else:
                    sub, event = "f", msg
                seen[sub].append(int(event["seq"]))
                lags.append(now - datetime.fromisoformat(event["at"]).timestamp())
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, StopIteration,
                    AttributeError):
                bad.append(raw[:300].decode(errors="replace"))
        return on_text

    async def open_one(spec: list[Any]) -> None:
        family, token, list_id = spec
        seen: dict[str, Any] = {"family": family, "f": [], "l": [], "d": 0}
        try:
            if not graphql:
                ws = await wsclient.connect(f"{p['url']}?family={family}&subs=3",
                                            reader(seen, None), local_addr=(p["source"], 0))
            else:
                ack = asyncio.get_running_loop().create_future()
                ws = await wsclient.connect(p["url"], reader(seen, ack), subprotocol=PROTOCOL,
                                            local_addr=(p["source"], 0))
                ws.send_text(orjson.dumps({"type": "connection_init",
                                           "payload": {"token": token}}))
                try:
                    reply = orjson.loads(await asyncio.wait_for(ack, 60))
                    if reply.get("type") != "connection_ack":
                        raise RuntimeError(f"no connection_ack: {reply}")
                except BaseException:
                    if ws.transport is not None:
                        ws.transport.close()
                    raise
                for sub, (query, takes_list) in SUBSCRIPTIONS.items():
                    ws.send_text(orjson.dumps({"id": sub, "type": "subscribe", "payload": {
                        "query": query, "variables": {"l": list_id} if takes_list else {}}}))
            opened.append(ws)
            state.append(seen)
        except (OSError, TimeoutError, RuntimeError) as exc:
            failures.append(repr(exc))

    specs = p["specs"]
    for start in range(0, len(specs), WAVE):
        await asyncio.gather(*(open_one(s) for s in specs[start:start + WAVE]))
        ch.send("progress", len(opened))
    ch.send("ready", {"connected": len(opened), "failed": len(failures),
                      "failures": failures[:3]})
    await ch.until_stopped(lambda: received)
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    errors = [ws.error for ws in opened if ws.error]
    return {"connected": len(opened), "failed": len(failures), "received": received,
            "bad": len(bad) + len(errors), "bad_sample": (bad + errors)[:3],
            "sockets": state, "lags": lags.tobytes()}


async def writer(p: dict[str, Any], ch: Channel) -> dict[str, Any]:
    """`rate` requests per second for `seconds`, each for a random family: a rename over
    GraphQL (its admin's token), or a publish to the floor."""
    rng = random.Random(p["seed"])  # noqa: S311 - load, not secrets
    targets = p["targets"]  # [token, list id] per family
    ok, errors = Counter[int](), []
    ch.send("ready", None)
    start = await ch.start_time()
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    # An idle connection is let go well before the server's idle timeout (5 s) closes it:
    # a change sent on one the server is closing at that moment fails (ReadError).
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=2)
    urls = p["url"] if isinstance(p["url"], list) else [p["url"]]
    current = 0  # the instance written to; the next one once it can't be reached (W6)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(k: int, family: int) -> None:
            nonlocal current
            token, list_id = targets[family]
            try:
                if p["protocol"] == "graphql":
                    r = await client.post(urls[current], json={"query": RENAME, "variables": {
                        "l": list_id, "n": f"List {family} #{k}"}},
                        headers={"authorization": f"Bearer {token}"})
                    body = r.json()
                    if r.status_code != 200 or body.get("errors"):
                        raise RuntimeError(f"{r.status_code} {str(body)[:200]}")
                else:
                    r = await client.post(f"{urls[current]}?family={family}",
                                          content=b'{"k":0}')
                    r.raise_for_status()
                ok[family] += 1
            except httpx.ConnectError as exc:
                current = min(current + 1, len(urls) - 1)
                errors.append(repr(exc))
            except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                errors.append(repr(exc))
            except AttributeError as exc:
                # anyio asks a socket the server's kill already closed for its peer (W6)
                if "getpeername" not in str(exc):
                    raise
                errors.append(repr(exc))

        tasks = []
        total = int(p["rate"] * p["seconds"])
        for k in range(total):
            await asyncio.sleep(max(0.0, start + k / p["rate"] - time.monotonic()))
            tasks.append(asyncio.create_task(one(k, rng.randrange(len(targets)))))
            if k % 50 == 0:
                ch.send("progress", k)
        await asyncio.gather(*tasks)
        late = time.monotonic() - (start + total / p["rate"])
    return {"sent": total, "ok": dict(ok), "errors": len(errors), "error_sample": errors[:3],
            "late_s": late}


# ---------------------------------------------------------------- one measurement


def _events_since(database_url: str, marks: dict[str, int]) -> dict[str, list[tuple[str, int]]]:
    """(topic, seq) of each family's events after its mark."""
    import asyncpg

    async def fetch() -> dict[str, list[tuple[str, int]]]:
        conn = await asyncpg.connect(dsn(database_url))
        try:
            rows = await conn.fetch("SELECT family_id::text AS f, topic, seq FROM events")
        finally:
            await conn.close()
        out: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for r in rows:
            if r["seq"] > marks.get(r["f"], 0):
                out[r["f"]].append((r["topic"], r["seq"]))
        return out

    return asyncio.run(fetch())


def _marks(database_url: str) -> dict[str, int]:
    import asyncpg

    async def fetch() -> dict[str, int]:
        conn = await asyncpg.connect(dsn(database_url))
        try:
            rows = await conn.fetch("SELECT family_id::text AS f, max(seq) AS s FROM events "
                                    "GROUP BY family_id")
        finally:
            await conn.close()
        return {r["f"]: r["s"] for r in rows}

    return asyncio.run(fetch())


def measure(label: str, protocol: str, servers: list[Server], path: str, http_url: str,
            tenants: list[dict[str, Any]], seconds: float, database_url: str,
            progress: Any, processes: int = 1) -> dict[str, Any]:
    """One configuration: the sockets spread evenly over `servers` (at `path`), the changes
    written to `http_url`; `processes` server processes in all (a server's workers count:
    their CPU and RSS are summed over the process tree)."""
    specs = [[k, token, t["list"]] for k, t in enumerate(tenants) for token in t["tokens"]]
    random.Random(7).shuffle(specs)  # noqa: S311 - a family's sockets on different client processes
    n = len(specs)
    params = []
    for i, server in enumerate(servers):
        mine = specs[i::len(servers)]
        workers = max(1, -(-len(mine) // PER_WORKER))
        params += [{"protocol": protocol, "url": server.ws + path, "source": source_address(),
                    "specs": part} for part in _chunks(mine, split(len(mine), workers))]
    task = progress.add_task(f"{label}: connecting", total=n)
    pids = [server.pid for server in servers]
    rss_before = sum(_rss(pid) for pid in pids)
    with Crew("bench.tenants:sockets", params) as crew:
        connect_start = time.monotonic()
        ready = crew.wait_ready(180 + n / 20, lambda: progress.update(task, completed=crew.total))
        connect_s = time.monotonic() - connect_start
        connected = sum(r["connected"] for r in ready)
        if protocol == "graphql":
            wait_for(lambda: _subscriptions(servers, processes), 3 * connected, 120)
        else:
            wait_for(lambda: float(HTTP.get(f"{servers[0].base}/count").json()["clients"]),
                     connected, 60)
        time.sleep(1.0)
        marks = _marks(database_url) if protocol == "graphql" else {}
        rss_connected = sum(_rss(pid) for pid in pids)
        before = _tree_cpu(pids), time.monotonic()
        received_before = crew.total
        written = write_changes(crew, tenants, protocol, http_url, RATE, seconds,
                                progress, task, label)
        drain(crew)
        after = _tree_cpu(pids), time.monotonic()
        rss_after = sum(_rss(pid) for pid in pids)
        delivered = crew.total - received_before
        results = crew.finish()
    progress.remove_task(task)
    lags = array("d")
    for r in results:
        lags.frombytes(r["lags"])
    sorted_lags = sorted(lags)
    lost = duplicated = 0
    if protocol == "graphql":
        ids = {k: t["family"] for k, t in enumerate(tenants)}
        events = _events_since(database_url, marks)
        for r in results:
            for s in r["sockets"]:
                family = ids[s["family"]]
                list_topic = f"list:{tenants[s['family']]['list']}"
                want_f = {seq for topic, seq in events.get(family, ()) if topic == "family"}
                want_l = {seq for topic, seq in events.get(family, ()) if topic == list_topic}
                for got, want in ((s["f"], want_f), (s["l"], want_l)):
                    lost += len(want - set(got))
                    duplicated += len(got) - len(set(got))
    else:
        ok = written["ok"]
        for r in results:
            for s in r["sockets"]:
                # each event comes three times (one per subscription the socket stands for)
                want, got = 3 * ok.get(s["family"], 0), len(s["f"])
                lost += max(0, want - got)
                duplicated += max(0, got - 3 * len(set(s["f"])))
    cpu_s = after[0] - before[0]
    return {
        "sockets": n, "connected": connected,
        "failed_connections": sum(r["failed"] for r in results),
        "failure_sample": [f for r in ready for f in r["failures"]][:3],
        "connect_s": connect_s, "mutations": written["sent"],
        "mutation_errors": written["errors"], "mutation_error_sample": written["error_sample"],
        "writer_late_s": written["late_s"],
        "delivered": delivered, "events_with_lag": len(sorted_lags),
        "lag_p50_ms": 1000 * percentile(sorted_lags, 50) if sorted_lags else math.nan,
        "lag_p99_ms": 1000 * percentile(sorted_lags, 99) if sorted_lags else math.nan,
        "lag_max_ms": 1000 * sorted_lags[-1] if sorted_lags else math.nan,
        "lost": lost, "duplicated": duplicated,
        "bad_messages": sum(r["bad"] for r in results),
        "bad_sample": [b for r in results for b in r["bad_sample"]][:3],
        "processes": processes,
        "cpu_pct": 100 * cpu_s / (after[1] - before[1]),
        "cpu_us_per_delivery": 1e6 * cpu_s / delivered if delivered else None,
        "rss_mb_before": rss_before / 2**20, "rss_mb_connected": rss_connected / 2**20,
        "rss_mb_after": rss_after / 2**20,
    }


def _chunks(items: list[Any], sizes: list[int]) -> list[list[Any]]:
    out, at = [], 0
    for size in sizes:
        out.append(items[at:at + size])
        at += size
    return out


def _tree_cpu(pids: list[int]) -> float:
    """CPU seconds (user and system) of these processes and all their children."""
    import psutil

    total = 0.0
    for pid in pids:
        proc = psutil.Process(pid)
        for p in (proc, *proc.children(recursive=True)):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def _subscriptions(servers: list[Server], processes: int) -> float:
    """Active subscriptions over every server process. A server with workers answers
    /metrics from whichever worker accepts: its pages are told apart by their process's
    start time, until each of its processes has answered (or 200 pages)."""
    per_server = max(1, processes // len(servers))
    total = 0.0
    for server in servers:
        seen: dict[float, float] = {}
        for _ in range(200):
            page = metrics_page(server.base)
            sample = dict(line.split()[:2] for line in page.splitlines()
                          if line.startswith(("giftgraph_subscriptions_active ",
                                              "process_start_time_seconds ")))
            seen[float(sample.get("process_start_time_seconds", 0))] = float(
                sample.get("giftgraph_subscriptions_active", "nan"))
            if len(seen) >= per_server:
                break
        total += sum(seen.values())
    return total


def _rss(pid: int) -> int:
    import psutil

    proc = psutil.Process(pid)
    return int(proc.memory_info().rss + sum(c.memory_info().rss
                                            for c in proc.children(recursive=True)))


# ---------------------------------------------------------------- the workload


def run(database_url: str, opt: Options) -> Outcome:
    families = QUICK_FAMILIES if opt.quick else FAMILIES
    api = api_server(database_url)
    floor = Server("bench.tenants_floor:create", {})
    tenants = seed(database_url, api.env["GIFTGRAPH_JWT_SECRET"], families)
    results: dict[str, dict[str, Any]] = {}
    with opt.progress() as progress:
        with api:
            results["graphql"] = measure("GraphQL, one process", "graphql", [api], "/graphql",
                                         f"{api.base}/graphql", tenants, opt.duration,
                                         database_url, progress)
        # As `giftgraph serve --workers 2` runs: events between the workers over PostgreSQL.
        workers = Server(api.app, {**api.env, "GIFTGRAPH_BROADCAST_URL": "postgres://"},
                         api.health, (*api.args, "--workers", "2"))
        with workers:
            results["workers"] = measure("GraphQL, 2 workers", "graphql", [workers],
                                         "/graphql", f"{workers.base}/graphql", tenants,
                                         opt.duration, database_url, progress, processes=2)
        redis = {"GIFTGRAPH_BROADCAST_URL": "redis://127.0.0.1:6379/0",
                 "GIFTGRAPH_RATE_LIMIT_STORAGE_URL": "redis://127.0.0.1:6379/0"}
        a = Server(api.app, {**api.env, **redis}, api.health, api.args).start()
        b = Server(api.app, {**api.env, **redis}, api.health, api.args).start()
        with a, b:  # half the sockets on each; every change written through the first
            results["redis"] = measure("GraphQL, 2 instances + Redis", "graphql", [a, b],
                                       "/graphql", f"{a.base}/graphql", tenants, opt.duration,
                                       database_url, progress, processes=2)
        with floor:
            results["floor"] = measure("floor", "floor", [floor], "/ws",
                                       f"{floor.base}/publish", tenants, opt.duration,
                                       database_url, progress)
    g, f = results["graphql"], results["floor"]
    table = Table(title=f"W5 tenants: {families:,} families x {MEMBERS} sockets x 3 "
                        f"subscriptions, {RATE:g} changes/s for {opt.duration:g} s")
    for col in ("server", "sockets", "connect s", "delivered", "lag p50 ms", "p99 ms", "max ms",
                "lost", "dup", "CPU %", "µs CPU / delivery", "RSS MB"):
        table.add_column(col, justify="left" if col == "server" else "right")
    names = {"graphql": "GiftGraph, 1 process", "workers": "GiftGraph, serve --workers 2",
             "redis": "GiftGraph, 2 instances + Redis", "floor": "floor"}
    for key, name in names.items():
        r = results[key]
        table.add_row(name, f"{r['connected']:,}", f"{r['connect_s']:.1f}",
                      f"{r['delivered']:,}", ms(r["lag_p50_ms"]), ms(r["lag_p99_ms"]),
                      ms(r["lag_max_ms"]), str(r["lost"]), str(r["duplicated"]),
                      f"{r['cpu_pct']:.0f}",
                      f"{r['cpu_us_per_delivery']:.0f}" if r["cpu_us_per_delivery"] else "—",
                      f"{r['rss_mb_after']:.0f}")
    ratio = g["lag_p99_ms"] / f["lag_p99_ms"] if f["lag_p99_ms"] > 0 else math.nan
    targets = [
        Target(f"W5 events lost, {names[k]}", str(results[k]["lost"]), "0",
               results[k]["lost"] == 0 and results[k]["connected"] > 0)
        for k in ("graphql", "workers", "redis")]
    targets += [
        Target("W5 lag p99 vs the floor's", f"{ratio:.1f}x", "≤ 2.0x", ratio <= 2),
        Target("W5 lag p99", f"{ms(g['lag_p99_ms'])} ms", "≤ 100 ms", g["lag_p99_ms"] <= 100),
        Target("W5 RSS, one process", f"{g['rss_mb_after']:.0f} MB", "≤ 600 MB",
               g["rss_mb_after"] <= 600),
    ]
    notes = [f"{kind}: {r['failed_connections']} failed connections {r['failure_sample']}, "
             f"{r['bad_messages']} unexpected messages {r['bad_sample']}, "
             f"{r['mutation_errors']} failed changes {r['mutation_error_sample']}"
             for kind, r in results.items()
             if r["failed_connections"] or r["bad_messages"] or r["mutation_errors"]]
    return Outcome("tenants", "W5 tenants",
                   {"families": families, "members": MEMBERS, "rate": RATE,
                    "seconds": opt.duration, "subscriptions": SUBSCRIPTIONS, "change": RENAME,
                    "sockets_per_client_process": PER_WORKER, "quick": opt.quick},
                   [{"case": k, **v} for k, v in results.items()], table, targets, plot,
                   notes)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    results = {r["case"]: r for r in rows}
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(results)
    for k, q in enumerate(("lag_p50_ms", "lag_p99_ms")):
        ax.bar([i + k * 0.4 for i in range(len(names))],
               [results[n][q] for n in names], 0.4, label=q[4:7])
    ax.set_xticks([i + 0.2 for i in range(len(names))], names)
    ax.set(ylabel="ms from commit to delivery", title="W5 tenants: delivery lag")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_changes(crew: Crew, tenants: list[dict[str, Any]], protocol: str, url: str,
                  rate: float, seconds: float, progress: Any, task: Any, label: str) -> Any:
    """`rate` changes a second for `seconds`, to random families' lists (a writer process),
    while `crew` (the families' sockets) keeps receiving; what the writer reports."""
    targets = [[t["tokens"][0], t["list"]] for t in tenants]
    progress.update(task, description=f"{label}: {rate:g} changes/s for {seconds:g} s",
                    completed=0, total=int(rate * seconds))
    with Crew("bench.tenants:writer", [{"protocol": protocol, "url": url, "targets": targets,
                                         "rate": rate, "seconds": seconds, "seed": 11}]
              ) as writers:
        writers.wait_ready(60)
        writers.go(0.2)
        while len(writers.results) < 1:
            writers.pump(0.05)
            crew.pump(0.05)
            progress.update(task, completed=writers.total)
        return writers.finish()[0]


def drain(crew: Crew, quiet: float = 2.0, limit: float = 30.0) -> None:
    """The last deliveries: until nothing arrives for `quiet` s (at most `limit` s)."""
    quiet_since, last = time.monotonic(), crew.total
    deadline = time.monotonic() + limit
    while time.monotonic() - quiet_since < quiet and time.monotonic() < deadline:
        crew.pump(0.1)
        if crew.total != last:
            quiet_since, last = time.monotonic(), crew.total
