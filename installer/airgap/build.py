"""`airgap-bundle`: pull everything a release needs into a work folder, then pack and sign it.

The work folder (`<output>.work/` by default) is the resume point: blobs, charts, wheels and
binaries already there are not fetched again. Delta bundles (`--since`, `--have`) leave out
what the site already holds but always carry the image manifests (they are small, and a tag
must be pushed from them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from installer import __version__
from installer.airgap.archive import first_member
from installer.airgap.bundlefile import STATE_NAME, BundleWriter
from installer.airgap.files import (
    Source,
    fetch_binaries,
    fetch_charts,
    fetch_wheels,
    file_item,
    write_chart_index,
)
from installer.airgap.hubprograms import stage_hub
from installer.airgap.images import (
    Wanted,
    child_descriptors,
    fetch_blobs,
    is_compressed,
    layout_items,
    read_manifest_blob,
    resolve_images,
    upstream_repo,
)
from installer.airgap.manifest import (
    LAYOUT_DIR,
    MANIFEST_NAME,
    BundleImage,
    BundleItem,
    BundleManifest,
    DeltaBase,
    load_private_key,
    new_manifest,
    parse_manifest,
    sign,
)
from installer.airgap.pins import check_items, pinned_release, record_pins
from installer.airgap.progress import Progress, Silent
from installer.engines.registry import (
    BlobSink,
    FileSink,
    RegistryClient,
    RegistryEndpoint,
    TransferStats,
)
from installer.errors import BadInputError
from installer.release import ReleaseManifest, ReleasePins


@dataclass(frozen=True)
class BuildOptions:
    """Everything `airgap-bundle` needs."""

    release: ReleaseManifest
    output: Path
    sign_key: Path
    upstream: RegistryEndpoint | None = None
    """A mirror holding images under their full upstream name; None pulls from each registry."""
    charts: Source | None = None
    wheels: Source | None = None
    binaries: Path | None = None
    hub: Path | None = None
    """The hub's programs (`chartmuseum`, `registry`, `devpi-wheels/*.whl`), see hubprograms."""
    work_dir: Path | None = None
    platforms: list[str] = field(default_factory=list)
    since: Path | None = None
    have: Path | None = None
    max_size: int | None = None
    workers: int = 8
    level: int = 1
    pins: ReleasePins | None = None
    """What each entry's bytes must be (`installer.airgap.pins`); None is refused unless
    `allow_unpinned`."""
    allow_unpinned: bool = False
    """Development only: build entries the pins do not name (each logged as a warning)."""

    @property
    def stage(self) -> Path:
        """Where content is gathered before packing."""
        return self.work_dir or self.output.with_name(self.output.name + ".work")


@dataclass(frozen=True)
class BuildResult:
    """What `airgap-bundle` made."""

    parts: list[Path]
    manifest: BundleManifest
    bundle_bytes: int
    content_bytes: int
    omitted: int
    retries: int
    bytes_received: int
    seconds: dict[str, float]
    pins: ReleasePins
    """The pins of what was gathered (`--write-pins` records them)."""


def build_bundle(opts: BuildOptions, progress: Progress | None = None) -> BuildResult:
    """Gather, hash, sign and pack; see the module docstring.

    The manifest is known before any layer is downloaded (the image manifests give every
    blob's digest and size), so it is signed and written first and each blob is packed as
    soon as its download completes: pulling and packing overlap.
    """
    progress = progress or Silent()
    key = load_private_key(opts.sign_key)  # fail on a bad key before any download
    release = pinned_release(opts.release, opts.pins, allow_unpinned=opts.allow_unpinned)
    opts = dataclasses.replace(opts, release=release)
    stage = opts.stage
    stage.mkdir(parents=True, exist_ok=True)
    omit, delta_kind, base_sha = _delta_base(opts)
    seconds: dict[str, float] = {}
    stats = TransferStats()

    started = time.monotonic()
    progress.phase("charts, wheels, binaries", None)
    items = _files(opts, stage)
    seconds["files"] = time.monotonic() - started

    started = time.monotonic()
    with _client(opts, stats, progress) as client:
        images, wanted = _resolve(opts, client, stage)
        sizes = {d: size for d, (_, size, _) in wanted.items()}
        items += layout_items(stage, images, omit - _manifest_digests(stage, images), sizes)
        # Hub programs stay in a delta too: the auxvm phase extracts them before any load.
        kept = [
            i
            for i in items
            if i.kind in ("layout", "blob", "hub") or f"sha256:{i.sha256}" not in omit
        ]
        omitted_files = {f"sha256:{i.sha256}" for i in items if i not in kept}
        omitted_blobs = {d for img in images for d in img.blobs} & omit
        delta = None
        if delta_kind is not None:
            delta = DeltaBase(
                kind=delta_kind, sha256=base_sha, omitted=sorted(omitted_blobs | omitted_files)
            )
        source = {"installer": __version__}
        if opts.upstream is not None:
            source["registry_mirror"] = opts.upstream.host
        manifest = _earlier_if_same(
            stage,
            new_manifest(
                source=source,
                platform_version=opts.release.platform_version,
                images=images,
                items=kept,
                delta=delta,
            ),
        )
        seconds["manifests"] = time.monotonic() - started
        started = time.monotonic()
        progress.phase("pull and pack", manifest.total_size)
        parts = _pull_and_pack(
            opts, client, stage, manifest, wanted, sign_with=key, progress=progress
        )
    seconds["pull_and_pack"] = time.monotonic() - started
    return BuildResult(
        parts=parts,
        manifest=manifest,
        bundle_bytes=sum(p.stat().st_size for p in parts),
        content_bytes=manifest.total_size,
        omitted=len(delta.omitted) if delta else 0,
        retries=stats.retries,
        bytes_received=stats.bytes_received,
        seconds=seconds,
        pins=record_pins(opts.release, images, items),
    )


