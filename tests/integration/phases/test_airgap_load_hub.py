"""The `airgap_load` phase against a real hub (docker-registry and ChartMuseum on loopback, TLS
and basic auth) on a connected site that names no upstream: the phase checks the hub against
the release manifest and stops with a remedy that points at `upstream:`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from installer.airgap.archive import open_bundle
from installer.airgap.files import sha256_file
from installer.airgap.hub import ChartMuseum, ContentDiffers
from installer.errors import BadInputError
from installer.inventory import load_inventory
from installer.phases.airgap_load import AirgapLoadPhase
from installer.phases.base import Event, PhaseContext
from installer.release import load_release
from installer.state import StateDir
from tests.fixtures.hubservices import Server, make_chart, start_chartmuseum
from tests.fixtures.registries import PASSWORD, USER, Pki, Registry, Upstream, start_registry
from tests.integration.airgap.helpers import (
    PASSWORD_ENV,
    bundle_args,
    cli,
    keypair,
    pin_release,
    write_release,
)

pytestmark = pytest.mark.integration

BASE = Path(__file__).resolve().parents[2] / "unit" / "inventory" / "base.yml"


@pytest.fixture
def empty_hub(tmp_path: Path, registry_pki: Pki) -> Iterator[tuple[Registry, Server]]:
    registry = start_registry(tmp_path / "registry", registry_pki)
    try:
        charts = start_chartmuseum(tmp_path / "chartmuseum", registry_pki)
        try:
            yield registry, charts
        finally:
            charts.stop()
    finally:
        registry.stop()


def _context(tmp_path: Path, registry: Registry, charts: Server, pki: Pki) -> PhaseContext:
    registry_port = registry.host.rsplit(":", 1)[1]
    charts_port = charts.url.rsplit(":", 1)[1]
    text = BASE.read_text().replace(
        "  domain: ml.example.com", "  domain: ml.example.com\n  state_dir: state"
    )
    text = text.replace(
        "  address: 192.0.2.10",
        "  address: 127.0.0.1\n  hostname: 127.0.0.1\n  services:\n"
        # The test's servers are the hub's read-write endpoints, where the phase looks and
        # pushes; nothing here reads from the clusters' read-only ones (ports 1 and 2).
        f"    registry: {{port: 1, push_port: {registry_port}, data_path: /srv/registry}}\n"
        f"    chartmuseum: {{port: 2, push_port: {charts_port}, data_path: /srv/charts}}",
    )
    path = tmp_path / "site.yml"
    path.write_text(text)
    state = StateDir(tmp_path / "state")
    # What the auxvm phase leaves in the state folder: the site CA and the hub login's password.
    state.pki.mkdir(parents=True)
    shutil.copyfile(pki.ca_cert, state.ca_cert)
    state.secrets.mkdir(mode=0o700)
    (state.secrets / "hub-password").write_text(PASSWORD + "\n")
    events: list[Event] = []
    return PhaseContext(load_inventory(path), path, state, tmp_path / "run", events.append)


def test_connected_site_without_upstream_names_what_the_hub_lacks(
    tmp_path: Path, empty_hub: tuple[Registry, Server], registry_pki: Pki
) -> None:
    ctx = _context(tmp_path, *empty_hub, registry_pki)
    assert ctx.inventory.upstream is None and not ctx.inventory.site.airgapped
    release = load_release()
    phase = AirgapLoadPhase()

    plan = phase.plan(ctx)
    planned = {(c.kind, c.name) for c in plan.changes}
    assert {("chart", f"{c.name} {c.version}") for c in release.charts} <= planned
    assert len(plan.changes) == len(release.images) + len(release.charts)

    with pytest.raises(BadInputError) as info:
        phase.apply(ctx)
    error = info.value
    total = len(release.images) + len(release.charts)
    assert error.message.startswith(
        f"the inventory names no upstream and the hub lacks {total} item(s) of the release"
    )
    assert "upstream:" in (error.remedy or "") and "airgap-load" in (error.remedy or "")


def test_bootstrap_replaces_a_changed_chart_only_when_asked(
    tmp_path: Path,
    empty_hub: tuple[Registry, Server],
    registry_pki: Pki,
    upstream: Upstream,
) -> None:
    """`bootstrap --replace-changed` reaches the load: a chart the hub serves under the
    release's name with other bytes stops the phase (its remedy names the flag), and with the
    flag the release's chart takes its place."""
    registry, charts = empty_hub
    src = tmp_path / "charts-src"
    ours = make_chart(src, "app", "1.0.0")
    theirs = make_chart(tmp_path / "hand", "app", "1.0.0", description="uploaded by hand")
    release = write_release(
        tmp_path / "release.yml",
        ["ghcr.io/test/app:1.0"],
        "charts:\n"
        '  - {name: app, version: "1.0.0", repository: "https://x", component: platform}\n',
    )
    pin_release(release, upstream, charts=src)
    key, pub = keypair(tmp_path / "keys")
    bundle = tmp_path / "site.tar.zst"
    built = cli(
        *bundle_args(upstream, release, bundle, key), "--charts-from", str(src),
        log_dir=tmp_path / "logs", env=PASSWORD_ENV,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    hub = ChartMuseum(charts.url, registry_pki.ca_cert, USER, SecretStr(PASSWORD))
    assert hub.upload("app", "1.0.0", theirs, sha256_file(theirs)) is True

    ctx = _context(tmp_path, registry, charts, registry_pki)
    ctx.bundle = open_bundle(bundle, pub)
    with pytest.raises(ContentDiffers) as refused:
        AirgapLoadPhase().apply(ctx)
    assert "--replace-changed" in (refused.value.remedy or "")
    assert "bootstrap" in (refused.value.remedy or "")
    assert hub.digest("app", "1.0.0") == sha256_file(theirs)

    ctx.replace_changed = True
    AirgapLoadPhase().apply(ctx)
    assert hub.digest("app", "1.0.0") == sha256_file(ours)
