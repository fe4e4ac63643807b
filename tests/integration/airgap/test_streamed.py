"""The streamed load: large blobs go from the bundle to the registry while it is verified.

Pushing before the whole bundle is verified must still keep: no blob whose bytes differ from
the signed manifest is ever stored, nothing is tagged unless the whole bundle passed (exit 2
otherwise), a bad signature pushes nothing (test_faults.py, whose upstream has large layers
too), and a streamed upload that breaks off is uploaded again from a file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from installer.airgap.archive import open_bundle
from installer.airgap.load import STREAM_MIN, LoadOptions, load_bundle, make_target
from installer.airgap.manifest import parse_manifest
from installer.errors import BadInputError
from tests.fixtures.registries import PASSWORD, USER, Pki, Registry, Upstream
from tests.integration.airgap.helpers import (
    PASSWORD_ENV,
    big_upstream,
    blob_anywhere,
    broken_tags,
    build_signed,
    bundle_args,
    catalog,
    cli,
    load_args,
    members,
    repack,
    site_digests,
    stored_files,
    tags,
    write_release,
)
from tests.integration.airgap.proxy import FaultyProxy, ProxyHandler

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, registry_pki: Pki) -> Iterator[Upstream]:
    """The test upstream with two layers above the streaming threshold."""
    yield from big_upstream(tmp_path_factory.mktemp("big-upstream"), registry_pki)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> tuple[Path, Path]:
    """(bundle, public key)."""
    bundle, _, pub = build_signed(tmp_path_factory.mktemp("built"), upstream)
    return bundle, pub


def _large_last(bundle: Path, dest: Path, corrupt: bool) -> tuple[Path, str, str]:
    """The bundle with its two large blobs moved to the end, the second one corrupted (one
    byte flipped in the middle) when `corrupt`; the signature stays valid. Returns the new
    bundle and the two large blobs' digests in stream order."""
    content = members(bundle)
    manifest = parse_manifest(content[0][1])
    large = {i.path: i.name for i in manifest.items if i.kind == "blob" and i.size > STREAM_MIN}
    assert len(large) == 2
    rest = [m for m in content if m[0].name not in large]
    big = [m for m in content if m[0].name in large]
    if corrupt:
        info, data = big[1]
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x01
        big[1] = (info, bytes(flipped))
    out = repack(dest, [*rest, *big])
    return out, large[big[0][0].name], large[big[1][0].name]


def test_corrupted_blob_after_a_streamed_one_pushes_nothing_exit_2(
    tmp_path: Path, upstream: Upstream, built: tuple[Path, Path], empty_registry: Registry
) -> None:
    bundle, pub = built
    bad, first, corrupted = _large_last(bundle, tmp_path / "bad.tar.zst", corrupt=True)
    work = tmp_path / "work"
    load = cli(*load_args(bad, pub, empty_registry, work), log_dir=tmp_path / "l", env=PASSWORD_ENV)
    assert load.returncode == 2, load.stdout + load.stderr
    assert "sha256 mismatch" in load.stderr
    # The first large blob was streamed before the damage was reached, into an upload the
    # refused bundle never completed: nothing of the bundle is in the registry.
    assert not blob_anywhere(empty_registry, first)
    assert not blob_anywhere(empty_registry, corrupted)
    assert tags(empty_registry) == {}
    # Nor any upload session's data: the registry's storage holds no file at all.
    assert stored_files(empty_registry) == []
    with empty_registry.http() as http:
        for name, top in upstream.images.items():
            repo = name.rsplit(":", 1)[0]
            assert http.head(f"/v2/{repo}/manifests/{top.digest}").status_code == 404
    # The good bundle then loads into the same registry.
    good = cli(
        *load_args(bundle, pub, empty_registry, work), log_dir=tmp_path / "l", env=PASSWORD_ENV
    )
    assert good.returncode == 0, good.stderr
    assert broken_tags(empty_registry) == []
    assert site_digests(empty_registry, list(upstream.images)) == {
        n: b.digest for n, b in upstream.images.items()
    }


