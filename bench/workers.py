"""Load generators, each in its own process: HTTP request loops and WebSocket subscribers.

A `Crew` starts worker processes (forkserver) that connect, report "ready", then wait for the
parent's start time (a shared CLOCK_MONOTONIC value, comparable across processes on Linux),
report progress counts while they run, and return one result each.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import queue
import time
import traceback
from array import array
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import httpx
import orjson

from bench import wsclient
from bench.harness import PROTOCOL, raise_nofile
from bench.wsclient import LeanSocket

WAVE = 50  # sockets opened concurrently per worker (the server has 10 s for connection_init)


@dataclass
class Channel:
    """A worker's line to the parent."""

    index: int
    out: Any  # mp.Queue
    start: Synchronized  # type: ignore[type-arg]  # 0.0 until the parent says go
    stop: Any  # mp.Event

    def send(self, kind: str, value: Any = None) -> None:
        self.out.put((kind, self.index, value))

    async def start_time(self) -> float:
        while self.start.value == 0.0:  # noqa: ASYNC110 - set by another process
            await asyncio.sleep(0.005)
        return float(self.start.value)

    async def until_stopped(self, report: Callable[[], int]) -> None:
        """Report `report()` every 100 ms until the parent says stop."""
        while not self.stop.is_set():
            self.send("progress", report())
            await asyncio.sleep(0.1)
        self.send("progress", report())


WorkerFn = Callable[[dict[str, Any], Channel], Coroutine[Any, Any, Any]]


def _entry(name: str, params: dict[str, Any], channel: Channel) -> None:
    raise_nofile()
    try:
        import uvloop

        run: Callable[[Coroutine[Any, Any, Any]], Any] = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        channel.send("result", run(worker(name)(params, channel)))
    except BaseException:
        channel.send("error", traceback.format_exc())


class Crew:
    """Worker processes running one worker function, each with its own params."""

    def __init__(self, name: str, params: list[dict[str, Any]]) -> None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["bench.workers"])
        self.out: Any = ctx.Queue()
        self.start = ctx.Value("d", 0.0)
        self.stop_event = ctx.Event()
        self.progress = [0] * len(params)
        self.ready: dict[int, Any] = {}
        self.results: dict[int, Any] = {}
        self.procs = [
            ctx.Process(target=_entry, daemon=True,
                        args=(name, p, Channel(i, self.out, self.start, self.stop_event)))
            for i, p in enumerate(params)
        ]
        for proc in self.procs:
            proc.start()

    @property
    def total(self) -> int:
        return sum(self.progress)

    def pump(self, timeout: float = 0.1) -> None:
        """Take in the workers' messages (waiting up to `timeout` for the first)."""
        try:
            msg = self.out.get(timeout=timeout)
            while True:
                kind, index, value = msg
                if kind == "error":
                    raise RuntimeError(f"worker {index} failed:\n{value}")
                if kind == "progress":
                    self.progress[index] = value
                elif kind == "ready":  # progress counts start again from zero
                    self.ready[index] = value
                    self.progress[index] = 0
                elif kind == "result":
                    self.results[index] = value
                msg = self.out.get_nowait()
        except queue.Empty:
            pass
        for proc in self.procs:
            if proc.exitcode not in (None, 0):
                raise RuntimeError(f"a worker process died (exit code {proc.exitcode})")

    def wait_ready(self, timeout: float, tick: Callable[[], None] = lambda: None) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.ready) < len(self.procs):
            if time.monotonic() > deadline:
                raise TimeoutError("workers were not ready in time")
            self.pump()
            tick()
        return [self.ready[i] for i in range(len(self.procs))]

    def go(self, delay: float = 0.05) -> float:
        """Tell every worker to start at now + delay; that start time."""
        start = time.monotonic() + delay
        self.start.value = start
        return start

    def finish(self, timeout: float = 120) -> list[Any]:
        """Stop the workers and return their results, in worker order."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout
        while len(self.results) < len(self.procs):
            if time.monotonic() > deadline:
                raise TimeoutError("workers did not finish in time")
            self.pump()
        return [self.results[i] for i in range(len(self.procs))]

    def close(self) -> None:
        self.stop_event.set()
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        self.out.close()

    def __enter__(self) -> Crew:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def split(total: int, parts: int) -> list[int]:
    """`total` spread as evenly as possible over `parts` (each ≥ 0)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# ---------------------------------------------------------------- HTTP load


