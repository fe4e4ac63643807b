"""The drift guard (lab/toolchain/check) on the real Go toolchain: it passes on the committed
lockfiles, and on a copy of lab/ it fails, naming the tool and the refresh command, when one
pinned version is changed by hand in a lockfile or in lab/versions.env, or when a cached
download no longer has its pinned checksum."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.auxvm import lab_cache
from tests.fixtures.lab import LAB_DIR, read_versions

pytestmark = pytest.mark.integration

GUARD_TIMEOUT_S = 300


def guard(lab: Path, *tools: str, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LAB_STATE": str(lab / ".state"),
        # The module downloads are shared with the real cache (read-only builds never write
        # it); the rest of the cache may be a test's own.
        "GOPATH": str(lab_cache() / "gopath"),
        "GOCACHE": str(lab_cache() / "gocache"),
        "LAB_CACHE": str(cache or lab_cache()),
    }
    return subprocess.run(
        ["bash", str(lab / "toolchain" / "check"), *tools],
        capture_output=True,
        text=True,
        timeout=GUARD_TIMEOUT_S,
        env=env,
        check=False,
    )


@pytest.fixture
def lab_copy(tmp_path: Path) -> Path:
    """lab/ without its runtime state, to change by hand."""
    copy = tmp_path / "lab"
    shutil.copytree(LAB_DIR, copy, ignore=shutil.ignore_patterns(".state", ".state-*"))
    return copy


def test_the_committed_lockfiles_pass() -> None:
    done = guard(LAB_DIR)
    assert done.returncode == 0, done.stderr
    assert "lockfiles match lab/versions.env and resolve" in done.stderr


def test_a_version_changed_by_hand_in_a_lockfile_fails_naming_the_tool(lab_copy: Path) -> None:
    gomod = lab_copy / "toolchain" / "etcd" / "go.mod"
    text = gomod.read_text()
    pinned = re.search(r"^\tgithub.com/google/uuid (v\S+)", text, re.M)
    assert pinned is not None
    gomod.write_text(
        text.replace(f"github.com/google/uuid {pinned.group(1)}", "github.com/google/uuid v1.3.0")
    )

    done = guard(lab_copy, "etcd", "kwok")
    assert done.returncode == 1
    assert "drift: etcd: the lockfile no longer resolves" in done.stderr
    assert "github.com/google/uuid" in done.stderr
    assert "fix: lab/toolchain/refresh etcd" in done.stderr
    assert "drift: kwok" not in done.stderr  # the untouched tool still passes


def test_a_pin_moved_without_a_refresh_fails_naming_the_tool(lab_copy: Path) -> None:
    versions = lab_copy / "versions.env"
    old = read_versions()["HELM_VERSION"]
    versions.write_text(versions.read_text().replace(f"HELM_VERSION={old}", "HELM_VERSION=v3.99.0"))

    done = guard(lab_copy, "helm")
    assert done.returncode == 1
    assert (
        f"drift: helm: lab/versions.env pins helm.sh/helm/v3 v3.99.0 but the lockfile has {old}"
        in done.stderr
    )
    assert "fix: lab/toolchain/refresh helm" in done.stderr


def test_a_cached_download_with_another_checksum_fails(lab_copy: Path, tmp_path: Path) -> None:
    version = read_versions()["KEYCLOAK_VERSION"]
    archive = tmp_path / "cache" / f"keycloak-{version}" / f"keycloak-quarkus-dist-{version}.tar.gz"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"not the pinned archive")

    done = guard(lab_copy, "keycloak", cache=tmp_path / "cache")
    assert done.returncode == 1
    assert f"drift: keycloak: {archive} has sha256" in done.stderr
    assert read_versions()["KEYCLOAK_SHA256"] in done.stderr
