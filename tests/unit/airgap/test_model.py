"""The bundle manifest model, paths, image naming and index filtering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from installer.airgap.build import BuildOptions, _delta_base, have_list
from installer.airgap.images import _filter_index, upstream_repo
from installer.airgap.manifest import (
    BundleItem,
    check_member_path,
    new_manifest,
    parse_manifest,
)
from installer.engines.registry import OCI_INDEX, Manifest, _parse_challenge, sha256_digest
from installer.errors import BadInputError
from installer.release import ReleaseManifest


@pytest.mark.parametrize(
    "path",
    ["../x", "/abs", "a/../b", "a//b", "a/./b", "a\\b", "a/b/", "", "a/\x00", "a/-", "a/ b"],
)
def test_unsafe_member_paths_are_refused(path: str) -> None:
    with pytest.raises(BadInputError):
        check_member_path(path)


@pytest.mark.parametrize("path", ["oci/blobs/sha256/" + "a" * 64, "wheels/x-1.0-py3-none-any.whl"])
def test_plain_paths_pass(path: str) -> None:
    assert check_member_path(path) == path


@pytest.mark.parametrize(
    ("kind", "name", "version", "reason"),
    [
        ("binary", "../../x", "", "unsafe name '../../x'"),
        ("binary", "/x", "", "unsafe name '/x'"),
        ("binary", "bin/x", "", "unsafe name 'bin/x'"),
        ("binary", "..", "", "unsafe name '..'"),
        ("wheel", "x", "1/../../2", "unsafe version"),
        ("chart", "-rf", "1.0", "unsafe name '-rf'"),
        ("blob", "sha256:" + "1" * 64, "", "not after its sha256"),
        ("blob", "../x", "", "not after its sha256"),
    ],
)
def test_names_are_checked_as_strictly_as_paths(
    kind: str, name: str, version: str, reason: str
) -> None:
    item = {"kind": kind, "name": name, "version": version, "path": "bin/x", "size": 1,
            "sha256": "0" * 64}  # fmt: skip
    data = json.loads(_manifest())
    data["items"] = [item]
    with pytest.raises(BadInputError, match=r"bundle: .*bin/x") as refused:
        parse_manifest(json.dumps(data).encode())
    assert reason in refused.value.message


def test_a_blob_named_after_its_sha256_passes() -> None:
    data = json.loads(_manifest())
    digest = "0" * 64
    blob = {"kind": "blob", "name": f"sha256:{digest}", "version": "",
            "path": f"oci/blobs/sha256/{digest}", "size": 1, "sha256": digest}  # fmt: skip
    data["items"] = [blob]
    assert parse_manifest(json.dumps(data).encode()).items[0].name == "sha256:" + "0" * 64


def _manifest() -> bytes:
    item = BundleItem(kind="wheel", name="x", path="wheels/x.whl", size=1, sha256="0" * 64)
    return new_manifest(source={}, platform_version="1", images=[], items=[item]).to_bytes()


def test_newer_format_version_is_refused() -> None:
    data = json.loads(_manifest())
    data["format_version"] = 2
    with pytest.raises(BadInputError, match="format version 2"):
        parse_manifest(json.dumps(data).encode())


def test_duplicate_paths_are_refused() -> None:
    data = json.loads(_manifest())
    data["items"].append(data["items"][0])
    with pytest.raises(BadInputError, match="twice"):
        parse_manifest(json.dumps(data).encode())


def test_unknown_fields_are_refused() -> None:
    data = json.loads(_manifest())
    data["items"][0]["mode"] = "4755"
    with pytest.raises(BadInputError, match="invalid manifest"):
        parse_manifest(json.dumps(data).encode())


def test_manifest_round_trips_byte_for_byte() -> None:
    data = _manifest()
    assert parse_manifest(data).to_bytes() == data


@pytest.mark.parametrize(
    ("name", "mirror", "expected"),
    [
        ("busybox", True, (None, "docker.io/library/busybox")),
        ("ghcr.io/neuro-inc/platformapi", True, (None, "ghcr.io/neuro-inc/platformapi")),
        ("docker.io/library/registry", False, ("registry-1.docker.io", "library/registry")),
        ("quay.io/keycloak/keycloak", False, ("quay.io", "keycloak/keycloak")),
    ],
)
def test_upstream_names(name: str, mirror: bool, expected: tuple[str | None, str]) -> None:
    assert upstream_repo(name, mirror=mirror) == expected


def test_platform_filter_rewrites_the_index() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"digest": "sha256:" + "1" * 64, "platform": {"os": "linux", "architecture": "amd64"}},
            {
                "digest": "sha256:" + "2" * 64,
                "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
            },
        ],
    }
    raw = json.dumps(doc).encode()
    top = Manifest(raw, OCI_INDEX, sha256_digest(raw))
    assert _filter_index(top, ["linux/amd64", "linux/arm64"]) != top
    kept = json.loads(_filter_index(top, ["linux/arm"]).data)["manifests"]
    assert [m["digest"][-1] for m in kept] == ["2"]
    assert _filter_index(top, ["linux/amd64", "linux/arm/v7"]) == top
    with pytest.raises(BadInputError):
        _filter_index(top, ["windows/amd64"])


def test_bearer_challenge_parsing() -> None:
    header = 'Bearer realm="https://auth/token",service="reg",scope="repository:a/b:pull,push"'
    assert _parse_challenge(header) == (
        "bearer",
        {"realm": "https://auth/token", "service": "reg", "scope": "repository:a/b:pull,push"},
    )


def _opts(tmp_path: Path, **kw: object) -> BuildOptions:
    release = ReleaseManifest(platform_version="1", images=[], charts=[])
    return BuildOptions(release=release, output=tmp_path / "b", sign_key=tmp_path / "k", **kw)  # type: ignore[arg-type]


def test_have_file_must_list_digests(tmp_path: Path) -> None:
    have = tmp_path / "have.txt"
    have.write_text("# site digests\nsha256:" + "a" * 64 + "\nnot-a-digest\n")
    with pytest.raises(BadInputError, match="not a digest"):
        _delta_base(_opts(tmp_path, have=have))
    have.write_text("sha256:" + "a" * 64 + "\n")
    digests, kind, _ = _delta_base(_opts(tmp_path, have=have))
    assert (digests, kind) == ({"sha256:" + "a" * 64}, "have")
    with pytest.raises(BadInputError, match="not both"):
        _delta_base(_opts(tmp_path, have=have, since=have))


def test_have_list_names_blobs_by_digest_and_files_by_sha256() -> None:
    manifest = parse_manifest(_manifest())
    assert have_list(manifest) == "sha256:" + "0" * 64 + "\n"
