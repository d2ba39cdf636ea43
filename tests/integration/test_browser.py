"""The built-in family app's overview and GraphiQL in a real headless Chromium (Debian's),
driven by Playwright while another client changes data."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_live import new_item, post, set_status, signup
from tests.support import free_port, service_env, start_service, stop, wait_healthy

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def _require_browser() -> None:
    try:
        import playwright
    except ImportError:
        playwright = None  # type: ignore[assignment]
    if CHROMIUM.exists() and playwright is not None:
        return
    if os.environ.get("GIFTGRAPH_REQUIRE_BROWSER") == "1":
        pytest.fail("CI needs Debian's chromium (/usr/bin/chromium) and playwright")
    pytest.skip("no /usr/bin/chromium (apt-get install chromium) or playwright")


class Service:
    """A uvicorn process on a fixed port that can be restarted (dropping every socket)."""

    def __init__(self, database_url: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = service_env(database_url)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_service(self.port, self.env)
        wait_healthy(self.base, self.proc, time.monotonic() + 30)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[Service]:
    _require_browser()
    svc = Service(database_url)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    _require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        # Every page's Content-Security-Policy violations (Chromium reports each on the
        # console; the event catches any it would not): none may happen (web/headers.py).
        violations: list[str] = []
        new_page = b.new_page

        async def watched_page(*args: Any, **kwargs: Any) -> Any:
            page = await new_page(*args, **kwargs)
            page.on("console", lambda m: violations.append(m.text)
                    if "Content Security Policy" in m.text else None)
            await page.add_init_script(
                "document.addEventListener('securitypolicyviolation', e => console.error("
                "'Content Security Policy violation: ' + e.violatedDirective + ' ' + "
                "e.blockedURI))")
            return page

        b.new_page = watched_page  # type: ignore[method-assign]
        try:
            yield b
        finally:
            await b.close()
        assert violations == []


async def test_dashboard_page_is_live_and_recovers(service: Service, browser: object) -> None:
    from playwright.async_api import Browser, expect

    assert isinstance(browser, Browser)
    base = service.base
    token = await asyncio.to_thread(signup, base, "page@example.com")
    _, item = await asyncio.to_thread(new_item, base, token)
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(base + "/")
    await page.fill("#email", "page@example.com")
    await page.fill("#password", "long password")
    await page.click("#login")
    await expect(page.locator("#status")).to_have_text("live", timeout=10_000)
    await expect(page.locator("#pipeline-idea")).to_have_text("1")

    # A change from another client shows up within a second.
    started = time.monotonic()
    await asyncio.to_thread(set_status, base, token, item, "SELECTED")
    await expect(page.locator("#pipeline-selected")).to_have_text("1", timeout=1_000)
    await expect(page.locator("#activity li").first).to_contain_text("D moved G to Selected",
                                                                     timeout=1_000)
    assert time.monotonic() - started < 1.5
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # The server drops every socket (a restart); the page shows it and recovers, and a
    # change made while it was reconnecting still appears (resumed with `since`).
    await asyncio.to_thread(service.stop)
    await expect(page.locator("#status")).not_to_have_text("live", timeout=5_000)
    await asyncio.to_thread(service.start)
    await asyncio.to_thread(set_status, base, token, item, "PURCHASED")
    await expect(page.locator("#status")).to_have_text("live", timeout=15_000)
    await expect(page.locator("#pipeline-purchased")).to_have_text("1", timeout=5_000)
    await expect(page.locator("#activity li").first).to_contain_text("D moved G to Purchased",
                                                                     timeout=5_000)
    seqs = await page.locator("#activity li").evaluate_all(
        "els => els.map(e => Number(e.dataset.seq))")
    assert len(seqs) == len(set(seqs)), seqs  # nothing shown twice
    await page.screenshot(path=str(ARTIFACTS / "dashboard-recovered.png"), full_page=True)
    me = await asyncio.to_thread(post, base, "{ me { email } }", None, token)
    assert me["data"]["me"]["email"] == "page@example.com"


async def test_graphiql_runs_a_query_offline(service: Service, browser: object) -> None:
    from playwright.async_api import Browser, expect

    assert isinstance(browser, Browser)
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith(service.base) else None)
    await page.goto(service.base + "/graphql")
    editor = page.locator(".graphiql-query-editor .CodeMirror").first
    await expect(editor).to_be_visible(timeout=10_000)
    await editor.evaluate("el => el.CodeMirror.setValue('{ __typename }')")
    deadline = time.monotonic() + 15
    # CodeMirror renders the result; its rendered text (not textContent) has the JSON.
    response = page.locator(".graphiql-response")
    clicked = 0.0
    while '"__typename":"Query"' not in "".join((await response.inner_text()).split()):
        assert time.monotonic() < deadline, ("GraphiQL showed no result",
                                             await response.inner_text())
        if time.monotonic() - clicked > 2:  # GraphiQL ignores a run while it is starting up
            await page.locator(".graphiql-execute-button").click()
            clicked = time.monotonic()
        await asyncio.sleep(0.2)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "graphiql.png"))
    # A dialog adds a <style> at run time: allowed by the page's nonce, as its own are.
    await page.get_by_role("button", name="Open settings dialog").click()
    await expect(page.get_by_role("dialog")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog")).to_have_count(0)
    assert await page.evaluate("window.__webpack_nonce__") not in (None, "")
    assert outside == []  # works with no internet: every asset is local


async def test_graphiql_is_usable_on_a_phone(service: Service, browser: object) -> None:
    """At 375 px the query editor and the result are each nearly the page's width (side by
    side the result was ~40 px wide and the editor ~230), nothing scrolls sideways, a
    query's result shows, and the docs take the width while they are open."""
    from playwright.async_api import Browser, expect

    assert isinstance(browser, Browser)
    page = await browser.new_page(viewport={"width": 375, "height": 812})
    await page.goto(service.base + "/graphql")
    editor = page.locator(".graphiql-query-editor .CodeMirror").first
    await expect(editor).to_be_visible(timeout=10_000)
    await editor.evaluate("el => el.CodeMirror.setValue('{ __typename }')")
    response = page.locator(".graphiql-response")
    deadline = time.monotonic() + 15
    clicked = 0.0
    while '"__typename":"Query"' not in "".join((await response.inner_text()).split()):
        assert time.monotonic() < deadline, "GraphiQL showed no result"
        if time.monotonic() - clicked > 2:  # GraphiQL ignores a run while it is starting up
            await page.locator(".graphiql-execute-button").click()
            clicked = time.monotonic()
        await asyncio.sleep(0.2)

    async def box(selector: str) -> dict[str, float]:
        found = await page.locator(selector).first.bounding_box()
        assert found is not None, selector
        return found  # type: ignore[no-any-return]

    for selector in (".graphiql-query-editor", ".graphiql-response"):
        b = await box(selector)
        assert b["width"] >= 280, (selector, b)
        assert b["height"] >= 150, (selector, b)
        assert 0 <= b["x"] <= 375 - b["width"], (selector, b)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375
    await page.get_by_role("button", name="Show Documentation Explorer").click()
    docs = await box(".graphiql-plugin")
    assert docs["width"] >= 280, docs
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375
    await page.get_by_role("button", name="Hide Documentation Explorer").click()
    assert (await box(".graphiql-query-editor"))["width"] >= 280
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "graphiql-phone.png"))


