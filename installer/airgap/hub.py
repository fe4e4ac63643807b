"""The hub's chart and wheel services as `airgap-load` uses them: check, then upload.

ChartMuseum: `GET /api/charts/<name>/<version>` tells presence; `POST /api/charts` takes the
archive. DevPI: the index's `+simple` page lists files; the upload is the PyPI upload form
(`:action=file_upload`) with basic auth, as twine sends it.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import SecretStr

from installer.errors import EnvironmentProblem, FailedError

_RETRY = frozenset({429, 500, 502, 503, 504})


@dataclass
class _Service:
    url: str
    ca_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    attempts: int = 6
    retries: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    _http: httpx.Client | None = field(default=None, init=False, repr=False)

    def _client(self) -> httpx.Client:
        """One connection pool per service, shared by the upload threads (TLS set up once)."""
        with self._lock:
            if self._http is None:
                auth = (
                    httpx.BasicAuth(self.username, self.password.get_secret_value())
                    if self.username and self.password
                    else None
                )
                verify: ssl.SSLContext | bool = (
                    ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True
                )
                self._http = httpx.Client(
                    verify=verify, auth=auth, timeout=120.0, follow_redirects=True
                )
            return self._http

    def close(self) -> None:
        """Close the connection pool."""
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def _send(self, call: Callable[[httpx.Client], httpx.Response]) -> httpx.Response:
        for attempt in range(1, self.attempts + 1):
            try:
                response = call(self._client())
                if response.status_code not in _RETRY:
                    return response
                problem = f"answered {response.status_code}"
            except httpx.TransportError as exc:
                problem = str(exc) or type(exc).__name__
            if attempt == self.attempts:
                raise EnvironmentProblem(f"{self.url}: {problem} after {attempt} attempts")
            with self._lock:  # uploads run in several threads
                self.retries += 1
            time.sleep(min(0.2 * 2 ** (attempt - 1), 5.0))
        raise AssertionError("unreachable")  # pragma: no cover


class ChartMuseum(_Service):
    """A ChartMuseum at `url` (its root, e.g. `https://hub:8080`)."""

    def has(self, name: str, version: str) -> bool:
        """True when the chart version is served."""
        base = self.url.rstrip("/")
        response = self._send(lambda h: h.get(f"{base}/api/charts/{name}/{version}"))
        if response.status_code in (401, 403):
            raise EnvironmentProblem(f"{self.url}: ChartMuseum refused the credentials")
        return response.status_code == 200

    def upload(self, name: str, version: str, archive: Path) -> bool:
        """Upload unless present; True when uploaded."""
        if self.has(name, version):
            return False
        data = archive.read_bytes()  # charts are small (the service caps them anyway)
        base = self.url.rstrip("/")
        response = self._send(lambda h: h.post(f"{base}/api/charts", content=data))
        if response.status_code == 409:  # uploaded by an earlier, interrupted run
            return False
        if response.status_code != 201:
            raise FailedError(f"ChartMuseum refused {archive.name}: {response.status_code}")
        return True

    def chart_names(self) -> dict[str, list[str]]:
        """Every chart with its versions."""
        response = self._send(lambda h: h.get(f"{self.url.rstrip('/')}/api/charts"))
        data = response.json() if response.status_code == 200 else {}
        return {n: [str(v["version"]) for v in vs] for n, vs in data.items()}


class DevPi(_Service):
    """A DevPI index at `url` (e.g. `https://hub:3141/root/platform`)."""

    @staticmethod
    def _project(filename: str) -> str:
        return filename.split("-")[0].replace("_", "-").replace(".", "-").lower()

    def has(self, filename: str) -> bool:
        """True when the index already serves the file."""
        base = self.url.rstrip("/")
        url = f"{base}/+simple/{self._project(filename)}/"
        response = self._send(lambda h: h.get(url, headers={"Accept": "text/html"}))
        return response.status_code == 200 and filename in response.text

    def upload(self, path: Path, name: str, version: str) -> bool:
        """Upload a wheel unless present; True when uploaded."""
        if self.has(path.name):
            return False
        data = path.read_bytes()
        form = {":action": "file_upload", "name": name, "version": version, "protocol_version": "1"}

        def post(h: httpx.Client) -> httpx.Response:
            files = {"content": (path.name, data, "application/octet-stream")}
            return h.post(self.url.rstrip("/") + "/", data=form, files=files)

        response = self._send(post)
        if response.status_code == 409:
            return False
        if response.status_code not in (200, 201):
            raise FailedError(
                f"DevPI refused {path.name}: {response.status_code} {response.text[:200]}"
            )
        return True
