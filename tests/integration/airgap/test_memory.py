"""Memory stays flat however large a layer is: a 384 MiB layer goes through `airgap-bundle` and
`airgap-load` with a peak RSS far below the layer's size."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from installer.engines.registry import OCI_MANIFEST, Manifest, RegistryClient, sha256_digest
from tests.fixtures.peakrss import run_measured
from tests.fixtures.registries import Blob, Registry, Upstream
from tests.integration.airgap.helpers import (
    PASSWORD_ENV,
    bundle_args,
    keypair,
    load_args,
    write_release,
)

pytestmark = pytest.mark.integration

LAYER = 384 * 1024 * 1024
# The goal (300 MB); the interpreter and its imports take about 60 MiB. The peak is read
# by a small launcher (`peakrss`): read from this process, it would be pytest's own peak.
LIMIT = 300 * 1000 * 1000


def _big_image(reg: Registry, folder: Path) -> tuple[str, Blob]:
    layer = folder / "layer"
    hasher = hashlib.sha256()
    with layer.open("wb") as out:
        for _ in range(LAYER // (8 * 1024 * 1024)):
            chunk = os.urandom(8 * 1024 * 1024)
            hasher.update(chunk)
            out.write(chunk)
    digest = "sha256:" + hasher.hexdigest()
    rootfs = {"type": "layers", "diff_ids": [digest]}
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": rootfs}).encode()
    (folder / "config").write_bytes(config)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(config),
            "size": len(config),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": LAYER}
        ],
    }
    raw = json.dumps(doc).encode()
    with RegistryClient(reg.endpoint()) as client:
        client.push_blob("example.org/big", sha256_digest(config), folder / "config")
        client.push_blob("example.org/big", digest, layer)
        client.put_manifest("example.org/big", "1", Manifest(raw, OCI_MANIFEST, sha256_digest(raw)))
    layer.unlink()
    return "example.org/big:1", Blob(raw, OCI_MANIFEST)


def test_large_layer_keeps_memory_flat(
    tmp_path: Path, empty_registry: Registry, token_registry: Registry
) -> None:
    ref, top = _big_image(empty_registry, tmp_path)
    key, pub = keypair(tmp_path / "keys")
    release = write_release(tmp_path / "r.yml", [ref])
    bundle = tmp_path / "big.tar.zst"
    cli = [sys.executable, "-m", "installer.cli", "--log-dir", str(tmp_path / "logs")]
    env = {**os.environ, **PASSWORD_ENV}

    upstream = Upstream(empty_registry, {ref: top})
    run = run_measured([*cli, *bundle_args(upstream, release, bundle, key)], env=env)
    assert run.returncode == 0, run.output()
    assert bundle.stat().st_size > LAYER
    assert run.peak_rss < LIMIT, f"airgap-bundle peaked at {run.peak_rss >> 20} MiB"

    load = load_args(bundle, pub, token_registry, tmp_path / "work")
    run = run_measured([*cli, *load], env=env)
    assert run.returncode == 0, run.output()
    assert run.peak_rss < LIMIT, f"airgap-load peaked at {run.peak_rss >> 20} MiB"
