"""Holding a bundle's content to the release's pins (`installer.release.ReleasePins`).

A release is cut once against the trusted upstream and its pins recorded; every later build (an
`airgap-bundle` on a staging machine, a connected site's `airgap_load` phase) pulls the same
names again, perhaps from a mirror, perhaps months later, when a tag has moved or a mirror was
tampered with. So each image is pulled by its pinned digest (the tag stays for people), and
each chart archive, wheel and binary is hashed and compared with its pin before it is packed.
A release without pins, or an entry without one, is refused unless the development flag
`--allow-unpinned` is given (and then logged as a warning).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from installer.airgap.files import chart_file, find_binary, sha256_file
from installer.airgap.manifest import BundleImage, BundleItem
from installer.errors import BadInputError
from installer.release import ReleaseManifest, ReleasePins, pins_key
from installer.site import normalize_image

log = logging.getLogger(__name__)

PIN_REMEDY = (
    "cut the release's pins once from a trusted source (`installer airgap-bundle"
    " --allow-unpinned --write-pins FILE`) and pass them with --pins (a connected site:"
    " upstream.pins); --allow-unpinned is for development only"
)
DIFFERS_REMEDY = (
    "the source serves other bytes than the release was cut with: point it at an untampered"
    " copy of the release (or, if the release itself changed, cut new pins)"
)


def pinned_release(
    release: ReleaseManifest, pins: ReleasePins | None, *, allow_unpinned: bool
) -> ReleaseManifest:
    """The release with every image's digest taken from the pins (pulls then go by digest).

    Refused (exit 2) without pins, with pins of another release, or with an image, chart or
    binary the pins do not name, unless `allow_unpinned` (logged as a warning)."""
    version = release.platform_version
    if pins is None:
        if not allow_unpinned:
            raise BadInputError(
                f"release {version} has no pins: nothing to check the upstream's content against",
                remedy=PIN_REMEDY,
            )
        log.warning("DEVELOPMENT (--allow-unpinned): release %s is built without pins", version)
        return release
    if pins.platform_version != version:
        raise BadInputError(
            f"the pins are of release {pins.platform_version}, the release manifest is {version}",
            remedy="pass the pins recorded for this release (--pins)",
        )
    missing = pins.unpinned(release)
    if missing:
        listed = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        if not allow_unpinned:
            raise BadInputError(f"release {version}: no pin for {listed}", remedy=PIN_REMEDY)
        log.warning("DEVELOPMENT (--allow-unpinned): no pin for %s", listed)
    images = []
    for image in release.images:
        pin = pins.image(image)
        if pin is not None and image.digest is not None and image.digest != pin:
            raise BadInputError(
                f"image {image.name}:{image.tag}: the release names {image.digest}, its pins {pin}",
                remedy="keep one digest per image: the pins file's",
            )
        images.append(image.model_copy(update={"digest": pin or image.digest}))
    return release.model_copy(update={"images": images})


def cut_pins(
    release: ReleaseManifest,
    images: Mapping[str, str],
    *,
    charts: Path | None = None,
    wheels: Path | None = None,
    binaries: Path | None = None,
) -> ReleasePins:
    """A release's pins cut from what its build made: `images` maps `name:tag` to the digest
    built or seeded (an image it lacks gets no pin); the chart archives in `charts`
    (`chart_file` names), every wheel in `wheels` and the binaries found in `binaries` are
    hashed (a binary not there gets no pin). A folder not given pins nothing of its kind."""
    refs = [f"{i.name}:{i.tag}" for i in release.images]
    found: dict[str, str] = {}
    if binaries is not None:
        for binary in release.binaries:
            with contextlib.suppress(BadInputError):  # not built: no pin
                found[pins_key(binary)] = sha256_file(find_binary(binary, binaries))
    return ReleasePins(
        platform_version=release.platform_version,
        images={ref: images[ref] for ref in refs if ref in images},
        charts={pins_key(c): sha256_file(charts / chart_file(c)) for c in release.charts}
        if charts is not None
        else {},
        wheels={w.name: sha256_file(w) for w in sorted(wheels.glob("*.whl"))}
        if wheels is not None
        else {},
        binaries=found,
    )


def item_key(item: BundleItem) -> str | None:
    """How the pins name a bundle item: `name:version` for charts and binaries, the file name
    for wheels; None for items pins do not cover (the chart index, the hub's programs)."""
    if item.kind in ("chart", "binary"):
        return pins_key(item)
    if item.kind == "wheel":
        return item.path.rsplit("/", 1)[-1]
    return None


def check_items(
    items: Iterable[BundleItem], pins: ReleasePins | None, stage: Path, *, allow_unpinned: bool
) -> None:
    """Every chart, wheel and binary gathered in `stage` against its pin: one that differs is
    deleted from the work folder (a re-run fetches it again) and refused, exit 2, naming the
    item, its sha256 and the pin; one without a pin is refused unless `allow_unpinned`."""
    if pins is None:
        return
    table = {"chart": pins.charts, "wheel": pins.wheels, "binary": pins.binaries}
    for item in items:
        key = item_key(item)
        if key is None:
            continue
        want = table[item.kind].get(key)
        if want is None:
            if not allow_unpinned:
                raise BadInputError(
                    f"{item.kind} {key}: the release's pins do not name it", remedy=PIN_REMEDY
                )
            log.warning("DEVELOPMENT (--allow-unpinned): %s %s has no pin", item.kind, key)
        elif item.sha256 != want:
            (stage / item.path).unlink(missing_ok=True)
            raise BadInputError(
                f"{item.kind} {key}: sha256 {item.sha256} does not match the release's pin {want}",
                remedy=DIFFERS_REMEDY,
            )


def record_pins(
    release: ReleaseManifest, images: list[BundleImage], items: Iterable[BundleItem]
) -> ReleasePins:
    """The pins of what one build gathered (`--write-pins`): image digests as pulled, sha256
    of every chart archive, wheel and binary."""
    by_name = {(i.name, i.tag): i.digest for i in images}
    found: dict[str, dict[str, str]] = {"chart": {}, "wheel": {}, "binary": {}}
    for item in items:
        key = item_key(item)
        if key is not None:
            found[item.kind][key] = item.sha256
    return ReleasePins(
        platform_version=release.platform_version,
        images={
            f"{i.name}:{i.tag}": by_name[(normalize_image(i.name), i.tag)] for i in release.images
        },
        charts={pins_key(c): found["chart"][pins_key(c)] for c in release.charts},
        wheels=found["wheel"],
        binaries={pins_key(b): found["binary"][pins_key(b)] for b in release.binaries},
    )
