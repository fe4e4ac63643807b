"""The hub's chart and wheel services as `airgap-load` uses them: check, then upload.

Content is compared by digest, never by name alone: a chart or wheel the hub serves under the
bundle's name with other bytes is a `ContentDiffers` failure, not "already there".

ChartMuseum: `GET /api/charts/<name>/<version>` gives the archive's sha256 (`digest`);
`POST /api/charts` takes the archive, `DELETE` on the version takes it back (the replacement an
operator asks for). DevPI: the index's `+simple` page lists each file with `#sha256=`; the upload
is the PyPI upload form (`:action=file_upload`) with basic auth, as twine sends it. The hub's
index is write-once (not volatile): a wheel there is never replaced by the installer.
"""

from __future__ import annotations

import re
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


class ContentDiffers(FailedError):
    """The hub serves a chart or wheel under the bundle's name with other bytes."""

    def __init__(self, kind: str, name: str, on_hub: str, in_bundle: str, remedy: str) -> None:
        super().__init__(
            f"the hub serves {kind} {name} with other bytes than the bundle's"
            f" (sha256 {on_hub} on the hub, {in_bundle} in the bundle)",
            remedy=remedy,
        )
        self.kind, self.name, self.on_hub, self.in_bundle = kind, name, on_hub, in_bundle


CHART_REMEDY = (
    "find out who uploaded it; to put the release's chart in its place, run the same command"
    " (airgap-load or bootstrap) again with --replace-changed"
)
WHEEL_REMEDY = (
    "the hub's index keeps every file it was given (it is not volatile), so the installer never"
    " replaces one: find out who uploaded it, remove it as DevPI's root (devpi remove), then load"
    " the bundle again"
)


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

    def _version_url(self, name: str, version: str) -> str:
        return f"{self.url.rstrip('/')}/api/charts/{name}/{version}"

    def digest(self, name: str, version: str) -> str | None:
        """The sha256 of the archive ChartMuseum serves for the chart version; None if absent."""
        url = self._version_url(name, version)
        response = self._send(lambda h: h.get(url))
        if response.status_code in (401, 403):
            raise EnvironmentProblem(f"{self.url}: ChartMuseum refused the credentials")
        if response.status_code == 404:
            return None
        found = response.json().get("digest") if response.status_code == 200 else None
        if not isinstance(found, str) or not re.fullmatch(r"[0-9a-f]{64}", found):
            raise EnvironmentProblem(
                f"{url}: ChartMuseum answered {response.status_code} without the chart's digest"
            )
        return found

    def has(self, name: str, version: str) -> bool:
        """True when the chart version is served (whatever its bytes)."""
        return self.digest(name, version) is not None

    def upload(
        self, name: str, version: str, archive: Path, sha256: str, *, replace: bool = False
    ) -> bool:
        """Upload unless the same archive is served; True when uploaded. Other bytes under the
        name are `ContentDiffers`, or taken back and replaced when `replace`."""
        found = self.digest(name, version)
        if found == sha256:
            return False
        if found is not None:
            if not replace:
                raise ContentDiffers("chart", f"{name} {version}", found, sha256, CHART_REMEDY)
            url = self._version_url(name, version)
            gone = self._send(lambda h: h.delete(url))
            if gone.status_code not in (200, 202, 204, 404):
                raise FailedError(
                    f"ChartMuseum refused to take back {name} {version}: {gone.status_code}"
                )
        data = archive.read_bytes()  # charts are small (the service caps them anyway)
        base = self.url.rstrip("/")
        response = self._send(lambda h: h.post(f"{base}/api/charts", content=data))
        if response.status_code == 409:  # uploaded by an earlier, interrupted run: same bytes?
            again = self.digest(name, version)
            if again != sha256:
                raise ContentDiffers("chart", f"{name} {version}", str(again), sha256, CHART_REMEDY)
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

    def digest(self, filename: str) -> str | None:
        """The sha256 of the file as the index lists it (`#sha256=`); None if not listed."""
        base = self.url.rstrip("/")
        url = f"{base}/+simple/{self._project(filename)}/"
        response = self._send(lambda h: h.get(url, headers={"Accept": "text/html"}))
        if response.status_code in (401, 403):
            raise EnvironmentProblem(f"{self.url}: DevPI refused the credentials")
        if response.status_code != 200:
            return None
        links = re.findall(r'href="([^"]*)"', response.text)
        mine = [link for link in links if link.split("#", 1)[0].rsplit("/", 1)[-1] == filename]
        if not mine:
            return None
        found = re.search(r"#sha256=([0-9a-f]{64})$", mine[0])
        if found is None:
            raise EnvironmentProblem(f"{url}: DevPI lists {filename} without its sha256")
        return found.group(1)

    def has(self, filename: str) -> bool:
        """True when the index already serves the file (whatever its bytes)."""
        return self.digest(filename) is not None

    def upload(self, path: Path, name: str, version: str, sha256: str) -> bool:
        """Upload a wheel unless the same file is served; True when uploaded. Other bytes under
        its name are `ContentDiffers` (the index never replaces a file)."""
        found = self.digest(path.name)
        if found == sha256:
            return False
        if found is not None:
            raise ContentDiffers("wheel", path.name, found, sha256, WHEEL_REMEDY)
        data = path.read_bytes()
        form = {":action": "file_upload", "name": name, "version": version, "protocol_version": "1"}

        def post(h: httpx.Client) -> httpx.Response:
            files = {"content": (path.name, data, "application/octet-stream")}
            return h.post(self.url.rstrip("/") + "/", data=form, files=files)

        response = self._send(post)
        if response.status_code == 409:  # uploaded by an earlier, interrupted run: same bytes?
            again = self.digest(path.name)
            if again != sha256:
                raise ContentDiffers("wheel", path.name, str(again), sha256, WHEEL_REMEDY)
            return False
        if response.status_code not in (200, 201):
            raise FailedError(
                f"DevPI refused {path.name}: {response.status_code} {response.text[:200]}"
            )
        return True
