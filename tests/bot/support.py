"""Shared pieces of the bot tests: a stand-in service (HTTP, speaks the service API's JSON),
veto events, and the real Redis DB 2 (the bot's test DB)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.redis_server import redis_url

REDIS_URL = redis_url(2)
TOKEN = "svc-test-token"
NODES = ["node1", "node2", "node3"]


def verdict_body(
    vmid: int = 101, target: str = "node3", verdict: str = "deny", name: str = "web01", **extra: Any
) -> dict[str, Any]:
    body = {
        "vmid": vmid,
        "name": name,
        "source": "node1",
        "target": target,
        "verdict": verdict,
        "reasons": []
        if verdict == "allow"
        else [{"code": "missing-flags", "message": "node3 lacks avx512f, avx512bw needed by Skylake-Server"}],
        "cpu": "Skylake-Server",
        "model": "Skylake-Server",
        "missing": [] if verdict == "allow" else ["avx512bw", "avx512f"],
        "suggestion": "" if verdict == "allow" else "use x86-64-v3 for VM 101",
        "flag_source": "kvm",
        "source_cluster": "lab",
        "target_cluster": "lab",
        "checked_at": "2026-11-29T00:30:00Z",
        "facts_age_s": 12,
        "stale": False,
    }
    body.update(extra)
    return body


def veto_event(vmid: int = 101, target: str = "node3", name: str = "web01", **extra: Any) -> dict[str, Any]:
    ev = {
        "id": uuid.uuid4().hex,
        "time": "2026-11-29T00:30:00Z",
        "vmid": vmid,
        "name": name,
        "source": "node1",
        "target": target,
        "source_cluster": "lab",
        "target_cluster": "lab",
        "cpu": "Skylake-Server",
        "verdict": "deny",
        "reasons": [{"code": "missing-flags", "message": f"{target} lacks avx512f"}],
        "suggestion": "use x86-64-v3",
        "enforced": True,
    }
    ev.update(extra)
    return ev


class FakeService:
    """The service API on a local port, answering canned JSON; ``delay`` makes it slow."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.vms = {101: "web01", 102: "<!channel>", 103: "*bold* _it_ <https://evil|x>"}
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(parts.query).items()}
                outer.requests.append((parts.path, q, dict(self.headers)))
                if outer.delay:
                    time.sleep(outer.delay)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, {"error": {"code": "unauthorized", "message": "bad token"}})
                status, body = outer.route(parts.path, q)
                self._send(status, body)

            def _send(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FakeService:
        self.thread.start()
        return self

    def __exit__(self, *a: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def route(self, path: str, q: dict[str, str]) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if parts[:2] == ["v1", "vms"] and len(parts) == 4:
            vmid = int(parts[2])
            if vmid not in self.vms:
                return 404, {"error": {"code": "unknown-vm", "message": f"no VM {vmid} in cluster lab"}}
            if parts[3] == "check":
                target = q.get("target", "")
                if target not in NODES:
                    return 404, {
                        "error": {
                            "code": "unknown-node",
                            "message": f"no node {target}; known: {', '.join(NODES)}",
                        }
                    }
                verdict = "allow" if target == "node2" else "deny"
                extra = {"target_cluster": q["target_cluster"]} if "target_cluster" in q else {}
                return 200, verdict_body(vmid, target, verdict, self.vms[vmid], **extra)
            if parts[3] == "targets":
                return 200, {
                    "vmid": vmid,
                    "name": self.vms[vmid],
                    "source": "node1",
                    "targets": [
                        verdict_body(vmid, "node2", "allow", self.vms[vmid]),
                        verdict_body(vmid, "node3", "deny", self.vms[vmid]),
                    ],
                }
        if path == "/v1/decisions":
            rows = [
                dict(
                    verdict_body(101, "node3", "deny"),
                    id="1764375600000-0",
                    time="2026-11-29T00:20:00Z",
                    code="missing-flags",
                    exit=1,
                    line="blocked migration of VM 101 (web01) from node1 to node3: node3 lacks avx512f",
                )
            ]
            if q.get("vmid") and int(q["vmid"]) != 101:
                rows = []
            return 200, {"decisions": rows}
        if path == "/v1/cluster":
            return 200, {
                "cluster": "lab",
                "nodes": [
                    {
                        "name": n,
                        "online": True,
                        "cpu_model": "Intel(R) Xeon(R) Gold 6130",
                        "vendor": "GenuineIntel",
                        "best_cpu_type": "Skylake-Server" if n != "node3" else "Haswell",
                    }
                    for n in NODES
                ],
                "checked_at": "2026-11-29T00:30:00Z",
                "rolling_upgrade": None,
            }
        if path == "/v1/cluster/recommendation":
            return 200, {
                "cluster": "lab",
                "nodes": NODES,
                "nodes_without_flags": [],
                "recommended": "x86-64-v3",
                "ranked": ["x86-64-v3", "x86-64-v2-AES"],
                "reason": "the newest type every node runs",
                "blocked": [],
                "vms_at_risk": [
                    {
                        "vmid": 101,
                        "name": "web01",
                        "node": "node1",
                        "cpu": "Skylake-Server",
                        "cannot_run_on": [{"node": "node3", "missing": ["avx512f"]}],
                    }
                ],
                "checked_at": "2026-11-29T00:30:00Z",
            }
        return 404, {"error": {"code": "not-found", "message": f"no route {path}"}}
