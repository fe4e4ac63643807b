"""A small OCI distribution client: pull and push manifests and blobs, streaming, with retries.

Why not skopeo or a library: the bundle needs blobs stored once across images, pulls and pushes
in parallel across images, digest checks while streaming, HEAD before PUT and cross-repository
mounts; skopeo copies one image at a time and the Python libraries seen do not stream or share
connections across threads. `bench/run airgap` measures the difference against skopeo.

Supports basic auth and bearer-token auth (the registry's `WWW-Authenticate` challenge), Docker
v2 schema 2 and OCI manifests, manifest lists and OCI indexes. One `httpx.Client` is shared by
the worker threads (its connection pool is thread-safe).
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import hashlib
import logging
import re
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import httpx
from pydantic import SecretStr

from installer.errors import BadInputError, EnvironmentProblem, FailedError

log = logging.getLogger("installer.registry")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
CHUNK = 1024 * 1024
DIRECT_CHUNK = 1024 * 1024
BLOB_MIN_RATE = 256 * 1024
"""Bytes per second a blob's transfer must average, after `BLOB_GRACE_S`: a registry (or a
proxy) that takes or gives a blob a byte at a time never trips a socket's timeout, and would
hold a load for days; each blob gets an overall deadline instead."""
BLOB_GRACE_S = 60.0
MAX_MANIFEST = 4 * 1024 * 1024
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class RegistryError(FailedError):
    """The registry answered with an error the client cannot recover from."""


class TransientError(Exception):
    """A failure worth retrying (5xx, reset, timeout); never leaves the module."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds the server asked the client to wait (`Retry-After` on 429 and 503)."""


MAX_RETRY_AFTER_S = 60.0
"""The longest wait a `Retry-After` gets; a server asking for more gets this much per try."""


def _retry_after(response: httpx.Response) -> float | None:
    """The wait a 429 or 503 asks for, in seconds (a number or an HTTP date), capped."""
    value = response.headers.get("Retry-After", "").strip()
    if response.status_code not in (429, 503) or not value:
        return None
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class BlobStalled(RegistryError):
    """A blob did not move at the rate every blob must keep (`RegistryClient.blob_min_rate`)."""


PATCH_CHUNK = 64 * 1024 * 1024
"""The most bytes one request of a streamed upload carries (`stage_blob_stream`)."""


class _StreamSpent(Exception):
    """A one-pass request body was asked for a second time."""


@dataclass(frozen=True)
class RegistryEndpoint:
    """Where a registry answers and how to log in.

    `host` is `host[:port]`; repositories are addressed under it exactly as given (the mirror
    convention keeps the upstream name as the path: `127.0.0.1:15000/ghcr.io/org/image`).
    """

    host: str
    ca_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    plain_http: bool = False

    @property
    def base_url(self) -> str:
        """`https://host` (or http for a registry the operator marked as plain)."""
        return f"{'http' if self.plain_http else 'https'}://{self.host}"


@dataclass
class TransferStats:
    """Counters shared by every worker of one transfer, for the report and progress."""

    retries: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, retries: int = 0, sent: int = 0, received: int = 0) -> None:
        """Add to the counters (thread-safe)."""
        with self._lock:
            self.retries += retries
            self.bytes_sent += sent
            self.bytes_received += received


@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as the registry served it."""

    data: bytes
    media_type: str
    digest: str


def sha256_digest(data: bytes) -> str:
    """`sha256:<hex>` of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class BlobSink(Protocol):
    """Where `RegistryClient.fetch_blob_into` writes a blob."""

    def resume(self) -> tuple[int, Any]:
        """Bytes already held from an earlier attempt, and a sha256 object fed with them."""

    def write(self, chunk: bytes | memoryview) -> None:
        """The next bytes (a view is valid only during the call)."""

    def restart(self) -> None:
        """Forget what is held: the blob comes again from its first byte."""

    def commit(self) -> None:
        """Size and digest matched."""

    def discard(self) -> None:
        """Size or digest did not match."""

    def close(self) -> None:
        """The fetch ended (done or failed): release what is open, keep what is held."""


