"""Memory stays flat however large a layer is: a 384 MiB layer goes through `airgap-bundle` and
`airgap-load` with a peak RSS far below the layer's size."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from installer.engines.registry import OCI_MANIFEST, Manifest, RegistryClient, sha256_digest
from tests.fixtures.registries import Registry, Upstream
from tests.integration.airgap.helpers import (
    PASSWORD_ENV,
    bundle_args,
    keypair,
    load_args,
    write_release,
)

pytestmark = pytest.mark.integration

LAYER = 384 * 1024 * 1024
# The goal (300 MB); the interpreter and its imports take about 110 MiB. A build under
# heavy machine load once peaked at 267 MiB (about 120 MiB in quiet runs).
LIMIT = 300 * 1000 * 1000


def _big_image(reg: Registry, folder: Path) -> str:
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
    return "example.org/big:1"


def _peak_rss(argv: list[str]) -> tuple[int, int, str]:
    proc = subprocess.Popen(
        argv, env={**os.environ, **PASSWORD_ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024, (out + err).decode()[-2000:]


def test_large_layer_keeps_memory_flat(
    tmp_path: Path, empty_registry: Registry, token_registry: Registry
) -> None:
    ref = _big_image(empty_registry, tmp_path)
    key, pub = keypair(tmp_path / "keys")
    release = write_release(tmp_path / "r.yml", [ref])
    bundle = tmp_path / "big.tar.zst"
    cli = [sys.executable, "-m", "installer.cli", "--log-dir", str(tmp_path / "logs")]

    upstream = Upstream(empty_registry, {})
    rc, rss, text = _peak_rss([*cli, *bundle_args(upstream, release, bundle, key)])
    assert rc == 0, text
    assert bundle.stat().st_size > LAYER
    assert rss < LIMIT, f"airgap-bundle peaked at {rss >> 20} MiB"

    rc, rss, text = _peak_rss([*cli, *load_args(bundle, pub, token_registry, tmp_path / "work")])
    assert rc == 0, text
    assert rss < LIMIT, f"airgap-load peaked at {rss >> 20} MiB"
