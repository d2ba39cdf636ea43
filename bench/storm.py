"""W6 storm (`giftgraph bench storm`): every socket of an instance comes back at once.

2,000 families x 5 members, one socket each (10,000), each subscribed to `familyEvents`.
Changes go on at 100/s over random families the whole time. Then the instance is killed
(SIGKILL) and started again; every client reconnects (exponential backoff from 50 ms with
full jitter, at most 2 s), authenticates and subscribes again with `since` its last seq.
Separately, the clients fail over to a second instance (both on Redis) while the first
stays dead. Each socket first subscribes `since` its family's last seq at the start (as a
client that has just fetched its data), so it is owed every event its family commits
afterwards. Measured: from the kill, the time until every socket is subscribed again and
caught up (it holds every event its family committed before it subscribed again), the
share caught up at 15, 30 and 60 s, and the events duplicated, late (arrived more than
WINDOW s after the kill) and lost (never arrived; the clients wait up to LIMIT s after the
kill, until every owed event is in) over the whole run, against the events table.

Baseline in the same run: the same restart herd on a bare server (bench/storm_floor.py:
the same authentication and replay with asyncpg, no GraphQL), changes written through it.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from rich.table import Table

from bench import wsclient
from bench.harness import (
    HTTP,
    PROTOCOL,
    Server,
    api_server,
    dsn,
    listen_args,
    metric,
    metrics_page,
    percentile,
    wait_for,
)
from bench.report import Options, Outcome, Target
from bench.tenants import (
    FAMILIES,
    QUICK_FAMILIES,
    RATE,
    _chunks,
    _events_since,
    _tree_cpu,
    seed,
)
from bench.workers import WAVE, Channel, Crew, source_address, split

PER_WORKER = 2500
SUBSCRIBE = "subscription($s: String) { familyEvents(since: $s) { seq at } }"
BEFORE_KILL = 5.0  # seconds of changes before the kill
AFTER = 20.0  # seconds of changes after it
GOAL = 15.0  # seconds to 100% subscribed and caught up
WINDOW = 60.0  # seconds after the kill: an event arriving later is late
LIMIT = 180.0  # seconds after the kill the clients wait for what is still owed
QUIET = 30.0  # ... or, past the window, until nothing arrives for this long
SHARES = (15, 30, 60)  # seconds after the kill: the share of sockets caught up by then


async def clients(p: dict[str, Any], ch: Channel) -> dict[str, Any]:
    """Sockets that reconnect: to p["urls"][0], and after a loss to the next url in turn
    (failover) or the same (restart). Per socket: every (seq, arrival) and each
    resubscription's time."""
    urls: list[str] = p["urls"]
    failover = p["failover"]
    state: list[dict[str, Any]] = []
    received = 0
    bad: list[str] = []
    # Why each attempt after the first ended (the herd's failures, by kind and close code).
    reasons: Counter[str] = Counter()
    rng = random.Random()  # noqa: S311 - jitter, not secrets

    async def stopped() -> None:
        while not ch.stop.is_set():  # noqa: ASYNC110 - set by another process
            await asyncio.sleep(0.1)

    async def keep(spec: list[Any]) -> None:
        nonlocal received
        family, token, start = spec
        s: dict[str, Any] = {"family": family, "seqs": [], "arrivals": [], "subscribed": [],
                             "attempts": 0}
        state.append(s)
        at = 0
        delay = 0.05
        while not ch.stop.is_set():
            ack = asyncio.get_running_loop().create_future()

            def on_text(raw: bytes, ack: asyncio.Future[bytes] = ack) -> None:
                nonlocal received
                if not ack.done():
                    ack.set_result(raw)
                    return
                try:
                    msg = orjson.loads(raw)
                    if msg.get("type") != "next" or msg["payload"].get("errors"):
                        bad.append(raw[:200].decode(errors="replace"))
                        return
                    event = msg["payload"]["data"]["familyEvents"]
                    s["seqs"].append(int(event["seq"]))
                    s["arrivals"].append(time.time())
                    received += 1
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    bad.append(raw[:200].decode(errors="replace"))

            s["attempts"] += 1
            ws = None
            try:
                ws = await wsclient.connect(urls[at], on_text, subprotocol=PROTOCOL,
                                            local_addr=(p["source"], 0), wait=30)
                ws.send_text(orjson.dumps({"type": "connection_init",
                                           "payload": {"token": token}}))
                reply = orjson.loads(await asyncio.wait_for(ack, 30))
                if reply.get("type") != "connection_ack":
                    raise RuntimeError(f"no connection_ack: {reply}")
                since = str(max([start, *s["seqs"]]))
                ws.send_text(orjson.dumps({"id": "1", "type": "subscribe", "payload": {
                    "query": SUBSCRIBE, "variables": {"s": since}}}))
                s["subscribed"].append(time.time())
                delay = 0.05
                stop = asyncio.ensure_future(stopped())
                await asyncio.wait((ws.closed, stop), return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if ch.stop.is_set():
                    await ws.close()
                    return
                reasons[f"closed after subscribing ({ws.close_code})"] += 1
            except (OSError, TimeoutError, RuntimeError, orjson.JSONDecodeError) as exc:
                where = "connecting" if ws is None else "before connection_ack"
                code = f", {ws.close_code}" if ws is not None and ws.close_code else ""
                reasons[f"{where}: {type(exc).__name__}{code}"] += 1
            if failover:
                at = min(at + 1, len(urls) - 1)
            await asyncio.sleep(rng.uniform(0, delay))  # full jitter
            delay = min(2.0, delay * 2)

    specs = p["specs"]
    tasks = []
    for start in range(0, len(specs), WAVE):
        tasks += [asyncio.create_task(keep(spec)) for spec in specs[start:start + WAVE]]
        await asyncio.sleep(0.05)
    ch.send("ready", {"sockets": len(specs)})
    await ch.until_stopped(lambda: received)
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"sockets": state, "bad": len(bad), "bad_sample": bad[:3],
            "reasons": dict(reasons)}


