"""Every blob has an overall deadline (issue 21, item 14): a registry that gives or takes a blob
a byte at a time never trips a socket's timeout, so without one a load waits for days. Here a
real local server trickles a download, and an in-process transport reads an upload slowly."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from installer.engines.registry import BlobStalled, FileSink, RegistryClient, RegistryEndpoint

SIZE = 100_000


@contextlib.contextmanager
def _serving(handle: Callable[[socket.socket, threading.Event], None]) -> Iterator[int]:
    """A local plain HTTP server calling `handle(conn, stop)` for each connection, in a thread
    of its own; yields its port."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def one(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # OSError: the client gave up
            handle(conn, stop)

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


@pytest.fixture
def trickling_server() -> Iterator[int]:
    """A plain HTTP server that answers any request with a 100 kB body, one byte per 20 ms."""

    def trickle(conn: socket.socket, stop: threading.Event) -> None:
        conn.recv(65536)
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n".encode())
        while not stop.is_set():
            conn.sendall(b"x")
            time.sleep(0.02)

    with _serving(trickle) as port:
        yield port


def test_a_trickled_download_stops_at_its_deadline(trickling_server: int, tmp_path: Path) -> None:
    endpoint = RegistryEndpoint(f"127.0.0.1:{trickling_server}", plain_http=True)
    outcome: list[BaseException | None] = []

    def fetch() -> None:
        with RegistryClient(endpoint, attempts=1, blob_grace_s=0.5, blob_min_rate=1e9) as client:
            try:
                client.fetch_blob_into("a", "sha256:" + "0" * 64, FileSink(tmp_path / "b"), SIZE)
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    worker.join(timeout=15)  # the whole body would take 2000 s at this pace
    assert outcome, "the download did not stop at its deadline"
    assert isinstance(outcome[0], BlobStalled), outcome[0]
    assert "the registry or the network stalls" in outcome[0].message
    assert time.monotonic() - started < 10
    assert not (tmp_path / "b").exists()  # nothing unverified under the final name


@pytest.fixture
def slow_reading_server() -> Iterator[tuple[int, list[int]]]:
    """A plain HTTP registry stand-in that opens upload sessions at once and reads a PUT's body
    at 64 KiB per 100 ms; yields its port and how many body bytes it read."""
    read = [0]

    def answer(conn: socket.socket, status: str, extra: str = "") -> None:
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n{extra}\r\n".encode())

    def handle(conn: socket.socket, stop: threading.Event) -> None:
        pending = b""
        while not stop.is_set():
            while b"\r\n\r\n" not in pending:
                data = conn.recv(65536)
                if not data:
                    return
                pending += data
            head, _, pending = pending.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method = lines[0].split(" ")[0]
            fields = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
            length = int(fields.get("content-length", "0"))
            if method == "POST":
                answer(conn, "202 Accepted", "Location: /v2/a/blobs/uploads/1\r\n")
            elif method == "PUT":
                got = len(pending)
                pending = b""
                while got < length and not stop.is_set():
                    data = conn.recv(65536)
                    if not data:
                        return
                    got += len(data)
                    read[0] += len(data)
                    time.sleep(0.1)
                answer(conn, "201 Created")
            else:  # HEAD: not there yet
                answer(conn, "404 Not Found")

    with _serving(handle) as port:
        yield port, read


def test_a_slowly_read_upload_stops_at_its_deadline(
    slow_reading_server: tuple[int, list[int]], tmp_path: Path
) -> None:
    port, read = slow_reading_server
    size = 8 * 1024 * 1024 + 1  # nine chunks of the upload; about 13 s at the server's pace
    blob = tmp_path / "blob"
    blob.write_bytes(b"y" * size)
    digest = "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
    endpoint = RegistryEndpoint(f"127.0.0.1:{port}", plain_http=True)
    started = time.monotonic()
    with (
        RegistryClient(endpoint, attempts=2, blob_grace_s=0.5, blob_min_rate=1e9) as client,
        pytest.raises(BlobStalled, match=rf"blob sha256:\w+: \d+ of {size} bytes"),
    ):
        client.push_blob("a", digest, blob)
    assert time.monotonic() - started < 8
    assert 0 < read[0] < size  # stopped before the whole blob went, and not sent again
