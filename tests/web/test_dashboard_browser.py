"""The dashboard in a real browser (headless Chromium): login, the matrix against the JSON API's own
answers, a blocked cell's why, the filters, a hostile VM name, a 390 px wide screen, the one-time
login link of ``serve --demo``, the API docs without internet; no token in any URL the browser asks."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.web.conftest import ARTIFACTS, Stack, demo_scenario, requested_urls, running_stack

By: Any = None
WebDriverWait: Any = None
EC: Any = None
HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_TAG = "<b>bold</b>"


@pytest.fixture(autouse=True)
def _selenium_names(browser: Any) -> None:
    global By, WebDriverWait, EC
    from selenium.webdriver.common.by import By as by
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait as wait

    By, WebDriverWait, EC = by, wait, ec


def sign_in(driver: Any, stack: Stack) -> None:
    driver.delete_all_cookies()
    driver.get(stack.url + "/ui/matrix")
    assert driver.current_url.endswith("/ui/login"), "a page without a session shows the login form"
    driver.find_element(By.ID, "token").send_keys(stack.token)
    driver.find_element(By.ID, "sign-in").click()
    WebDriverWait(driver, 20).until(EC.presence_of_element_located((By.ID, "matrix")))


def cells_of(driver: Any) -> dict[int, dict[str, tuple[str, str]]]:
    """The matrix page's rows: vmid -> target -> (verdict, code), read in one script."""
    rows = driver.execute_script(
        """return Array.from(document.querySelectorAll('#matrix tbody tr')).map(tr => [
             tr.dataset.vmid,
             Array.from(tr.querySelectorAll('td.cell')).map(td =>
               [td.dataset.target, td.dataset.verdict, td.dataset.code || ''])])"""
    )
    return {int(v): {t: (verdict, code) for t, verdict, code in cells} for v, cells in rows}


def expected_cells(matrix: dict, rows: list[dict] | None = None) -> dict[int, dict[str, tuple[str, str]]]:
    out = {}
    for row in rows if rows is not None else matrix["vms"]:
        cells = {n: ("self", "") for n in matrix["nodes"] if n == row["node"]}
        cells.update({n: (c["verdict"], c["code"]) for n, c in row["targets"].items()})
        out[row["vmid"]] = cells
    return out


def assert_no_token_in_urls(driver: Any, token: str) -> list[str]:
    urls = requested_urls(driver)
    assert urls, "the browser's requests were not logged"
    assert not [u for u in urls if token in u], "a URL carried the API token"
    return urls


