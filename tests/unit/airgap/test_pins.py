"""Release pins: a build is held to the digests the release was cut with (issue 21, item 8)."""

from __future__ import annotations

import logging
from hashlib import sha256
from pathlib import Path

import pytest

from installer.airgap.manifest import BundleImage, BundleItem
from installer.airgap.pins import check_items, cut_pins, item_key, pinned_release, record_pins
from installer.errors import BadInputError
from installer.release import (
    ReleaseManifest,
    ReleasePins,
    load_pins,
    pins_key,
    pins_path,
)

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
H1, H2 = "a" * 64, "b" * 64


def _release() -> ReleaseManifest:
    return ReleaseManifest.model_validate(
        {
            "platform_version": "25.12.0",
            "images": [
                {"name": "docker.io/library/busybox", "tag": "latest", "component": "nodes"},
                {"name": "ghcr.io/org/app", "tag": "1.0", "component": "platform"},
            ],
            "charts": [
                {"name": "app", "version": "1.0.0", "repository": "x", "component": "platform"}
            ],
            "wheels": [{"name": "tool", "version": "1.0"}],
            "binaries": [{"name": "pulumi", "version": "3.0.0"}],
        }
    )


def _pins(**kw: object) -> ReleasePins:
    data: dict[str, object] = {
        "platform_version": "25.12.0",
        "images": {"docker.io/library/busybox:latest": D1, "ghcr.io/org/app:1.0": D2},
        "charts": {"app:1.0.0": H1},
        "wheels": {"tool-1.0-py3-none-any.whl": H1, "dep-2.0-py3-none-any.whl": H2},
        "binaries": {"pulumi:3.0.0": H2},
    }
    data.update(kw)
    return ReleasePins.model_validate(data)


