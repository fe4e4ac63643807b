#!/usr/bin/python3
"""The lab's stand-in for ChartMuseum: the module proxy here refuses helm.sh/chartmuseum (see
lab/components/40-helm.sh), so the lab VM runs this instead, installed by the same Ansible role
under the same name, flags and environment as the real program.

It speaks the part of ChartMuseum's API that the installer, Helm and the tests use, over TLS
with basic auth on every request (reads included):
  GET /health, GET /index.yaml, GET /charts/<archive>.tgz,
  GET /api/charts, GET|HEAD|DELETE /api/charts/<name>/<version>,
  POST /api/charts (the archive as the body, or multipart field `chart`).
Flags (ChartMuseum's): --port, --storage=local, --storage-local-rootdir, --tls-cert, --tls-key,
--chart-url, --allow-overwrite / --disable-force-overwrite, --disable-statefiles, --disable-api
(every /api route answers 404, as ChartMuseum's are then not routed: the hub's read-only endpoint).
Environment: BASIC_AUTH_USER, BASIC_AUTH_PASS. Standard library and PyYAML (python3-yaml) only.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import email.parser
import email.policy
import hashlib
import hmac
import io
import json
import os
import re
import ssl
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LOCK = threading.Lock()


def chart_metadata(archive: bytes) -> dict[str, object]:
    """Chart.yaml of a chart archive (the first `<dir>/Chart.yaml` member)."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            parts = member.name.split("/")
            if len(parts) == 2 and parts[1] == "Chart.yaml" and member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                meta = yaml.safe_load(handle.read())
                if isinstance(meta, dict) and meta.get("name") and meta.get("version"):
                    return meta
    raise ValueError("no Chart.yaml with name and version in the archive")


class Store:
    """Charts as `<root>/<name>-<version>.tgz`; the index is built from them."""

    def __init__(self, root: Path, chart_url: str) -> None:
        self.root = root
        self.chart_url = chart_url.rstrip("/")

    def path(self, name: str, version: str) -> Path:
        return self.root / f"{name}-{version}.tgz"

    def entries(self) -> dict[str, list[dict[str, object]]]:
        out: dict[str, list[dict[str, object]]] = {}
        for archive in sorted(self.root.glob("*.tgz")):
            data = archive.read_bytes()
            try:
                meta = chart_metadata(data)
            except (ValueError, tarfile.TarError, yaml.YAMLError):
                continue
            created = dt.datetime.fromtimestamp(archive.stat().st_mtime, dt.UTC)
            entry = {
                **meta,
                "urls": [
                    f"{self.chart_url}/charts/{archive.name}"
                    if self.chart_url
                    else f"charts/{archive.name}"
                ],
                "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "digest": hashlib.sha256(data).hexdigest(),
            }
            out.setdefault(str(meta["name"]), []).append(entry)
        return out

    def index_yaml(self) -> bytes:
        doc = {
            "apiVersion": "v1",
            "entries": self.entries(),
            "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return yaml.safe_dump(doc, sort_keys=True).encode()


class Handler(BaseHTTPRequestHandler):
    server_version = "chartmuseum-lab/0.16"
    store: Store
    user: str
    password: str
    allow_overwrite: bool
    api_enabled: bool = True

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stdout.write(f"{self.address_string()} {fmt % args}\n")
        sys.stdout.flush()

    def _send(self, code: int, body: bytes = b"", ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if code == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="ChartMuseum"')
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, doc: object) -> None:
        self._send(code, json.dumps(doc).encode())

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user, self.user) & hmac.compare_digest(password, self.password)

    def _guard(self) -> bool:
        if self.path == "/health":
            return True
        if not self._authorized():
            self._json(401, {"error": "unauthorized"})
            return False
        if not self.api_enabled and self.path.split("?", 1)[0].startswith("/api/"):
            self._json(404, {"error": "not found"})
            return False
        return True

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not self._guard():
            return None
        path = self.path.split("?", 1)[0]
        if path == "/health":
            return self._json(200, {"healthy": True})
        if path == "/index.yaml":
            return self._send(200, self.store.index_yaml(), "application/x-yaml")
        if path.startswith("/charts/"):
            name = path.removeprefix("/charts/")
            target = self.store.root / name
            if _NAME.match(name) and name.endswith(".tgz") and target.is_file():
                return self._send(200, target.read_bytes(), "application/x-tar")
            return self._json(404, {"error": "not found"})
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "charts"]:
            entries = self.store.entries()
            if len(parts) == 2:
                return self._json(200, entries)
            versions = entries.get(parts[2], [])
            if len(parts) == 3:
                return self._json(200 if versions else 404, versions or {"error": "not found"})
            if len(parts) == 4:
                for entry in versions:
                    if entry["version"] == parts[3]:
                        return self._json(200, entry)
        return self._json(404, {"error": "not found"})

    def do_DELETE(self) -> None:
        if not self._guard():
            return None
        parts = [p for p in self.path.split("?", 1)[0].split("/") if p]
        if len(parts) == 4 and parts[:2] == ["api", "charts"] and all(map(_NAME.match, parts[2:])):
            target = self.store.path(parts[2], parts[3])
            with _LOCK:
                if target.is_file():
                    target.unlink()
                    return self._json(200, {"deleted": True})
        return self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        if not self._guard():
            return None
        if self.path.split("?", 1)[0] != "/api/charts":
            return self._json(404, {"error": "not found"})
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {ctype}\r\n\r\n".encode() + body
            )
            parts = {
                p.get_param("name", header="content-disposition"): p for p in message.iter_parts()
            }
            if "chart" not in parts:
                return self._json(400, {"error": "no chart field"})
            body = parts["chart"].get_payload(decode=True) or b""
        try:
            meta = chart_metadata(body)
        except (ValueError, tarfile.TarError, yaml.YAMLError, EOFError, OSError) as exc:
            return self._json(400, {"error": f"not a chart archive: {exc}"})
        name, version = str(meta["name"]), str(meta["version"])
        if not (_NAME.match(name) and _NAME.match(version)):
            return self._json(400, {"error": "bad chart name or version"})
        target = self.store.path(name, version)
        with _LOCK:
            if target.exists() and not self.allow_overwrite:
                return self._json(409, {"error": "file already exists"})
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(body)
            tmp.replace(target)
        return self._json(201, {"saved": True})


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="chartmuseum")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--storage", default="local")
    parser.add_argument("--storage-local-rootdir", required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--chart-url", default="")
    parser.add_argument("--allow-overwrite", action="store_true")
    parser.add_argument("--disable-force-overwrite", action="store_true")
    parser.add_argument("--disable-statefiles", action="store_true")
    parser.add_argument("--disable-api", action="store_true")
    args = parser.parse_args(argv)
    if args.storage != "local":
        parser.error("only --storage=local")
    user, password = os.environ.get("BASIC_AUTH_USER", ""), os.environ.get("BASIC_AUTH_PASS", "")
    if not user or not password:
        parser.error("BASIC_AUTH_USER and BASIC_AUTH_PASS must be set (auth is never off)")
    root = Path(args.storage_local_rootdir)
    root.mkdir(parents=True, exist_ok=True)
    Handler.store = Store(root, args.chart_url)
    Handler.user, Handler.password = user, password
    Handler.allow_overwrite = args.allow_overwrite
    Handler.api_enabled = not args.disable_api
    server = ThreadingHTTPServer(("0.0.0.0", args.port), Handler)  # noqa: S104 - a VM service
    if args.tls_cert and args.tls_key:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"chartmuseum (lab stand-in) on :{args.port}, storage {root}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
