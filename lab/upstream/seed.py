"""What the lab's stand-in upstream holds, derived from the release manifest (no second list).

60-upstream.sh calls this to know which images to build and push and which charts to package;
the unit tests call the same functions to prove the seeding covers every manifest entry.

Usage: python lab/upstream/seed.py images|charts|key images|key charts
       python lab/upstream/seed.py pins OCI_LAYOUT CHARTS_DIR WHEELHOUSE BIN_DIR
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from installer.airgap.pins import cut_pins  # noqa: E402
from installer.release import (  # noqa: E402
    ChartRef,
    ImageRef,
    ReleaseManifest,
    ReleasePins,
    load_release,
)

CHART_SOURCES = HERE / "charts"

# Generated layer sizes (MiB) shared by every image of a component, so that transfer code meets
# real sizes and shared layers: the Keycloak image is large (the real one is several hundred MB),
# the platform's two controllers share a runtime layer as images built on one base do, and the
# storage images share a smaller one. Components not listed get the busybox base only.
RUNTIME_MIB: dict[str, int] = {"keycloak": 200, "platform": 48, "storage": 8}


@dataclass(frozen=True)
class ImagePlan:
    """One stand-in image: where it is stored upstream and which generated layer it sits on."""

    name: str
    tag: str
    component: str
    runtime_mib: int

    @property
    def reference(self) -> str:
        """`name:tag` as the upstream names it."""
        return f"{self.name}:{self.tag}"


def mirror_reference(registry: str, image: ImageRef | ImagePlan) -> str:
    """The image's place in a mirror: its full upstream name as the path under the mirror host.

    >>> mirror_reference("127.0.0.1:15000", ImagePlan("ghcr.io/a/b", "1", "platform", 0))
    '127.0.0.1:15000/ghcr.io/a/b:1'
    """
    return f"{registry}/{image.name}:{image.tag}"


def image_plans(manifest: ReleaseManifest) -> list[ImagePlan]:
    """Every manifest image, with the generated runtime layer its component gets."""
    return [
        ImagePlan(i.name, i.tag, i.component, RUNTIME_MIB.get(i.component, 0))
        for i in manifest.images
    ]


def chart_app_version(manifest: ReleaseManifest, chart: ChartRef) -> str:
    """The appVersion to package with: the image tag when the chart's component has one image
    (the Keycloak chart defaults its image tag to it), else the chart's own version."""
    tags = {i.tag for i in manifest.images_for(chart.component)}
    return tags.pop() if len(tags) == 1 else chart.version


def chart_source(chart: ChartRef) -> Path:
    """The stand-in chart's source folder (it must exist for every manifest chart)."""
    return CHART_SOURCES / chart.name


def seed_key(manifest: ReleaseManifest, part: str) -> str:
    """A short hash of what the built `images` or `charts` depend on, for the cache folder name."""
    h = hashlib.sha256()
    if part == "images":
        for plan in image_plans(manifest):
            h.update(f"{plan.reference} {plan.component} {plan.runtime_mib}\n".encode())
        sources = [HERE / "build-images.sh"]
    else:
        for chart in manifest.charts:
            app = chart_app_version(manifest, chart)
            h.update(f"{chart.name} {chart.version} {app}\n".encode())
        sources = sorted(p for p in CHART_SOURCES.rglob("*") if p.is_file())
    for path in sources:
        h.update(path.relative_to(HERE).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def lab_pins(
    manifest: ReleaseManifest, layout: Path, charts: Path, wheelhouse: Path, bin_dir: Path
) -> ReleasePins:
    """The pins of the stand-ins as the lab built them (the lab cuts its own release): image
    digests from the OCI layout, sha256 of the packaged charts, the wheelhouse's wheels and the
    binaries the lab has (one it could not build has no pin, and is left out of the release
    the tests bundle)."""
    index = json.loads((layout / "index.json").read_text(encoding="utf-8"))
    digests = {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in index["manifests"]
    }
    return cut_pins(manifest, digests, charts=charts, wheels=wheelhouse, binaries=bin_dir)


def main(argv: list[str]) -> int:
    """Print what the shell side needs, one tab-separated record per line."""
    manifest = load_release()
    match argv:
        case ["images"]:
            for p in image_plans(manifest):
                print(f"{p.name}\t{p.tag}\t{p.component}\t{p.runtime_mib}")
        case ["charts"]:
            for c in manifest.charts:
                app = chart_app_version(manifest, c)
                print(f"{c.name}\t{c.version}\t{app}\t{chart_source(c)}\t{c.repository}")
        case ["key", ("images" | "charts") as part]:
            print(seed_key(manifest, part))
        case ["pins", layout, charts, wheelhouse, bin_dir]:
            pins = lab_pins(manifest, Path(layout), Path(charts), Path(wheelhouse), Path(bin_dir))
            print(pins.to_yaml(), end="")
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
