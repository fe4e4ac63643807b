"""Bundle from a real upstream, verify, load into a real site registry, check with skopeo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from installer.airgap.build import BuildOptions, build_bundle
from installer.airgap.bundlefile import STATE_NAME
from installer.airgap.manifest import new_manifest
from installer.engines.registry import RegistryClient
from installer.release import load_pins, load_release, pins_path
from tests.fixtures.registries import PASSWORD, Registry, Upstream
from tests.integration.airgap.helpers import (
    PASSWORD_ENV,
    broken_tags,
    bundle_args,
    catalog,
    cli,
    keypair,
    load_args,
    pin_release,
    skopeo_digest,
    write_release,
)
from tests.integration.airgap.proxy import FaultyProxy, ProxyHandler

pytestmark = pytest.mark.integration


@pytest.fixture
def built(tmp_path: Path, upstream: Upstream) -> tuple[Path, Path, Path]:
    """(bundle, private key, public key) built by the CLI from the test upstream."""
    key, pub = keypair(tmp_path / "keys")
    release = write_release(tmp_path / "release.yml", list(upstream.images))
    bundle = tmp_path / "site.tar.zst"
    done = cli(
        *bundle_args(upstream, release, bundle, key), log_dir=tmp_path / "logs", env=PASSWORD_ENV
    )
    assert done.returncode == 0, done.stderr
    return bundle, key, pub


def test_round_trip_every_image_digest_for_digest(
    tmp_path: Path, upstream: Upstream, empty_registry: Registry, built: tuple[Path, Path, Path]
) -> None:
    bundle, _, pub = built
    logs = tmp_path / "logs"
    verified = cli(
        "airgap-verify", str(bundle), "--verify-key", str(pub), "-o", "json", log_dir=logs
    )
    assert verified.returncode == 0, verified.stderr
    listing = json.loads(verified.stdout)
    assert {f"{i['name']}:{i['tag']}" for i in listing["images"]} == set(upstream.images)
    # Blobs shared by several images are stored once.
    blob_paths = [i["path"] for i in listing["items"] if i["kind"] == "blob"]
    assert len(blob_paths) == len(set(blob_paths))

    loaded = cli(
        *load_args(bundle, pub, empty_registry, tmp_path / "work"),
        "-o",
        "json",
        log_dir=logs,
        env=PASSWORD_ENV,
    )
    assert loaded.returncode == 0, loaded.stderr
    report = json.loads(loaded.stdout)
    assert report["images_tagged"] == len(upstream.images)
    assert report["blobs"].get("mounted", 0) >= 1  # the shared base layer crossed repositories
    assert report["skipped"] == []
    # The extracted copy is only kept to resume an interrupted load.
    assert not any((tmp_path / "work").iterdir())

    for name, top in upstream.images.items():
        assert skopeo_digest(empty_registry, name, tmp_path / "certs") == top.digest
    assert broken_tags(empty_registry) == []

    again = cli(
        *load_args(bundle, pub, empty_registry, tmp_path / "work"),
        "-o",
        "json",
        log_dir=logs,
        env=PASSWORD_ENV,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["nothing_to_do"] is True


def test_platform_filter_keeps_only_the_asked_architecture(
    tmp_path: Path, upstream: Upstream
) -> None:
    key, _ = keypair(tmp_path / "keys")
    path = write_release(tmp_path / "r.yml", ["docker.io/library/busybox:1.37.0"])
    result = build_bundle(
        BuildOptions(
            release=load_release(path),
            output=tmp_path / "b.tar.zst",
            sign_key=key,
            upstream=upstream.registry.endpoint(),
            platforms=["linux/arm64"],
            pins=load_pins(pin_release(path, upstream)),
        )
    )
    (img,) = result.manifest.images
    assert img.digest != upstream.images["docker.io/library/busybox:1.37.0"].digest
    top = json.loads((tmp_path / "b.tar.zst.work/oci/blobs/sha256" / img.digest[7:]).read_bytes())
    assert [m["platform"]["architecture"] for m in top["manifests"]] == ["arm64"]


def test_token_auth_registry_push_and_pull(
    tmp_path: Path, upstream: Upstream, token_registry: Registry, built: tuple[Path, Path, Path]
) -> None:
    bundle, key, pub = built
    logs = tmp_path / "logs"
    loaded = cli(
        *load_args(bundle, pub, token_registry, tmp_path / "work"),
        "-o",
        "json",
        log_dir=logs,
        env=PASSWORD_ENV,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert token_registry.token is not None and token_registry.token.issued > 0
    # Pull back through token auth: a bundle built from the token registry holds the same images.
    path = write_release(tmp_path / "r.yml", list(upstream.images))
    again = build_bundle(
        BuildOptions(
            release=load_release(path),
            output=tmp_path / "again.tar.zst",
            sign_key=key,
            upstream=token_registry.endpoint(),
            pins=load_pins(pin_release(path, upstream)),
        )
    )
    assert {f"{i.name}:{i.tag}": i.digest for i in again.manifest.images} == {
        n: b.digest for n, b in upstream.images.items()
    }
    with RegistryClient(token_registry.endpoint()) as client:
        for name, top in upstream.images.items():
            repo, tag = name.rsplit(":", 1)
            assert client.manifest_digest(repo, tag) == top.digest


def test_wrong_password_is_an_environment_error(
    tmp_path: Path, upstream: Upstream, empty_registry: Registry, built: tuple[Path, Path, Path]
) -> None:
    bundle, _, pub = built
    done = cli(
        *load_args(bundle, pub, empty_registry, tmp_path / "work"),
        log_dir=tmp_path / "logs",
        env={"INSTALLER_HUB_PASSWORD": "not-the-password"},
    )
    assert done.returncode == 3, done.stderr
    assert "refused" in done.stderr
    assert "not-the-password" not in done.stderr
    assert catalog(empty_registry) == []


def test_killed_build_resumes_from_its_bundle_file(tmp_path: Path, upstream: Upstream) -> None:
    """A build killed mid-pull keeps its half-written bundle; the next run fetches only what
    is not in it yet, and the result verifies like any bundle."""
    key, pub = keypair(tmp_path / "keys")
    release_path = write_release(tmp_path / "r.yml", list(upstream.images))
    output = tmp_path / "b.tar.zst"
    killed = {"pid": 0, "gets": 0, "fired": False}

    def hook(n: int, method: str, path: str, handler: ProxyHandler) -> str | None:
        if method != "GET" or "/blobs/sha256:" not in path or killed["fired"]:
            return None
        killed["gets"] += 1
        if killed["gets"] < 3:  # two workers: at least one blob is complete by the third GET
            return None
        killed["fired"] = True
        os.kill(killed["pid"], signal.SIGKILL)
        return "half-body-reset"

    proxy = FaultyProxy(upstream.registry, hook=hook)
    try:
        args = bundle_args(upstream, release_path, output, key)
        args[args.index(upstream.registry.host)] = proxy.host
        argv = [sys.executable, "-m", "installer.cli", "--log-dir", str(tmp_path / "logs")]
        proc = subprocess.Popen(
            [*argv, *args, "--workers", "2"],
            env={**os.environ, **PASSWORD_ENV},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        killed["pid"] = proc.pid
        proc.communicate(timeout=120)
        assert killed["fired"] and proc.returncode == -signal.SIGKILL
        assert not output.exists()
        assert (tmp_path / "b.tar.zst.partial").is_file()
        assert (tmp_path / "b.tar.zst.work" / STATE_NAME).is_file()
        # The same inputs (the mirror's name is in the manifest): the same layout, resumed.
        opts = BuildOptions(
            release=load_release(release_path),
            output=output,
            sign_key=key,
            upstream=replace(upstream.registry.endpoint(), host=proxy.host),
            pins=load_pins(pins_path(release_path)),  # written by bundle_args
        )
        second = build_bundle(opts)
        blobs = sum(i.size for i in second.manifest.items if i.kind == "blob")
        # Image manifests are fetched again (small); of the blobs, only what was missing.
        assert 0 < second.bytes_received < blobs
        assert second.parts == [output]
        assert not list(tmp_path.rglob("*.partial"))
        assert not (tmp_path / "b.tar.zst.work" / STATE_NAME).exists()
        verified = cli(
            "airgap-verify", str(output), "--verify-key", str(pub), log_dir=tmp_path / "logs"
        )
        assert verified.returncode == 0, verified.stderr
        # A build after a completed one is a new bundle: its own creation time.
        third = build_bundle(opts)
        assert third.manifest.created > second.manifest.created
    finally:
        proxy.close()


def _inventory_site(tmp_path: Path, registry: Registry) -> Path:
    """A site folder whose inventory's hub registry is `registry`: state with the site CA and
    the generated password; returns the inventory's path."""
    site = tmp_path / "site"
    (site / "state" / "pki").mkdir(parents=True)
    (site / "state" / "secrets").mkdir(mode=0o700)
    (site / "state" / "pki" / "ca.crt").write_bytes(registry.pki.ca_cert.read_bytes())
    secret = site / "state" / "secrets" / "hub-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    for name in ("id_ed25519", "known_hosts", "kubeconfig"):
        (site / name).write_text("")
    port = registry.host.rsplit(":", 1)[1]
    base = (Path(__file__).parents[2] / "unit" / "inventory" / "base.yml").read_text()
    inventory = base.replace(
        "  domain: ml.example.com\n", "  domain: ml.example.com\n  state_dir: state\n"
    ).replace(
        "  address: 192.0.2.10\n",
        f"  address: 192.0.2.10\n  hostname: localhost\n  services:\n"
        # The test's registry is the hub's read-write endpoint, where a load pushes; nothing
        # here reads from the clusters' read-only one.
        f"    registry: {{port: 1, push_port: {port}, data_path: /srv/registry}}\n",
    )
    (site / "onprem.yml").write_text(inventory)
    return site / "onprem.yml"