def _earlier_if_same(stage: Path, manifest: BundleManifest) -> BundleManifest:
    """The manifest an interrupted run of the same build signed (it differs only in its
    creation time), so that its bundle file, laid out for those bytes, is resumed; else
    `manifest`, recorded for the next run. A completed build left no state: a new run gets
    a new creation time."""
    path = stage / MANIFEST_NAME
    earlier = None
    if (stage / STATE_NAME).is_file():
        try:
            earlier = parse_manifest(path.read_bytes())
        except (OSError, BadInputError):
            earlier = None
    if earlier is not None and manifest.model_copy(update={"created": earlier.created}) == earlier:
        return earlier
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(manifest.to_bytes())
    tmp.replace(path)
    return manifest


def _pull_and_pack(
    opts: BuildOptions,
    client: RegistryClient,
    stage: Path,
    manifest: BundleManifest,
    wanted: Wanted,
    *,
    sign_with: Ed25519PrivateKey,
    progress: Progress,
) -> list[Path]:
    """Write the bundle file: layers already compressed go from the network straight into
    their raw frames (`bundlefile`), in parallel; everything else is packed, compressed, from
    the work folder as soon as it is there (`_Packer`)."""
    blobs = {i.name: i for i in manifest.items if i.kind == "blob" and i.name in wanted}
    raw = sorted(
        (i for i in blobs.values() if is_compressed(wanted[i.name][2])), key=lambda i: -i.size
    )
    raw_paths = {i.path for i in raw}
    local = [i for i in manifest.items if not (i.kind == "blob" and i.name in wanted)]
    data = manifest.to_bytes()
    writer = BundleWriter(opts.output, stage, max_size=opts.max_size, level=opts.level)
    writer.start(data, sign(data, sign_with), raw)
    ready: queue.Queue[BundleItem | None] = queue.Queue()
    packer = _Packer(writer, stage, local, ready, progress)
    packer.start()

    def sink(digest: str) -> BlobSink | None:
        item = blobs[digest]
        if item.path in raw_paths:
            if writer.is_done(item.path):
                progress.advance(item.size)
                return None
            return writer.sink(item.path)
        path = stage / item.path
        if path.is_file():
            progress.advance(item.size)
            return None
        return FileSink(path, item.size)

    def done(digest: str) -> None:
        if blobs[digest].path not in raw_paths:
            ready.put(blobs[digest])

    try:
        fetch_blobs(
            client,
            {d: wanted[d] for d in blobs},
            sink=sink,
            workers=opts.workers,
            on_done=done,
        )
    finally:
        ready.put(None)
        packer.join()
    if packer.error is not None:
        writer.close()
        raise packer.error
    return writer.finish(packer.length)


class _Packer(threading.Thread):
    """Writes the bundle's compressed tail from the work folder: the files gathered there,
    then each blob of the queue (those not stored raw) once its download completes."""

    def __init__(
        self,
        writer: BundleWriter,
        stage: Path,
        first: list[BundleItem],
        ready: queue.Queue[BundleItem | None],
        progress: Progress,
    ) -> None:
        super().__init__(name="bundle-packer", daemon=True)
        self.writer, self.stage, self.first, self.ready = writer, stage, first, ready
        self.progress = progress
        self.length = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            tail = self.writer.tail()
            for item in self.first:
                tail.add_file(item.path, self.stage / item.path, item.size)
                self.progress.advance(item.size)
            for item in iter(self.ready.get, None):
                tail.add_file(item.path, self.stage / item.path, item.size)
            self.length = tail.close()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, re-raised there
            self.error = exc
            for _ in iter(self.ready.get, None):  # let the downloads finish their puts
                pass


