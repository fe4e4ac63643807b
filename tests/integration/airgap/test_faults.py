"""Faults: hostile or damaged bundles push nothing; killed loads finish on re-run; a flaky
network is retried through."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from installer.airgap.manifest import load_private_key, parse_manifest, sign
from tests.fixtures.registries import Pki, Registry, Upstream
from tests.integration.airgap.helpers import (
    PASSWORD_ENV,
    big_upstream,
    broken_tags,
    build_signed,
    catalog,
    cli,
    keypair,
    load_args,
    members,
    repack,
    site_digests,
    stored_files,
    tags,
)
from tests.integration.airgap.proxy import FaultyProxy, ProxyHandler

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, registry_pki: Pki) -> Iterator[Upstream]:
    """The test upstream plus layers above the streaming threshold: these loads stream them
    to the registry during verification, so every fault below hits that path too."""
    yield from big_upstream(tmp_path_factory.mktemp("big-upstream"), registry_pki)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> tuple[Path, Path, Path]:
    """(bundle, private key, public key), built once for the module."""
    return build_signed(tmp_path_factory.mktemp("built"), upstream)


def _flipped(bundle: Path, dest: Path) -> Path:
    data = bytearray(bundle.read_bytes())
    data[len(data) * 2 // 3] ^= 0x20
    dest.write_bytes(bytes(data))
    return dest


def _truncated(bundle: Path, dest: Path) -> Path:
    dest.write_bytes(bundle.read_bytes()[: bundle.stat().st_size * 3 // 4])
    return dest


def _dotdot(bundle: Path, dest: Path, key: Path) -> Path:
    content = members(bundle)
    info = tarfile.TarInfo("../../escaped")
    info.size = 4
    return repack(dest, [*content[:2], (info, b"evil"), *content[2:]])


def _symlink(bundle: Path, dest: Path, key: Path) -> Path:
    content = members(bundle)
    info = tarfile.TarInfo("oci/blobs/sha256/escape")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return repack(dest, [*content[:2], (info, b""), *content[2:]])


def _resigned_other_key(bundle: Path, dest: Path, key: Path) -> Path:
    other, _ = keypair(dest.parent / "other-keys")
    content = members(bundle)
    data = content[0][1]
    sig_info = content[1][0]
    signature = sign(data, load_private_key(other))
    sig_info.size = len(signature)
    return repack(dest, [content[0], (sig_info, signature), *content[2:]])


def _tampered_manifest(bundle: Path, dest: Path, key: Path) -> Path:
    content = members(bundle)
    manifest = parse_manifest(content[0][1])
    data = manifest.to_bytes().replace(b'"platform_version": "25.12.0"', b'"platform_version": "9"')
    info = content[0][0]
    info.size = len(data)
    return repack(dest, [(info, data), *content[1:]])


FAULTS = {
    "flipped-byte": lambda b, d, k: _flipped(b, d),
    "truncated": lambda b, d, k: _truncated(b, d),
    "dotdot-member": _dotdot,
    "symlink-escape": _symlink,
    "wrong-signature": _resigned_other_key,
    "manifest-edited-after-signing": _tampered_manifest,
}
REFUSED_BEFORE_ANY_BLOB = {
    "dotdot-member",
    "symlink-escape",
    "wrong-signature",
    "manifest-edited-after-signing",
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_damaged_bundle_exit_2_nothing_pushed(
    tmp_path: Path, built: tuple[Path, Path, Path], empty_registry: Registry, fault: str
) -> None:
    bundle, key, pub = built
    bad = FAULTS[fault](bundle, tmp_path / "bad.tar.zst", key)
    verify = cli("airgap-verify", str(bad), "--verify-key", str(pub), log_dir=tmp_path / "logs")
    assert verify.returncode == 2, verify.stderr
    work = tmp_path / "work"
    load = cli(
        *load_args(bad, pub, empty_registry, work), log_dir=tmp_path / "logs", env=PASSWORD_ENV
    )
    assert load.returncode == 2, load.stderr
    assert "Traceback" not in load.stderr
    assert tags(empty_registry) == {}
    if fault in REFUSED_BEFORE_ANY_BLOB:
        assert catalog(empty_registry) == []
    # Nothing of the refused bundle stays in the registry's storage: no blob, and no upload
    # session's data (layers streamed before the damage was reached were thrown away).
    assert stored_files(empty_registry) == []
    assert not (tmp_path / "escaped").exists() and not (work.parent / "escaped").exists()
    assert not any(p.is_symlink() for p in work.rglob("*"))


def test_flaky_registry_load_completes_and_reports_retries(
    tmp_path: Path, upstream: Upstream, built: tuple[Path, Path, Path], empty_registry: Registry
) -> None:
    bundle, _, pub = built
    proxy = FaultyProxy(empty_registry, fail_rate=0.2, seed=11)
    try:
        done = cli(
            *load_args(bundle, pub, empty_registry, tmp_path / "work", host=proxy.host),
            "-o",
            "json",
            log_dir=tmp_path / "logs",
            env=PASSWORD_ENV,
        )
    finally:
        proxy.close()
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert proxy.injected >= 3
    assert report["retries"] >= proxy.injected // 2
    assert proxy.violations == []
    assert site_digests(empty_registry, list(upstream.images)) == {
        n: b.digest for n, b in upstream.images.items()
    }


def _kill_at(point: str):  # type: ignore[no-untyped-def]
    """A proxy hook that SIGKILLs the load process at `point` and records that it did."""
    state: dict[str, object] = {"pid": None, "fired": False, "puts": 0}

    def hook(n: int, method: str, path: str, handler: ProxyHandler) -> str | None:
        pid = state["pid"]
        if state["fired"] or not isinstance(pid, int):
            return None
        is_blob_put = method == "PUT" and "/blobs/uploads/" in path
        is_manifest_put = method == "PUT" and "/manifests/" in path
        if is_blob_put:
            state["puts"] = int(str(state["puts"])) + 1
        hit = {
            "first-request": n == 1,
            "mid-first-blob": is_blob_put,
            "mid-third-blob": is_blob_put and state["puts"] == 3,
            "first-mount": method == "POST" and "mount=" in path,
            "between-blobs-and-manifests": is_manifest_put,
            "first-tag": is_manifest_put and "/manifests/sha256:" not in path,
        }.get(point, point.startswith("request-") and n == int(point.split("-")[1]))
        if not hit:
            return None
        state["fired"] = True
        os.kill(pid, signal.SIGKILL)
        return "half-body-reset" if is_blob_put else "reset"

    return hook, state


KILL_POINTS = [
    "first-request",
    "request-4",
    "request-9",
    "request-15",
    "request-22",
    "request-30",
    "mid-first-blob",
    "mid-third-blob",
    "first-mount",
    "between-blobs-and-manifests",
    "first-tag",
]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_load_finishes_on_rerun(
    tmp_path: Path,
    upstream: Upstream,
    built: tuple[Path, Path, Path],
    empty_registry: Registry,
    point: str,
) -> None:
    bundle, _, pub = built
    hook, state = _kill_at(point)
    proxy = FaultyProxy(empty_registry, hook=hook)
    work = tmp_path / "work"
    argv = [sys.executable, "-m", "installer.cli", "--log-dir", str(tmp_path / "logs")]
    argv += load_args(bundle, pub, empty_registry, work, host=proxy.host)
    try:
        proc = subprocess.Popen(
            argv, env={**os.environ, **PASSWORD_ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        state["pid"] = proc.pid
        proc.communicate(timeout=120)
        assert state["fired"], f"the load never reached {point}"
        assert proc.returncode == -signal.SIGKILL
        # The request the kill interrupted may still be in the registry's hands (a tag being
        # written is listed before it resolves): judge the tags once it is done with it.
        deadline = time.monotonic() + 10
        while (broken := broken_tags(empty_registry)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert broken == []
        time.sleep(0.2)
        rerun = cli(
            *load_args(bundle, pub, empty_registry, work, host=proxy.host),
            "-o",
            "json",
            log_dir=tmp_path / "logs",
            env=PASSWORD_ENV,
        )
    finally:
        proxy.close()
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert proxy.violations == []
    assert broken_tags(empty_registry) == []
    assert site_digests(empty_registry, list(upstream.images)) == {
        n: b.digest for n, b in upstream.images.items()
    }
