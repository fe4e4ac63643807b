"""Shared steps of the air-gap integration tests: release files, keys, the CLI, registry checks."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import zstandard

from installer.airgap.load import STREAM_MIN
from installer.airgap.manifest import write_keypair
from installer.airgap.pins import cut_pins
from installer.release import load_release, pins_path
from tests.fixtures.registries import (
    PASSWORD,
    USER,
    Pki,
    Registry,
    Upstream,
    image,
    layer,
    push_image,
    seed_upstream,
    start_registry,
)

BIG = STREAM_MIN + 1024 * 1024
"""A layer size the load streams to the registry instead of extracting it."""

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def write_release(path: Path, names: list[str], extra: str = "") -> Path:
    """A release manifest listing `names` (`repo:tag`)."""
    lines = ['platform_version: "25.12.0"', "images:"]
    for name in sorted(names):
        repo, tag = name.rsplit(":", 1)
        lines.append(f'  - {{name: {repo}, tag: "{tag}", component: platform}}')
    lines.append("charts: []" if "charts:" not in extra else "")
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def pin_release(
    release: Path,
    upstream: Upstream,
    *,
    charts: Path | None = None,
    wheels: Path | None = None,
    binaries: Path | None = None,
    extra: dict[str, str] | None = None,
) -> Path:
    """Cut the release's pins (`<release>.pins.yml` beside it, where `airgap-bundle` looks by
    default) from what the test made, as a release is cut from its build: image digests the
    upstream was seeded with (an image it lacks gets no pin), sha256 of the chart, wheel and
    binary source folders' files; `extra`: digests of images a test pushed itself."""
    known = {ref: blob.digest for ref, blob in upstream.images.items()} | (extra or {})
    pins = cut_pins(load_release(release), known, charts=charts, wheels=wheels, binaries=binaries)
    path = pins_path(release)
    path.write_text(pins.to_yaml(), encoding="utf-8")
    return path


def keypair(folder: Path, name: str = "sign") -> tuple[Path, Path]:
    """A fresh ed25519 key pair."""
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    write_keypair(private, public)
    return private, public


def cli(
    *args: str, log_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `installer` command."""
    argv = [sys.executable, "-m", "installer.cli", "--log-dir", str(log_dir), *args]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(argv, capture_output=True, text=True, env=full_env, check=False)


def bundle_args(upstream: Upstream, release: Path, output: Path, key: Path) -> list[str]:
    """`airgap-bundle` arguments pulling from the test upstream, the release pinned to what
    the upstream was seeded with (`pin_release`) unless the test cut its pins itself."""
    if not pins_path(release).exists():
        pin_release(release, upstream)
    reg = upstream.registry
    return [
        "airgap-bundle",
        "--release",
        str(release),
        "--output-file",
        str(output),
        "--sign-key",
        str(key),
        "--registry-mirror",
        reg.host,
        "--upstream-ca",
        str(reg.pki.ca_cert),
        "--upstream-user",
        USER,
    ]


def load_args(
    bundle: Path, pub: Path, reg: Registry, work: Path, host: str | None = None
) -> list[str]:
    """`airgap-load` arguments targeting `reg` (or a proxy in front of it)."""
    return [
        "airgap-load",
        str(bundle),
        "--verify-key",
        str(pub),
        "--registry",
        host or reg.host,
        "--ca",
        str(reg.pki.ca_cert),
        "--user",
        USER,
        "--work-dir",
        str(work),
    ]


PASSWORD_ENV = {"INSTALLER_UPSTREAM_PASSWORD": PASSWORD, "INSTALLER_HUB_PASSWORD": PASSWORD}


def catalog(reg: Registry) -> list[str]:
    """Repositories in the registry."""
    with reg.http() as http:
        return list(http.get("/v2/_catalog").json().get("repositories") or [])


def skopeo_digest(reg: Registry, ref: str, cert_dir: Path) -> str:
    """The digest of `ref` as skopeo sees it on `reg`, trusting only the test CA."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(reg.pki.ca_cert, cert_dir / "ca.crt")
    done = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--cert-dir",
            str(cert_dir),
            "--creds",
            f"{USER}:{PASSWORD}",
            f"docker://{reg.host}/{ref}",
        ],
        capture_output=True,
        check=True,
    )
    return "sha256:" + hashlib.sha256(done.stdout).hexdigest()