def storm(label: str, instances: list[Server], failover: bool, tenants: list[dict[str, Any]],
          database_url: str, progress: Any, floor: bool = False) -> dict[str, Any]:
    """One herd on `instances` (the API's, or with `floor` bench/storm_floor.py's)."""
    from bench.tenants import writer  # noqa: F401 - the writer process imports it by name

    first = instances[0]
    marks = _marks_now(database_url)
    specs = [[k, token, marks.get(t["family"], 0)] for k, t in enumerate(tenants)
             for token in t["tokens"]]
    n = len(specs)
    workers = max(1, -(-n // PER_WORKER))
    urls = [f"{s.ws}/graphql" for s in instances]
    params = [{"urls": urls, "failover": failover, "source": source_address(), "specs": part}
              for part in _chunks(specs, split(n, workers))]
    task = progress.add_task(f"{label}: connecting", total=n)
    with Crew("bench.storm:clients", params) as crew:
        crew.wait_ready(120)
        wait_for(lambda: _subscribed(first, floor), n, 180)
        targets = [[t["tokens"][0], t["list"]] for t in tenants]
        seconds = BEFORE_KILL + AFTER
        write = ({"protocol": "floor", "url": [f"{s.base}/publish" for s in instances]}
                 if floor else
                 {"protocol": "graphql", "url": [f"{s.base}/graphql" for s in instances]})
        with Crew("bench.tenants:writer", [{**write, "targets": targets, "rate": RATE,
                                             "seconds": seconds, "seed": 5}]) as writers:
            writers.wait_ready(60)
            start = writers.go(0.2)
            progress.update(task, description=f"{label}: changes, then the kill",
                            completed=0, total=int(seconds))
            while time.monotonic() < start + BEFORE_KILL:
                crew.pump(0.05)
                writers.pump(0.01)
            assert first.proc is not None
            overflows = listen_overflows()
            cpu = {s.pid: _tree_cpu([s.pid]) for s in instances}
            killed = time.time()
            first.proc.kill()
            first.proc.wait()
            if not failover:
                restart(first)
            while len(writers.results) < 1:
                writers.pump(0.05)
                crew.pump(0.05)
                progress.update(task, completed=time.monotonic() - start)
            written = writers.finish()[0]
        # Every owed event is committed now: wait until each has arrived (a herd still being
        # replayed is slow, not lossy), at most LIMIT s after the kill, and past the window
        # until nothing arrives for QUIET s. What never arrives is lost.
        events = _events_since(database_url, marks)
        ids = {k: t["family"] for k, t in enumerate(tenants)}
        owed = {f: sorted(seq for topic, seq in e if topic == "family")
                for f, e in events.items()}
        expected = sum(len(owed.get(ids[k], ())) for k, *_ in specs)
        progress.update(task, description=f"{label}: waiting for the herd",
                        completed=0, total=expected)
        quiet, last = time.monotonic(), crew.total
        while crew.total < expected and time.time() < killed + LIMIT and not (
                time.time() > killed + WINDOW and time.monotonic() - quiet > QUIET):
            crew.pump(0.1)
            progress.update(task, completed=crew.total)
            if crew.total != last:
                quiet, last = time.monotonic(), crew.total
        waited = time.time() - killed
        overflows = {k: v - overflows.get(k, 0) for k, v in listen_overflows().items()}
        # the servers' CPU from the kill on (a restarted one's since it started): the herd's,
        # the changes' and a restart's start-up; steadier than times on a shared machine
        server_cpu = sum(_tree_cpu([s.pid]) - cpu.get(s.pid, 0.0) for s in instances
                         if s.proc is not None and s.proc.poll() is None)
        refused = {} if floor else _refused(instances)
        results = crew.finish(180)
    progress.remove_task(task)
    at_of = _event_times(database_url)
    lost = late = duplicated = 0
    recovered: list[float] = []
    never = stayed = 0
    backs: list[float] = []  # from the kill to subscribing again, each socket cut off
    for r in results:
        for s in r["sockets"]:
            family = ids[s["family"]]
            want = owed.get(family, [])
            arrival: dict[int, float] = {}
            for seq, t in zip(s["seqs"], s["arrivals"], strict=True):
                arrival.setdefault(seq, t)
            duplicated += len(s["seqs"]) - len(arrival)
            lost += sum(1 for seq in want if seq not in arrival)
            late += sum(1 for seq in want if arrival.get(seq, 0) > killed + WINDOW)
            again = [t for t in s["subscribed"] if t > killed]
            if not again:
                if s["subscribed"] and all(seq in arrival for seq in want):
                    # Never cut off: its socket was on the instance that stayed (a failover
                    # client whose first attempt failed moved on to the second from the
                    # start), and it holds every event it was owed.
                    stayed += 1
                    recovered.append(0.0)
                else:
                    never += 1
                continue
            back = again[0]
            backs.append(back - killed)
            due = [seq for seq in want if at_of.get((family, seq), 0) < back]
            caught = max([back, *(arrival.get(seq, float("inf")) for seq in due)])
            recovered.append(caught - killed)
    recovered.sort()
    full = recovered[-1] if recovered and not never else float("inf")
    every = recovered + [float("inf")] * never  # each socket's time, in order
    shares = {f"caught_{t}s": sum(1 for x in recovered if x <= t) / n for t in SHARES}
    return {"sockets": n, "failover": failover, "floor": floor, "mutations": written["sent"],
            "mutation_errors": written["errors"],
            "mutation_error_sample": written["error_sample"],
            "recovered": len(recovered) - stayed, "stayed": stayed,
            "never_resubscribed": never,
            "p50_s": percentile(recovered, 50) if recovered else float("nan"),
            "p99_s": percentile(recovered, 99) if recovered else float("nan"),
            "all_s": full, **shares,
            "caught_end": sum(1 for x in recovered if x < float("inf")) / n,
            "recovered_cdf_s": [percentile(every, q) for q in range(101)],
            "resubscribed_cdf_s": [percentile(sorted(backs), q) for q in range(101)]
            if backs else [],
            "waited_s": waited, "owed": expected, "late": late, "lost": lost,
            "duplicated": duplicated,
            "attempts": sum(s["attempts"] for r in results for s in r["sockets"]),
            "bad_messages": sum(r["bad"] for r in results),
            "listen_overflows": overflows, "server_cpu_s": server_cpu,
            "admission_refused": refused,
            "attempts_ended": dict(sum((Counter(r["reasons"]) for r in results), Counter())),
            "bad_sample": [b for r in results for b in r["bad_sample"]][:3]}


def listen_overflows() -> dict[str, int]:
    """The machine's TCP counters of connections a full listen queue turned away
    (ListenOverflows, ListenDrops in /proc/net/netstat); empty where there is none."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return {}
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=False))
            return {k: row[k] for k in ("ListenOverflows", "ListenDrops") if k in row}
    return {}


def _subscribed(server: Server, floor: bool) -> float:
    if floor:
        return float(HTTP.get(f"{server.base}/count").json()["subscribed"])
    return metric(server.base, "giftgraph_subscriptions_active")


def restart(server: Server) -> None:
    """Start `server`'s command again on its port (its clients reconnect to it)."""
    import tempfile

    server.__exit__()
    server.proc = None
    server.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives with the server
    server.start()
    server.__enter__()


def _refused(instances: list[Server]) -> dict[str, float]:
    """What the running instances' admission bounds refused (their /metrics), by bound:
    a herd held back by a bound shows here, not as an error."""
    total: Counter[str] = Counter()
    for s in instances:
        if s.proc is None or s.proc.poll() is not None:
            continue
        for line in metrics_page(s.base).splitlines():
            if line.startswith("giftgraph_admission_refused_total{"):
                bound = line.split('bound="', 1)[1].split('"', 1)[0]
                total[bound] += float(line.rsplit(" ", 1)[1])
    return {k: v for k, v in total.items() if v}


def _marks_now(database_url: str) -> dict[str, int]:
    from bench.tenants import _marks

    return _marks(database_url)


def _event_times(database_url: str) -> dict[tuple[str, int], float]:
    import asyncpg

    from bench.harness import dsn

    async def fetch() -> dict[tuple[str, int], float]:
        conn = await asyncpg.connect(dsn(database_url))
        try:
            rows = await conn.fetch("SELECT family_id::text AS f, seq, at FROM events "
                                    "WHERE topic = 'family'")
        finally:
            await conn.close()
        return {(r["f"], r["seq"]): r["at"].timestamp() for r in rows}

    return asyncio.run(fetch())


def run(database_url: str, opt: Options) -> Outcome:
    import tempfile

    families = QUICK_FAMILIES if opt.quick else FAMILIES
    api = api_server(database_url)
    secret = api.env["GIFTGRAPH_JWT_SECRET"]
    tenants = seed(database_url, secret, families)
    ids = Path(tempfile.mkdtemp(prefix="giftgraph-storm-")) / "families.json"
    ids.write_bytes(orjson.dumps([t["family"] for t in tenants]))
    floor = Server("bench.storm_floor:create",
                   {"BENCH_FLOOR_DSN": dsn(database_url), "GIFTGRAPH_JWT_SECRET": secret,
                    "BENCH_STORM_FAMILIES": str(ids)},
                   args=("--ws", "websockets-sansio", *listen_args()))
    results: dict[str, dict[str, Any]] = {}
    with opt.progress() as progress:
        with api:
            results["restart"] = storm("restart after SIGKILL", [api], False, tenants,
                                       database_url, progress)
        with floor:
            results["floor restart"] = storm("the floor: restart after SIGKILL", [floor],
                                             False, tenants, database_url, progress,
                                             floor=True)
        redis = {"GIFTGRAPH_BROADCAST_URL": "redis://127.0.0.1:6379/0",
                 "GIFTGRAPH_RATE_LIMIT_STORAGE_URL": "redis://127.0.0.1:6379/0"}
        a = Server(api.app, {**api.env, **redis}, api.health, api.args)
        b = Server(api.app, {**api.env, **redis}, api.health, api.args)
        a.start()
        b.start()
        with a, b:
            results["failover"] = storm("failover to a second instance", [a, b], True,
                                        tenants, database_url, progress)
    base = results["floor restart"]["all_s"]
    for r in results.values():
        r["vs_floor"] = r["all_s"] / base if math.isfinite(r["all_s"] + base) else float("nan")
    table = Table(title=f"W6 storm: {families * 5:,} sockets, {RATE:g} changes/s; "
                        "from the kill to subscribed again and caught up")
    for col in ("case", "sockets", "back or stayed", "p50 s", "p99 s", "100% s", "vs floor",
                *(f"≤ {t} s" for t in SHARES), "late", "lost", "dup", "attempts",
                "server CPU s"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for name, r in results.items():
        table.add_row(name, f"{r['sockets']:,}", f"{r['recovered'] + r['stayed']:,}",
                      f"{r['p50_s']:.1f}",
                      f"{r['p99_s']:.1f}", f"{r['all_s']:.1f}", f"{r['vs_floor']:.2f}x",
                      *(f"{100 * r[f'caught_{t}s']:.1f}%" for t in SHARES), str(r["late"]),
                      str(r["lost"]), str(r["duplicated"]), f"{r['attempts']:,}",
                      f"{r['server_cpu_s']:.1f}")
    api_cases = {k: v for k, v in results.items() if not v["floor"]}
    targets = [Target(f"W6 {name}: every socket back and caught up", f"{r['all_s']:.1f} s",
                      f"≤ {GOAL:g} s", r["all_s"] <= GOAL) for name, r in api_cases.items()]
    # The fallback: where the floor misses the goal too, the ratio to it is reported.
    targets.append(Target("W6 restart: time to 100%, the API's / the floor's",
                          f"{results['restart']['vs_floor']:.2f}x "
                          f"(floor {base:.1f} s)", f"reported when the floor misses {GOAL:g} s",
                          None if base <= GOAL else True))
    targets += [Target(f"W6 {name}: events late / lost / duplicated",
                       f"{r['late']} / {r['lost']} / {r['duplicated']}", "0 / 0 / 0",
                       r["late"] == r["lost"] == r["duplicated"] == 0)
                for name, r in results.items()]
    notes = [f"{name}: attempts ended by {r['attempts_ended']}; from the kill on, the "
             f"machine's listen queues turned away {r['listen_overflows']}"
             for name, r in results.items()]
    # Where the time went: back (opened, authenticated, subscribe sent) against caught up.
    notes += [f"{name}: subscribed again at p50 / 100% {r['resubscribed_cdf_s'][50]:.1f} / "
              f"{r['resubscribed_cdf_s'][100]:.1f} s after the kill; the admission bounds "
              f"refused {r.get('admission_refused') or 'nothing'}"
              for name, r in results.items() if r.get("resubscribed_cdf_s")]
    notes += [f"{name}: {r['never_resubscribed']} sockets never came back, {r['bad_messages']} "
             f"unexpected messages {r['bad_sample']}, {r['mutation_errors']} failed changes "
             f"(expected while the instance is down) {r['mutation_error_sample']}"
             for name, r in results.items()
             if r["never_resubscribed"] or r["bad_messages"] or r["mutation_errors"]]
    notes += [f"{name}: {r['stayed']} sockets were never cut off (on the second instance from "
              "the start: their first attempt had failed), holding every owed event; counted "
              "as caught up at the kill" for name, r in results.items() if r.get("stayed")]
    waited = ", ".join(f"{k} {r['waited_s']:.0f} s" for k, r in results.items())
    notes.append(f"late: arrived more than {WINDOW:g} s after the kill; lost: never arrived "
                 f"(the clients waited until every owed event was in, at most {LIMIT:g} s "
                 f"after the kill: {waited})")
    return Outcome("storm", "W6 storm",
                   {"families": families, "sockets": families * 5, "rate": RATE,
                    "before_kill_s": BEFORE_KILL, "after_s": AFTER, "subscription": SUBSCRIBE,
                    "window_s": WINDOW, "limit_s": LIMIT, "quick": opt.quick,
                    "at": datetime.now().isoformat()},
                   [{"case": k, **v} for k, v in results.items()], table, targets, plot,
                   notes)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """The share of sockets caught up against the time since the kill, one line a case."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        cdf = [x for x in r["recovered_cdf_s"] if math.isfinite(x)]
        ax.step(cdf, [q / 100 for q in range(len(cdf))], where="post", label=r["case"],
                ls="--" if r.get("floor") else "-")
    ax.axvline(GOAL, color="tab:red", ls=":", lw=0.8, label=f"goal {GOAL:g} s")
    ax.set(xlabel="s from the kill", ylabel="share of sockets back and caught up",
           title="W6 storm", ylim=(0, 1.02))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