def test_load_target_comes_from_the_inventory(
    tmp_path: Path, upstream: Upstream, empty_registry: Registry, built: tuple[Path, Path, Path]
) -> None:
    """`--inventory` alone: the hub's registry, the site CA and the generated password."""
    bundle, _, pub = built
    inventory = _inventory_site(tmp_path, empty_registry)
    site = inventory.parent
    done = cli(
        "airgap-load",
        str(bundle),
        "--verify-key",
        str(pub),
        "-i",
        str(inventory),
        "-o",
        "json",
        log_dir=tmp_path / "logs",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["images_tagged"] == len(upstream.images)
    assert sorted(catalog(empty_registry)) == sorted({n.rsplit(":", 1)[0] for n in upstream.images})
    kept = list((site / "state" / "airgap" / "loaded").glob("*.json"))
    assert len(kept) == 1  # the manifest for the next --since


def test_a_bundle_older_than_the_site_release_is_refused(
    tmp_path: Path, empty_registry: Registry, built: tuple[Path, Path, Path]
) -> None:
    """Rollback protection: the site has loaded release 26.1.0; a validly signed bundle of
    25.12.0 is refused (exit 2) before anything is pushed, unless --allow-downgrade."""
    bundle, _, pub = built
    inventory = _inventory_site(tmp_path, empty_registry)
    newer = new_manifest(source={}, platform_version="26.1.0", images=[], items=[])
    loaded = inventory.parent / "state" / "airgap" / "loaded"
    loaded.mkdir(parents=True)
    (loaded / "newer.json").write_bytes(newer.to_bytes())
    args = ["airgap-load", str(bundle), "--verify-key", str(pub), "-i", str(inventory)]
    refused = cli(*args, "-o", "json", log_dir=tmp_path / "logs")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    error = json.loads(refused.stdout.strip().splitlines()[-1])["error"]
    assert "release 25.12.0 is older than release 26.1.0" in error["message"], error
    assert "--allow-downgrade" in error["remedy"]
    assert catalog(empty_registry) == []  # nothing pushed
    allowed = cli(*args, "--allow-downgrade", "-o", "json", log_dir=tmp_path / "logs")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert catalog(empty_registry)
