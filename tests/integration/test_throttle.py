"""The anonymous mutations' per-IP budgets and the bound on concurrent password hashing
(giftgraph.admission.throttle), on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from giftgraph import auth
from giftgraph.app import create_app
from giftgraph.ids import decode_id
from tests.conftest import GQL, SIGN_UP, Account, make_settings, sign_up
from tests.integration.test_auth import LOGIN, LOGOUT, REFRESH, UPDATE_USER, register
from tests.integration.test_no_n_plus_one import count_statements


@asynccontextmanager
async def serving(database_url: str, **overrides: Any) -> AsyncIterator[Any]:
    app = create_app(make_settings(database_url, **overrides))
    async with app.router.lifespan_context(app):
        yield app


def client(app: Any, ip: str = "192.0.2.1") -> httpx.AsyncClient:
    """An HTTP client of `app` whose requests come from `ip`."""
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def refusals(http: httpx.AsyncClient, bound: str) -> float:
    text = (await http.get("/metrics")).text
    line = f'giftgraph_admission_refused_total{{bound="{bound}"}} '
    return next(float(row.removeprefix(line)) for row in text.splitlines()
                if row.startswith(line))


def sign_up_vars(email: str) -> dict[str, Any]:
    return {"input": {"familyName": "F", "email": email, "password": "long password",
                      "displayName": "D"}}


def assert_rate_limited(r: Any) -> None:
    assert r.codes == ["RATE_LIMITED"], r.body
    assert r.errors[0]["extensions"]["retryAfter"] >= 1
    assert r.body.get("data") is None


async def test_sign_up_is_throttled_per_ip_before_any_hashing_or_query(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[str] = []
    hash_password = auth.hash_password

    async def counting(settings: Any, password: str, *args: Any) -> str:
        hashed.append(password)
        return await hash_password(settings, password, *args)

    monkeypatch.setattr(auth, "hash_password", counting)
    async with serving(database_url, signup_ip_rate="2/minute") as app, \
            client(app) as http, client(app, "192.0.2.2") as other:
        gql = GQL(http)
        for n in range(2):
            assert (await gql(SIGN_UP, sign_up_vars(f"s{n}@example.com"))).errors == []
        assert len(hashed) == 2
        with count_statements(app) as statements:
            refused = await gql(SIGN_UP, sign_up_vars("s3@example.com"))
        assert_rate_limited(refused)
        assert statements == []
        assert len(hashed) == 2
        assert await refusals(http, "signup_ip_rate") == 1
        login = await gql(LOGIN, {"email": "s3@example.com", "password": "long password"})
        assert login.codes == ["UNAUTHENTICATED"]  # nothing was created
        # Another address has its own budget.
        assert (await GQL(other)(SIGN_UP, sign_up_vars("s4@example.com"))).errors == []


async def test_refresh_and_logout_share_one_per_ip_budget(database_url: str) -> None:
    async with serving(database_url, token_ip_rate="3/minute") as app, \
            client(app) as http, client(app, "192.0.2.2") as other:
        gql = GQL(http)
        account = await sign_up(gql)
        rotated = (await gql(REFRESH, {"t": account.refresh})).data["refreshToken"]
        rotated = (await gql(REFRESH, {"t": rotated["refreshToken"]})).data["refreshToken"]
        assert (await gql(LOGOUT, {"t": "not-a-token"})).data["logout"] is False
        with count_statements(app) as statements:
            assert_rate_limited(await gql(REFRESH, {"t": rotated["refreshToken"]}))
            assert_rate_limited(await gql(LOGOUT, {"t": rotated["refreshToken"]}))
        assert statements == []
        assert await refusals(http, "token_ip_rate") == 2
        # The token was neither used nor revoked: from another address it still works.
        assert (await GQL(other)(REFRESH, {"t": rotated["refreshToken"]})).data


async def test_login_refusals_are_counted_by_bound(database_url: str) -> None:
    async with serving(database_url, login_rate="1/minute", login_ip_rate="2/minute") as app, \
            client(app) as http:
        gql = GQL(http)
        account = await sign_up(gql)
        assert (await gql(LOGIN, {"email": account.email, "password": "wrong one"})).codes \
            == ["UNAUTHENTICATED"]
        assert_rate_limited(await gql(LOGIN, {"email": account.email,
                                              "password": account.password}))
        assert await refusals(http, "login_rate") == 1
        assert_rate_limited(await gql(LOGIN, {"email": "x@example.com", "password": "p"}))
        assert await refusals(http, "login_ip_rate") == 1


async def test_a_throttled_login_says_when_to_retry_in_a_header(database_url: str) -> None:
    """A field's RATE_LIMITED (login's throttle) carries `Retry-After` as the mutation
    budget's request error does; the status stays the executed operation's 200."""
    async with serving(database_url, login_rate="1/minute") as app, client(app) as http:
        body = {"query": LOGIN, "variables": {"email": "x@example.com", "password": "p"}}
        first = await http.post("/graphql", json=body)
        assert "retry-after" not in first.headers
        r = await http.post("/graphql", json=body,
                            headers={"Accept": "application/graphql-response+json"})
        assert [e["extensions"]["code"] for e in r.json()["errors"]] == ["RATE_LIMITED"]
        assert r.status_code == 200
        assert int(r.headers["retry-after"]) == r.json()["errors"][0]["extensions"]["retryAfter"]


class BlockedHashing:
    """argon2, held in its worker thread until `release`: while it is held the test sees
    what a request that is hashing holds (a connection? the event loop?) and what others
    get meanwhile."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)
        self.threads: list[str] = []
        real = auth.hasher

        def hasher(settings: Any) -> Any:
            inner = real(settings)
            held = self

            class Held:
                def hash(self, password: str) -> str:
                    return held._hold(lambda: inner.hash(password))

                def verify(self, digest: str, password: str) -> bool:
                    return held._hold(lambda: inner.verify(digest, password))

            return Held()

        monkeypatch.setattr(auth, "hasher", hasher)

    def _hold(self, work: Callable[[], Any]) -> Any:
        self.threads.append(threading.current_thread().name)
        self.started.release()
        assert self.gate.wait(30), "never released"
        return work()

    def block(self) -> None:
        """Hold every hash from now on (until `release`)."""
        self.gate.clear()
        self.started = threading.Semaphore(0)
        self.threads.clear()

    async def wait_started(self, count: int = 1) -> None:
        for _ in range(count):
            assert await asyncio.to_thread(self.started.acquire, True, 10)

    def release(self) -> None:
        self.gate.set()


