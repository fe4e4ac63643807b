"""`hub.pull_read_only`: the verify check that the clusters' pull login cannot write (issue 21,
item 10), against a hub played by an HTTP transport: one that refuses as the real endpoints do
(the lab's run shows those), and hubs that let the login do more."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from installer.checks import verify_site
from installer.checks.context import SiteAccess
from installer.checks.framework import Finding
from installer.inventory import Inventory, load_inventory
from installer.pki import ensure_pki
from installer.state import HUB_PULL_PASSWORD_SECRET, HUB_PULL_USER, StateDir

REPO = Path(__file__).resolve().parents[3]
Answer = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def site(tmp_path: Path) -> Inventory:
    inv = load_inventory(REPO / "inventories" / "lab.yml")
    inv = inv.model_copy(update={"site": inv.site.model_copy(update={"state_dir": str(tmp_path)})})
    state = StateDir(tmp_path)
    ensure_pki(state, inv.aux_vm.tls, "lab", ["hub.ml.lab.test"], [str(inv.aux_vm.address)])
    state.secret(HUB_PULL_PASSWORD_SECRET)
    return inv


def _run(
    site: Inventory, answer: Answer, monkeypatch: pytest.MonkeyPatch
) -> tuple[Finding, list[str]]:
    seen: list[str] = []
    password = StateDir(Path(site.site.state_dir)).secret(HUB_PULL_PASSWORD_SECRET)

    def handler(request: httpx.Request) -> httpx.Response:
        expected = httpx.BasicAuth(HUB_PULL_USER, password.get_secret_value())
        assert (
            request.headers["Authorization"]
            == next(expected.auth_flow(request)).headers["Authorization"]
        )
        seen.append(f"{request.method} {request.url.port}{request.url.path}")
        return answer(request)

    real = httpx.Client
    monkeypatch.setattr(
        verify_site.httpx,
        "Client",
        lambda **kw: real(**{**kw, "transport": httpx.MockTransport(handler)}),
    )
    return verify_site.check_pull_login_read_only(SiteAccess(site)), seen


def _hub(request: httpx.Request) -> httpx.Response:
    """The hub as it should be: reads on 5000, 405 on its uploads, 404 for ChartMuseum's API on
    8080, and the push ports (5001, 8081) do not know the login."""
    port, method = request.url.port, request.method
    if port in (5001, 8081):
        return httpx.Response(401)
    if port == 5000:
        return httpx.Response(200 if method == "GET" else 405)
    return httpx.Response(404)


def test_a_hub_that_refuses_every_write_passes(
    site: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    finding, seen = _run(site, _hub, monkeypatch)
    assert finding.ok, finding.message
    assert seen == [
        "GET 5000/v2/",
        "POST 5000/v2/onprem-installer/verify-pull-login/blobs/uploads/",
        "GET 5001/v2/",
        "POST 8080/api/charts",
        "GET 8081/api/charts",
    ]


def test_a_writable_pull_endpoint_fails_and_its_upload_is_cancelled(
    site: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry of a hub from before the split: one read-write endpoint for every login."""

    def writable(request: httpx.Request) -> httpx.Response:
        if request.url.port == 5000 and request.method == "POST":
            return httpx.Response(202, headers={"Location": "/v2/x/blobs/uploads/u1?_state=s"})
        if request.url.port == 5000 and request.method == "DELETE":
            return httpx.Response(204)
        return _hub(request)

    finding, seen = _run(site, writable, monkeypatch)
    assert not finding.ok
    assert "cluster-pull can do more than read" in finding.message
    assert "blobs/uploads/ answered HTTP 202" in finding.message
    assert "DELETE 5000/v2/x/blobs/uploads/u1" in seen


@pytest.mark.parametrize(
    ("port", "status"),
    [(5001, 200), (8081, 200), (8080, 201)],
    ids=["registry-push-port-takes-it", "chart-push-port-takes-it", "chart-api-on"],
)
def test_any_endpoint_that_lets_the_pull_login_write_fails(
    site: Inventory, monkeypatch: pytest.MonkeyPatch, port: int, status: int
) -> None:
    def lax(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status) if request.url.port == port else _hub(request)

    finding, _ = _run(site, lax, monkeypatch)
    assert not finding.ok
    assert f":{port}/" in finding.message and f"HTTP {status}" in finding.message


def test_a_pull_login_the_registry_refuses_fails(
    site: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    finding, _ = _run(site, lambda _r: httpx.Response(401), monkeypatch)
    assert not finding.ok
    assert "refuses the pull login (HTTP 401)" in finding.message
