"""Charts, wheels and binaries travel in the bundle and land in ChartMuseum, DevPI and the
binaries folder; the installer-like wheel then installs from DevPI with no other index."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from installer.airgap.files import sha256_file
from installer.airgap.hub import ChartMuseum, DevPi
from tests.fixtures.hubservices import Server, make_chart, make_wheel
from tests.fixtures.registries import PASSWORD, USER, Registry, Upstream
from tests.integration.airgap.helpers import (
    PASSWORD_ENV,
    catalog,
    cli,
    keypair,
    load_args,
    pin_release,
)

pytestmark = pytest.mark.integration

CHARTS = [("keycloak", "24.7.4"), ("openebs", "4.3.3")]


def _release(path: Path) -> Path:
    path.write_text(
        'platform_version: "25.12.0"\n'
        "images:\n"
        '  - {name: ghcr.io/test/app, tag: "1.0", component: platform}\n'
        "charts:\n"
        + "".join(
            f'  - {{name: {n}, version: "{v}", repository: "https://example.invalid",'
            " component: storage}\n"
            for n, v in CHARTS
        )
        + 'wheels:\n  - {name: tinypkg, version: "1.0"}\n'
        'binaries:\n  - {name: pulumi, version: "3.1.0"}\n'
        '  - {name: pulumi-resource-kubernetes, version: "4.2.0"}\n'
    )
    return path


def _sources(tmp: Path) -> tuple[Path, Path, Path]:
    charts, wheels, binaries = tmp / "charts-src", tmp / "wheels-src", tmp / "bin-src"
    for name, version in CHARTS:
        make_chart(charts, name, version)
    make_wheel(wheels, "tinypkg", "1.0", ["tinydep==2.0"])
    make_wheel(wheels, "tinydep", "2.0", [])
    make_wheel(wheels, "tinydep", "1.0", [])  # not wanted: must stay out of the bundle
    for name, version in (
        ("pulumi", "3.0.0"),
        ("pulumi", "3.1.0"),
        ("pulumi-resource-kubernetes", "4.2.0"),
    ):
        exe = binaries / f"{name}-{version}" / "bin" / name
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text(f"#!/bin/sh\necho {name} {version}\n")
        exe.chmod(0o755)
    return charts, wheels, binaries


def _build(
    tmp: Path, upstream: Upstream, charts: str, wheels: str, binaries: Path
) -> tuple[Path, Path]:
    key, pub = keypair(tmp / "keys")
    bundle = tmp / "b.tar.zst"
    reg = upstream.registry
    release = _release(tmp / "r.yml")
    pin_release(
        release, upstream, charts=tmp / "charts-src", wheels=tmp / "wheels-src", binaries=binaries
    )
    done = cli(
        "airgap-bundle",
        "--release",
        str(release),
        "-f",
        str(bundle),
        "--sign-key",
        str(key),
        "--registry-mirror",
        reg.host,
        "--upstream-ca",
        str(reg.pki.ca_cert),
        "--upstream-user",
        USER,
        "--charts-from",
        charts,
        "--wheels-from",
        wheels,
        "--binaries-from",
        str(binaries),
        log_dir=tmp / "logs",
        env=PASSWORD_ENV,
    )
    assert done.returncode == 0, done.stderr
    return bundle, pub


def _load_run(
    tmp: Path, bundle: Path, pub: Path, reg: Registry, cm: Server, site: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return cli(
        *load_args(bundle, pub, reg, tmp / "work"),
        "--charts-url", cm.url, "--pypi-url", site, "--binaries-dir", str(tmp / "site-bin"),
        "-o", "json", *extra,
        log_dir=tmp / "logs", env=PASSWORD_ENV,
    )  # fmt: skip


def _load(tmp: Path, bundle: Path, pub: Path, reg: Registry, cm: Server, site: str) -> dict:  # type: ignore[type-arg]
    done = _load_run(tmp, bundle, pub, reg, cm, site)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _pip_install_from(site: str, target: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-cache-dir",
            "--index-url",
            f"{site}/+simple/",
            "--target",
            str(target),
            "tinypkg==1.0",
        ],
        check=True,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert (target / "tinypkg" / "__init__.py").is_file()
    assert "2.0" in (target / "tinydep" / "__init__.py").read_text()


def test_charts_wheels_binaries_round_trip_from_folders(
    tmp_path: Path,
    upstream: Upstream,
    empty_registry: Registry,
    chartmuseum: Server,
    devpi: tuple[str, str],
) -> None:
    site, _ = devpi
    _, _, bundle, pub = _from_folders(tmp_path, upstream)
    listing = cli(
        "airgap-verify",
        str(bundle),
        "--verify-key",
        str(pub),
        "-o",
        "json",
        log_dir=tmp_path / "logs",
    )
    items = json.loads(listing.stdout)["items"]
    assert sorted(i["name"] for i in items if i["kind"] == "wheel") == ["tinydep", "tinypkg"]
    assert [i["version"] for i in items if i["kind"] == "wheel" and i["name"] == "tinydep"] == [
        "2.0"
    ]
    assert {i["kind"] for i in items} >= {"chart", "chart-index", "wheel", "binary", "blob"}

    report = _load(tmp_path, bundle, pub, empty_registry, chartmuseum, site)
    assert (report["charts_uploaded"], report["wheels_uploaded"], report["binaries_installed"]) == (
        2,
        2,
        2,
    )

    served = ChartMuseum(chartmuseum.url, empty_registry.pki.ca_cert, USER, SecretStr(PASSWORD))
    assert served.chart_names() == {n: [v] for n, v in CHARTS}
    _pip_install_from(site, tmp_path / "site-packages")
    installed = tmp_path / "site-bin" / "pulumi"
    assert installed.stat().st_mode & 0o777 == 0o755
    assert "3.1.0" in installed.read_text()

    again = _load(tmp_path, bundle, pub, empty_registry, chartmuseum, site)
    assert again["nothing_to_do"] is True


def test_charts_and_wheels_from_served_repositories(
    tmp_path: Path,
    upstream: Upstream,
    empty_registry: Registry,
    chartmuseum: Server,
    devpi: tuple[str, str],
) -> None:
    site, upstream_index = devpi
    charts, wheels, binaries = _sources(tmp_path)
    ca = empty_registry.pki.ca_cert
    upstream_charts = ChartMuseum(chartmuseum.url, ca, USER, SecretStr(PASSWORD))
    for name, version in CHARTS:
        archive = charts / f"{name}-{version}.tgz"
        assert upstream_charts.upload(name, version, archive, sha256_file(archive))
    index = DevPi(upstream_index, None, USER, SecretStr(PASSWORD))
    for wheel in sorted(wheels.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        assert index.upload(wheel, name, version, sha256_file(wheel))
    bundle, pub = _build(
        tmp_path, upstream, chartmuseum.url, f"{upstream_index}/+simple/", binaries
    )
    # ChartMuseum serves the repository index under the same URL that the bundle pulled from.
    ctx = ssl.create_default_context(cafile=str(ca))
    assert (
        httpx.get(f"{chartmuseum.url}/index.yaml", verify=ctx, auth=(USER, PASSWORD)).status_code
        == 200
    )
    report = _load(tmp_path, bundle, pub, empty_registry, chartmuseum, site)
    assert report["charts_uploaded"] == 0  # the same ChartMuseum already holds them
    assert report["wheels_uploaded"] == 2
    _pip_install_from(site, tmp_path / "site-packages")


def _from_folders(tmp: Path, upstream: Upstream) -> tuple[Path, Path, Path, Path]:
    """The test sources and a bundle built from them: (charts folder, wheels folder, bundle,
    public key)."""
    charts, wheels, binaries = _sources(tmp)
    bundle, pub = _build(tmp, upstream, str(charts), str(wheels), binaries)
    return charts, wheels, bundle, pub


def test_a_chart_or_wheel_with_other_bytes_on_the_hub_stops_the_load(
    tmp_path: Path,
    upstream: Upstream,
    empty_registry: Registry,
    chartmuseum: Server,
    devpi: tuple[str, str],
) -> None:
    """The hub serves a chart and a wheel under the bundle's names with other bytes: the load
    names both with both digests, exits 1, and pushes nothing (no image, chart or wheel)."""
    site, _ = devpi
    charts, _, bundle, pub = _from_folders(tmp_path, upstream)
    ca = empty_registry.pki.ca_cert
    hub_charts = ChartMuseum(chartmuseum.url, ca, USER, SecretStr(PASSWORD))
    hub_index = DevPi(site, None, USER, SecretStr(PASSWORD))
    other_chart = make_chart(tmp_path / "theirs", "openebs", "4.3.3", "not ours")
    assert hub_charts.upload("openebs", "4.3.3", other_chart, sha256_file(other_chart))
    other_wheel = make_wheel(tmp_path / "theirs", "tinydep", "2.0", ["somethingelse==9.9"])
    assert hub_index.upload(other_wheel, "tinydep", "2.0", sha256_file(other_wheel))

    refused = _load_run(tmp_path, bundle, pub, empty_registry, chartmuseum, site)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    said = refused.stdout + refused.stderr
    theirs, ours = sha256_file(other_chart), sha256_file(charts / "openebs-4.3.3.tgz")
    assert (
        f"chart openebs-4.3.3.tgz with other bytes than the bundle's (sha256 {theirs} on the"
        f" hub, {ours} in the bundle)"
    ) in said, said
    assert "wheel tinydep-2.0-py3-none-any.whl" in said, said
    assert "remove it as DevPI's root" in said, said
    # Nothing was pushed: no image; the other chart and wheel are still the ones served.
    assert catalog(empty_registry) == []
    assert hub_charts.chart_names() == {"openebs": ["4.3.3"]}
    assert hub_charts.digest("openebs", "4.3.3") == theirs
    assert hub_index.digest("tinydep-2.0-py3-none-any.whl") == sha256_file(other_wheel)
    assert hub_index.digest("tinypkg-1.0-py3-none-any.whl") is None


def test_replace_changed_puts_the_bundles_chart_in_place(
    tmp_path: Path,
    upstream: Upstream,
    empty_registry: Registry,
    chartmuseum: Server,
    devpi: tuple[str, str],
) -> None:
    """Only a chart differs: the load stops and says how to replace it; with --replace-changed
    the chart ChartMuseum serves is the bundle's, and the rest is loaded."""
    site, _ = devpi
    charts, _, bundle, pub = _from_folders(tmp_path, upstream)
    ca = empty_registry.pki.ca_cert
    hub_charts = ChartMuseum(chartmuseum.url, ca, USER, SecretStr(PASSWORD))
    other_chart = make_chart(tmp_path / "theirs", "keycloak", "24.7.4", "not ours")
    assert hub_charts.upload("keycloak", "24.7.4", other_chart, sha256_file(other_chart))

    refused = _load_run(tmp_path, bundle, pub, empty_registry, chartmuseum, site)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "--replace-changed" in refused.stdout + refused.stderr
    assert catalog(empty_registry) == []

    done = _load_run(tmp_path, bundle, pub, empty_registry, chartmuseum, site, "--replace-changed")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["charts_uploaded"] == 2
    assert hub_charts.digest("keycloak", "24.7.4") == sha256_file(charts / "keycloak-24.7.4.tgz")
    _pip_install_from(site, tmp_path / "site-packages")
