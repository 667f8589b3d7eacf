"""The dashboard's login, sessions and pages over HTTP (no browser): what is refused (no session, a
forged or cross-site POST, a wrong token, a used one-time code), what the cookie and the store
hold, the security headers, the error pages; and the matrix page's filters and paging (pure)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from migration_guard.store.redis_store import Store
from migration_guard.web.matrix_view import parse_query, view
from migration_guard.web.session import Sessions
from tests.support.redis_server import redis_url
from tests.web.conftest import WEB_DB, Stack

PAGES = [
    "/",
    "/ui/matrix",
    "/ui/cluster",
    "/ui/vetoes",
    "/ui/nodes/pve-epyc1",
    "/ui/why?vmid=101&target=pve-atom1",
]
TEMPLATES = Path(__file__).resolve().parents[2] / "shared" / "migration_guard" / "web" / "templates"


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        yield c


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def login(client: httpx.Client, token: str) -> httpx.Response:
    form = client.get("/ui/login")
    return client.post("/ui/login", data={"csrf": csrf_of(form), "token": token})


def in_store(coro_fn):
    """Run ``coro_fn(store)`` against the test Redis database the stack's sessions live in."""

    async def run():
        store = Store(aioredis.from_url(redis_url(WEB_DB), decode_responses=True))
        try:
            return await coro_fn(store)
        finally:
            await store.close()

    return asyncio.run(run())


def test_every_page_without_a_session_sends_the_browser_to_the_login_form(client) -> None:
    for path in PAGES:
        answer = client.get(path)
        assert (answer.status_code, answer.headers["location"]) == (303, "/ui/login"), path


