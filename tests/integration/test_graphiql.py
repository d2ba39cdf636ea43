"""The browser pages work offline: GraphiQL (GET /graphql as HTML) and the dashboard (GET /)
load only vendored assets served from /static, never a CDN."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

import giftgraph

WEB = Path(giftgraph.__file__).resolve().parent / "web"
STATIC = WEB / "static"
VENDOR = STATIC / "vendor"

# file -> (npm package, version, a string the file must contain)
VENDORED = {
    "react.production.min.js": ("react", "18.3.1", "18.3.1"),
    "react-dom.production.min.js": ("react-dom", "18.3.1", "18.3.1"),
    "graphiql.min.js": ("graphiql", "3.9.0", ".GraphiQL="),
    "graphiql.min.css": ("graphiql", "3.9.0", ".graphiql-container"),
    "graphql-ws.min.js": ("graphql-ws", "6.4.2", ".graphqlWs={}"),
}
LICENSES = ("react", "react-dom", "graphiql", "graphql-ws")
CDN_HOSTS = ("unpkg", "jsdelivr", "cdnjs", "esm.sh", "skypack", "googleapis", "gstatic")
JS_TYPES = ("text/javascript", "application/javascript")


class Assets(HTMLParser):
    """Every <script src> and <link href> in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script" and values.get("src"):
            self.scripts.append(values["src"] or "")
        elif tag == "link" and values.get("href"):
            self.links.append(values["href"] or "")


def assets(html: str) -> Assets:
    parser = Assets()
    parser.feed(html)
    return parser


def media_type(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0].strip()


async def assert_served_locally(http: httpx.AsyncClient, page: Assets) -> None:
    for url in [*page.scripts, *page.links]:
        assert url.startswith("/static/"), f"{url} is not a local /static asset"
        r = await http.get(url)
        assert r.status_code == 200, url
        assert r.content, url
        if url.endswith(".js"):
            assert media_type(r) in JS_TYPES, (url, r.headers["content-type"])
        elif url.endswith(".css"):
            assert media_type(r) == "text/css", (url, r.headers["content-type"])


async def graphiql_page(http: httpx.AsyncClient) -> str:
    r = await http.get("/graphql", headers={"Accept": "text/html"})
    assert r.status_code == 200
    assert media_type(r) == "text/html"
    return r.text


def without_nonce(html: str) -> str:
    """The page as the package has it: each response's CSP nonce put back as its mark."""
    return re.sub(r'nonce="[A-Za-z0-9_-]{22}"', 'nonce="{{csp-nonce}}"', html)


