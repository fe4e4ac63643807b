"""`--hub-from`: the hub's programs become signed bundle items of kind `hub`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from installer.airgap.hubprograms import stage_hub
from installer.airgap.manifest import new_manifest, parse_manifest
from installer.errors import BadInputError


def _folder(tmp: Path, *, chartmuseum: bool = True, wheels: bool = True) -> Path:
    hub = tmp / "hub-from"
    (hub / "devpi-wheels").mkdir(parents=True)
    if chartmuseum:
        (hub / "chartmuseum").write_bytes(b"cm")
    if wheels:
        (hub / "devpi-wheels" / "devpi_server-6.20.3-py3-none-any.whl").write_bytes(b"w1")
        (hub / "devpi-wheels" / "README").write_text("not a wheel: left out")
    return hub


def test_items_are_listed_with_their_sha256_and_the_registry_is_optional(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    items = stage_hub(_folder(tmp_path), stage)
    assert [(i.kind, i.path, i.name, i.version) for i in items] == [
        ("hub", "hub/chartmuseum", "chartmuseum", ""),
        ("hub", "hub/devpi-wheels/devpi_server-6.20.3-py3-none-any.whl", "devpi_server", "6.20.3"),
    ]
    assert items[0].sha256 == hashlib.sha256(b"cm").hexdigest() and items[0].size == 2
    assert (stage / "hub" / "chartmuseum").stat().st_mode & 0o777 == 0o755
    manifest = new_manifest(source={}, platform_version="1", images=[], items=items)
    assert parse_manifest(manifest.to_bytes()).items == manifest.items


def test_a_stale_staged_file_does_not_reach_the_next_bundle(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    (stage / "hub").mkdir(parents=True)
    (stage / "hub" / "registry").write_bytes(b"old")
    items = stage_hub(_folder(tmp_path), stage)
    assert "hub/registry" not in {i.path for i in items}
    assert not (stage / "hub" / "registry").exists()


@pytest.mark.parametrize(
    ("chartmuseum", "wheels", "message"),
    [(False, True, "no chartmuseum"), (True, False, r"no devpi-wheels/\*\.whl")],
)
def test_an_incomplete_folder_is_refused(
    tmp_path: Path, chartmuseum: bool, wheels: bool, message: str
) -> None:
    with pytest.raises(BadInputError, match=message) as caught:
        stage_hub(_folder(tmp_path, chartmuseum=chartmuseum, wheels=wheels), tmp_path / "s")
    assert caught.value.remedy and "devpi-wheels" in caught.value.remedy


def test_not_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not a folder"):
        stage_hub(tmp_path / "missing", tmp_path / "s")