def broken_tags(reg: Registry) -> list[str]:
    """Tags whose manifest (or a child's) references a blob or manifest the registry lacks."""
    broken = []
    with reg.http() as http:
        for repo in catalog(reg):
            tags = http.get(f"/v2/{repo}/tags/list").json().get("tags") or []
            for tag in tags:
                todo = [tag]
                while todo:
                    ref = todo.pop()
                    r = http.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
                    if r.status_code != 200:
                        broken.append(f"{repo}:{tag} -> {ref}")
                        continue
                    doc = json.loads(r.content)
                    todo += [d["digest"] for d in doc.get("manifests", [])]
                    blobs = [doc["config"], *doc["layers"]] if "config" in doc else []
                    for desc in blobs:
                        if http.head(f"/v2/{repo}/blobs/{desc['digest']}").status_code != 200:
                            broken.append(f"{repo}:{tag} -> blob {desc['digest']}")
    return broken


def site_digests(reg: Registry, names: list[str]) -> dict[str, str | None]:
    """What each `repo:tag` resolves to on the site registry."""
    found: dict[str, str | None] = {}
    with reg.http() as http:
        for name in names:
            repo, tag = name.rsplit(":", 1)
            r = http.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
            found[name] = (
                "sha256:" + hashlib.sha256(r.content).hexdigest() if r.status_code == 200 else None
            )
    return found


def http_ok(url: str, ca: Path) -> bool:
    """True when `url` answers 200."""
    return httpx.get(url, verify=ssl.create_default_context(cafile=str(ca))).status_code == 200


def big_upstream(folder: Path, pki: Pki) -> Iterator[Upstream]:
    """The test upstream with two layers above the streaming threshold, one of them shared by
    two more images (the load mounts it)."""
    reg = start_registry(folder, pki)
    try:
        found = seed_upstream(reg, big_layer=BIG)
        big2 = layer({"big2": os.urandom(BIG)}, oci=True)
        second = image([big2], oci=True)
        push_image(reg, "ghcr.io/test/second", "1", second)
        found.images["ghcr.io/test/second:1"] = second.manifest
        third = image([big2, layer({"own": os.urandom(5000)}, oci=True)], oci=True)
        push_image(reg, "ghcr.io/test/third", "1", third)
        found.images["ghcr.io/test/third:1"] = third.manifest
        yield found
    finally:
        reg.stop()


def members(bundle: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    """Every member of a bundle with its content."""
    raw = zstandard.ZstdDecompressor().stream_reader(bundle.open("rb"), read_across_frames=True)
    found = []
    with tarfile.open(fileobj=raw, mode="r|") as tar:
        for info in tar:
            handle = tar.extractfile(info)
            found.append((info, handle.read() if handle else b""))
    return found


def repack(path: Path, content: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    """A bundle holding exactly `content`, in that order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in content:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    path.write_bytes(zstandard.ZstdCompressor().compress(out.getvalue()))
    return path


def tags(reg: Registry) -> dict[str, list[str]]:
    """Every repository's tags (empty lists left out)."""
    found = {}
    with reg.http() as http:
        for repo in catalog(reg):
            listed = http.get(f"/v2/{repo}/tags/list").json().get("tags") or []
            if listed:
                found[repo] = listed
    return found


EMPTY_HASH_STATE = re.compile(r"_uploads/[0-9a-f-]+/hashstates/sha256/0$")
"""docker-registry 2.8 writes the hash state of zero bytes into the folder of an upload it has
just cancelled (its `Close` runs after `Cancel`): 108 bytes of nothing, even for a session
cancelled right after it began."""


def stored_files(reg: Registry) -> list[str]:
    """Every file in the registry's storage (blobs, links, upload sessions' data), by path,
    but the empty hash states a cancelled upload leaves (`EMPTY_HASH_STATE`)."""
    root = reg.root / "docker" / "registry" / "v2"
    found = [p for p in root.rglob("*") if p.is_file()]
    return sorted(
        str(p.relative_to(root))
        for p in found
        if not (EMPTY_HASH_STATE.search(str(p)) and p.stat().st_size < 256)
    )


def blob_anywhere(reg: Registry, digest: str) -> bool:
    """True when any repository of `reg` holds the blob."""
    with reg.http() as http:
        return any(
            http.head(f"/v2/{repo}/blobs/{digest}").status_code == 200 for repo in catalog(reg)
        )


def build_signed(tmp: Path, upstream: Upstream) -> tuple[Path, Path, Path]:
    """`airgap-bundle` of every image of `upstream` into tmp: (bundle, private key, public key)."""
    key, pub = keypair(tmp / "keys")
    release = write_release(tmp / "release.yml", list(upstream.images))
    bundle = tmp / "site.tar.zst"
    done = cli(*bundle_args(upstream, release, bundle, key), log_dir=tmp / "logs", env=PASSWORD_ENV)
    assert done.returncode == 0, done.stderr
    return bundle, key, pub