def test_a_release_without_pins_is_refused_unless_allowed(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(BadInputError, match=r"release 25\.12\.0 has no pins") as refused:
        pinned_release(_release(), None, allow_unpinned=False)
    assert refused.value.exit_code == 2
    assert "--write-pins" in (refused.value.remedy or "")
    with caplog.at_level(logging.WARNING):
        assert pinned_release(_release(), None, allow_unpinned=True) == _release()
    assert "DEVELOPMENT (--allow-unpinned)" in caplog.text


def test_pins_give_every_image_its_digest_and_keep_the_tag() -> None:
    pinned = pinned_release(_release(), _pins(), allow_unpinned=False)
    assert [(i.tag, i.digest) for i in pinned.images] == [("latest", D1), ("1.0", D2)]
    # Pulls then go by digest, whatever the tag points at by then.
    assert pinned.images[0].reference == f"docker.io/library/busybox@{D1}"


def test_an_entry_without_a_pin_is_named() -> None:
    pins = _pins(images={"ghcr.io/org/app:1.0": D2}, binaries={})
    with pytest.raises(BadInputError) as refused:
        pinned_release(_release(), pins, allow_unpinned=False)
    assert str(refused.value.message) == (
        "release 25.12.0: no pin for image docker.io/library/busybox:latest, binary pulumi:3.0.0"
    )
    partly = pinned_release(_release(), pins, allow_unpinned=True)
    assert [i.digest for i in partly.images] == [None, D2]


def test_pins_of_another_release_are_refused() -> None:
    with pytest.raises(BadInputError, match=r"the pins are of release 25\.11\.0"):
        pinned_release(_release(), _pins(platform_version="25.11.0"), allow_unpinned=True)


def test_a_digest_in_the_release_must_agree_with_the_pins() -> None:
    release = _release()
    images = [release.images[0].model_copy(update={"digest": D2}), release.images[1]]
    with pytest.raises(BadInputError, match=f"the release names {D2}, its pins {D1}"):
        pinned_release(release.model_copy(update={"images": images}), _pins(), allow_unpinned=False)


def _item(stage: Path, kind: str, name: str, version: str, path: str, sha: str) -> BundleItem:
    (stage / path).parent.mkdir(parents=True, exist_ok=True)
    (stage / path).write_bytes(b"x")
    return BundleItem(kind=kind, name=name, version=version, path=path, size=1, sha256=sha)  # type: ignore[arg-type]


def test_a_file_with_other_bytes_is_refused_and_dropped_from_the_work_folder(
    tmp_path: Path,
) -> None:
    good = _item(tmp_path, "chart", "app", "1.0.0", "charts/app-1.0.0.tgz", H1)
    bad = _item(tmp_path, "binary", "pulumi", "3.0.0", "binaries/pulumi", H1)
    index = _item(tmp_path, "chart-index", "index.yaml", "", "charts/index.yaml", H2)
    check_items([good, index], _pins(), tmp_path, allow_unpinned=False)
    with pytest.raises(BadInputError) as refused:
        check_items([good, bad], _pins(), tmp_path, allow_unpinned=True)
    assert refused.value.message == (
        f"binary pulumi:3.0.0: sha256 {H1} does not match the release's pin {H2}"
    )
    assert not (tmp_path / "binaries/pulumi").exists()  # a re-run fetches it again
    assert (tmp_path / "charts/app-1.0.0.tgz").exists()


def test_a_wheel_the_pins_do_not_name_is_refused(tmp_path: Path) -> None:
    stray = _item(tmp_path, "wheel", "evil", "6.6", "wheels/evil-6.6-py3-none-any.whl", H1)
    with pytest.raises(
        BadInputError, match=r"wheel evil-6\.6-py3-none-any\.whl: the release's pins"
    ):
        check_items([stray], _pins(), tmp_path, allow_unpinned=False)
    check_items([stray], _pins(), tmp_path, allow_unpinned=True)
    check_items([stray], None, tmp_path, allow_unpinned=True)


def test_recorded_pins_round_trip_through_their_file(tmp_path: Path) -> None:
    release = _release()
    images = [
        BundleImage(
            name="docker.io/library/busybox", tag="latest", digest=D1, media_type="x", blobs=[]
        ),
        BundleImage(name="ghcr.io/org/app", tag="1.0", digest=D2, media_type="x", blobs=[]),
    ]
    items = [
        _item(tmp_path, "chart", "app", "1.0.0", "charts/app-1.0.0.tgz", H1),
        _item(tmp_path, "wheel", "tool", "1.0", "wheels/tool-1.0-py3-none-any.whl", H1),
        _item(tmp_path, "wheel", "dep", "2.0", "wheels/dep-2.0-py3-none-any.whl", H2),
        _item(tmp_path, "binary", "pulumi", "3.0.0", "binaries/pulumi", H2),
    ]
    recorded = record_pins(release, images, items)
    assert recorded == _pins()
    path = pins_path(tmp_path / "release.yml")
    assert path.name == "release.pins.yml"
    path.write_text(recorded.to_yaml())
    assert load_pins(path) == recorded


def test_a_bad_pins_file_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "release.pins.yml"
    path.write_text('platform_version: "1"\nimages:\n  "a/b:1": "sha256:short"\n')
    with pytest.raises(BadInputError, match=r"release.pins.yml:3"):
        load_pins(path)


def test_pins_are_cut_from_what_a_build_made(tmp_path: Path) -> None:
    """`cut_pins` (the lab's seed and the tests cut their releases with it): images from the
    digests given, files hashed; what the build lacks gets no pin, so a bundle of it is refused
    naming that entry."""
    charts, wheels, binaries = (tmp_path / n for n in ("charts", "wheels", "bin"))
    for folder in (charts, wheels, binaries / "pulumi-3.0.0"):
        folder.mkdir(parents=True)
    (charts / "app-1.0.0.tgz").write_bytes(b"chart")
    (wheels / "tool-1.0-py3-none-any.whl").write_bytes(b"wheel")
    (wheels / "notes.txt").write_bytes(b"not a wheel")
    program = binaries / "pulumi-3.0.0" / "pulumi"
    program.write_bytes(b"binary")
    program.chmod(0o755)
    release = _release()
    pins = cut_pins(
        release,
        {"ghcr.io/org/app:1.0": D2, "other/image:9": D1},
        charts=charts,
        wheels=wheels,
        binaries=binaries,
    )
    assert pins.images == {"ghcr.io/org/app:1.0": D2}
    assert pins.charts == {"app:1.0.0": sha256(b"chart").hexdigest()}
    assert pins.wheels == {"tool-1.0-py3-none-any.whl": sha256(b"wheel").hexdigest()}
    assert pins.binaries == {"pulumi:3.0.0": sha256(b"binary").hexdigest()}
    assert pins.unpinned(release) == ["image docker.io/library/busybox:latest"]
    program.unlink()
    bare = cut_pins(release, {}, charts=None, wheels=None, binaries=binaries)
    assert (bare.charts, bare.wheels, bare.binaries) == ({}, {}, {})


def test_a_bundle_item_is_named_as_the_release_names_it() -> None:
    item = BundleItem(kind="binary", name="pulumi", version="3.0.0", path="bin/pulumi", size=1,
                      sha256=H1)  # fmt: skip
    assert item_key(item) == pins_key(_release().binaries[0]) == "pulumi:3.0.0"
