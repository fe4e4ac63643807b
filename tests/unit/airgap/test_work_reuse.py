"""A work folder verified by an earlier run is re-used only while every file in it still has its
listed size and sha256: a file changed since, or a link in its place, sends the load back to the
bundle (issue: the work folder was trusted on re-use)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from installer.airgap.archive import VERIFIED_MARK, mark_verified
from installer.airgap.load import _extracted
from installer.airgap.manifest import BundleItem


def _item(path: str, data: bytes) -> BundleItem:
    return BundleItem(
        kind="chart",
        name=path.rsplit("/", 1)[-1],
        path=path,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def test_a_changed_file_is_not_reused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "charts").mkdir(parents=True)
    data = b"chart-bytes" * 100
    item = _item("charts/a-1.tgz", data)
    (work / item.path).write_bytes(data)
    mark_verified(work, "m" * 64)
    assert _extracted(work, "m" * 64, [item])
    assert not _extracted(work, "n" * 64, [item])  # another bundle's folder
    (work / item.path).write_bytes(data[:-1] + b"X")  # same size, other bytes
    assert not _extracted(work, "m" * 64, [item])
    assert not (work / VERIFIED_MARK).exists()  # the next pass verifies and extracts again


def test_a_link_in_place_of_a_file_is_not_reused(tmp_path: Path) -> None:
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere.tgz"
    (work / "charts").mkdir(parents=True)
    data = b"chart-bytes" * 100
    elsewhere.write_bytes(data)  # the right bytes, but not a file of the work folder
    item = _item("charts/a-1.tgz", data)
    (work / item.path).symlink_to(elsewhere)
    mark_verified(work, "m" * 64)
    assert not _extracted(work, "m" * 64, [item])