def _client(opts: BuildOptions, stats: TransferStats, progress: Progress) -> RegistryClient:
    images = opts.release.images
    if opts.upstream is not None:
        endpoint = opts.upstream
    else:
        hosts = {_host(i.name) for i in images}
        if len(hosts) > 1:
            raise BadInputError(
                f"images come from {len(hosts)} registries ({', '.join(sorted(hosts))})",
                remedy="pass --registry-mirror: a registry holding them under their full names",
            )
        endpoint = RegistryEndpoint(host=hosts.pop() if hosts else "localhost")
    return RegistryClient(
        endpoint, stats=stats, connections=opts.workers * 2, progress=progress.advance
    )


def _resolve(
    opts: BuildOptions, client: RegistryClient, stage: Path
) -> tuple[list[BundleImage], Wanted]:
    if not opts.release.images:
        return [], {}
    return resolve_images(
        client,
        opts.release.images,
        stage / LAYOUT_DIR,
        mirror=opts.upstream is not None,
        platforms=opts.platforms,
        workers=opts.workers,
    )


def _host(name: str) -> str:
    host, _ = upstream_repo(name, mirror=False)
    assert host is not None
    return host


def _manifest_digests(stage: Path, images: list[BundleImage]) -> set[str]:
    root = stage / LAYOUT_DIR
    found: set[str] = set()
    for img in images:
        found.add(img.digest)
        top = read_manifest_blob(root, img.digest, img.media_type)
        found.update(d["digest"] for d in child_descriptors(top))
    return found


def _files(opts: BuildOptions, stage: Path) -> list[BundleItem]:
    rel = opts.release
    items: list[BundleItem] = []
    if rel.charts:
        if opts.charts is None:
            raise BadInputError("the release lists charts: pass --charts-from (URL or folder)")
        fetch_charts(rel.charts, opts.charts, stage / "charts")
        write_chart_index(stage / "charts", rel.charts)
        for chart in rel.charts:
            name = f"charts/{chart.name}-{chart.version}.tgz"
            items.append(file_item(stage, name, "chart", chart.name, chart.version))
        items.append(file_item(stage, "charts/index.yaml", "chart-index"))
    if rel.wheels:
        if opts.wheels is None:
            raise BadInputError("the release lists wheels: pass --wheels-from (index or folder)")
        fetch_wheels(rel.wheels, opts.wheels, stage / "wheels")
        for wheel in sorted((stage / "wheels").glob("*.whl")):
            dist, version = wheel.name.split("-")[:2]
            items.append(file_item(stage, f"wheels/{wheel.name}", "wheel", dist, version))
    if rel.binaries:
        if opts.binaries is None:
            raise BadInputError("the release lists binaries: pass --binaries-from (a folder)")
        fetch_binaries(rel.binaries, opts.binaries, stage / "binaries")
        for binary in rel.binaries:
            rel_path = f"binaries/{binary.name}"
            items.append(file_item(stage, rel_path, "binary", binary.name, binary.version))
    check_items(items, opts.pins, stage, allow_unpinned=opts.allow_unpinned)
    if opts.hub is not None:
        items += stage_hub(opts.hub, stage)
    return items


def _delta_base(opts: BuildOptions) -> tuple[set[str], str | None, str]:
    """Digests the site already has, and what they came from."""
    if opts.since and opts.have:
        raise BadInputError("give --since or --have, not both")
    if opts.since:
        data = _read_since(opts.since)
        older = parse_manifest(data)
        have = {i.name if i.kind == "blob" else f"sha256:{i.sha256}" for i in older.items}
        have.update(older.delta.omitted if older.delta else [])
        return have, "since", _sha(data)
    if opts.have:
        data = opts.have.read_bytes()
        lines = [ln.strip() for ln in data.decode().splitlines()]
        have = {ln for ln in lines if ln and not ln.startswith("#")}
        bad = [ln for ln in have if not ln.startswith("sha256:") or len(ln) != 71]
        if bad:
            raise BadInputError(f"{opts.have}: not a digest: {bad[0]!r}")
        return have, "have", _sha(data)
    return set(), None, ""


def _read_since(path: Path) -> bytes:
    """An older manifest: `manifest.json`, or the one inside an older bundle."""
    if path.name.endswith(".json"):
        return path.read_bytes()
    return first_member(path, MANIFEST_NAME)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def have_list(manifest: BundleManifest) -> str:
    """A `--have` file listing every digest a site holds after loading `manifest`."""
    digests = {i.name if i.kind == "blob" else f"sha256:{i.sha256}" for i in manifest.items}
    digests.update(manifest.delta.omitted if manifest.delta else [])
    return "".join(f"{d}\n" for d in sorted(digests))
