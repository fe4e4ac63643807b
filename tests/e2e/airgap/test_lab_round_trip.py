"""The air-gapped round trip from the lab's upstream: `airgap-bundle` from the stand-in
upstream registry, chart repository and wheel index with the real release manifest; then
`airgap-verify`; then `airgap-load` into empty loopback services and into the lab VM's hub;
then skopeo (with the CA) finds every image, ChartMuseum lists every chart, and pip installs
the installer from DevPI with no other index."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from installer.airgap.hub import ChartMuseum
from installer.release import ReleaseManifest, load_release
from tests.fixtures.auxvm import Hub
from tests.fixtures.hubservices import Server
from tests.fixtures.lab import site_inventory
from tests.fixtures.lab_services import LabServices
from tests.fixtures.registries import PASSWORD, USER, Registry
from tests.integration.airgap.helpers import keypair, load_args, skopeo_digest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[3]
CLI = [sys.executable, "-m", "installer.cli"]


@dataclass(frozen=True)
class LabBundle:
    """A bundle built from the lab upstream, its keys and what it lists."""

    path: Path
    pub: Path
    release: ReleaseManifest
    listing: dict[str, Any]


def _release_for_lab(lab_services: LabServices, dest: Path) -> Path:
    """The real release manifest, less binaries the lab could not build (recorded as
    unavailable by lab/components/30-pulumi.sh)."""
    text = (REPO / "airgap" / "release.yml").read_text()
    missing = [
        b.name
        for b in load_release().binaries
        if not (lab_services.pulumi_bin_dir / b.name).is_file()
    ]
    assert "pulumi" not in missing, "the lab must provide the Pulumi CLI"
    lines = [ln for ln in text.splitlines() if not any(f"name: {m}," in ln for m in missing)]
    dest.write_text("\n".join(lines) + "\n")
    return dest


@pytest.fixture(scope="module")
def lab_bundle(tmp_path_factory: pytest.TempPathFactory, lab_services: LabServices) -> LabBundle:
    """`airgap-bundle` from the lab upstream, then `airgap-verify` of the result."""
    tmp = tmp_path_factory.mktemp("lab-bundle")
    release = _release_for_lab(lab_services, tmp / "release.yml")
    key, pub = keypair(tmp / "keys")
    bundle = tmp / "site.tar.zst"
    auth = lab_services.auth
    env = {**os.environ, "INSTALLER_UPSTREAM_PASSWORD": auth.password}
    log = ["--log-dir", str(tmp / "logs")]
    built = subprocess.run(
        [*CLI, *log, "airgap-bundle", "--release", str(release), "-f", str(bundle),
         "--sign-key", str(key), "--registry-mirror", lab_services.registry,
         "--upstream-ca", str(lab_services.ca), "--upstream-user", auth.user,
         "--charts-from", lab_services.charts_url, "--wheels-from", lab_services.pypi_url,
         "--binaries-from", str(lab_services.pulumi_bin_dir), "--pins", str(lab_services.pins),
         "-o", "json"],
        capture_output=True, text=True, env=env, check=False, timeout=1800,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    verified = subprocess.run(
        [*CLI, *log, "airgap-verify", str(bundle), "--verify-key", str(pub), "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert verified.returncode == 0, verified.stderr
    listing = json.loads(verified.stdout)
    manifest = load_release(release)
    assert len(listing["images"]) == len(manifest.images)
    return LabBundle(bundle, pub, manifest, listing)


def _pip_install(index: str, target: Path, wheel: str, *extra: str) -> None:
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir",
         "--disable-pip-version-check", "--index-url", f"{index}/+simple/", *extra,
         "--target", str(target), wheel],
        capture_output=True, text=True, check=False, timeout=1200,
        env={"PATH": "/usr/bin:/bin", "HOME": str(target.parent), "PIP_CONFIG_FILE": os.devnull},
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-2000:]
    assert (target / "installer" / "__init__.py").is_file()


def test_lab_bundle_loads_into_empty_hub_services(
    tmp_path: Path,
    lab_bundle: LabBundle,
    empty_registry: Registry,
    chartmuseum: Server,
    devpi: tuple[str, str],
) -> None:
    site_index, _ = devpi
    env = {**os.environ, "INSTALLER_HUB_PASSWORD": PASSWORD}
    loaded = subprocess.run(
        [*CLI, "--log-dir", str(tmp_path / "logs"),
         *load_args(lab_bundle.path, lab_bundle.pub, empty_registry, tmp_path / "work"),
         "--charts-url", chartmuseum.url, "--pypi-url", site_index,
         "--binaries-dir", str(tmp_path / "bin"), "-o", "json"],
        capture_output=True, text=True, env=env, check=False, timeout=1800,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    for img in lab_bundle.listing["images"]:
        ref = f"{img['name']}:{img['tag']}"
        assert skopeo_digest(empty_registry, ref, tmp_path / "certs") == img["digest"]
    charts = ChartMuseum(chartmuseum.url, empty_registry.pki.ca_cert, USER, SecretStr(PASSWORD))
    assert charts.chart_names() == {c.name: [c.version] for c in lab_bundle.release.charts}
    wheel = next(w for w in lab_bundle.release.wheels if w.name == "onprem-installer")
    _pip_install(site_index, tmp_path / "site-packages", f"{wheel.name}=={wheel.version}")
    for binary in lab_bundle.release.binaries:
        assert os.access(tmp_path / "bin" / binary.name, os.X_OK)


def test_lab_bundle_loads_into_the_vm_hub(
    tmp_path: Path, lab_bundle: LabBundle, session_hub: Hub
) -> None:
    """Into the VM's registry, ChartMuseum and DevPI, with the site CA and the generated
    password from the state folder (`--inventory`); the VM is reached by its address."""
    hub = session_hub
    inventory = site_inventory("lab")
    run = [
        *CLI, "--log-dir", str(tmp_path / "logs"), "airgap-load", str(lab_bundle.path),
        "--verify-key", str(lab_bundle.pub), "--inventory", str(inventory),
        "--registry", f"{hub.address}:5001", "--charts-url", f"https://{hub.address}:8081",
        "--pypi-url", f"https://{hub.address}:3141/root/platform",
        "--binaries-dir", str(tmp_path / "bin"), "--work-dir", str(tmp_path / "work"),
        "-o", "json",
    ]  # fmt: skip
    loaded = subprocess.run(run, capture_output=True, text=True, check=False, timeout=1800)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr

    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(hub.ca_cert.read_bytes())
    for img in lab_bundle.listing["images"]:
        raw = subprocess.run(
            ["skopeo", "inspect", "--raw", "--cert-dir", str(certs), "--creds",
             f"{USER}:{hub.password}", f"docker://{hub.address}:5000/{img['name']}:{img['tag']}"],
            capture_output=True, check=True, timeout=120,
        )  # fmt: skip
        assert "sha256:" + hashlib.sha256(raw.stdout).hexdigest() == img["digest"]
    charts = ChartMuseum(
        f"https://{hub.address}:8081", hub.ca_cert, USER, SecretStr(hub.password)
    ).chart_names()
    for chart in lab_bundle.release.charts:
        assert chart.version in charts.get(chart.name, [])
    wheel = next(w for w in lab_bundle.release.wheels if w.name == "onprem-installer")
    _pip_install(
        f"https://{hub.address}:3141/root/platform",
        tmp_path / "site-packages",
        f"{wheel.name}=={wheel.version}",
        "--cert",
        str(hub.ca_cert),
        "--use-deprecated=legacy-certs",
    )

    again = subprocess.run(run, capture_output=True, text=True, check=False, timeout=600)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["nothing_to_do"] is True
