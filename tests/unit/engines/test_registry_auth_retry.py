"""The registry client's login only goes where it belongs, and a server's `Retry-After` is
honoured (issue 21, item 14). The client talks to an in-process HTTP transport (httpx's
MockTransport) that records every request."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator

import httpx
import pytest
from pydantic import SecretStr

from installer.engines import registry
from installer.engines.registry import MAX_RETRY_AFTER_S, RegistryClient, RegistryEndpoint

ENDPOINT = RegistryEndpoint("registry.example.com:5000", None, "installer", SecretStr("s3cret-pw"))
BASIC = "Basic " + base64.b64encode(b"installer:s3cret-pw").decode()

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def client() -> Iterator[RegistryClient]:
    with RegistryClient(ENDPOINT, attempts=3) as found:
        yield found


def _serve(client: RegistryClient, handler: Handler) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    client._http = httpx.Client(transport=httpx.MockTransport(record), follow_redirects=True)
    return seen


def _bearer_registry(realm: str) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return httpx.Response(200, json={"token": "t0ken"})
        if request.headers.get("Authorization") == "Bearer t0ken":
            return httpx.Response(200, json={"schemaVersion": 2})
        challenge = f'Bearer realm="{realm}",service="registry",scope="repository:a:pull"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    return handle


@pytest.mark.parametrize(
    ("realm", "gets_login"),
    [
        ("https://registry.example.com:5000/token", True),
        ("https://registry.example.com/token", True),  # the same host on another port
        ("https://auth.elsewhere.example/token", False),  # another host
        ("http://registry.example.com:5000/token", False),  # the same host in clear
    ],
)
def test_the_login_goes_only_to_a_token_realm_on_the_registrys_host_over_https(
    client: RegistryClient, realm: str, gets_login: bool
) -> None:
    seen = _serve(client, _bearer_registry(realm))
    client.request("GET", "/v2/a/manifests/1", scope="repository:a:pull")
    (token,) = [r for r in seen if r.url.path == "/token"]
    assert (token.headers.get("Authorization") == BASIC) is gets_login
    others = [r for r in seen if r is not token]
    assert all(r.headers.get("Authorization") != BASIC for r in others)


@pytest.mark.parametrize(
    ("status", "header", "expected"),
    [
        (429, "7", 7.0),
        (503, "2", 2.0),
        (429, "3600", MAX_RETRY_AFTER_S),
        (503, "Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: go now
        (502, "9", 0.2),  # only 429 and 503 carry it; the client's own backoff otherwise
        (429, "soon", 0.2),
    ],
)
def test_retry_after_is_honoured(
    client: RegistryClient,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    header: str,
    expected: float,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(registry.time, "sleep", slept.append)
    answers = iter([httpx.Response(status, headers={"Retry-After": header}), httpx.Response(200)])
    client._scheme = "basic"
    _serve(client, lambda request: next(answers))
    client.request("GET", "/v2/", scope="")
    assert slept == [expected]
