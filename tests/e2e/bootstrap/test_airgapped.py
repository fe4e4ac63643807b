"""The air-gapped variant end to end (issue 8, the demo's `make demo-airgap`).

A bundle is built from the lab's upstream (the stand-in internet) and verified; the lab site
(`inventories/lab-airgap.yml`) is taken back to nothing by `installer destroy --purge`: cluster
side destroyed, the hub's services and data gone from the VM. The upstream is switched off and
proved off; then one `installer bootstrap --bundle` brings the site from an empty hub to a
verified platform: every image, chart and wheel on the hub came from the bundle, Pulumi ran
from the bundle's binaries, and the hub's own programs (ChartMuseum, DevPI's wheelhouse) were
installed from the bundle too: the bootstrap runs without the INSTALLER_HUB_* variables. A
second bootstrap with the same bundle changes nothing, and `installer plan --expect-no-changes`
with the bundle agrees.

The module holds the lab site alone (`site_lock()`) from first to last, and gives it back as it
found it: the cluster side destroyed and the upstream switched on again.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from installer.airgap.load import site_target
from installer.airgap.manifest import BundleManifest, write_keypair
from installer.engines.registry import RegistryClient
from installer.inventory import load_inventory
from installer.release import load_release
from installer.site import normalize_image
from installer.state import StateDir
from tests.e2e.bootstrap.cli import installer, site_lock, tool_env
from tests.e2e.bootstrap.runs import Bootstrap, hub_data_left, run_bootstrap, upstream
from tests.fixtures.auxvm import chartmuseum_binary, devpi_wheelhouse
from tests.fixtures.lab import REPO, Lab, site_inventory
from tests.fixtures.lab_services import LabServices

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INVENTORY = site_inventory("lab-airgap")


@dataclass(frozen=True)
class AirgappedSite:
    """What the module's one air-gapped install left to look at."""

    listing: dict[str, Any]
    """`airgap-verify -o json` of the bundle: its images with their digests."""
    left_after_purge: list[str]
    """The hub's folders still on the VM after `destroy --purge` (none)."""
    refused_before: dict[int, bool]
    refused_after: dict[int, bool]
    first: Bootstrap
    second: Bootstrap
    plan_rc: int
    plan_tail: str
    hub_vars: dict[str, Any]
    """The auxvm play's variables of the first bootstrap (`<state>/ansible/aux-vm.inventory...`)."""
    hub_from: Path
    """The `--hub-from` folder the bundle was built with (the lab's programs)."""


def _upstream_ports(services: LabServices) -> list[int]:
    """The registry's, the chart repository's and the wheel index's ports."""
    urls = [f"https://{services.registry}", services.charts_url, services.pypi_url]
    ports = []
    for url in urls:
        hostport = url.removeprefix("https://").split("/", 1)[0]
        ports.append(int(hostport.rsplit(":", 1)[1]))
    return ports


def _refused(port: int) -> bool:
    """True when 127.0.0.1:`port` refuses connections (nothing listens)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


HUB_OVERRIDES = (
    "INSTALLER_HUB_CHARTMUSEUM_BINARY",
    "INSTALLER_HUB_DEVPI_WHEELHOUSE",
    "INSTALLER_HUB_REGISTRY_BINARY",
)


def _airgapped_env(lab: Lab) -> dict[str, str]:
    """The lab's tool environment less its Pulumi build and its hub programs: Pulumi and the
    hub's programs must come from the bundle."""
    env = tool_env(lab)
    for var in ("LAB_PULUMI_BIN_DIR", "INSTALLER_PULUMI_BIN_DIR", *HUB_OVERRIDES):
        env.pop(var, None)
    # The lab's Keycloak is the site's identity provider, signed by the lab CA.
    env["SSL_CERT_FILE"] = lab.env["LAB_KEYCLOAK_CA"]
    return env


def _hub_from(dest: Path) -> Path:
    """A `--hub-from` folder of the lab's programs (links: the bundle gets their content)."""
    dest.mkdir()
    (dest / "chartmuseum").symlink_to(chartmuseum_binary())
    (dest / "devpi-wheels").symlink_to(devpi_wheelhouse(), target_is_directory=True)
    return dest


def _hub_vars() -> dict[str, Any]:
    state = StateDir(load_inventory(INVENTORY).site.state_dir).root
    doc = json.loads((state / "ansible" / "aux-vm.inventory.json").read_text(encoding="utf-8"))
    return doc["all"]["children"]["aux_vm"]["vars"]  # type: ignore[no-any-return]


def _release_for_lab(services: LabServices, dest: Path) -> Path:
    """The release manifest, less binaries the lab could not build (30-pulumi.sh records them)."""
    text = (REPO / "airgap" / "release.yml").read_text(encoding="utf-8")
    missing = [
        b.name for b in load_release().binaries if not (services.pulumi_bin_dir / b.name).is_file()
    ]
    assert "pulumi" not in missing, "the lab must provide the Pulumi CLI"
    lines = [ln for ln in text.splitlines() if not any(f"name: {m}," in ln for m in missing)]
    dest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def airgapped_site(
    lab: Lab, lab_services: LabServices, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirgappedSite]:
    tmp = tmp_path_factory.mktemp("airgapped")
    env = _airgapped_env(lab)
    with site_lock():
        upstream("up")  # idempotent; on in case a run elsewhere stopped short of restoring it
        # The connected side: a signed bundle from the upstream, checked.
        key, pub = tmp / "bundle-sign.pem", tmp / "bundle-verify.pem"
        write_keypair(key, pub)
        assert key.stat().st_mode & 0o777 == 0o600
        bundle = tmp / "site.bundle"
        hub_from = _hub_from(tmp / "hub-from")
        auth = lab_services.auth
        rc, _, tail = installer(
            "airgap-bundle", "--release", str(_release_for_lab(lab_services, tmp / "release.yml")),
            "-f", str(bundle), "--sign-key", str(key),
            "--registry-mirror", lab_services.registry, "--upstream-ca", str(lab_services.ca),
            "--upstream-user", auth.user, "--charts-from", lab_services.charts_url,
            "--wheels-from", lab_services.pypi_url,
            "--binaries-from", str(lab_services.pulumi_bin_dir), "--hub-from", str(hub_from),
            "--pins", str(lab_services.pins),
            log_dir=tmp / "logs", timeout=1800,
            env={**os.environ, "INSTALLER_UPSTREAM_PASSWORD": auth.password},
        )  # fmt: skip
        assert rc == 0, f"airgap-bundle failed (exit {rc}):\n{tail}"
        rc, listing, tail = installer(
            "airgap-verify", str(bundle), "--verify-key", str(pub),
            log_dir=tmp / "logs", timeout=600,
        )  # fmt: skip
        assert rc == 0, f"airgap-verify failed (exit {rc}):\n{tail}"

        # The site back to nothing: no stacks on the cluster, an empty hub.
        rc, _, tail = installer(
            "destroy", "-i", str(INVENTORY), "--yes", "--purge",
            log_dir=tmp / "logs", timeout=900, env=env,
        )  # fmt: skip
        assert rc == 0, f"destroy --purge failed (exit {rc}):\n{tail}"
        left_after_purge = hub_data_left(lab, INVENTORY)

        ports = _upstream_ports(lab_services)
        upstream("down")
        try:
            refused_before = {p: _refused(p) for p in ports}
            given = ("--bundle", str(bundle), "--verify-key", str(pub))
            first = run_bootstrap(INVENTORY, tmp / "first", env, *given)
            hub_vars = _hub_vars() if first.rc == 0 else {}
            refused_after = {p: _refused(p) for p in ports}
            second = (
                run_bootstrap(INVENTORY, tmp / "second", env, *given) if first.rc == 0 else first
            )
            plan_rc, _, plan_tail = installer(
                "plan", "-i", str(INVENTORY), "--expect-no-changes", *given,
                log_dir=tmp / "plan", timeout=900, env=env,
            )  # fmt: skip
            (tmp / "phase-seconds.json").write_text(
                json.dumps({"first": first.seconds(), "second": second.seconds()}, indent=1)
            )
            yield AirgappedSite(
                listing,
                left_after_purge,
                refused_before,
                refused_after,
                first,
                second,
                plan_rc,
                plan_tail,
                hub_vars,
                hub_from,
            )
        finally:
            try:
                rc, _, tail = installer(
                    "destroy", "-i", str(INVENTORY), "--yes", "--skip", "auxvm",
                    log_dir=tmp / "logs", timeout=900, env=env,
                )  # fmt: skip
            finally:
                upstream("up")
            assert rc == 0, f"destroy of the cluster side failed (exit {rc}):\n{tail}"


def test_destroy_purge_took_the_hub_off_the_vm(airgapped_site: AirgappedSite) -> None:
    assert airgapped_site.left_after_purge == []


