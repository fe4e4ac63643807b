"""A TLS proxy in front of a real registry that injects faults: 500s, connection resets, and a
hook called on every request (the kill tests stop the load process from it).

It also watches the invariant the load must keep: when a manifest is PUT under a tag, every
blob it references is already in the registry.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.fixtures.registries import PASSWORD, USER, Registry, free_port
from tests.integration.airgap.helpers import ACCEPT

Hook = Callable[[int, str, str, "ProxyHandler"], str | None]
"""(request number, method, path, handler) -> None, "reset", or "half-body-reset"."""

_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass
class FaultyProxy:
    """Counters and settings shared by the handler threads."""

    registry: Registry
    fail_rate: float = 0.0
    hook: Hook | None = None
    seed: int = 7
    requests: int = 0
    injected: int = 0
    violations: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.port = free_port()
        self.upstream = httpx.Client(
            base_url=f"https://{self.registry.host}",
            verify=ssl.create_default_context(cafile=str(self.registry.pki.ca_cert)),
            timeout=60,
        )
        proxy = self

        class Handler(ProxyHandler):
            owner = proxy

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.registry.pki.cert, self.registry.pki.key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def next_number(self) -> int:
        with self._lock:
            self.requests += 1
            return self.requests

    def roll_fault(self) -> str | None:
        with self._lock:
            if self.rng.random() >= self.fail_rate:
                return None
            self.injected += 1
            return self.rng.choice(["500", "reset"])

    def check_tag_put(self, path: str, body: bytes) -> None:
        """Record a violation if a tag is about to point at a manifest with a missing blob."""
        repo, _, ref = path.removeprefix("/v2/").partition("/manifests/")
        if ref.startswith("sha256:"):
            return
        doc = json.loads(body)
        digests = [d["digest"] for d in doc.get("manifests", [])]
        refs = (
            [doc["config"]["digest"], *(x["digest"] for x in doc["layers"])]
            if "config" in doc
            else []
        )
        auth = (USER, PASSWORD)
        for digest in digests:
            r = self.upstream.head(
                f"/v2/{repo}/manifests/{digest}", auth=auth, headers={"Accept": ACCEPT}
            )
            if r.status_code != 200:
                self.violations.append(f"{repo}:{ref} -> missing child {digest}")
        for digest in refs:
            r = self.upstream.head(f"/v2/{repo}/blobs/{digest}", auth=auth)
            if r.status_code != 200:
                self.violations.append(f"{repo}:{ref} -> missing blob {digest}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.upstream.close()


class ProxyHandler(BaseHTTPRequestHandler):
    owner: FaultyProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def reset(self) -> None:
        """Drop the connection with an RST, the way a crashed peer looks."""
        with contextlib.suppress(OSError):
            linger = struct.pack("ii", 1, 0)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        self.close_connection = True
        self.connection.close()

    def _handle(self) -> None:
        owner = self.owner
        n = owner.next_number()
        length = int(self.headers.get("Content-Length") or 0)
        action = owner.hook(n, self.command, self.path, self) if owner.hook else None
        if action == "half-body-reset":
            self.rfile.read(length // 2)
            self.reset()
            return
        if action == "reset":
            self.reset()
            return
        body = self.rfile.read(length) if length else b""
        fault = owner.roll_fault()
        if fault == "reset":
            self.reset()
            return
        if fault == "500":
            self._send(500, {"Content-Type": "application/json"}, b'{"errors":[]}')
            return
        if self.command == "PUT" and "/manifests/" in self.path:
            owner.check_tag_put(self.path, body)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        response = owner.upstream.request(self.command, self.path, headers=headers, content=body)
        out = {k: v for k, v in response.headers.items() if k.lower() not in _HOP}
        if "location" in {k.lower() for k in out}:
            key = next(k for k in out if k.lower() == "location")
            out[key] = out[key].replace(owner.registry.host, owner.host)
        length_header = response.headers.get("Content-Length")
        self._send(response.status_code, out, response.content, length_header)

    def _send(
        self, status: int, headers: dict[str, str], body: bytes, length: str | None = None
    ) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header(
            "Content-Length", length if self.command == "HEAD" and length else str(len(body))
        )
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle
