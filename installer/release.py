"""The release manifest (`airgap/release.yml`): every image, chart, wheel and binary a site needs.

One source for bootstrap (which images and charts to deploy), the air-gap bundle (what to pack),
lab seeding (what the stand-in upstream must hold) and the docs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RELEASE_MANIFEST = Path(__file__).resolve().parent.parent / "airgap" / "release.yml"

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
