"""Blob bodies over the client's own connections: only where no proxy from the environment
applies (httpx carries them through the proxy otherwise)."""

from __future__ import annotations

import pytest

from installer.engines.registry import RegistryClient, RegistryEndpoint, _proxied

REGISTRY = RegistryEndpoint("registry.example.com:5000")


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("https_proxy", "http_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_no_proxy_in_the_environment_reads_blobs_directly() -> None:
    assert not _proxied(REGISTRY)
    with RegistryClient(REGISTRY) as client:
        assert client._direct


def test_a_proxy_for_the_scheme_sends_blobs_through_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.example.com:3128")
    assert _proxied(REGISTRY)
    assert not _proxied(RegistryEndpoint("registry.example.com:5000", plain_http=True))
    with RegistryClient(REGISTRY) as client:
        assert not client._direct
    monkeypatch.setenv("all_proxy", "http://proxy.example.com:3128")
    assert _proxied(RegistryEndpoint("registry.example.com:5000", plain_http=True))


def test_no_proxy_exempts_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.example.com:3128")
    monkeypatch.setenv("no_proxy", ".example.com")
    assert not _proxied(REGISTRY)