async def test_graphiql_keeps_a_live_query_current(service: Service, browser: object) -> None:
    """GraphiQL (its graphql-ws client, the Authorization header from its Headers editor)
    runs `subscription { live { ... } }`: the result at once, then the new result when
    another client changes what it reads."""
    from playwright.async_api import Browser

    assert isinstance(browser, Browser)
    base = service.base
    token = await asyncio.to_thread(signup, base, "graphiql-live@example.com")
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await page.goto(base + "/graphql")
    editor = page.locator(".graphiql-query-editor .CodeMirror").first
    await editor.wait_for(timeout=10_000)
    headers = page.locator(".graphiql-editor-tool .CodeMirror >> visible=true").first
    await headers.evaluate("(el, value) => el.CodeMirror.setValue(value)",
                           f'{{"Authorization": "Bearer {token}"}}')
    await editor.evaluate("el => el.CodeMirror.setValue('subscription { live { persons(first:"
                          " 5) { totalCount edges { node { name } } } } }')")
    response = page.locator(".graphiql-response")

    async def shown(text: str, seconds: float, click: bool) -> None:
        deadline, clicked = time.monotonic() + seconds, 0.0
        while text not in "".join((await response.inner_text()).split()):
            assert time.monotonic() < deadline, (text, await response.inner_text())
            if click and time.monotonic() - clicked > 2:  # ignored while it starts up
                await page.locator(".graphiql-execute-button").click()
                clicked = time.monotonic()
            await asyncio.sleep(0.1)

    await shown('"totalCount":0', 15, click=True)
    await asyncio.to_thread(post, base, 'mutation { createPerson(input: {name: "Grandma"}) '
                            '{ id } }', None, token)
    await shown('"totalCount":1', 5, click=False)
    await shown('"name":"Grandma"', 1, click=False)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "graphiql-live.png"))