def test_streamed_blobs_are_uploaded_not_extracted(
    tmp_path: Path, upstream: Upstream, built: tuple[Path, Path], empty_registry: Registry
) -> None:
    bundle, pub = built
    work = tmp_path / "work"
    done = cli(
        *load_args(bundle, pub, empty_registry, work),
        "--keep-work",
        "-o",
        "json",
        log_dir=tmp_path / "l",
        env=PASSWORD_ENV,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["blobs"]["uploaded"] >= 2 and report["retries"] == 0
    manifest = parse_manifest(members(bundle)[0][1])
    (kept,) = work.iterdir()
    for item in manifest.items:
        assert (kept / item.path).is_file() == (item.size <= STREAM_MIN), item.path
    assert site_digests(empty_registry, list(upstream.images)) == {
        n: b.digest for n, b in upstream.images.items()
    }


def test_broken_streamed_upload_is_uploaded_again_from_a_file(
    tmp_path: Path, upstream: Upstream, built: tuple[Path, Path], empty_registry: Registry
) -> None:
    bundle, pub = built
    cut: list[str] = []

    def hook(n: int, method: str, path: str, handler: ProxyHandler) -> str | None:
        if method == "PUT" and "/blobs/uploads/" in path and not cut:
            cut.append(path)
            return "half-body-reset"
        return None

    proxy = FaultyProxy(empty_registry, hook=hook)
    try:
        done = cli(
            *load_args(bundle, pub, empty_registry, tmp_path / "work", host=proxy.host),
            "-o",
            "json",
            log_dir=tmp_path / "l",
            env=PASSWORD_ENV,
        )
    finally:
        proxy.close()
    assert cut, "no blob upload was cut"
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["retries"] >= 1
    assert proxy.violations == []
    assert broken_tags(empty_registry) == []
    assert site_digests(empty_registry, list(upstream.images)) == {
        n: b.digest for n, b in upstream.images.items()
    }


def test_registry_refusing_mounts_gets_streamed_blobs_copied(
    tmp_path: Path, upstream: Upstream, built: tuple[Path, Path], empty_registry: Registry
) -> None:
    """A streamed blob has no local copy to upload into its other repositories: where the
    registry will not mount, the load copies it from the repository it went to."""
    bundle, pub = built
    refused: list[str] = []

    def hook(n: int, method: str, path: str, handler: ProxyHandler) -> str | None:
        if method == "POST" and "mount=" in path:
            refused.append(path)
            handler.path = path.split("?")[0]  # a plain upload session instead: 202
        return None

    proxy = FaultyProxy(empty_registry, hook=hook)
    try:
        done = cli(
            *load_args(bundle, pub, empty_registry, tmp_path / "work", host=proxy.host),
            "-o",
            "json",
            log_dir=tmp_path / "l",
            env=PASSWORD_ENV,
        )
    finally:
        proxy.close()
    assert refused, "the load never asked for a mount"
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mounted" not in json.loads(done.stdout)["blobs"]
    assert broken_tags(empty_registry) == []
    assert site_digests(empty_registry, list(upstream.images)) == {
        n: b.digest for n, b in upstream.images.items()
    }


def test_verify_first_pushes_nothing_from_a_corrupted_bundle(
    tmp_path: Path, built: tuple[Path, Path], empty_registry: Registry
) -> None:
    bundle, pub = built
    bad, _, _ = _large_last(bundle, tmp_path / "bad.tar.zst", corrupt=True)
    reg = empty_registry
    target = make_target(reg.host, None, None, None, reg.pki.ca_cert, USER, SecretStr(PASSWORD))
    opts = LoadOptions(open_bundle(bad, pub), target, tmp_path / "work", verify_first=True)
    with pytest.raises(BadInputError, match="sha256 mismatch"):
        load_bundle(opts)
    assert catalog(reg) == []


def test_reordered_good_bundle_loads(
    tmp_path: Path, upstream: Upstream, built: tuple[Path, Path], empty_registry: Registry
) -> None:
    """Members in any order after the signature (the large blobs last, here) load the same."""
    bundle, pub = built
    moved, _, _ = _large_last(bundle, tmp_path / "moved.tar.zst", corrupt=False)
    done = cli(
        *load_args(moved, pub, empty_registry, tmp_path / "w"),
        log_dir=tmp_path / "l",
        env=PASSWORD_ENV,
    )
    assert done.returncode == 0, done.stderr
    assert site_digests(empty_registry, list(upstream.images)) == {
        n: b.digest for n, b in upstream.images.items()
    }


@pytest.mark.parametrize("readers", [1, 3])
def test_any_number_of_passes_loads_the_same(
    tmp_path: Path,
    upstream: Upstream,
    built: tuple[Path, Path],
    empty_registry: Registry,
    readers: int,
) -> None:
    bundle, pub = built
    reg = empty_registry
    target = make_target(reg.host, None, None, None, reg.pki.ca_cert, USER, SecretStr(PASSWORD))
    opts = LoadOptions(open_bundle(bundle, pub), target, tmp_path / "work", readers=readers)
    result = load_bundle(opts)
    assert result.blobs["uploaded"] >= 2
    assert broken_tags(reg) == []
    assert site_digests(reg, list(upstream.images)) == {
        n: b.digest for n, b in upstream.images.items()
    }


def test_a_bundle_swapped_after_it_was_opened_is_refused(
    tmp_path: Path, upstream: Upstream, built: tuple[Path, Path], empty_registry: Registry
) -> None:
    """The bundle is opened once (its signed manifest checked, its size known); another bundle,
    validly signed with the same key, put in its place before the load reads the content, is
    refused, and nothing is pushed."""
    bundle, pub = built
    in_use = tmp_path / "site.tar.zst"
    in_use.write_bytes(bundle.read_bytes())
    opened = open_bundle(in_use, pub)
    assert opened.parts == [in_use] and opened.size == in_use.stat().st_size
    one_image = write_release(tmp_path / "one.yml", sorted(upstream.images)[:1])
    other = tmp_path / "other.tar.zst"
    key = pub.with_name("sign.pem")
    made = cli(*bundle_args(upstream, one_image, other, key), log_dir=tmp_path, env=PASSWORD_ENV)
    assert made.returncode == 0, made.stderr
    assert open_bundle(other, pub).manifest_sha256 != opened.manifest_sha256
    in_use.write_bytes(other.read_bytes())
    reg = empty_registry
    target = make_target(reg.host, None, None, None, reg.pki.ca_cert, USER, SecretStr(PASSWORD))
    with pytest.raises(BadInputError, match="changed while it was being loaded"):
        load_bundle(LoadOptions(opened, target, tmp_path / "work"))
    assert catalog(reg) == [] and stored_files(reg) == []