async def test_hashing_is_bounded_off_the_loop_and_a_long_wait_is_refused(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With `max_concurrent_hashes` hashing, the next request waits `hash_wait_seconds` at
    most, then gets RATE_LIMITED (counted, nothing written); meanwhile the event loop
    serves other requests and no database connection is held by the hashing ones."""
    blocked = BlockedHashing(monkeypatch)
    async with serving(database_url, max_concurrent_hashes=2, hash_wait_seconds=0.3) as app, \
            client(app) as http, client(app, "192.0.2.2") as other, \
            client(app, "192.0.2.3") as third:
        gql = GQL(http)
        blocked.release()
        account = await sign_up(gql)
        blocked.block()
        pool = app.state.giftgraph.db().engine.sync_engine.pool
        # Three callers (one hash at a time each: Hashing's turns).
        first = asyncio.create_task(gql(SIGN_UP, sign_up_vars("one@example.com")))
        second = asyncio.create_task(GQL(other)(LOGIN, {"email": account.email,
                                                        "password": account.password}))
        await blocked.wait_started(2)
        assert pool.checkedout() == 0  # login checks the password holding no connection
        me = await account.client("{ me { id } }")  # the loop is free
        assert me.data["me"]["id"] == account.user_id
        refused = await GQL(third)(SIGN_UP, sign_up_vars("three@example.com"))
        assert_rate_limited(refused)
        assert await refusals(http, "hashing") == 1
        blocked.release()
        assert (await first).errors == []
        assert (await second).errors == []
        assert all(name.startswith("giftgraph-hash") for name in blocked.threads)
        login = await gql(LOGIN, {"email": "three@example.com", "password": "long password"})
        assert login.codes == ["UNAUTHENTICATED"]  # the refused sign-up wrote nothing


async def test_a_password_change_hashes_outside_its_transaction(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No connection, transaction or family lock is held while argon2 runs for updateUser:
    checking the current password, or hashing an ADMIN's reset (whose request has read
    the caller's row first)."""
    blocked = BlockedHashing(monkeypatch)
    async with serving(database_url) as app, client(app) as http:
        blocked.release()
        admin: Account = await sign_up(GQL(http))
        member = await register(admin)
        blocked.block()
        pool = app.state.giftgraph.db().engine.sync_engine.pool
        change = asyncio.create_task(member.client(UPDATE_USER, {"id": member.user_id, "input": {
            "password": "a new password", "currentPassword": member.password}}))
        await blocked.wait_started()  # checking the current password
        assert pool.checkedout() == 0
        blocked.release()
        assert (await change).data["updateUser"]["id"] == member.user_id
        blocked.block()
        reset = asyncio.create_task(admin.client(UPDATE_USER, {"id": member.user_id, "input": {
            "password": "reset by the admin"}}))  # authenticated: a connection was used
        await blocked.wait_started()
        assert pool.checkedout() == 0
        blocked.release()
        assert (await reset).data["updateUser"]["id"] == member.user_id


async def test_ipv6_addresses_of_one_64_share_one_budget(database_url: str) -> None:
    """One host is usually given a /64: its addresses spend one login and sign-up budget
    (`ipv6_prefix_length`); another /64 has its own."""
    async with serving(database_url, login_ip_rate="2/minute", signup_ip_rate="1/minute") \
            as app, client(app, "2001:db8::1") as first, \
            client(app, "2001:db8::2") as second, \
            client(app, "2001:db8::ffff:ffff:ffff:ffff") as third, \
            client(app, "2001:db8:0:1::1") as neighbour:
        wrong = {"email": "x@example.com", "password": "wrong one"}
        assert (await GQL(first)(LOGIN, wrong)).codes == ["UNAUTHENTICATED"]
        assert (await GQL(second)(LOGIN, wrong)).codes == ["UNAUTHENTICATED"]
        assert_rate_limited(await GQL(third)(LOGIN, wrong))
        assert (await GQL(neighbour)(LOGIN, wrong)).codes == ["UNAUTHENTICATED"]
        assert (await GQL(first)(SIGN_UP, sign_up_vars("v6a@example.com"))).errors == []
        assert_rate_limited(await GQL(third)(SIGN_UP, sign_up_vars("v6b@example.com")))
        assert (await GQL(neighbour)(SIGN_UP, sign_up_vars("v6c@example.com"))).errors == []


async def test_each_ipv6_address_is_a_caller_with_a_prefix_of_128(database_url: str) -> None:
    async with serving(database_url, login_ip_rate="1/minute", ipv6_prefix_length=128) \
            as app, client(app, "2001:db8::1") as first, client(app, "2001:db8::2") as second:
        wrong = {"email": "x@example.com", "password": "wrong one"}
        assert (await GQL(first)(LOGIN, wrong)).codes == ["UNAUTHENTICATED"]
        assert (await GQL(second)(LOGIN, wrong)).codes == ["UNAUTHENTICATED"]
        assert_rate_limited(await GQL(first)(LOGIN, wrong))


def held_checks(gate: threading.Event) -> Callable[..., bool]:
    """`auth._verify`, each check 0.1 s once `gate` opens: a flood's checks queue up."""
    verify = auth._verify

    def held_verify(*args: Any) -> bool:
        assert gate.wait(30), "never released"
        time.sleep(0.1)
        return verify(*args)

    return held_verify


def recorded_checks(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[str]]:
    """Password checks held until the gate is set, then run in turn, each password
    recorded in the order it was checked."""
    gate, checked = threading.Event(), []
    verify = auth._verify

    def held_verify(settings: Any, password_hash: str, password: str) -> bool:
        assert gate.wait(30), "never released"
        checked.append(password)
        return verify(settings, password_hash, password)

    monkeypatch.setattr(auth, "_verify", held_verify)
    return gate, checked


async def queued(lane: Any, count: int) -> None:
    """Until `count` logins wait in a lane of the hashing queue."""
    while len(lane) < count:  # noqa: ASYNC110 - the waiters' queue has no event
        await asyncio.sleep(0.01)


async def test_a_login_from_a_known_network_goes_ahead_of_a_flood(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Twenty addresses' wrong passwords wait for the one hashing thread. The account's own
    login, from the network it signed up from, is checked next; the same email and password
    from another network waits behind the flood (knowing the email buys nothing) and
    spends nothing. A wrong password from home goes ahead and spends the lane
    (`known_login_rate`, one failure here): the next login from home waits with the
    others."""
    gate = threading.Event()

    async with serving(database_url, max_concurrent_hashes=1, hash_wait_seconds=30,
                       known_login_rate="1/hour") as app, \
            client(app, "192.0.2.77") as home, client(app, "198.51.100.9") as elsewhere:
        account = await sign_up(GQL(home))  # the network is known from here on
        monkeypatch.setattr(auth, "_verify", held_checks(gate))
        hashing = app.state.giftgraph.throttle.hashing
        others, known = hashing.slots.waiting[1], hashing.slots.waiting[0]
        done: list[str] = []

        async def login(name: str, ip: str, email: str, password: str) -> Any:
            async with client(app, ip) as http:
                answer = await GQL(http)(LOGIN, {"email": email, "password": password})
            done.append(name)
            return answer

        mine = (account.email, account.password)
        flood = [asyncio.create_task(login(f"flood{n}", f"203.0.113.{n}",
                                           f"x{n}@example.com", "wrong"))
                 for n in range(1, 21)]
        await queued(others, 19)  # one holds the thread, 19 wait
        away = asyncio.create_task(login("elsewhere", "198.51.100.9", *mine))
        await queued(others, 20)
        first = asyncio.create_task(login("home", "192.0.2.77", *mine))
        await queued(known, 1)
        gate.set()
        assert (await first).errors == []
        assert len(done) <= 2  # ~0.2 s in: the flood's first and the account's own
        assert not away.done()  # 2 s of the flood ahead of it
        # A wrong password from home goes ahead too, and spends the lane (one here).
        assert (await login("home wrong", "192.0.2.77", account.email, "wrong")).codes \
            == ["UNAUTHENTICATED"]
        assert not away.done()
        second = asyncio.create_task(login("home again", "192.0.2.77", *mine))
        results = await asyncio.gather(away, second, *flood)
        assert [r.codes for r in results[:2]] == [[], []]
        assert all(r.codes == ["UNAUTHENTICATED"] for r in results[2:])
        assert done[-2:] == ["elsewhere", "home again"]  # both waited behind the flood
        assert await refusals(elsewhere, "known_login_rate") == 1


async def test_accounts_that_log_in_again_and_again_wait_behind_one_that_rarely_does(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five accounts log in from their own networks again and again (each a known login,
    ahead of strangers): their logins wait for the hashing thread. The owner's login, from
    its own network and rare, is checked as soon as the thread is free, not after all of
    theirs (first come, first served: last)."""
    async with serving(database_url, max_concurrent_hashes=1, hash_wait_seconds=30) as app:
        busy = []
        for n in range(1, 6):
            async with client(app, f"203.0.113.{n}") as http:
                busy.append((f"203.0.113.{n}", await sign_up(
                    GQL(http), password=f"busy password {n}")))
        async with client(app, "192.0.2.77") as home:
            owner = await sign_up(GQL(home), password="the owner's password")

        async def login(ip: str, account: Account) -> Any:
            async with client(app, ip) as http:
                return await GQL(http)(LOGIN, {"email": account.email,
                                               "password": account.password})

        for _ in range(4):  # each busy account's logins ahead, lately
            for ip, account in busy:
                assert (await login(ip, account)).errors == []
        gate, checked = recorded_checks(monkeypatch)
        known = app.state.giftgraph.throttle.hashing.slots.waiting[0]
        logins = [asyncio.create_task(login(ip, account)) for ip, account in busy]
        await queued(known, 4)  # one holds the thread, four wait
        mine = asyncio.create_task(login("192.0.2.77", owner))
        await queued(known, 5)
        gate.set()
        assert (await mine).errors == []
        assert all(r.errors == [] for r in await asyncio.gather(*logins))
        # right after the one that held the thread
        assert checked.index("the owner's password") == 1, checked


async def test_an_established_owner_goes_ahead_of_accounts_signed_up_lately(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five accounts signed up just now, each logging in for the first time from its own
    network (light, known logins), wait for the hashing thread. The owner's account is
    older than `login_established_seconds` and has logged in again and again (heavy): its
    login, coming last, is checked as soon as the thread is free."""
    async with serving(database_url, max_concurrent_hashes=1, hash_wait_seconds=30,
                       login_established_seconds=3600) as app:
        async with client(app, "192.0.2.77") as home:
            owner = await sign_up(GQL(home), password="the owner's password")
        engine = app.state.giftgraph.db().engine
        async with engine.begin() as conn:  # signed up two hours ago
            await conn.execute(text(
                "UPDATE users SET created_at = created_at - interval '2 hours' "
                "WHERE lower(email) = :email"), {"email": owner.email.lower()})
        new = []
        for n in range(1, 6):
            async with client(app, f"203.0.113.{n}") as http:
                new.append((f"203.0.113.{n}", await sign_up(
                    GQL(http), password=f"new password {n}")))

        async def login(ip: str, account: Account) -> Any:
            async with client(app, ip) as http:
                return await GQL(http)(LOGIN, {"email": account.email,
                                               "password": account.password})

        for _ in range(6):  # the owner's logins ahead, lately: heavy
            assert (await login("192.0.2.77", owner)).errors == []
        slots = app.state.giftgraph.throttle.hashing.slots
        assert slots.delay(str(decode_id(owner.user_id, "User")), "192.0.2.77",
                           time.monotonic()) > 0
        gate, checked = recorded_checks(monkeypatch)
        logins = [asyncio.create_task(login(ip, account)) for ip, account in new]
        await queued(slots.waiting[0], 4)  # one holds the thread, four wait
        mine = asyncio.create_task(login("192.0.2.77", owner))
        await queued(slots.waiting[0], 5)
        gate.set()
        assert (await mine).errors == []
        assert all(r.errors == [] for r in await asyncio.gather(*logins))
        assert checked.index("the owner's password") == 1, checked


async def test_an_account_that_logged_in_within_the_hour_queues_behind_an_idle_one_anywhere(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last login is kept in the database: a process that never saw the owner log in
    (another instance, a restart) still puts its next login behind that of an established
    account with no login within the hour, though the owner's came first."""
    async with serving(database_url) as first:
        accounts = {}
        for name, ip in (("owner", "192.0.2.77"), ("idle", "192.0.2.88"),
                         ("holder", "192.0.2.99")):
            async with client(first, ip) as http:
                accounts[name] = (ip, await sign_up(GQL(http), password=f"{name} password"))
        engine = first.state.giftgraph.db().engine
        async with engine.begin() as conn:  # all signed up two days ago
            await conn.execute(text(
                "UPDATE users SET created_at = created_at - interval '2 days' "
                "WHERE lower(email) = ANY(:emails)"),
                {"emails": [a.email.lower() for _, a in accounts.values()]})
        ip, owner = accounts["owner"]
        async with client(first, ip) as http:  # logged in, on the first instance
            assert (await GQL(http)(LOGIN, {"email": owner.email,
                                            "password": owner.password})).errors == []

    async with serving(database_url, max_concurrent_hashes=1, hash_wait_seconds=30) as app:
        async def login(name: str) -> Any:
            ip, account = accounts[name]
            async with client(app, ip) as http:
                return await GQL(http)(LOGIN, {"email": account.email,
                                               "password": account.password})

        gate, checked = recorded_checks(monkeypatch)
        known = app.state.giftgraph.throttle.hashing.slots.waiting[0]
        holder = asyncio.create_task(login("holder"))
        while not app.state.giftgraph.throttle.hashing.keys:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the holder's hash holds the one thread
        mine = asyncio.create_task(login("owner"))
        await queued(known, 1)
        idle = asyncio.create_task(login("idle"))
        await queued(known, 2)
        gate.set()
        assert all(r.errors == [] for r in await asyncio.gather(holder, mine, idle))
        assert checked == ["holder password", "idle password", "owner password"]


async def test_only_a_successful_login_stamps_the_accounts_last_login(database_url: str) -> None:
    """signUp, refreshToken and a wrong password leave `known_networks.login_at` as it
    was; a login stamps it."""
    async with serving(database_url) as app, client(app, "192.0.2.77") as home:
        owner = await sign_up(GQL(home))
        engine = app.state.giftgraph.db().engine
        user = decode_id(owner.user_id, "User")

        async def stamped() -> list[Any]:
            async with engine.connect() as conn:
                return list((await conn.execute(text(
                    "SELECT login_at FROM known_networks WHERE user_id = :u"),
                    {"u": user})).scalars())

        assert await stamped() == [None]
        wrong = await GQL(home)(LOGIN, {"email": owner.email, "password": "not it"})
        assert wrong.codes == ["UNAUTHENTICATED"]
        assert await stamped() == [None]
        assert (await GQL(home)(REFRESH, {"t": owner.refresh})).errors == []
        assert await stamped() == [None]
        mine = await GQL(home)(LOGIN, {"email": owner.email, "password": owner.password})
        assert mine.errors == []
        [at] = await stamped()
        assert at is not None


async def test_only_the_accounts_own_logins_ahead_weigh_on_it_by_its_id(
        database_url: str) -> None:
    """A wrong password from the owner's network (a known login) adds nothing to the
    account's weight; its own logins do, and still after it changes its email; they weigh
    on the network they came from too."""
    async with serving(database_url) as app, client(app, "192.0.2.77") as home:
        owner = await sign_up(GQL(home))
        slots = app.state.giftgraph.throttle.hashing.slots
        user = str(decode_id(owner.user_id, "User"))
        wrong = await GQL(home)(LOGIN, {"email": owner.email, "password": "not it at all"})
        assert wrong.codes == ["UNAUTHENTICATED"]
        assert slots.weight(user, time.monotonic()) == 0.0
        mine = {"email": owner.email, "password": owner.password}
        assert (await GQL(home)(LOGIN, mine)).errors == []
        assert slots.weight(user, time.monotonic()) == pytest.approx(1.0, abs=0.05)
        renamed = f"renamed-{owner.email}"
        changed = await owner.client(UPDATE_USER, {"id": owner.user_id,
                                                   "input": {"email": renamed}})
        assert changed.errors == []
        assert (await GQL(home)(LOGIN, {**mine, "email": renamed})).errors == []
        assert slots.weight(user, time.monotonic()) == pytest.approx(2.0, abs=0.05)
        # and the network's: two logins ahead from it
        assert slots.weight("192.0.2.77", time.monotonic(), slots.networks) \
            == pytest.approx(2.0, abs=0.05)


def device_id(token: str) -> bytes:
    """The device a device token names (after the user's id: giftgraph.auth)."""
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))[16:28]


DEVICE_LOGIN = """mutation($email: String!, $password: String!, $d: String) {
  login(email: $email, password: $password, deviceToken: $d) { accessToken deviceToken } }"""


async def test_a_login_with_its_device_token_goes_ahead_of_a_flood_from_any_network(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The account's login from a network it never used, with the device token of its
    earlier login, is checked next, ahead of twenty addresses' wrong passwords; the same
    email and password with another account's device token waits behind them."""
    gate = threading.Event()

    async with serving(database_url, max_concurrent_hashes=1, hash_wait_seconds=30) as app, \
            client(app, "192.0.2.77") as home, client(app, "192.0.2.88") as elsewhere:
        account = await sign_up(GQL(home))
        mallory = await sign_up(GQL(elsewhere))
        mine = {"email": account.email, "password": account.password}
        device = (await GQL(home)(DEVICE_LOGIN, mine)).data["login"]["deviceToken"]
        theirs = (await GQL(elsewhere)(DEVICE_LOGIN, {
            "email": mallory.email, "password": mallory.password}
        )).data["login"]["deviceToken"]
        monkeypatch.setattr(auth, "_verify", held_checks(gate))
        hashing = app.state.giftgraph.throttle.hashing
        others, known = hashing.slots.waiting[1], hashing.slots.waiting[0]
        done: list[str] = []

        async def login(name: str, ip: str, variables: dict[str, Any]) -> Any:
            async with client(app, ip) as http:
                answer = await GQL(http)(DEVICE_LOGIN, variables)
            done.append(name)
            return answer

        flood = [asyncio.create_task(login(f"flood{n}", f"203.0.113.{n}", {
            "email": f"x{n}@example.com", "password": "wrong"})) for n in range(1, 21)]
        await queued(others, 19)  # one holds the thread, 19 wait
        forged = asyncio.create_task(login("forged", "198.51.100.10", {**mine, "d": theirs}))
        await queued(others, 20)
        travelling = asyncio.create_task(login("travelling", "198.51.100.9",
                                               {**mine, "d": device}))
        await queued(known, 1)
        gate.set()
        answer = await travelling
        assert answer.errors == []
        assert len(done) <= 2  # ~0.2 s in: the flood's first and the account's own
        assert device_id(answer.data["login"]["deviceToken"]) == device_id(device)
        results = await asyncio.gather(forged, *flood)
        assert results[0].errors == []  # its password is right: it only waited
        assert all(r.codes == ["UNAUTHENTICATED"] for r in results[1:])
        assert done[-1] == "forged"


async def test_failures_from_a_network_the_owner_once_used_spend_that_networks_lane_only(
        database_url: str) -> None:
    """A stranger at a cafe where the owner once signed in fails with the owner's email:
    the failure goes ahead (a known network) and spends the cafe's lane, not the
    account's: the owner's next login from home still goes ahead; from the cafe it waits
    with the others."""
    async with serving(database_url, known_login_rate="1/hour") as app, \
            client(app, "192.0.2.77") as home, client(app, "198.51.100.9") as cafe:
        account = await sign_up(GQL(home))
        mine = {"email": account.email, "password": account.password}
        assert (await GQL(cafe)(LOGIN, mine)).errors == []  # the cafe is known from now on
        wrong = {"email": account.email, "password": "wrong"}
        assert (await GQL(cafe)(LOGIN, wrong)).codes == ["UNAUTHENTICATED"]
        assert (await GQL(home)(LOGIN, mine)).errors == []
        assert await refusals(home, "known_login_rate") == 0  # home's lane: untouched
        assert (await GQL(cafe)(LOGIN, mine)).errors == []
        assert await refusals(home, "known_login_rate") == 1  # the cafe's, spent


async def test_a_device_tokens_failures_spend_its_own_lane_not_the_accounts(
        database_url: str) -> None:
    """Whoever holds a copy of a device token (a shared computer) and fails with it spends
    that device's lane (`known_login_rate`), never the account's: the owner's logins from
    home still go ahead."""
    async with serving(database_url, known_login_rate="1/hour") as app, \
            client(app, "192.0.2.77") as home, client(app, "198.51.100.9") as away:
        account = await sign_up(GQL(home))
        mine = {"email": account.email, "password": account.password}
        device = (await GQL(home)(DEVICE_LOGIN, mine)).data["login"]["deviceToken"]
        wrong = {"email": account.email, "password": "wrong", "d": device}
        assert (await GQL(away)(DEVICE_LOGIN, wrong)).codes == ["UNAUTHENTICATED"]
        assert (await GQL(home)(DEVICE_LOGIN, mine)).errors == []  # ahead: nothing refused
        assert await refusals(home, "known_login_rate") == 0
        assert (await GQL(away)(DEVICE_LOGIN, wrong)).codes == ["UNAUTHENTICATED"]
        assert await refusals(home, "known_login_rate") == 1  # the device's lane, spent
        assert (await GQL(home)(DEVICE_LOGIN, mine)).errors == []
        assert await refusals(home, "known_login_rate") == 1