async def test_graphiql_says_what_a_refused_socket_needs(service: Service,
                                                         browser: object) -> None:
    """A subscription without a token (the server closes the socket 4403): GraphiQL's
    result pane says to log in and set the Authorization header, not a JavaScript stack."""
    from playwright.async_api import Browser

    assert isinstance(browser, Browser)
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await page.goto(service.base + "/graphql")
    editor = page.locator(".graphiql-query-editor .CodeMirror").first
    await editor.wait_for(timeout=10_000)
    await editor.evaluate("el => el.CodeMirror.setValue('subscription { familyEvents { seq } }')")
    response = page.locator(".graphiql-response")
    deadline, clicked = time.monotonic() + 15, 0.0
    while "closeCode" not in (text := await response.inner_text()):
        assert time.monotonic() < deadline, ("GraphiQL showed no close", text)
        if time.monotonic() - clicked > 2:  # GraphiQL ignores a run while it is starting up
            await page.locator(".graphiql-execute-button").click()
            clicked = time.monotonic()
        await asyncio.sleep(0.1)
    flat = " ".join(text.split())
    assert "Subscriptions need an access token: run Login" in flat, flat
    assert '"closeCode": 4403' in flat, flat
    assert "stack" not in flat, flat
    assert "graphiql.min.js" not in flat, flat


async def test_dashboard_page_refetches_when_its_since_is_refused(database_url: str,
                                                                   browser: object) -> None:
    """Back from a drop with more changes missed than the server replays, the page is told
    to refetch: it takes a fresh snapshot and follows the events from now on."""
    from playwright.async_api import Browser, expect

    assert isinstance(browser, Browser)
    service = Service(database_url)
    service.env["GIFTGRAPH_MAX_REPLAY_EVENTS"] = "1"
    await asyncio.to_thread(service.start)
    try:
        base = service.base
        token = await asyncio.to_thread(signup, base, "refetch@example.com")
        _, item = await asyncio.to_thread(new_item, base, token)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(base + "/")
        await page.fill("#email", "refetch@example.com")
        await page.fill("#password", "long password")
        await page.click("#login")
        await expect(page.locator("#status")).to_have_text("live", timeout=10_000)
        await asyncio.to_thread(set_status, base, token, item, "SELECTED")
        await expect(page.locator("#activity li").first).to_contain_text("to Selected",
                                                                         timeout=5_000)

        await asyncio.to_thread(service.stop)
        await expect(page.locator("#status")).not_to_have_text("live", timeout=5_000)
        other = Service(database_url)  # changes made through another instance meanwhile
        await asyncio.to_thread(other.start)
        try:
            for status in ("PURCHASED", "RECEIVED", "PURCHASED"):  # 3 missed: more than 1
                await asyncio.to_thread(set_status, other.base, token, item, status)
        finally:
            await asyncio.to_thread(other.stop)
        await asyncio.to_thread(service.start)
        await expect(page.locator("#status")).to_have_text("live", timeout=15_000)
        await expect(page.locator("#pipeline-purchased")).to_have_text("1", timeout=5_000)
        await expect(page.locator("#activity li").first).to_contain_text("to Purchased",
                                                                         timeout=5_000)
        # And live again afterwards.
        await asyncio.to_thread(set_status, base, token, item, "RECEIVED")
        await expect(page.locator("#activity li").first).to_contain_text("to Received",
                                                                         timeout=5_000)
        seqs = await page.locator("#activity li").evaluate_all(
            "els => els.map(e => Number(e.dataset.seq))")
        assert len(seqs) == len(set(seqs)), seqs
    finally:
        await asyncio.to_thread(service.stop)