class FileSink:
    """A blob into a file, through `<name>.partial`, renamed once verified."""

    def __init__(self, dest: Path, size: int | None = None) -> None:
        self.dest, self.size = dest, size
        self.partial = dest.with_name(dest.name + ".partial")
        self._out: BinaryIO | None = None

    def resume(self) -> tuple[int, Any]:
        hasher, have = hashlib.sha256(), 0
        if self.partial.exists() and (
            self.size is None or self.partial.stat().st_size <= self.size
        ):
            with self.partial.open("rb") as handle:
                for chunk in iter(lambda: handle.read(CHUNK), b""):
                    hasher.update(chunk)
                    have += len(chunk)
        elif self.partial.exists():
            return self.partial.stat().st_size, hasher  # too long: the caller restarts
        return have, hasher

    def _handle(self) -> BinaryIO:
        if self._out is None:
            self._out = self.partial.open("ab")
        return self._out

    def write(self, chunk: bytes | memoryview) -> None:
        self._handle().write(chunk)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def restart(self) -> None:
        self.close()
        self.partial.unlink(missing_ok=True)

    def commit(self) -> None:
        self.close()
        if not self.partial.exists():  # an empty blob: nothing was written
            self.partial.touch()
        self.partial.replace(self.dest)

    def discard(self) -> None:
        self.close()
        self.partial.unlink(missing_ok=True)


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class _DirectBody:
    """A blob body read straight from the socket of a connection of the client's own."""

    def __init__(
        self,
        client: RegistryClient,
        sock: socket.socket,
        status: int,
        rest: bytes,
        length: int,
        keep: bool,
    ) -> None:
        self.client, self.sock, self.status = client, sock, status
        self._rest, self._left, self._keep = rest, length, keep
        self.length = length
        self.deadline: float | None = None
        """Set by the reader: past it, the body stops with BlobStalled (checked at every
        receive, a 1 MiB batch can take forever at a byte per call)."""

    def chunks(self) -> Iterator[memoryview]:
        """The body in views of up to 1 MiB, each valid until the next."""
        if self._rest:
            first = memoryview(self._rest[: self._left])
            self._left -= len(first)
            self._rest = b""
            yield first
        buffer = bytearray(DIRECT_CHUNK)
        view = memoryview(buffer)
        while self._left:
            filled = 0
            want = min(self._left, DIRECT_CHUNK)
            while filled < want:
                if self.deadline is not None:
                    self.client._on_time(self.deadline, "blob body", filled, want)
                n = self.sock.recv_into(view[filled:want])
                if not n:
                    raise ConnectionResetError("the registry closed the connection mid-body")
                filled += n
            self._left -= filled
            yield view[:filled]

    def close(self) -> None:
        """Keep the connection for the next blob when the body was read to its end."""
        if self._left == 0 and self._keep:
            self.client._local.sock = self.sock
        else:
            self.client._forget(self.sock)


class _StreamEnded(FailedError):
    """A one-pass stream ended before the bytes it was said to hold, or held more."""


class _Pieces:
    """A one-pass stream of byte pieces, taken `n` bytes at a time."""

    def __init__(self, chunks: Iterable[bytes | memoryview]) -> None:
        self._chunks = iter(chunks)
        self._rest = memoryview(b"")

    def take(self, n: int) -> Iterator[memoryview]:
        """The next `n` bytes, in pieces (each valid until the next is asked for)."""
        while n > 0:
            if not self._rest:
                chunk = next(self._chunks, None)
                if chunk is None:
                    raise _StreamEnded(f"the stream ended {n} bytes early")
                self._rest = memoryview(chunk)
                continue
            piece, self._rest = self._rest[:n], self._rest[n:]
            n -= len(piece)
            yield piece

    def end(self) -> None:
        """Read the stream to its end (where a reader checks what it read); nothing may be left."""
        left = len(self._rest) + sum(len(c) for c in self._chunks)
        if left:
            raise _StreamEnded(f"the stream held {left} bytes more than it was said to")


