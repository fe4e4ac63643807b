"""The release manifest (`airgap/release.yml`): every image, chart, wheel and binary a site needs.

One source for bootstrap (which images and charts to deploy), the air-gap bundle (what to pack),
lab seeding (what the stand-in upstream must hold) and the docs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

RELEASE_MANIFEST = Path(__file__).resolve().parent.parent / "airgap" / "release.yml"

ImageDigest = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]

Component = Literal["auxvm", "nodes", "storage", "dns", "keycloak", "platform", "installer"]


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageRef(_Item):
    """An OCI image the site needs, as the upstream names it."""

    name: str = Field(
        description="Repository with registry host, e.g. `ghcr.io/neuro-inc/platformapi`."
    )
    tag: str = Field(description="Tag pinned for this release.")
    digest: str | None = Field(
        default=None,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="Manifest digest when known; pulls are then verified against it.",
    )
    component: Component = Field(description="Which part of the install uses the image.")

    @property
    def reference(self) -> str:
        """`name:tag` (or `name@digest` when the digest is pinned)."""
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag}"


class ChartRef(_Item):
    """A Helm chart the site needs."""

    name: str = Field(description="Chart name as published in its repository.")
    version: str = Field(description="Chart version pinned for this release.")
    repository: str = Field(description="Upstream chart repository URL (informational offline).")
    component: Component = Field(description="Which part of the install uses the chart.")


class WheelRef(_Item):
    """A Python distribution served from DevPI (the platform CLI, the installer's own wheels)."""

    name: str = Field(description="Distribution name.")
    version: str = Field(description="Pinned version.")


class BinaryRef(_Item):
    """A tool binary the site needs (the Pulumi CLI and its plugins)."""

    name: str = Field(description="Tool name, e.g. `pulumi` or `pulumi-resource-kubernetes`.")
    version: str = Field(description="Pinned version.")


class ReleaseManifest(_Item):
    """Everything one platform release needs on a site."""

    platform_version: str = Field(description="The platform release this manifest describes.")
    images: list[ImageRef] = Field(description="Images, sorted by name then tag.")
    charts: list[ChartRef] = Field(description="Helm charts, sorted by name.")
    wheels: list[WheelRef] = Field(default_factory=list, description="Wheels, sorted by name.")
    binaries: list[BinaryRef] = Field(default_factory=list, description="Binaries, sorted by name.")

    def images_for(self, component: Component) -> list[ImageRef]:
        """The images one component deploys."""
        return [i for i in self.images if i.component == component]


def load_release(path: Path = RELEASE_MANIFEST) -> ReleaseManifest:
    """Read and validate the release manifest."""
    from installer.inventory.yamlsrc import load_yaml_model

    return load_yaml_model(path, ReleaseManifest)


# --- pins -----------------------------------------------------------------------------------


class ReleasePins(_Item):
    """The exact bytes of one release (`airgap/release.pins.yml` beside `release.yml`): every
    image by manifest digest, every chart archive, wheel (dependencies included) and binary by
    sha256. Recorded once from a trusted source when the release is cut
    (`airgap-bundle --allow-unpinned --write-pins`); `airgap-bundle` and a connected bootstrap
    refuse content that does not match. Tags and versions stay in the release for people."""

    platform_version: str = Field(description="The release these pins belong to.")
    images: dict[str, ImageDigest] = Field(
        default_factory=dict,
        description="`name:tag` -> the manifest (or index) digest the upstream serves for it.",
    )
    charts: dict[str, Sha256] = Field(
        default_factory=dict, description="`name:version` -> sha256 of the chart archive."
    )
    wheels: dict[str, Sha256] = Field(
        default_factory=dict,
        description="Wheel file name -> its sha256; every wheel the bundle carries.",
    )
    binaries: dict[str, Sha256] = Field(
        default_factory=dict, description="`name:version` -> sha256 of the executable."
    )

    def unpinned(self, release: ReleaseManifest) -> list[str]:
        """The release's images, charts and binaries these pins say nothing of."""
        return [
            *(f"image {i.name}:{i.tag}" for i in release.images if self.image(i) is None),
            *(
                f"chart {c.name}:{c.version}"
                for c in release.charts
                if pins_key(c) not in self.charts
            ),
            *(
                f"binary {b.name}:{b.version}"
                for b in release.binaries
                if pins_key(b) not in self.binaries
            ),
        ]

    def image(self, image: ImageRef) -> str | None:
        """The pinned digest of an image, if any."""
        return self.images.get(f"{image.name}:{image.tag}")

    def to_yaml(self) -> str:
        """The pins file's text (keys sorted, one entry per line)."""
        lines = [
            "# Pins of the release: the bytes each entry must have (see installer/release.py).",
            f'platform_version: "{self.platform_version}"',
        ]
        for section in ("images", "charts", "wheels", "binaries"):
            entries: dict[str, str] = getattr(self, section)
            lines.append(f"{section}:" + ("" if entries else " {}"))
            lines += [f'  "{k}": "{v}"' for k, v in sorted(entries.items())]
        return "\n".join(lines) + "\n"


class _Versioned(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...


def pins_key(item: _Versioned) -> str:
    """How a chart or binary (of a release, or a bundle's item) is named in the pins:
    `name:version`."""
    return f"{item.name}:{item.version}"


def pins_path(release: Path) -> Path:
    """Where a release's pins live by default: `<release>.pins.yml` beside it."""
    return release.with_name(f"{release.stem}.pins.yml")


def load_pins(path: Path) -> ReleasePins:
    """Read and validate a pins file (errors name file:line)."""
    from installer.inventory.yamlsrc import load_yaml_model

    return load_yaml_model(path, ReleasePins)