def test_login_then_the_matrix_shows_every_vm_and_node_as_the_json_api_answers(browser, stack) -> None:
    sign_in(browser, stack)
    matrix = stack.api("/v1/matrix")
    scenario = demo_scenario()
    assert len(matrix["vms"]) == len(scenario["vms"]) and len(matrix["nodes"]) == len(scenario["nodes"])
    assert cells_of(browser) == expected_cells(matrix)
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#matrix thead th.node")]
    assert headers == matrix["nodes"]
    cookie = browser.get_cookie("mg_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert stack.token not in cookie["value"]
    browser.save_screenshot(str(ARTIFACTS / "matrix.png"))
    assert_no_token_in_urls(browser, stack.token)


def test_a_blocked_cell_shows_its_reason_and_the_suggested_cpu_type(browser, stack) -> None:
    sign_in(browser, stack)
    matrix = stack.api("/v1/matrix")
    vmid, target = next(
        (r["vmid"], n) for r in matrix["vms"] for n, c in r["targets"].items() if c["verdict"] == "deny"
    )
    check = stack.api(f"/v1/vms/{vmid}/check?target={target}")
    cell = browser.find_element(By.CSS_SELECTOR, f'tr[data-vmid="{vmid}"] td[data-target="{target}"]')
    assert cell.text == f"NO {check['reasons'][0]['code']}"
    cell.find_element(By.TAG_NAME, "a").click()
    panel = WebDriverWait(browser, 20).until(
        EC.visibility_of_element_located((By.CSS_SELECTOR, "#why .line"))
    )
    assert panel.text == check["reasons"][0]["message"]
    suggestion = browser.find_element(By.CSS_SELECTOR, "#why .suggestion").text
    assert suggestion == f"Suggested CPU type: {check['suggestion']}"
    assert browser.current_url.endswith("/ui/matrix"), "the why opened in the panel, not a new page"
    browser.save_screenshot(str(ARTIFACTS / "matrix-why.png"))


def choose(driver: Any, field: str, value: str) -> None:
    """Pick a filter's value: the page reloads with it (the filters apply on change)."""
    from selenium.webdriver.support.ui import Select

    old = driver.find_element(By.ID, "matrix")
    Select(driver.find_element(By.ID, f"filter-{field}")).select_by_value(value)
    WebDriverWait(driver, 20).until(EC.staleness_of(old))
    WebDriverWait(driver, 20).until(EC.presence_of_element_located((By.ID, "matrix")))


def test_the_filters_and_the_most_blocked_order(browser, stack) -> None:
    sign_in(browser, stack)
    matrix = stack.api("/v1/matrix")
    rows = matrix["vms"]

    choose(browser, "verdict", "deny")
    kept = [r for r in rows if any(c["verdict"] == "deny" for c in r["targets"].values())]
    assert 0 < len(kept) < len(rows)
    assert cells_of(browser) == expected_cells(matrix, kept)

    browser.get(stack.url + "/ui/matrix")
    node = rows[0]["node"]
    choose(browser, "node", node)
    assert set(cells_of(browser)) == {r["vmid"] for r in rows if r["node"] == node}

    browser.get(stack.url + "/ui/matrix")
    tag = rows[0]["tags"][0]
    choose(browser, "tag", tag)
    assert set(cells_of(browser)) == {r["vmid"] for r in rows if tag in r["tags"]}

    browser.get(stack.url + "/ui/matrix")
    cpu = rows[-1]["cpu"]
    choose(browser, "cpu", cpu)
    assert set(cells_of(browser)) == {r["vmid"] for r in rows if r["cpu"] == cpu}

    browser.get(stack.url + "/ui/matrix")
    choose(browser, "sort", "blocked")
    shown = list(cells_of(browser))
    denied = {r["vmid"]: sum(c["verdict"] == "deny" for c in r["targets"].values()) for r in rows}
    assert [denied[v] for v in shown] == sorted(denied.values(), reverse=True)
    assert_no_token_in_urls(browser, stack.token)


def test_the_cluster_vetoes_and_node_pages_show_the_apis_answers(browser, stack) -> None:
    sign_in(browser, stack)
    decided = httpx.post(
        stack.url + "/v1/decisions",
        json={"vmid": 105, "target": "pve-xeon-csl"},
        headers={"Authorization": f"Bearer {stack.token}"},
    ).json()
    browser.get(stack.url + "/ui/cluster")
    rec = stack.api("/v1/cluster/recommendation")
    assert browser.find_element(By.ID, "recommended").text == rec["recommended"]
    view = stack.api("/v1/cluster")
    for node in view["nodes"]:
        row = browser.find_element(By.CSS_SELECTOR, f'#nodes tr[data-node="{node["name"]}"]')
        assert node["cpu_model"] in row.text and node["flag_source"] in row.text
        assert (node["qemu_version"] or "?") in row.text

    browser.get(stack.url + "/ui/vetoes")
    first = browser.find_element(By.CSS_SELECTOR, "#vetoes tbody tr")
    assert first.get_attribute("data-id") == decided["decision_id"]
    assert first.find_element(By.CSS_SELECTOR, "td.line").text == decided["line"]

    # an override asked by one person, approved by another, spent by the next decision
    auth = {"Authorization": f"Bearer {stack.token}"}
    asked = httpx.post(
        stack.url + "/v1/overrides",
        json={
            "vmid": 105,
            "target": "pve-xeon-csl",
            "reason": "guest never uses TSX",
            "requested_by": "alice",
        },
        headers=auth,
    ).json()
    approved = httpx.post(
        stack.url + f"/v1/overrides/{asked['id']}/approve", json={"approved_by": "bob"}, headers=auth
    )
    assert approved.status_code == 200, approved.text
    let_through = httpx.post(
        stack.url + "/v1/decisions", json={"vmid": 105, "target": "pve-xeon-csl"}, headers=auth
    ).json()
    assert let_through["verdict"] == "allow" and let_through["override"]["approved_by"] == "bob"
    browser.get(stack.url + "/ui/vetoes")
    first = browser.find_element(By.CSS_SELECTOR, "#vetoes tbody tr")
    assert first.get_attribute("data-id") == let_through["decision_id"]
    assert first.find_element(By.CSS_SELECTOR, "td.override").text == (
        f"{asked['id']}: requested by alice, approved by bob: guest never uses TSX"
    )

    custom = stack.api("/v1/cluster/custom-model")
    browser.get(stack.url + "/ui/cluster")
    assert browser.find_element(By.ID, "custom-name").text == f"custom-{custom['name']}"
    assert custom["reported_model"] in browser.find_element(By.ID, "custom-model").text
    browser.save_screenshot(str(ARTIFACTS / "cluster.png"))

    # the node with the most VMs: its evacuation pre-flight as GET /v1/nodes/{node}/evacuation answers
    matrix = stack.api("/v1/matrix")
    name = max(matrix["nodes"], key=lambda n: sum(r["node"] == n for r in matrix["vms"]))
    node = next(n for n in view["nodes"] if n["name"] == name)
    browser.find_element(By.LINK_TEXT, name).click()
    facts = WebDriverWait(browser, 20).until(EC.presence_of_element_located((By.ID, "node-facts")))
    assert node["cpu_model"] in facts.text
    evacuation = stack.api(f"/v1/nodes/{name}/evacuation")
    summary = browser.find_element(By.ID, "evacuation-summary").text
    assert f"{evacuation['summary']['vms']} VMs: {evacuation['summary']['movable']} can move" in summary
    shown = {
        int(tr.get_attribute("data-vmid")): {
            td.get_attribute("data-target"): td.get_attribute("data-verdict")
            for td in tr.find_elements(By.CSS_SELECTOR, "td.cell")
            if td.get_attribute("data-verdict") != "none"
        }
        for tr in browser.find_elements(By.CSS_SELECTOR, "#evacuation-vms tbody tr")
    }
    assert shown == {vm["vmid"]: {t["node"]: t["verdict"] for t in vm["targets"]} for vm in evacuation["vms"]}
    stuck = [int(li.get_attribute("data-vmid")) for li in browser.find_elements(By.CSS_SELECTOR, "#stuck li")]
    assert stuck == [vm["vmid"] for vm in evacuation["stuck"]]
    drift = stack.api(f"/v1/drift?node={name}")["events"]
    shown_drift = browser.find_elements(By.CSS_SELECTOR, "#drift-events li")
    assert len(shown_drift) == len(drift) and (drift or browser.find_element(By.ID, "no-drift"))
    browser.save_screenshot(str(ARTIFACTS / "node.png"))
    assert_no_token_in_urls(browser, stack.token)


def test_the_matrix_works_on_a_390_px_wide_screen(browser, stack) -> None:
    sign_in(browser, stack)
    browser.set_window_size(390, 844)
    try:
        browser.get(stack.url + "/ui/matrix")
        width = browser.execute_script("return window.innerWidth")
        assert width <= 390
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width
        assert browser.find_element(By.LINK_TEXT, "Vetoes").is_displayed()
        # the table scrolls inside its box; a cell far right is reached and opens its why
        cell = browser.find_elements(By.CSS_SELECTOR, "#matrix td.cell.deny a")[-1]
        browser.execute_script("arguments[0].scrollIntoView({inline: 'center'})", cell)
        cell.click()
        panel = WebDriverWait(browser, 20).until(EC.visibility_of_element_located((By.ID, "why")))
        box = panel.rect
        assert box["x"] >= 0 and box["x"] + box["width"] <= width
        browser.save_screenshot(str(ARTIFACTS / "matrix-390px.png"))
    finally:
        browser.set_window_size(1280, 900)


def test_a_hostile_vm_name_and_tag_render_as_text(browser) -> None:
    scenario = demo_scenario()
    vm = dict(scenario["vms"][0], vmid=199, name=HOSTILE, tags=HOSTILE_TAG)
    vm["config"] = dict(vm["config"], smbios1="uuid=5f3c0199-8e1a-4b2c-9d3e-000000000199")
    scenario["vms"].append(vm)
    with running_stack(scenario) as stack:
        sign_in(browser, stack)
        row = browser.find_element(By.CSS_SELECTOR, 'tr[data-vmid="199"]')
        assert row.find_element(By.CSS_SELECTOR, ".vmname").text == HOSTILE
        assert row.find_element(By.CSS_SELECTOR, ".tag").text == HOSTILE_TAG
        assert browser.find_elements(By.TAG_NAME, "img") == []
        assert browser.find_elements(By.CSS_SELECTOR, "td.tags b") == []
        row.find_element(By.CSS_SELECTOR, "td.cell a").click()
        name = WebDriverWait(browser, 20).until(
            EC.visibility_of_element_located((By.CSS_SELECTOR, "#why .vmname"))
        )
        assert name.text == HOSTILE
        browser.get(stack.url + "/ui/nodes/" + vm["node"])
        assert HOSTILE in browser.find_element(By.ID, "evacuation-vms").text
        for _ in range(3):  # an alert would be open now (and block these calls)
            assert browser.find_elements(By.TAG_NAME, "img") == []
            time.sleep(0.2)
        assert browser.execute_script("return typeof window.alert") == "function"


def test_the_api_docs_load_from_the_service_alone(browser, stack) -> None:
    requested_urls(browser)  # forget the earlier tests' requests
    browser.get(stack.url + "/docs")
    title = WebDriverWait(browser, 30).until(
        EC.visibility_of_element_located((By.CSS_SELECTOR, ".swagger-ui .info .title"))
    )
    assert "migration-guard" in title.text
    assert browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    urls = [u for u in requested_urls(browser) if u.startswith("http")]
    assert urls and all(u.startswith(stack.url) for u in urls), urls


# --- serve --demo's one-time login link ----------------------------------------------------------


@pytest.fixture
def demo_process() -> Iterator[tuple[str, str, str]]:
    """``migration-guard serve --demo`` on a free port: (its URL, its token, its one-time link)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    cli = Path(sys.executable).with_name("migration-guard")
    proc = subprocess.Popen(
        [str(cli), "serve", "--demo", "--listen", f"127.0.0.1:{port}", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while not any("Stop with Ctrl-C" in line for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())
        text = "".join(lines)
        token = re.search(r"API token: (\S+)", text).group(1)
        link = re.search(r"one-time login link \(works once, for 5 minutes\): (\S+)", text).group(1)
        yield f"http://127.0.0.1:{port}", token, link
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_the_demos_one_time_login_link_works_once(browser, demo_process) -> None:
    url, token, link = demo_process
    assert link.startswith(url + "/ui/login/once?code=") and token not in link
    browser.delete_all_cookies()
    requested_urls(browser)
    browser.get(link)
    browser.find_element(By.ID, "sign-in-once").click()
    WebDriverWait(browser, 20).until(EC.presence_of_element_located((By.ID, "matrix")))
    assert browser.current_url == url + "/ui/matrix", "the code is not left in the address bar"

    browser.delete_all_cookies()
    browser.get(link)
    browser.find_element(By.ID, "sign-in-once").click()
    message = WebDriverWait(browser, 20).until(EC.presence_of_element_located((By.ID, "login-message")))
    assert "used already or has expired" in message.text
    assert browser.find_elements(By.ID, "matrix") == []
    assert_no_token_in_urls(browser, token)