def test_the_upstream_is_off_for_the_whole_bootstrap(airgapped_site: AirgappedSite) -> None:
    assert airgapped_site.refused_before and all(airgapped_site.refused_before.values())
    assert all(airgapped_site.refused_after.values()), airgapped_site.refused_after


def test_bootstrap_from_the_bundle_ends_verified(airgapped_site: AirgappedSite) -> None:
    first = airgapped_site.first
    assert first.rc == 0, f"bootstrap failed (exit {first.rc}):\n{first.tail}"
    assert first.summary["ok"] is True
    ran = {p["phase"]: p["status"] for p in first.summary["phases"]}
    assert ran == {
        "preflight": "ok", "auxvm": "ok", "airgap_load": "ok", "nodes": "ok", "storage": "ok",
        "dns": "ok", "keycloak": "ok", "platform": "ok", "verify": "ok",
    }  # fmt: skip
    report = json.loads((first.run_dir / "verify-report.json").read_text(encoding="utf-8"))
    assert report["ok"] is True
    failed = [f"{r['id']} [{r['target']}]: {r['message']}" for r in report["results"]
              if r["status"] in ("fail", "warn")]  # fmt: skip
    assert not failed
    assert any(r["id"] == "hub.registry_image" and r["status"] == "pass" for r in report["results"])


def test_everything_on_the_hub_came_from_the_bundle(airgapped_site: AirgappedSite) -> None:
    """The hub started empty: the load pushed every image, and the hub now resolves each
    release image to the bundle's digest and lists every chart."""
    load = airgapped_site.first.phase("airgap_load")
    images = airgapped_site.listing["images"]
    assert load["message"].startswith(f"{len(images)} images,"), load
    target, _ = site_target(load_inventory(INVENTORY))
    release = load_release()
    bundled = {f"{i['name']}:{i['tag']}": i["digest"] for i in images}
    with RegistryClient(target.registry) as client:
        for image in release.images:
            ref = f"{normalize_image(image.name)}:{image.tag}"
            digest = client.manifest_digest(normalize_image(image.name), image.tag)
            assert digest is not None, f"the hub lacks {ref}"
            assert digest == bundled[ref], ref
    assert target.charts is not None
    charts = target.charts.chart_names()
    for chart in release.charts:
        assert chart.version in charts.get(chart.name, []), chart.name


def test_a_second_bootstrap_with_the_same_bundle_changes_nothing(
    airgapped_site: AirgappedSite,
) -> None:
    second = airgapped_site.second
    assert second is not airgapped_site.first, "the first bootstrap failed"
    assert second.rc == 0, second.tail
    changed = {p["phase"]: p["changes"] for p in second.summary["phases"] if p["changes"]}
    assert second.summary["changes"] == 0, changed
    assert "already holds the bundle" in second.phase("airgap_load")["message"]


def test_plan_with_the_bundle_expects_no_changes(airgapped_site: AirgappedSite) -> None:
    assert airgapped_site.plan_rc == 0, airgapped_site.plan_tail


def test_the_hubs_programs_came_from_the_bundle(airgapped_site: AirgappedSite) -> None:
    """No INSTALLER_HUB_* variable was set: the play installed ChartMuseum and DevPI from the
    bundle's hub items, extracted (verified) into the state folder."""
    manifest = BundleManifest.model_validate(
        {k: v for k, v in airgapped_site.listing.items() if k not in ("ok", "manifest_sha256")}
    )
    hub_items = {i.path: i for i in manifest.items if i.kind == "hub"}
    assert "hub/chartmuseum" in hub_items
    wheels = sorted(p.name for p in (airgapped_site.hub_from / "devpi-wheels").glob("*.whl"))
    assert (
        wheels
        and sorted(
            p.removeprefix("hub/devpi-wheels/") for p in hub_items if p.startswith("hub/devpi-")
        )
        == wheels
    )
    assert airgapped_site.first.rc == 0, airgapped_site.first.tail
    hub_vars = airgapped_site.hub_vars
    chartmuseum = Path(hub_vars["hub_chartmuseum_binary_src"])
    wheelhouse = Path(hub_vars["hub_devpi_wheelhouse_src"])
    assert chartmuseum.parts[-3:] == ("airgap", "hub", "chartmuseum"), chartmuseum
    assert wheelhouse.parts[-3:] == ("airgap", "hub", "devpi-wheels"), wheelhouse
    assert chartmuseum.read_bytes() == chartmuseum_binary().read_bytes()
    assert sorted(p.name for p in wheelhouse.glob("*.whl")) == wheels