async def test_graphiql_page_is_served_from_the_package(http: httpx.AsyncClient) -> None:
    html = await graphiql_page(http)
    assert without_nonce(html) == (WEB / "graphiql.html").read_text(encoding="utf-8")
    # What browsers send (chromium's Accept header) gets the page too.
    r = await http.get("/graphql", headers={
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"})
    assert r.status_code == 200
    assert without_nonce(r.text) == without_nonce(html)


def policy(response: httpx.Response) -> dict[str, list[str]]:
    """A response's Content-Security-Policy, by directive."""
    directives = (d.split() for d in response.headers["content-security-policy"].split(";"))
    return {d[0]: d[1:] for d in directives if d}


def assert_browser_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    csp = policy(response)
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["object-src"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert csp["default-src"] == ["'self'"]
    for directive in ("script-src", "style-src"):
        assert not {"'unsafe-inline'", "'unsafe-eval'", "*"} & set(csp[directive])


async def test_the_pages_and_answers_carry_browser_security_headers(
        http: httpx.AsyncClient) -> None:
    """GraphiQL's page allows its inline script and style by a nonce of its own response,
    fresh each time, that its inline elements carry, and nothing inline else; the family
    app's page allows no inline script or style at all; JSON answers and static files
    get nosniff and the rest too."""
    pages = [await http.get("/graphql", headers={"Accept": "text/html"}) for _ in range(2)]
    nonces = []
    for page in pages:
        assert_browser_headers(page)
        csp = policy(page)
        (nonce,) = {v for v in csp["script-src"] if v.startswith("'nonce-")}
        assert csp["script-src"] == ["'self'", nonce]
        assert csp["style-src"] == ["'self'", nonce]
        value = nonce[len("'nonce-"):-1]
        inline = [(tag, attrs) for tag, attrs in re.findall(r"<(script|style)([^>]*)>",
                                                             page.text)
                  if "src=" not in attrs]
        assert [tag for tag, _ in inline] == ["style", "script"]
        assert all(attrs == f' nonce="{value}"' for _, attrs in inline)
        nonces.append(value)
    assert nonces[0] != nonces[1]
    app = await http.get("/")
    assert_browser_headers(app)
    assert policy(app)["script-src"] == ["'self'"]
    assert policy(app)["style-src"] == ["'self'"]
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", app.text)
    assert " style=" not in app.text
    for answer in (await http.post("/graphql", json={"query": "{ __typename }"}),
                   await http.get("/static/app/main.js"),
                   await http.get("/health")):
        assert answer.status_code == 200
        assert_browser_headers(answer)


async def test_graphiql_loads_only_local_assets(http: httpx.AsyncClient) -> None:
    html = await graphiql_page(http)
    page = assets(html)
    assert page.scripts == [
        "/static/vendor/react.production.min.js",
        "/static/vendor/react-dom.production.min.js",
        "/static/vendor/graphiql.min.js",
        "/static/vendor/graphql-ws.min.js",
    ]
    assert page.links == ["/static/vendor/graphiql.min.css"]
    await assert_served_locally(http, page)
    assert not re.search(r"https?://", html), "the page must not reference any external URL"
    assert not re.search(r"(?<![\w/])//[a-z0-9-]+\.[a-z]", html, re.IGNORECASE), \
        "no protocol-relative URLs"
    for host in CDN_HOSTS:
        assert host not in html.lower()
    assert "@import" not in html
    assert "url(" not in html


async def test_graphiql_subscriptions_use_graphql_ws_with_the_authorization_header(
        http: httpx.AsyncClient) -> None:
    html = await graphiql_page(http)
    assert "GraphiQL.createFetcher(" in html
    assert "graphqlWs.createClient(" in html
    assert "subscriptionUrl" in html
    assert "wss://" in html
    # The Headers editor's Authorization goes into connection_init as connectionParams.
    assert "connectionParams" in html
    assert "{ authorization: authorization }" in html
    assert "How authentication works" in html


async def test_vendored_assets_are_served_unmodified(http: httpx.AsyncClient) -> None:
    for name, (_, _, marker) in VENDORED.items():
        r = await http.get(f"/static/vendor/{name}")
        assert r.status_code == 200, name
        assert r.content == (VENDOR / name).read_bytes()
        assert marker in r.text, name
    total = sum(f.stat().st_size for f in VENDOR.iterdir() if f.is_file())
    assert total < 3 * 1024 * 1024, f"vendor/ is {total} bytes"


async def test_static_files_stay_inside_the_static_directory(http: httpx.AsyncClient) -> None:
    assert (await http.get("/static/vendor/missing.js")).status_code == 404
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py"):
        r = await http.get(path)
        assert r.status_code == 404, path
        assert "create_app" not in r.text


async def test_dashboard_is_served_at_the_root(http: httpx.AsyncClient) -> None:
    page = STATIC / "dashboard.html"
    r = await http.get("/")
    if not page.is_file():
        assert r.status_code == 404
        return
    assert r.status_code == 200
    assert media_type(r) == "text/html"
    assert r.content == page.read_bytes()
    html = r.text
    await assert_served_locally(http, assets(html))
    for host in CDN_HOSTS:
        assert host not in html.lower()
    # The app's modules (imported by main.js, not named in the page) are local too.
    for name in sorted(p.name for p in (STATIC / "app").glob("*.js")):
        r = await http.get(f"/static/app/{name}")
        assert r.status_code == 200, name
        assert media_type(r) in JS_TYPES, name
        imports = re.findall(r"""from '([^']+)'""", r.text)
        assert all(i.startswith("./") for i in imports), (name, imports)


async def test_favicon_is_served(http: httpx.AsyncClient) -> None:
    r = await http.get("/favicon.ico")
    assert r.status_code == 200
    assert media_type(r) == "image/svg+xml"
    assert r.content.startswith(b"<svg")


def test_vendor_readme_lists_every_file_with_its_package_and_version() -> None:
    readme = (VENDOR / "README.md").read_text(encoding="utf-8")
    for name, (package, version, _) in VENDORED.items():
        assert (VENDOR / name).is_file(), name
        rows = [line for line in readme.splitlines() if f"`{name}`" in line]
        assert rows, f"README.md does not list {name}"
        assert any(f"{package}@{version}" in row for row in rows), (name, rows)
    assert "## Refreshing" in readme
    assert "npm install" in readme


@pytest.mark.parametrize("package", LICENSES)
def test_each_vendored_package_has_its_license(package: str) -> None:
    text = (VENDOR / f"LICENSE.{package}.txt").read_text(encoding="utf-8")
    assert "MIT License" in text
    assert "Permission is hereby granted" in text
