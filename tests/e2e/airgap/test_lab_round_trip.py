"""The air-gapped round trip from the lab's upstream: `airgap-bundle` from the stand-in
upstream registry, chart repository and wheel index with the real release manifest; then
`airgap-verify`; then `airgap-load` into an empty registry, ChartMuseum and DevPI; then skopeo
(with the CA) finds every image, ChartMuseum lists every chart, and pip installs the installer
from DevPI with no other index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from installer.airgap.hub import ChartMuseum
from installer.release import load_release
from tests.fixtures.hubservices import Server
from tests.fixtures.lab_services import LabServices
from tests.fixtures.registries import PASSWORD, USER, Registry
from tests.integration.airgap.helpers import keypair, load_args, skopeo_digest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[3]


def _release_for_lab(lab_services: LabServices, dest: Path) -> tuple[Path, list[str]]:
    """The real release manifest, less binaries the lab could not build (recorded as
    unavailable by lab/components/30-pulumi.sh); returns the names left out."""
    text = (REPO / "airgap" / "release.yml").read_text()
    missing = [
        b.name
        for b in load_release().binaries
        if not (lab_services.pulumi_bin_dir / b.name).is_file()
    ]
    lines = [ln for ln in text.splitlines() if not any(f"name: {m}," in ln for m in missing)]
    dest.write_text("\n".join(lines) + "\n")
    return dest, missing


def test_bundle_from_the_lab_upstream_loads_into_empty_hub_services(
    tmp_path: Path,
    lab_services: LabServices,
    empty_registry: Registry,
    chartmuseum: Server,
    devpi: tuple[str, str],
) -> None:
    site_index, _ = devpi
    release, left_out = _release_for_lab(lab_services, tmp_path / "release.yml")
    assert "pulumi" not in left_out, "the lab must provide the Pulumi CLI"
    key, pub = keypair(tmp_path / "keys")
    bundle = tmp_path / "site.tar.zst"
    auth = lab_services.auth
    env = {
        **os.environ,
        "INSTALLER_UPSTREAM_PASSWORD": auth.password,
        "INSTALLER_HUB_PASSWORD": PASSWORD,
    }
    cli = [sys.executable, "-m", "installer.cli", "--log-dir", str(tmp_path / "logs")]
    built = subprocess.run(
        [
            *cli,
            "airgap-bundle",
            "--release",
            str(release),
            "-f",
            str(bundle),
            "--sign-key",
            str(key),
            "--registry-mirror",
            lab_services.registry,
            "--upstream-ca",
            str(lab_services.ca),
            "--upstream-user",
            auth.user,
            "--charts-from",
            lab_services.charts_url,
            "--wheels-from",
            lab_services.pypi_url,
            "--binaries-from",
            str(lab_services.pulumi_bin_dir),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=1800,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    verified = subprocess.run(
        [*cli, "airgap-verify", str(bundle), "--verify-key", str(pub), "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert verified.returncode == 0, verified.stderr
    listing = json.loads(verified.stdout)
    manifest = load_release(release)
    assert len(listing["images"]) == len(manifest.images)

    loaded = subprocess.run(
        [
            *cli,
            *load_args(bundle, pub, empty_registry, tmp_path / "work"),
            "--charts-url",
            chartmuseum.url,
            "--pypi-url",
            site_index,
            "--binaries-dir",
            str(tmp_path / "bin"),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=1800,
    )
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr

    for img in listing["images"]:
        ref = f"{img['name']}:{img['tag']}"
        assert skopeo_digest(empty_registry, ref, tmp_path / "certs") == img["digest"]
    charts = ChartMuseum(chartmuseum.url, empty_registry.pki.ca_cert, USER, SecretStr(PASSWORD))
    assert charts.chart_names() == {c.name: [c.version] for c in manifest.charts}
    wheel = next(w for w in manifest.wheels if w.name == "onprem-installer")
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--index-url",
            f"{site_index}/+simple/",
            "--target",
            str(tmp_path / "site-packages"),
            f"{wheel.name}=={wheel.version}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull},
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    assert (tmp_path / "site-packages" / "installer" / "__init__.py").is_file()
    for binary in manifest.binaries:
        assert os.access(tmp_path / "bin" / binary.name, os.X_OK)