class RegistryClient:
    """Talks to one registry; safe to share between threads."""

    def __init__(
        self,
        endpoint: RegistryEndpoint,
        *,
        stats: TransferStats | None = None,
        attempts: int = 6,
        backoff: float = 0.2,
        connections: int = 16,
        timeout: float = 60.0,
        progress: Callable[[int], None] | None = None,
        blob_min_rate: float = BLOB_MIN_RATE,
        blob_grace_s: float = BLOB_GRACE_S,
        patch_chunk: int = PATCH_CHUNK,
    ) -> None:
        self.endpoint = endpoint
        self.blob_min_rate, self.blob_grace_s = blob_min_rate, blob_grace_s
        self.patch_chunk = patch_chunk
        self.stats = stats or TransferStats()
        self.attempts = attempts
        self.backoff = backoff
        self.progress = progress
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(endpoint.ca_file)) if endpoint.ca_file else True
        )
        self._ssl = verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()
        self._timeout = timeout
        # Blob bodies are read from sockets of the client's own (`_direct_get`) unless a proxy
        # from the environment applies: httpx then carries them.
        self._direct = not _proxied(endpoint)
        self._local = threading.local()
        self._sockets: set[socket.socket] = set()
        self._http = httpx.Client(
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            follow_redirects=True,
            headers={"User-Agent": "onprem-installer"},
        )
        self._scheme: str | None = None  # "basic" or "bearer", learnt from the first 401
        self._tokens: dict[str, str] = {}
        self._challenge: dict[str, str] = {}
        self._lock = threading.Lock()

    def _deadline(self, size: int) -> float:
        """When a transfer of `size` bytes that starts now must be done (monotonic clock)."""
        return time.monotonic() + self.blob_grace_s + size / self.blob_min_rate

    def _on_time(self, deadline: float, what: str, done: int, size: int | None) -> None:
        """Raise BlobStalled once `deadline` has passed."""
        if time.monotonic() <= deadline:
            return
        of = f" of {size}" if size is not None else ""
        raise BlobStalled(
            f"{self.endpoint.host}: {what}: {done}{of} bytes moved by the deadline (every blob"
            f" must average {self.blob_min_rate / 1024:.0f} KiB/s after {self.blob_grace_s:.0f}"
            " s): the registry or the network stalls",
            remedy="check the registry's disk and load and the network in between, then run"
            " again (what was complete stays)",
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            _close_quietly(sock)

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- auth and retries -------------------------------------------------------------------

    def _auth_header(self, scope: str) -> dict[str, str]:
        ep = self.endpoint
        if self._scheme == "basic" and ep.username and ep.password:
            raw = f"{ep.username}:{ep.password.get_secret_value()}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        token = self._tokens.get(scope)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _fetch_token(self, scope: str, params: dict[str, str]) -> None:
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"{self.endpoint.host}: bearer challenge without a realm")
        # Several scopes (a cross-repository mount) go as repeated `scope` parameters.
        query: list[tuple[str, str | int | float | bool | None]] = [
            ("service", params.get("service", ""))
        ]
        query += [("scope", part) for part in scope.split(" ") if part]
        ep = self.endpoint
        auth = None
        if ep.username and ep.password:
            if self._realm_gets_credentials(realm):
                auth = httpx.BasicAuth(ep.username, ep.password.get_secret_value())
            else:
                log.warning(
                    "%s: the token service %s is not this registry's host over https;"
                    " asking it without the registry's credentials",
                    ep.host,
                    httpx.URL(realm).copy_with(query=None),
                )
        response = self._http.get(realm, params=query, auth=auth)
        if response.status_code == 401:
            raise EnvironmentProblem(
                f"{ep.host}: the token service refused the credentials",
                remedy="check the registry user and password",
            )
        if response.status_code >= 500:
            raise TransientError(f"token service answered {response.status_code}")
        if response.status_code != 200:
            raise RegistryError(f"{ep.host}: token service answered {response.status_code}")
        body = response.json()
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str):
            raise RegistryError(f"{ep.host}: token service answered without a token")
        with self._lock:
            self._tokens[scope] = token

    def _realm_gets_credentials(self, realm: str) -> bool:
        """Whether the registry's login may go to this token realm: only over https, and only
        to the registry's own host (a challenge can name any URL)."""
        try:
            url = httpx.URL(realm)
        except httpx.InvalidURL:
            return False
        return url.scheme == "https" and url.host == httpx.URL(self.endpoint.base_url).host

    def _on_401(self, response: httpx.Response, scope: str, sent: str) -> None:
        header = response.headers.get("WWW-Authenticate", "")
        scheme, params = _parse_challenge(header)
        ep = self.endpoint
        if scheme == "basic":
            if sent.startswith("Basic") or not (ep.username and ep.password):
                raise EnvironmentProblem(
                    f"{ep.host}: the registry refused the credentials",
                    remedy="check the registry user and password",
                )
            self._scheme = "basic"
            return
        if scheme == "bearer":
            self._scheme = "bearer"
            if sent.startswith("Bearer") and self._tokens.get(scope) != sent[7:]:
                return  # another thread already fetched a newer token for this scope
            self._fetch_token(params.get("scope", scope), params)
            if params.get("scope") and params["scope"] != scope:
                with self._lock:
                    self._tokens[scope] = self._tokens[params["scope"]]
            return
        raise RegistryError(f"{ep.host}: unsupported auth challenge {header!r}")

    def request(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        headers: dict[str, str] | None = None,
        body: Callable[[], bytes | Iterator[bytes]] | None = None,
        ok: frozenset[int] = frozenset({200}),
        stream: bool = False,
        attempts: int | None = None,
    ) -> httpx.Response:
        """Send with auth and retries; `body` is a factory so a retry can send it again.

        With `stream=True` the caller must close the response. `attempts` overrides the
        client's number of tries (1: no retry).
        """
        attempts = attempts or self.attempts
        if not url.startswith("http"):
            url = self.endpoint.base_url + url
        attempt = 0
        auth_rounds = 0
        while True:
            attempt += 1
            try:
                all_headers = {**(headers or {}), **self._auth_header(scope)}
                content = body() if body is not None else None
                req = self._http.build_request(method, url, headers=all_headers, content=content)
                response = self._http.send(req, stream=True)
                if response.status_code == 401 and auth_rounds < 2:
                    response.close()
                    auth_rounds += 1
                    attempt -= 1
                    self._on_401(response, scope, all_headers.get("Authorization", ""))
                    continue
                if response.status_code in _RETRY_STATUS:
                    response.close()
                    raise TransientError(
                        f"{method} {url}: {response.status_code}", _retry_after(response)
                    )
                if response.status_code not in ok:
                    response.read()
                    response.close()
                    raise self._error(method, url, response)
                if not stream:
                    response.read()
                    response.close()
                return response
            except (httpx.TransportError, TransientError) as exc:
                if attempt >= attempts:
                    raise EnvironmentProblem(
                        f"{self.endpoint.host}: {method} failed after {attempt} attempts: {exc}",
                        remedy="check that the registry is up and reachable",
                    ) from None
                self.stats.add(retries=1)
                asked = exc.retry_after if isinstance(exc, TransientError) else None
                delay = asked if asked is not None else min(self.backoff * 2 ** (attempt - 1), 5.0)
                log.info(
                    "retry %d after %s (in %.1f s): %s %s",
                    attempt, type(exc).__name__, delay, method, url,
                )  # fmt: skip
                time.sleep(delay)

    def _error(self, method: str, url: str, response: httpx.Response) -> InstallerErrorT:
        detail = response.text[:300].strip()
        where = url.removeprefix(self.endpoint.base_url)
        if response.status_code in (401, 403):
            return EnvironmentProblem(
                f"{self.endpoint.host}: {method} {where}: access refused ({response.status_code})",
                remedy="check the registry user, password and rights on the repository",
            )
        return RegistryError(
            f"{self.endpoint.host}: {method} {where} answered {response.status_code}: {detail}"
        )

    # --- manifests --------------------------------------------------------------------------

    def get_manifest(self, repo: str, reference: str) -> Manifest:
        """The manifest or index `repo:reference` (tag or digest), digest-checked."""
        response = self.request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            scope=f"repository:{repo}:pull",
            headers={"Accept": ACCEPT},
        )
        data = response.content
        if len(data) > MAX_MANIFEST:
            raise BadInputError(f"{repo}:{reference}: manifest larger than {MAX_MANIFEST} bytes")
        digest = sha256_digest(data)
        if _DIGEST.match(reference) and reference != digest:
            raise BadInputError(f"{repo}@{reference}: the registry served content of {digest}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in INDEX_TYPES | MANIFEST_TYPES:
            raise BadInputError(f"{repo}:{reference}: unsupported manifest type {media_type!r}")
        self.stats.add(received=len(data))
        return Manifest(data=data, media_type=media_type, digest=digest)

    def manifest_digest(self, repo: str, reference: str) -> str | None:
        """The digest `repo:reference` resolves to, or None when absent (HEAD only)."""
        response = self.request(
            "HEAD",
            f"/v2/{repo}/manifests/{reference}",
            scope=f"repository:{repo}:pull",
            headers={"Accept": ACCEPT},
            ok=frozenset({200, 404}),
        )
        if response.status_code == 404:
            return None
        digest: str | None = response.headers.get("Docker-Content-Digest")
        return digest

    def put_manifest(self, repo: str, reference: str, manifest: Manifest) -> None:
        """Push a manifest under a tag or its digest; the registry checks its blobs exist."""
        self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            scope=f"repository:{repo}:pull,push",
            headers={"Content-Type": manifest.media_type},
            body=lambda: manifest.data,
            ok=frozenset({201}),
        )
        self.stats.add(sent=len(manifest.data))

    # --- blobs ------------------------------------------------------------------------------

    def blob_exists(self, repo: str, digest: str) -> bool:
        """HEAD the blob."""
        response = self.request(
            "HEAD",
            f"/v2/{repo}/blobs/{digest}",
            scope=f"repository:{repo}:pull",
            ok=frozenset({200, 404}),
        )
        return response.status_code == 200

    def fetch_blob(self, repo: str, digest: str, dest: Path, size: int | None = None) -> int:
        """Stream a blob into `dest`, checking size and digest; resumes a `.partial` left behind.

        The file appears under its final name only once verified.
        """
        return self.fetch_blob_into(repo, digest, FileSink(dest, size), size)

    def fetch_blob_into(
        self, repo: str, digest: str, sink: BlobSink, size: int | None = None
    ) -> int:
        """Stream a blob into `sink`, hashing as it arrives; resumes from what the sink already
        holds with a range request. The sink is told to `commit` only once size and digest
        matched (`discard` otherwise). Returns the blob's size."""
        try:
            return self._fetch_into(repo, digest, sink, size)
        finally:
            sink.close()

    def _fetch_into(self, repo: str, digest: str, sink: BlobSink, size: int | None) -> int:
        have, hasher = sink.resume()
        if size is not None and have > size:  # not this blob's bytes: start over
            sink.restart()
            hasher, have = hashlib.sha256(), 0
        for attempt in range(1, self.attempts + 1):
            if size is not None and have == size:  # complete already; only the commit was lost
                break
            headers = {"Range": f"bytes={have}-"} if have else {}
            path, scope = f"/v2/{repo}/blobs/{digest}", f"repository:{repo}:pull"
            try:
                direct = self._direct_get(path, scope, headers)
            except OSError as exc:
                if attempt == self.attempts:
                    raise EnvironmentProblem(
                        f"{self.endpoint.host}: blob {digest} failed: {exc}"
                    ) from None
                self.stats.add(retries=1)
                continue
            response: _DirectBody | httpx.Response
            chunks: Iterator[bytes | memoryview]
            if direct is not None:
                response, chunks, status = direct, direct.chunks(), direct.status
            else:  # an auth challenge, a redirect, an error: httpx handles them
                http = self.request(
                    "GET", path, scope=scope, headers=headers, ok=frozenset({200, 206}), stream=True
                )
                response, chunks, status = http, http.iter_bytes(), http.status_code
            if isinstance(response, _DirectBody):
                coming = response.length
            else:
                length = response.headers.get("Content-Length", "")
                coming = int(length) if length.isdigit() else max(0, (size or 0) - have)
            deadline = self._deadline(coming)
            if isinstance(response, _DirectBody):
                response.deadline = deadline
            try:
                if status == 200 and have:  # no range support: start over
                    hasher, have = hashlib.sha256(), 0
                    sink.restart()
                for chunk in chunks:
                    self._on_time(deadline, f"blob {digest}", have, size)
                    if size is not None and have + len(chunk) > size:
                        raise BadInputError(f"{repo}@{digest}: blob larger than {size}")
                    sink.write(chunk)
                    hasher.update(chunk)
                    have += len(chunk)
                    self.stats.add(received=len(chunk))
                    if self.progress:
                        self.progress(len(chunk))
                break
            except (httpx.TransportError, OSError) as exc:
                if attempt == self.attempts:
                    raise EnvironmentProblem(
                        f"{self.endpoint.host}: blob {digest} failed mid-stream: {exc}"
                    ) from None
                self.stats.add(retries=1)
            finally:
                response.close()
        got = "sha256:" + hasher.hexdigest()
        if got != digest or (size is not None and have != size):
            sink.discard()
            raise BadInputError(f"{repo}@{digest}: downloaded {have} bytes hashing to {got}")
        sink.commit()
        return have

    # --- blob bodies over connections of the client's own ----------------------------------

    def _direct_get(self, path: str, scope: str, headers: dict[str, str]) -> _DirectBody | None:
        """GET `path` over a kept connection of this thread: httpx hands a body over in the
        TLS layer's 16 KiB pieces with several Python calls each, which for gigabytes costs as
        much CPU as the hashing; here the body is read in 1 MiB batches. Only a plain answer
        with a body of known length (200, 206) is taken this way; for anything else (an auth
        challenge, a redirect, an error) None, and the caller asks through httpx, which
        handles it. Socket errors are raised (OSError), and retried like transport errors."""
        if not self._direct:
            return None
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {self.endpoint.host}",
            "User-Agent: onprem-installer",
            "Accept-Encoding: identity",
            *(f"{k}: {v}" for k, v in {**headers, **self._auth_header(scope)}.items()),
        ]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        kept: socket.socket | None = getattr(self._local, "sock", None)
        self._local.sock = None
        if kept is not None:
            try:
                return self._exchange(kept, request)
            except OSError:
                pass  # closed by the registry while idle: once more on a new connection
        return self._exchange(self._connect(), request)

    def _connect(self) -> socket.socket:
        url = urllib.parse.urlsplit(self.endpoint.base_url)
        host = url.hostname or ""
        port = url.port or (80 if self.endpoint.plain_http else 443)
        sock = socket.create_connection((host, port), timeout=10.0)
        try:
            sock.settimeout(self._timeout)
            if not self.endpoint.plain_http:
                sock = self._ssl.wrap_socket(sock, server_hostname=host)
        except BaseException:
            _close_quietly(sock)
            raise
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        _close_quietly(sock)

    def _exchange(self, sock: socket.socket, request: bytes) -> _DirectBody | None:
        try:
            sock.sendall(request)
            head = bytearray()
            while (end := head.find(b"\r\n\r\n")) < 0:
                if len(head) > 65536:
                    raise ConnectionError("response header larger than 64 KiB")
                data = sock.recv(65536)
                if not data:
                    raise ConnectionResetError("connection closed before the response")
                head += data
            lines = bytes(head[:end]).decode("latin-1").split("\r\n")
            version, _, rest = lines[0].partition(" ")
            status = int(rest.split(" ", 1)[0]) if rest[:3].isdigit() else 0
            if not status:
                raise ConnectionError(f"malformed status line {lines[0][:80]!r}")
        except OSError:
            self._forget(sock)
            raise
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        length = fields.get("content-length", "")
        if status not in (200, 206) or not length.isdigit() or "transfer-encoding" in fields:
            self._forget(sock)
            return None
        keep = version == "HTTP/1.1" and fields.get("connection", "").lower() != "close"
        return _DirectBody(self, sock, status, bytes(head[end + 4 :]), int(length), keep)

    def push_blob(
        self, repo: str, digest: str, path: Path, *, mount_from: str | None = None
    ) -> str:
        """Make `digest` present in `repo`: `present`, `mounted` or `uploaded`.

        HEAD first (or, given `mount_from`, a cross-repository mount straight away); then a
        monolithic streamed upload. A failed upload starts again from a fresh session.
        """
        # A mount answers 201 for a blob the repository already has: no HEAD needed first.
        if not mount_from and self.blob_exists(repo, digest):
            return "present"
        if mount_from and not path.is_file():  # streamed there: no local copy
            return self._mount_or_relay(repo, digest, mount_from)
        scope = f"repository:{repo}:pull,push"
        if mount_from:
            scope += f" repository:{mount_from}:pull"
        size = path.stat().st_size
        for attempt in range(1, self.attempts + 1):
            query = f"?mount={digest}&from={mount_from}" if mount_from else ""
            response = self.request(
                "POST",
                f"/v2/{repo}/blobs/uploads/{query}",
                scope=scope,
                ok=frozenset({201, 202}),
            )
            if response.status_code == 201:
                return "mounted"
            location = response.headers.get("Location", "")
            if not location:
                raise RegistryError(f"{self.endpoint.host}: upload session without a Location")
            if not location.startswith("http"):
                location = self.endpoint.base_url + location
            sep = "&" if "?" in location else "?"
            try:
                self.request(
                    "PUT",
                    f"{location}{sep}digest={digest}",
                    scope=scope,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(size),
                    },
                    body=lambda: self._read_file(path, f"blob {digest}"),
                    ok=frozenset({201}),
                )
            except BlobStalled:
                raise
            except RegistryError:
                # A session broken by a retried PUT answers 404/400: open a new one.
                if attempt == self.attempts:
                    raise
                self.stats.add(retries=1)
                continue
            self.stats.add(sent=size)
            return "uploaded"
        raise RegistryError(f"{self.endpoint.host}: could not upload {digest}")  # pragma: no cover

    def _mount_or_relay(self, repo: str, digest: str, source: str) -> str:
        """`digest` into `repo` from `source` of the same registry: a mount, or where the
        registry will not mount, a download from `source` streamed into an upload."""
        if self.mount_blob(repo, digest, source):
            return "mounted"
        for _ in range(self.attempts):
            response = self.request(
                "GET",
                f"/v2/{source}/blobs/{digest}",
                scope=f"repository:{source}:pull",
                stream=True,
            )
            try:
                size = int(response.headers.get("Content-Length", "-1"))
                if size < 0:
                    raise RegistryError(f"{self.endpoint.host}: {digest} served without a size")
                if self.push_blob_stream(repo, digest, size, response.iter_bytes()):
                    return "uploaded"
            finally:
                response.close()
        raise RegistryError(f"{self.endpoint.host}: could not copy {digest} into {repo}")

    def stage_blob_stream(
        self, repo: str, digest: str, size: int, chunks: Iterable[bytes | memoryview]
    ) -> str | None:
        """Send `digest` from a one-pass stream of exactly `size` bytes into an upload session
        that is not completed: the blob exists in the registry only once `commit_upload` is
        called with the returned session URL, and `cancel_upload` throws the data away.

        The bytes go in requests of at most `patch_chunk` (`Content-Range`), each answered with
        the session's new state. An exception raised by `chunks` (a digest mismatch or a cut
        found by the reader) does not cut the request it happens in: that request is finished
        with zeros, so that the registry answers it with the session's current state, the
        session is cancelled with that state (a registry refuses any request that carries an
        older one, and would keep the session's data until it purges old uploads, a week by
        default), and the exception is passed on.

        None tells the caller the upload failed (a stream cannot be sent twice, so it is not
        retried here): upload it again from a file.
        """
        scope = f"repository:{repo}:pull,push"
        response = self.request(
            "POST", f"/v2/{repo}/blobs/uploads/", scope=scope, ok=frozenset({201, 202})
        )
        location = self._location(response)
        source = _Pieces(chunks)
        deadline = self._deadline(size)
        refused: list[BaseException] = []
        offset = 0

        def request_body(start: int, length: int) -> Callable[[], Iterator[bytes]]:
            sent = False

            def pieces() -> Iterator[bytes]:
                moved = 0
                try:
                    for piece in source.take(length):
                        self._on_time(deadline, f"blob {digest}", start + moved, size)
                        moved += len(piece)
                        # bytes(): the HTTP layer joins what it sends into bytes anyway
                        yield bytes(piece)
                except BlobStalled:
                    raise
                except Exception as exc:  # noqa: BLE001  (passed on once the session is gone)
                    # The reader refused the stream: finish the request with zeros.
                    refused.append(exc)
                    while moved < length:
                        zeros = min(length - moved, 1 << 20)
                        moved += zeros
                        yield bytes(zeros)

            def body() -> Iterator[bytes]:
                nonlocal sent
                if sent:  # an auth round or a retry asks again: the stream is gone
                    raise _StreamSpent
                sent = True
                return pieces()

            return body

        try:
            while offset < size and not refused:
                length = min(self.patch_chunk, size - offset)
                response = self.request(
                    "PATCH",
                    location,
                    scope=scope,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(length),
                        "Content-Range": f"{offset}-{offset + length - 1}",
                    },
                    body=request_body(offset, length),
                    ok=frozenset({202}),
                    attempts=1,
                )
                location = self._location(response)
                offset += length
            if not refused:
                source.end()  # the reader's last word: its digest check comes at the end
        except BlobStalled:
            self.cancel_upload(repo, location)
            raise
        except (_StreamSpent, RegistryError, EnvironmentProblem) as exc:
            log.info(
                "streamed upload of %s to %s failed (%s); will upload again", digest, repo, exc
            )
            self.stats.add(retries=1)
            self.cancel_upload(repo, location)
            return None
        except BaseException:
            self.cancel_upload(repo, location)
            raise
        if refused:
            self.cancel_upload(repo, location)
            raise refused[0]
        self.stats.add(sent=size)
        return location

    def push_blob_stream(
        self, repo: str, digest: str, size: int, chunks: Iterable[bytes | memoryview]
    ) -> bool:
        """Upload `digest` from a one-pass stream and complete it; True once stored."""
        location = self.stage_blob_stream(repo, digest, size, chunks)
        return location is not None and self.commit_upload(repo, digest, location)

    def commit_upload(self, repo: str, digest: str, location: str) -> bool:
        """Complete a staged upload as `digest` (the registry checks the digest); True once
        stored, False when the registry refused (the caller uploads it again)."""
        sep = "&" if "?" in location else "?"
        try:
            self.request(
                "PUT",
                f"{location}{sep}digest={digest}",
                scope=f"repository:{repo}:pull,push",
                headers={"Content-Type": "application/octet-stream", "Content-Length": "0"},
                ok=frozenset({201}),
                attempts=1,
            )
        except (RegistryError, EnvironmentProblem) as exc:
            log.info("completing the upload of %s to %s failed (%s)", digest, repo, exc)
            self.stats.add(retries=1)
            return False
        return True

    def cancel_upload(self, repo: str, location: str) -> None:
        """Throw a staged upload away (best effort: the registry expires it anyway)."""
        try:
            self.request(
                "DELETE",
                location,
                scope=f"repository:{repo}:pull,push",
                ok=frozenset({204, 404}),
                attempts=1,
            )
        except (RegistryError, EnvironmentProblem) as exc:
            log.info("cancelling an upload to %s failed (%s)", repo, exc)

    def _location(self, response: httpx.Response) -> str:
        location = str(response.headers.get("Location", ""))
        if not location:
            raise RegistryError(f"{self.endpoint.host}: upload session without a Location")
        return location if location.startswith("http") else self.endpoint.base_url + location

    def mount_blob(self, repo: str, digest: str, source: str) -> bool:
        """Mount `digest` from `source` into `repo`; False when the registry would not."""
        scope = f"repository:{repo}:pull,push repository:{source}:pull"
        response = self.request(
            "POST",
            f"/v2/{repo}/blobs/uploads/?mount={digest}&from={source}",
            scope=scope,
            ok=frozenset({201, 202}),
        )
        if response.status_code == 202 and response.headers.get("Location"):
            # The registry opened an upload instead; cancel it rather than leave it behind.
            location = response.headers["Location"]
            if not location.startswith("http"):
                location = self.endpoint.base_url + location
            self.request("DELETE", location, scope=scope, ok=frozenset({204, 404}))
        return response.status_code == 201

    def _read_file(self, path: Path, what: str) -> Iterator[bytes]:
        handle: BinaryIO
        size = path.stat().st_size
        deadline, sent = self._deadline(size), 0
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                # Asked for the next chunk only once the last is sent (a socket's write timeout
                # bounds one chunk; this bounds the blob).
                self._on_time(deadline, what, sent, size)
                if self.progress:
                    self.progress(len(chunk))
                sent += len(chunk)
                yield chunk


InstallerErrorT = RegistryError | EnvironmentProblem


def _proxied(endpoint: RegistryEndpoint) -> bool:
    """A proxy from the environment (`https_proxy`, ...) applies to the registry."""
    proxies = urllib.request.getproxies_environment()
    scheme = "http" if endpoint.plain_http else "https"
    if scheme not in proxies and "all" not in proxies:
        return False
    return not urllib.request.proxy_bypass(endpoint.host)


def _close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