def test_the_login_cookie_and_what_the_store_keeps(client, stack) -> None:
    answer = login(client, stack.token)
    assert (answer.status_code, answer.headers["location"]) == (303, "/ui/matrix")
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("mg_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Max-Age=28800" in cookie  # MIGRATION_GUARD_WEB_SESSION_TTL_S's default
    session_id = client.cookies["mg_session"]
    assert stack.token not in session_id
    store = redis.Redis.from_url(redis_url(WEB_DB), decode_responses=True)
    key = "migration-guard:web:session:" + hashlib.sha256(session_id.encode()).hexdigest()
    assert 28700 < store.ttl(key) <= 28800
    for name in store.scan_iter("migration-guard:web:*"):
        value = store.get(name) or ""
        assert session_id not in name + value and stack.token not in name + value
    page = client.get("/ui/matrix")
    assert page.status_code == 200 and "build01" in page.text
    assert "script-src 'self';" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"


def test_a_login_post_is_refused_without_its_csrf_token_from_another_site_or_with_a_wrong_token(
    client, stack
) -> None:
    # each refused form answers a new form with a new CSRF token (and its cookie)
    no_csrf = client.post("/ui/login", data={"token": stack.token})
    cross_site = client.post(
        "/ui/login",
        data={"csrf": csrf_of(no_csrf), "token": stack.token},
        headers={"Origin": "https://evil.example"},
    )
    wrong = client.post("/ui/login", data={"csrf": csrf_of(cross_site), "token": "not-the-token"})
    assert (no_csrf.status_code, cross_site.status_code, wrong.status_code) == (403, 403, 401)
    assert "is not one of the service&#39;s MIGRATION_GUARD_API_TOKENS" in wrong.text
    assert "mg_session" not in client.cookies
    assert client.get("/ui/matrix").status_code == 303


def test_sign_out_needs_the_sessions_csrf_token_and_ends_the_session(client, stack) -> None:
    login(client, stack.token)
    page = client.get("/ui/matrix")
    forged = client.post("/ui/logout", data={"csrf": "guessed"})
    assert forged.status_code == 403 and client.get("/ui/matrix").status_code == 200
    session_id = client.cookies["mg_session"]
    out = client.post("/ui/logout", data={"csrf": csrf_of(page)})
    assert (out.status_code, out.headers["location"]) == (303, "/ui/login")
    replayed = httpx.get(stack.url + "/ui/matrix", cookies={"mg_session": session_id})
    assert replayed.status_code == 303, "a signed-out session id opens nothing"


def test_a_one_time_code_signs_in_once_and_a_revoked_token_ends_its_sessions(client, stack) -> None:
    code = in_store(lambda store: Sessions(store, (stack.token,), 60).new_code(stack.token))
    first = client.post(
        "/ui/login/once", data={"csrf": csrf_of(client.get(f"/ui/login/once?code={code}")), "code": code}
    )
    assert (first.status_code, first.headers["location"]) == (303, "/ui/matrix")
    session_id = client.cookies["mg_session"]
    client.cookies.clear()
    again = client.post("/ui/login/once", data={"csrf": csrf_of(client.get("/ui/login")), "code": code})
    assert again.status_code == 401 and "used already or has expired" in again.text
    # the same store, read by a service whose tokens no longer include this one
    gone = in_store(lambda store: Sessions(store, ("another-token",), 60).get(session_id))
    kept = in_store(lambda store: Sessions(store, (stack.token,), 60).get(session_id))
    assert gone is None and kept is None, "a revoked token's session is deleted at its first use"


def test_the_error_pages_carry_the_operators_message(client, stack) -> None:
    login(client, stack.token)
    bad = client.get("/ui/why?vmid=0101&target=pve-atom1")
    unknown_vm = client.get("/ui/why?vmid=999&target=pve-atom1")
    unknown_node = client.get("/ui/nodes/pve-nope")
    assert (bad.status_code, unknown_vm.status_code, unknown_node.status_code) == (422, 404, 404)
    assert "unknown-vm" in unknown_vm.text and "pve-epyc1" in unknown_node.text
    assert "Traceback" not in bad.text + unknown_vm.text + unknown_node.text


def test_the_docs_page_allows_its_one_inline_script_by_hash(client) -> None:
    page = client.get("/docs")
    policy = page.headers["content-security-policy"]
    assert re.search(r"script-src 'self' 'sha256-[A-Za-z0-9+/=]+';", policy)
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert "/ui/" not in str(client.get("/openapi.json").json()["paths"])


def test_the_templates_have_no_inline_script_or_event_handler() -> None:
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert not re.search(r"<[a-z][^>]*\son[a-z]+\s*=", text), template.name
        assert "|safe" not in text.replace(" ", "") and "autoescape false" not in text, template.name


# --- the matrix page's filters and paging (pure) -------------------------------------------------


def _matrix(n: int) -> dict:
    nodes = ["a", "b", "c"]
    rows = []
    for i in range(n):
        on = nodes[i % 3]
        verdicts = ["deny" if (i + j) % 4 == 0 else "allow" for j in range(3)]
        targets = {
            t: {"verdict": v, "code": "missing-flags" if v == "deny" else "", "exit": 2 if v == "deny" else 0}
            for t, v in zip(nodes, verdicts, strict=True)
            if t != on
        }
        rows.append(
            {
                "vmid": 100 + i,
                "name": f"vm{i}",
                "node": on,
                "status": "running",
                "cpu": "x86-64-v3",
                "tags": ["even"] if i % 2 == 0 else [],
                "targets": targets,
            }
        )
    return {"cluster": "c", "nodes": nodes, "vms": rows, "note": "", "checked_at": ""}


def test_paging_keeps_within_the_pages_and_ignores_values_that_are_no_choice() -> None:
    matrix = _matrix(130)
    q = parse_query({"page": "9", "per_page": "50", "verdict": "maybe", "sort": "random"})
    shown = view(matrix, q)
    assert (shown["page"], shown["pages"], shown["total"]) == (3, 3, 130)
    assert [r["vmid"] for r in shown["rows"]] == list(range(200, 230))
    assert (q.verdict, q.sort) == ("", "vmid")
    assert view(matrix, parse_query({"per_page": "7"}))["pages"] == 3  # 7 is no choice: 50 a page
    tagged = view(matrix, parse_query({"tag": "even", "per_page": "200"}))
    assert tagged["total"] == 65 and all("even" in r["tags"] for r in tagged["rows"])


def test_most_blocked_first() -> None:
    matrix = _matrix(40)
    rows = view(matrix, parse_query({"sort": "blocked"}))["rows"]
    counts = [r["blocked"] for r in rows]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    first_max = [r["vmid"] for r in rows if r["blocked"] == counts[0]]
    assert first_max == sorted(first_max), "ties keep the VM id order"


def test_with_redis_down_signing_in_says_why_and_no_page_opens() -> None:
    from migration_guard.api.app import create_app
    from migration_guard.demo.stack import start_demo
    from migration_guard.service.guard import build_service
    from tests.support.redis_server import free_port
    from tests.support.service_stack import serving

    demo = start_demo(None, redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        app = create_app(build_service(demo.settings), demo.settings.bearer_tokens())
        with serving(app) as url, httpx.Client(base_url=url, timeout=30) as c:
            answer = c.post("/ui/login", data={"csrf": csrf_of(c.get("/ui/login")), "token": demo.token})
            assert answer.status_code == 503 and "Redis is down" in answer.text
            assert "mg_session" not in c.cookies
            c.cookies.set("mg_session", "x" * 43)
            page = c.get("/ui/matrix")
            assert page.status_code == 503 and "Redis is down" in page.text
    finally:
        demo.stop()


def test_a_cells_why_without_javascript_is_a_page_and_with_it_a_fragment(client, stack) -> None:
    login(client, stack.token)
    check = stack.api("/v1/vms/104/check?target=pve-atom1")
    whole = client.get("/ui/why?vmid=104&target=pve-atom1")
    fragment = client.get("/ui/why?vmid=104&target=pve-atom1", headers={"X-Fragment": "1"})
    assert whole.status_code == fragment.status_code == 200
    assert "<html" in whole.text and "<html" not in fragment.text
    for answer in (whole, fragment):
        assert check["reasons"][0]["message"] in answer.text
        assert f"Suggested CPU type: <strong>{check['suggestion']}</strong>" in answer.text