async def http_load(p: dict[str, Any], ch: Channel) -> dict[str, Any]:
    """One keep-alive connection per task; task k cycles through `cycles[k]` (JSON bodies).

    Warm-up: "ready" once every task has completed a request, so the requests in flight when
    the window opens were sent in steady state. Counts requests that complete inside
    [start, start + duration]: their latencies, and errors (non-200 or a GraphQL `errors`
    member) among them; `ok_total` counts every success.
    """
    cycles: list[list[bytes]] = p["cycles"]
    headers = {"content-type": "application/json", **p.get("headers", {})}
    # Idle connections are let go after 2 s, before the servers' 5 s keep-alive timeout
    # (uvicorn's and Node's): at httpx's default, also 5 s, a request could go out on a
    # connection the server was closing that instant and fail with a ReadError.
    limits = httpx.Limits(max_connections=len(cycles), max_keepalive_connections=len(cycles),
                          keepalive_expiry=2.0)
    latencies: list[float] = []
    errors: list[str] = []
    ok_total = warmed = 0
    all_warm = asyncio.Event()
    window = [float("inf"), float("inf")]

    async with httpx.AsyncClient(limits=limits, timeout=300, headers=headers) as client:

        async def task(bodies: list[bytes]) -> None:
            # No request is sent that the last latency says would end after the window: it
            # would not be counted, and the backlog would delay the next measurement.
            nonlocal ok_total, warmed
            i, last = 0, 0.0
            while (t0 := time.monotonic()) + last < window[1]:
                body = bodies[i % len(bodies)]
                i += 1
                try:
                    r = await client.post(p["url"], content=body)
                except httpx.TransportError as exc:
                    if not all_warm.is_set():
                        raise  # a server that can't answer at all fails the run
                    # A connection lost mid-run (once seen in a 20-minute `bench all`): an
                    # error of this run, reported with its figures, not the end of the run.
                    t1 = time.monotonic()
                    last = t1 - t0
                    if window[0] <= t1 <= window[1]:
                        errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    continue
                t1 = time.monotonic()
                warmed += i == 1
                if warmed == len(cycles):
                    all_warm.set()
                last = t1 - t0
                ok = r.status_code == 200 and b'"errors"' not in r.content
                ok_total += ok
                if window[0] <= t1 <= window[1]:
                    latencies.append(t1 - t0)
                    if not ok:
                        errors.append(f"{r.status_code} {r.text[:300]}")

        tasks = [asyncio.create_task(task(bodies)) for bodies in cycles]
        warm = asyncio.create_task(all_warm.wait())
        done, _ = await asyncio.wait([warm, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            t.result()  # a task that ended during the warm-up failed: raise its error
        ch.send("ready")
        start = await ch.start_time()
        window[:] = [start, start + p["duration"]]
        await asyncio.gather(*tasks)
    return {"latencies": latencies, "errors": len(errors), "error_sample": errors[:3],
            "ok_total": ok_total}


# ---------------------------------------------------------------- WebSocket subscribers


async def subscribers(p: dict[str, Any], ch: Channel) -> dict[str, Any]:
    """`count` sockets to `url`, from source address `source`, each reading until stopped.

    protocol "graphql": graphql-transport-ws; `subs_per_socket` subscriptions of `query`.
    protocol "raw": a plain WebSocket; messages are JSON with a `seq` (and an `at`, with `lag`).
    With `record`, each socket keeps (seq, CLOCK_MONOTONIC arrival) of every message; the
    progress count is the number of messages received. With `lag`, every message's
    delivery lag (arrival wall-clock time minus the event's `at`, its commit time on the
    same machine's clock) is kept with its CLOCK_MONOTONIC arrival. The sockets are `LeanSocket`s
    (bench/wsclient.py): a few µs per message, so that the clients leave the CPU to the
    server they measure.
    """
    graphql = p["protocol"] == "graphql"
    record = p.get("record", True)
    init = orjson.dumps({"type": "connection_init", "payload": {"token": p.get("token")}})
    subscribe = [orjson.dumps({"id": str(k + 1), "type": "subscribe", "payload": {
        "query": p.get("query"), "variables": p.get("variables", {})}})
        for k in range(p.get("subs_per_socket", 1))]
    sockets: list[LeanSocket] = []
    failures: list[str] = []
    arrivals: list[list[tuple[int, float]]] = []
    received = 0
    bad: list[str] = []
    sample_bytes = 0
    lag = p.get("lag", False)
    lag_arrivals, lags = array("d"), array("d")

    def reader(log: list[tuple[int, float]], ack: asyncio.Future[bytes] | None
               ) -> Callable[[bytes], None]:
        def on_text(raw: bytes) -> None:
            nonlocal received, sample_bytes
            t = time.monotonic()
            if ack is not None and not ack.done():
                ack.set_result(raw)
                return
            received += 1
            try:
                msg = orjson.loads(raw)
                if graphql:
                    if msg.get("type") != "next" or msg["payload"].get("errors"):
                        bad.append(raw[:300].decode(errors="replace"))
                        return
                    event = next(iter(msg["payload"]["data"].values()))
                    seq = int(event["seq"])
                    if lag:
                        lags.append(time.time() - datetime.fromisoformat(event["at"]).timestamp())
                        lag_arrivals.append(t)
                else:
                    seq = int(msg["seq"])
                    if lag:
                        lags.append(time.time() - datetime.fromisoformat(msg["at"]).timestamp())
                        lag_arrivals.append(t)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, StopIteration,
                    AttributeError):
                bad.append(raw[:300].decode(errors="replace"))
                return
            sample_bytes = sample_bytes or len(raw)
            if record:
                log.append((seq, t))
        return on_text

    async def open_one() -> None:
        log: list[tuple[int, float]] = []
        ack = asyncio.get_running_loop().create_future() if graphql else None
        try:
            ws = await wsclient.connect(p["url"], reader(log, ack),
                                        subprotocol=PROTOCOL if graphql else None,
                                        local_addr=(p["source"], 0), wait=60)
            if ack is not None:
                ws.send_text(init)
                try:
                    reply = orjson.loads(await asyncio.wait_for(ack, 60))
                    if reply.get("type") != "connection_ack":
                        raise RuntimeError(f"no connection_ack: {reply}")
                except BaseException:
                    ws.transport.close()  # type: ignore[union-attr]
                    raise
                for msg in subscribe:
                    ws.send_text(msg)
            sockets.append(ws)
            arrivals.append(log)
        except (OSError, TimeoutError, RuntimeError) as exc:
            failures.append(repr(exc))

    for start in range(0, p["count"], WAVE):
        await asyncio.gather(*(open_one() for _ in range(start, min(start + WAVE, p["count"]))))
        ch.send("progress", len(sockets))
    ch.send("ready", {"connected": len(sockets), "failures": failures[:3],
                      "failed": len(failures)})
    await ch.until_stopped(lambda: received)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    errors = [ws.error for ws in sockets if ws.error]
    return {"connected": len(sockets), "failed": len(failures), "received": received,
            "bad": len(bad) + len(errors), "bad_sample": (bad + errors)[:3],
            "sample_bytes": sample_bytes, "arrivals": arrivals if record else [],
            "lag_arrivals": lag_arrivals.tobytes(), "lags": lags.tobytes()}


WORKERS: dict[str, WorkerFn] = {"http_load": http_load, "subscribers": subscribers}


def worker(name: str) -> WorkerFn:
    """A worker by name: one of WORKERS, or "module:function" (a workload's own workers,
    imported in the worker process)."""
    if ":" not in name:
        return WORKERS[name]
    import importlib

    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- parent-side helpers

_sources = iter(range(10**9))


def source_address() -> str:
    """A fresh 127.0.0.x per subscriber process: each has its own ephemeral-port range."""
    return f"127.0.0.{2 + next(_sources) % 250}"


def subscriber_params(count: int, per_worker: int, **common: Any) -> list[dict[str, Any]]:
    """`count` sockets spread over ceil(count / per_worker) processes."""
    workers = max(1, -(-count // per_worker))
    return [{**common, "count": n, "source": source_address()} for n in split(count, workers)]


def measure_http(url: str, cycles: list[list[bytes]], headers: dict[str, str], duration: float,
                 progress: Any, label: str) -> dict[str, Any]:
    """Run `cycles` (one per concurrent connection) for `duration` s from 1-2 processes.

    Returns the latencies summary plus rps, errors and ok_total.
    """
    return summarize_runs([run_http(url, cycles, headers, duration, progress, label)])


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary of several `run_http` runs against the same target (their latencies
    pooled, throughput over their total duration)."""
    from bench.harness import summarize

    latencies = [x for r in runs for x in r["latencies"]]
    duration = sum(r["duration"] for r in runs)
    stats = summarize(latencies)
    stats.update(rps=len(latencies) / duration, errors=sum(r["errors"] for r in runs),
                 error_sample=[e for r in runs for e in r["error_sample"]][:3],
                 ok_total=sum(r["ok_total"] for r in runs), concurrency=runs[0]["concurrency"],
                 runs=len(runs))
    return stats


def run_http(url: str, cycles: list[list[bytes]], headers: dict[str, str], duration: float,
             progress: Any, label: str) -> dict[str, Any]:
    """One timed run of `cycles` (see `measure_http`): the raw latencies and counts."""
    procs = 1 if len(cycles) == 1 else 2
    params = [{"url": url, "headers": headers, "duration": duration,
               "cycles": cycles[sum(split(len(cycles), procs)[:i]):][:n]}
              for i, n in enumerate(split(len(cycles), procs))]
    task = progress.add_task(label, total=duration)
    with Crew("http_load", params) as crew:
        crew.wait_ready(600)
        start = crew.go()
        while (now := time.monotonic()) < start + duration:
            crew.pump(0.1)
            progress.update(task, completed=max(0.0, min(duration, now - start)))
        results = crew.finish(timeout=duration + 60)
    progress.remove_task(task)
    return {"latencies": [x for r in results for x in r["latencies"]], "duration": duration,
            "errors": sum(r["errors"] for r in results),
            "error_sample": [e for r in results for e in r["error_sample"]][:3],
            "ok_total": sum(r["ok_total"] for r in results), "concurrency": len(cycles)}
