"""Loading a kubeconfig from several threads at once (what Pulumi's dynamic providers do).

The kubernetes client writes a kubeconfig's embedded certificate and key to temporary files that
it shares between loads of the same content, and records a file's name before writing it. A
thread that loads the same kubeconfig in between got an empty file, and its first request failed
with `[SSL] PEM lib` (seen in CI refreshing the nodes stack). `installer.engines.kube` loads under
one lock; these tests widen the client's window so that the race happens every time without it.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.config import kube_config

from installer.engines import kube
from installer.inventory.models import TlsSettings
from installer.pki import ensure_pki
from installer.state import StateDir

THREADS = 6


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig whose CA, client certificate and key are embedded (`*-data`), as the lab's
    (the installer's own site PKI makes them)."""
    pki, _ = ensure_pki(StateDir(tmp_path / "state"), TlsSettings(), "t", ["kube.test"], [])
    cert_pem = pki.server_cert.read_bytes()
    key_pem = pki.server_key.read_bytes()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": "https://127.0.0.1:1",
                    "certificate-authority-data": _b64(pki.ca_cert.read_bytes()),
                },
            }
        ],
        "users": [
            {
                "name": "u",
                "user": {
                    "client-certificate-data": _b64(cert_pem),
                    "client-key-data": _b64(key_pem),
                },
            }
        ],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.fixture
def slow_client_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's temporary files start empty (none shared yet) and take 0.4 s to write."""
    monkeypatch.setattr(kube_config, "_temp_files", {})

    def slow_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode:
            time.sleep(0.4)
        return builtins.open(file, mode, *args, **kwargs)  # noqa: PTH123 (stands in for open)

    monkeypatch.setattr(kube_config, "open", slow_open, raising=False)


def _loaded_in_threads(kubeconfig: Path) -> list[tuple[Any, int]]:
    """`load_configuration` from THREADS threads, each starting 50 ms after the one before;
    each configuration with the size its certificate file had when the load returned."""
    start = threading.Barrier(THREADS)

    def load(index: int) -> Any:
        start.wait()
        time.sleep(0.05 * index)
        configuration = kube.load_configuration(kubeconfig)
        return configuration, Path(configuration.cert_file).stat().st_size

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(load, range(THREADS)))


@pytest.mark.usefixtures("slow_client_writes")
def test_concurrent_loads_each_get_a_whole_certificate_and_key(kubeconfig: Path) -> None:
    for configuration, size in _loaded_in_threads(kubeconfig):
        assert size > 0
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # Raises ssl.SSLError "PEM lib" on an empty or half-written file.
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
        context.load_verify_locations(configuration.ssl_ca_cert)


@pytest.mark.usefixtures("slow_client_writes")
def test_without_the_lock_a_load_gets_an_empty_certificate(
    kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race itself, with the lock taken away: proves the test above can fail."""
    monkeypatch.setattr(kube, "_LOAD_LOCK", contextlib.nullcontext())
    sizes = [size for _, size in _loaded_in_threads(kubeconfig)]
    assert 0 in sizes  # the client's race is still there, so the lock is still needed


def test_api_client_targets_the_kubeconfigs_server(kubeconfig: Path) -> None:
    assert kube.api_client(kubeconfig).configuration.host == "https://127.0.0.1:1"
