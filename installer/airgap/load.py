"""`airgap-load`: push a verified bundle into the site's registry, ChartMuseum and DevPI.

Order and guarantees:
1. The signed manifest is read first (its signature checked before anything else is trusted);
   when the site already holds every image (tags resolve to the bundle's digests), every
   chart, wheel and binary, the load ends there (seconds).
2. Otherwise the bundle is read and every member verified (path, type, size, sha256 against
   the signed manifest). Large blobs (layers) go from the stream straight to the registry while
   they are hashed, into upload sessions that are completed only once the whole bundle is
   verified (the registry checks each digest again then) and discarded otherwise: a corrupted,
   truncated or tampered bundle leaves nothing of itself in the registry. Everything else
   (manifests, configs, charts, wheels, binaries) is extracted into a work folder. `readers`
   passes run at once, each checking every header and hashing a byte-balanced share of the
   layers (the first also the rest; a pass jumps over the others' layers, unread), so the
   registry receives that many uploads at a time;
   the bundle counts as verified only when every pass succeeded. A streamed upload that fails
   is uploaded again from a file after the passes.
   With `verify_first`, the whole bundle is verified and extracted before anything is pushed.
3. The remaining blobs, in parallel, largest first: HEAD before PUT, a cross-repository mount
   when another repository of the bundle already has the blob, an upload otherwise.
4. Manifests go only after the whole bundle passed and all blobs are present: children by
   digest, then the tag. No tag ever points at a missing blob, a corrupted bundle tags nothing,
   and an interrupted load finishes on the next run.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from packaging.version import InvalidVersion, Version
from pydantic import SecretStr

from installer.airgap.archive import (
    VERIFIED_MARK,
    Bundle,
    CheckedChunks,
    Consumer,
    VerifiedBundle,
    already_extracted,
    mark_verified,
    read_head,
    verify_bundle,
)
from installer.airgap.files import sha256_file
from installer.airgap.hub import CHART_REMEDY, WHEEL_REMEDY, ChartMuseum, ContentDiffers, DevPi
from installer.airgap.images import blob_path, child_descriptors, read_manifest_blob
from installer.airgap.manifest import (
    LAYOUT_DIR,
    BundleImage,
    BundleItem,
    BundleManifest,
    parse_manifest,
)
from installer.airgap.progress import Progress, Silent
from installer.engines.registry import (
    MAX_MANIFEST,
    RegistryClient,
    RegistryEndpoint,
    TransferStats,
)
from installer.errors import BadInputError, FailedError
from installer.inventory import Inventory
from installer.site import hub_urls
from installer.state import HUB_PASSWORD_SECRET, HUB_USER, StateDir

log = logging.getLogger("installer.airgap")

STREAM_MIN = MAX_MANIFEST
"""Blobs above this size are streamed to the registry during the verification pass; smaller
ones (every manifest among them: the client refuses larger manifests) are extracted."""


@dataclass(frozen=True)
class LoadTarget:
    """The site's services."""

    registry: RegistryEndpoint
    charts: ChartMuseum | None = None
    pypi: DevPi | None = None
    binaries_dir: Path | None = None


@dataclass(frozen=True)
class LoadOptions:
    """Everything `airgap-load` needs."""

    bundle: Bundle
    """The bundle, opened once (`open_bundle`): its manifest is the one every pass checks."""
    target: LoadTarget
    work_dir: Path
    workers: int = 8
    keep_work: bool = False
    """Keep the extracted bundle after a complete load (it is only needed to resume)."""
    verify_first: bool = False
    """Verify and extract the whole bundle before pushing anything (slower: every layer is
    written to the work folder and read back)."""
    stream_min: int = STREAM_MIN
    """Blobs larger than this go from the bundle straight to the registry."""
    readers: int = 4
    """Passes over the bundle run at once, each hashing and streaming a share of the layers
    (each reads every header, and jumps over the layers of the others): the registry receives
    that many uploads at a time."""
    site_release: SiteRelease | None = None
    """The newest release this site has loaded (`site_release()`): a bundle of an older one is
    refused unless `allow_downgrade`."""
    allow_downgrade: bool = False
    replace_changed: bool = False
    """Charts the hub serves under the bundle's names with other bytes are taken back and
    replaced by the bundle's; without it the load stops before it pushes anything."""


@dataclass
class LoadResult:
    """What the load did."""

    nothing_to_do: bool = False
    images_tagged: int = 0
    images_present: int = 0
    blobs: dict[str, int] = field(default_factory=dict)  # present / mounted / uploaded
    charts_uploaded: int = 0
    wheels_uploaded: int = 0
    binaries_installed: int = 0
    skipped: list[str] = field(default_factory=list)  # kinds with no target given
    retries: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def make_target(
    registry: str,
    charts_url: str | None,
    pypi_url: str | None,
    binaries_dir: Path | None,
    ca: Path | None,
    user: str | None,
    password: SecretStr | None,
) -> LoadTarget:
    """A load target from its parts; services without a URL are left out."""
    return LoadTarget(
        registry=RegistryEndpoint(registry, ca, user, password),
        charts=ChartMuseum(charts_url, ca, user, password) if charts_url else None,
        pypi=DevPi(pypi_url, ca, user, password) if pypi_url else None,
        binaries_dir=binaries_dir,
    )


def site_target(inv: Inventory) -> tuple[LoadTarget, Path]:
    """The hub of an inventory's site as a load target (site CA, generated login), and the
    site's state folder."""
    state = StateDir(Path(inv.site.state_dir))
    urls = hub_urls(inv)
    target = make_target(
        urls.registry_push,
        urls.charts_push,
        urls.pypi.removesuffix("+simple/"),
        state.pulumi / "bin",
        state.ca_cert,
        HUB_USER,
        state.secret(HUB_PASSWORD_SECRET),
    )
    return target, state.root


@dataclass(frozen=True)
class Differing:
    """A chart or wheel the hub serves under the bundle's name with other bytes."""

    kind: str
    """`chart` or `wheel`."""
    name: str
    """The archive's file name."""
    on_hub: str
    in_bundle: str

    @property
    def detail(self) -> str:
        """For a plan: both digests."""
        return f"other bytes on the hub: sha256 {self.on_hub}; the bundle's: {self.in_bundle}"


@dataclass
class SiteLacks:
    """What of a bundle's manifest the site does not hold, by name."""

    images: list[str] = field(default_factory=list)
    """`name:tag` of every image whose tag does not resolve to the bundle's digest."""
    charts: list[str] = field(default_factory=list)
    """Chart archive file names ChartMuseum lacks."""
    wheels: list[str] = field(default_factory=list)
    """Wheel file names DevPI lacks."""
    binaries: list[str] = field(default_factory=list)
    """Binaries missing from the binaries folder, or different there."""
    differs: list[Differing] = field(default_factory=list)
    """Charts and wheels the hub serves under the bundle's names with other bytes."""

    @property
    def files(self) -> bool:
        """A chart, wheel or binary is missing, or a chart or wheel differs."""
        return bool(self.charts or self.wheels or self.binaries or self.differs)

    def refuse_differing(self, *, replace_changed: bool) -> None:
        """`ContentDiffers` (naming every one) when the hub serves a chart or wheel with other
        bytes, unless every one is a chart and the operator asked to replace them."""
        kept = [d for d in self.differs if d.kind == "wheel" or not replace_changed]
        if not kept:
            return
        first = kept[0]
        remedy = WHEEL_REMEDY if any(d.kind == "wheel" for d in kept) else CHART_REMEDY
        error = ContentDiffers(first.kind, first.name, first.on_hub, first.in_bundle, remedy)
        if len(kept) > 1:
            others = ", ".join(f"{d.kind} {d.name}" for d in kept[1:])
            error.message += f"; so do {others}"
        raise error

    @property
    def nothing(self) -> bool:
        """The site holds everything."""
        return not self.images and not self.files


def site_lacks(
    manifest: BundleManifest,
    target: LoadTarget,
    *,
    workers: int = 8,
    client: RegistryClient | None = None,
) -> SiteLacks:
    """Compare `manifest` with the site (HEAD and index requests only); push nothing.

    Uses `client` for the registry when given, else a client of its own; leaves the chart and
    wheel services open (the caller closes them)."""
    if client is None:
        with RegistryClient(target.registry, connections=workers * 2) as own:
            return site_lacks(manifest, target, workers=workers, client=own)

    def absent(img: BundleImage) -> bool:
        return client.manifest_digest(img.name, img.tag) != img.digest

    with ThreadPoolExecutor(max_workers=workers) as pool:
        flags = list(pool.map(absent, manifest.images))
    lacks = SiteLacks(
        images=[f"{i.name}:{i.tag}" for i, flag in zip(manifest.images, flags, strict=True) if flag]
    )
    for item in manifest.items:
        name = item.path.rsplit("/", 1)[-1]
        found: str | None = None
        if item.kind == "chart" and target.charts is not None:
            found = target.charts.digest(item.name, item.version)
            if found is None:
                lacks.charts.append(name)
        elif item.kind == "wheel" and target.pypi is not None:
            found = target.pypi.digest(name)
            if found is None:
                lacks.wheels.append(name)
        elif item.kind == "binary" and target.binaries_dir is not None:
            installed = target.binaries_dir / item.name
            if not installed.is_file() or sha256_file(installed) != item.sha256:
                lacks.binaries.append(item.name)
        if found is not None and found != item.sha256:
            lacks.differs.append(Differing(item.kind, name, found, item.sha256))
    return lacks


def close_services(target: LoadTarget) -> None:
    """Close the chart and wheel services' connections."""
    for service in (target.charts, target.pypi):
        if service is not None:
            service.close()


def plan_load(opts: LoadOptions) -> SiteLacks:
    """What loading the bundle would push (HEAD requests only); push nothing."""
    try:
        return site_lacks(opts.bundle.manifest, opts.target, workers=opts.workers)
    finally:
        close_services(opts.target)


@dataclass(frozen=True)
class SiteRelease:
    """The newest platform release among the bundles a site has loaded completely."""

    version: str
    loaded: str
    """When that bundle was made (its manifest's `created`), for the refusal's message."""


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def site_release(state_root: Path) -> SiteRelease | None:
    """The newest release of the manifests `record_loaded` kept (bundles loaded and releases
    mirrored), or None on a site that has loaded none."""
    newest: tuple[Version, SiteRelease] | None = None
    for path in sorted((state_root / "airgap" / "loaded").glob("*.json")):
        try:
            manifest = parse_manifest(path.read_bytes())
        except (OSError, BadInputError) as exc:
            log.warning("airgap: loaded manifest %s unreadable (%s); left out", path, exc)
            continue
        version = _version(manifest.platform_version)
        if version is None:
            log.warning(
                "airgap: %s names release %r, not a version", path, manifest.platform_version
            )
            continue
        if newest is None or version > newest[0]:
            created = manifest.created.isoformat(timespec="seconds")
            newest = (version, SiteRelease(manifest.platform_version, created))
    return newest[1] if newest else None


def check_release_order(
    bundle_release: str, site: SiteRelease | None, *, allow_downgrade: bool
) -> None:
    """Refuse (exit 2) a bundle of an older release than the site runs: a validly signed old
    bundle would take the site back to content with known flaws. `--allow-downgrade` allows it
    on purpose (logged)."""
    if site is None:
        return
    theirs, ours = _version(bundle_release), _version(site.version)
    if theirs is not None and ours is not None and theirs >= ours:
        return
    if allow_downgrade:
        log.warning(
            "airgap: loading release %s over %s on purpose (--allow-downgrade)",
            bundle_release,
            site.version,
        )
        return
    why = (
        f"is older than release {site.version}"
        if theirs is not None and ours is not None
        else f"cannot be ordered against release {site.version}"
    )
    raise BadInputError(
        f"bundle: release {bundle_release} {why}, which this site has loaded (from a bundle"
        f" made {site.loaded})",
        remedy=f"use a bundle of release {site.version} or newer; to go back on purpose, pass"
        " --allow-downgrade",
    )


def load_bundle(opts: LoadOptions, progress: Progress | None = None) -> LoadResult:
    """Verify, then push; see the module docstring."""
    progress = progress or Silent()
    key = opts.bundle.key
    result = LoadResult()
    started = time.monotonic()
    head = opts.bundle.head
    # The file still holds the bundle that was opened (checked again at the end of each pass).
    _same(read_head(opts.bundle.path, key), head.manifest_sha256)
    manifest = head.manifest
    # Before anything is pushed: an older release than the site's is refused.
    check_release_order(
        manifest.platform_version, opts.site_release, allow_downgrade=opts.allow_downgrade
    )
    stats = TransferStats()
    with RegistryClient(
        opts.target.registry, stats=stats, connections=opts.workers * 2, progress=progress.advance
    ) as client:
        lacks = site_lacks(manifest, opts.target, workers=opts.workers, client=client)
        # Before anything is pushed: other bytes under the bundle's names stop the load.
        try:
            lacks.refuse_differing(replace_changed=opts.replace_changed)
        except ContentDiffers:
            close_services(opts.target)
            raise
        lacking = set(lacks.images)
        missing_images = [i for i in manifest.images if f"{i.name}:{i.tag}" in lacking]
        result.images_present = len(manifest.images) - len(missing_images)
        result.seconds["check"] = time.monotonic() - started
        if lacks.nothing:
            close_services(opts.target)
            result.nothing_to_do = True
            result.retries = stats.retries
            return result
        started = time.monotonic()
        work = opts.work_dir / head.manifest_sha256[:16]
        work.mkdir(parents=True, exist_ok=True)
        done: dict[str, str] = {}
        # Blobs a delta bundle left out must be on the site: checked before pushing anything.
        _check_delta(client, manifest, missing_images, opts.workers)
        if opts.verify_first:
            if not _extracted(work, head.manifest_sha256, manifest.items):
                progress.phase("verify and extract", manifest.total_size)
                _same(
                    verify_bundle(
                        opts.bundle.path, key, extract_to=work, progress=progress.advance
                    ),
                    head.manifest_sha256,
                )
        else:
            streamer = _Streamer(client, manifest, missing_images, work, opts)
            streamer.run(key, head.manifest_sha256, progress)
            done = streamer.done
        result.seconds["verify"] = time.monotonic() - started
        started = time.monotonic()
        if missing_images:
            _push_images(
                client, manifest, missing_images, work, opts.workers, progress, result, done
            )
        result.seconds["images"] = time.monotonic() - started
    started = time.monotonic()
    try:
        _push_files(manifest, work, opts.target, result, replace=opts.replace_changed)
    finally:
        close_services(opts.target)
    result.skipped = _skipped(manifest, opts.target)
    result.seconds["files"] = time.monotonic() - started
    result.retries = stats.retries + _hub_retries(opts.target)
    if not opts.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _extracted(work: Path, manifest_sha256: str, items: list[BundleItem]) -> bool:
    """The work folder holds these items, from a pass that verified the whole bundle, and each
    still has its listed size and sha256 (hashed again here: a file changed since that pass, or
    a link put in its place, would otherwise be pushed or installed as verified). A folder that
    fails loses its mark, and the bundle is verified and extracted again."""
    if not already_extracted(work, manifest_sha256):
        return False
    for item in items:
        if not _intact(work / item.path, item):
            log.warning(
                "airgap: %s changed in the work folder; verifying the bundle again", item.path
            )
            (work / VERIFIED_MARK).unlink(missing_ok=True)
            return False
    return True


def _intact(path: Path, item: BundleItem) -> bool:
    """A regular file (not a link) with the item's size and sha256."""
    try:
        found = path.lstat()
    except FileNotFoundError:
        return False
    if not path.is_file() or path.is_symlink() or found.st_size != item.size:
        return False
    return sha256_file(path) == item.sha256


def _same(verified: VerifiedBundle, manifest_sha256: str) -> None:
    if verified.manifest_sha256 != manifest_sha256:
        raise BadInputError("bundle: the file changed while it was being loaded")


def _ignore(chunks: CheckedChunks) -> None:
    """A member only checked (its digest is verified by the drain that follows)."""


class _Streamer:
    """The verification pass of a streamed load (module docstring, step 2)."""

    def __init__(
        self,
        client: RegistryClient,
        manifest: BundleManifest,
        images: list[BundleImage],
        work: Path,
        opts: LoadOptions,
    ) -> None:
        self.client, self.manifest, self.work, self.opts = client, manifest, work, opts
        # The repository each blob is uploaded to first: the same one `_push_images` mounts
        # it from into the others (the first image, in order, that needs it).
        self.first_repo: dict[str, str] = {}
        for img in images:
            for digest in img.blobs:
                self.first_repo.setdefault(digest, img.name)
        self.large = {
            i.name: i
            for i in manifest.items
            if i.kind == "blob" and i.size > opts.stream_min and i.name in self.first_repo
        }
        self.done: dict[str, str] = {}
        """Large blobs now in their first repository: `present` or `uploaded`."""
        self.failed: set[str] = set()
        self.staged: dict[str, tuple[str, str]] = {}
        """Large blobs sent into upload sessions not yet completed: repository, session URL.
        They are completed only once the whole bundle is verified, and thrown away otherwise,
        so a bundle that fails verification leaves no blob of it in the registry."""

    def run(self, key: Ed25519PublicKey, manifest_sha256: str, progress: Progress) -> None:
        """Verify the bundle, streaming large blobs the site lacks to the registry."""
        large = list(self.large)
        with ThreadPoolExecutor(max_workers=self.opts.workers) as pool:
            flags = list(pool.map(lambda d: self.client.blob_exists(self.first_repo[d], d), large))
        self.done = {d: "present" for d, has in zip(large, flags, strict=True) if has}
        small = [i for i in self.manifest.items if not self._is_large(i)]
        if _extracted(self.work, manifest_sha256, small) and all(
            d in self.done or _intact(self.work / i.path, i) for d, i in self.large.items()
        ):
            return  # an earlier run verified the whole bundle; what it pushed is still there
        progress.phase("verify and push", self.manifest.total_size)
        shares = self._shares()
        try:
            if len(shares) == 1:
                verified = verify_bundle(
                    self.opts.bundle.path,
                    key,
                    extract_to=self.work,
                    progress=progress.advance,
                    divert=self._stream,
                )
                _same(verified, manifest_sha256)
            else:
                self._parallel(key, manifest_sha256, shares, progress)
        except BaseException:
            self._cancel_staged()
            raise
        self._commit_staged()
        bundle = self.opts.bundle.path
        if self.failed:
            # Their uploads broke off mid-stream: take them from the bundle again, into files,
            # and let the retrying upload from files push them.
            log.info(
                "%d streamed uploads failed; extracting them to upload again", len(self.failed)
            )
            total = sum(self.large[d].size for d in self.failed)
            progress.phase("extract failed uploads", total)
            _same(
                verify_bundle(bundle, key, extract_to=self.work, divert=self._refetch),
                manifest_sha256,
            )

    def _commit_staged(self) -> None:
        """The whole bundle is verified: complete the staged uploads."""

        def commit(item: tuple[str, tuple[str, str]]) -> None:
            digest, (repo, location) = item
            if self.client.commit_upload(repo, digest, location):
                self.done[digest] = "uploaded"
            else:
                self.failed.add(digest)

        with ThreadPoolExecutor(max_workers=self.opts.workers) as pool:
            list(pool.map(commit, list(self.staged.items())))
        self.staged.clear()

    def _cancel_staged(self) -> None:
        for digest, (repo, location) in list(self.staged.items()):
            log.info("bundle refused: discarding the staged upload of %s", digest)
            self.client.cancel_upload(repo, location)
        self.staged.clear()

    def _shares(self) -> list[set[str]]:
        """The layers to stream, split in byte-balanced shares, one per pass (the first pass
        also takes every other member)."""
        todo = sorted(
            (i for d, i in self.large.items() if d not in self.done),
            key=lambda i: -i.size,
        )
        count = max(1, min(self.opts.readers, len(todo)))
        shares: list[set[str]] = [set() for _ in range(count)]
        loads = [0] * count
        for item in todo:
            least = loads.index(min(loads))
            shares[least].add(item.name)
            loads[least] += item.size
        return shares

    def _parallel(
        self,
        key: Ed25519PublicKey,
        manifest_sha256: str,
        shares: list[set[str]],
        progress: Progress,
    ) -> None:
        others = set().union(*shares[1:])

        def one(index: int) -> VerifiedBundle:
            share = shares[index]
            return verify_bundle(
                self.opts.bundle.path,
                key,
                extract_to=self.work if index == 0 else None,
                progress=progress.advance,
                divert=self._stream,
                mine=(lambda i: i.name not in others)
                if index == 0
                else (lambda i: i.name in share),
            )

        with ThreadPoolExecutor(max_workers=len(shares), thread_name_prefix="bundle-pass") as pool:
            futures = [pool.submit(one, n) for n in range(len(shares))]
        # Every pass checked every header; together they hashed every member, each reading
        # little more than its own share (it jumps over the layers another pass hashes).
        for n, future in enumerate(futures):
            verified = future.result()
            _same(verified, manifest_sha256)
            log.info("bundle pass %d read %d bytes of the bundle", n + 1, verified.read_bytes)
        mark_verified(self.work, manifest_sha256)

    def _is_large(self, item: BundleItem) -> bool:
        return item.kind == "blob" and item.size > self.opts.stream_min

    def _stream(self, item: BundleItem) -> Consumer | None:
        if not self._is_large(item):
            return None
        if item.name not in self.large or item.name in self.done:
            return _ignore  # not needed by a missing image, or already on the site
        if (self.work / item.path).is_file():
            return _ignore  # extracted by an earlier run: pushed from the file
        repo = self.first_repo[item.name]

        def upload(chunks: CheckedChunks) -> None:
            location = self.client.stage_blob_stream(repo, item.name, item.size, chunks)
            if location is None:
                self.failed.add(item.name)
            else:
                self.staged[item.name] = (repo, location)

        return upload

    def _refetch(self, item: BundleItem) -> Consumer | None:
        return None if item.name in self.failed and item.kind == "blob" else _ignore


def _skipped(manifest: BundleManifest, target: LoadTarget) -> list[str]:
    kinds = {i.kind for i in manifest.items}
    wanted = {"chart": target.charts, "wheel": target.pypi, "binary": target.binaries_dir}
    return sorted(f"{k}s" for k, where in wanted.items() if k in kinds and where is None)


def _hub_retries(target: LoadTarget) -> int:
    return sum(s.retries for s in (target.charts, target.pypi) if s is not None)


def _push_images(
    client: RegistryClient,
    manifest: BundleManifest,
    images: list[BundleImage],
    work: Path,
    workers: int,
    progress: Progress,
    result: LoadResult,
    done: dict[str, str] | None = None,
) -> None:
    """Blobs (those not in `done`: already in their first repository), mounts, manifests."""
    done = done or {}
    root = work / LAYOUT_DIR
    sizes = {i.name: i.size for i in manifest.items if i.kind == "blob"}
    repos_of: dict[str, list[str]] = {}
    for img in images:
        top = read_manifest_blob(root, img.digest, img.media_type)
        own = {img.digest, *(d["digest"] for d in child_descriptors(top))}
        for digest in img.blobs:
            if digest not in own:
                repos = repos_of.setdefault(digest, [])
                if img.name not in repos:
                    repos.append(img.name)
    all_repos = sorted({img.name for img in manifest.images})
    progress.phase("push images", sum(sizes.get(d, 0) for d in repos_of if d not in done))

    def first(digest: str) -> str:
        if digest in done:
            return done[digest]
        repos = repos_of[digest]
        if digest not in sizes:  # left out of a delta bundle: the site must have it somewhere
            return _ensure_present(client, digest, repos, all_repos)
        return client.push_blob(repos[0], digest, blob_path(root, digest))

    def other(job: tuple[str, str]) -> str:
        repo, digest = job
        return client.push_blob(
            repo, digest, blob_path(root, digest), mount_from=repos_of[digest][0]
        )

    # Each blob is uploaded once (largest first), then mounted into the other repositories.
    order = sorted(repos_of, key=lambda d: -sizes.get(d, 0))
    mounts = [(r, d) for d in order if d in sizes for r in repos_of[d][1:]]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for outcome in [*pool.map(first, order), *pool.map(other, mounts)]:
            result.blobs[outcome] = result.blobs.get(outcome, 0) + 1

    def tag(img: BundleImage) -> None:
        top = read_manifest_blob(root, img.digest, img.media_type)
        for desc in child_descriptors(top):
            if client.manifest_digest(img.name, desc["digest"]) is None:
                child = read_manifest_blob(root, desc["digest"], desc.get("mediaType"))
                client.put_manifest(img.name, desc["digest"], child)
        client.put_manifest(img.name, img.tag, top)
        log.info("tagged %s:%s -> %s", img.name, img.tag, img.digest)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(tag, images))
    result.images_tagged = len(images)


def _check_delta(
    client: RegistryClient, manifest: BundleManifest, images: list[BundleImage], workers: int
) -> None:
    """Every blob a delta bundle left out is on the site (mounted where an image needs it)."""
    in_bundle = {i.name for i in manifest.items if i.kind == "blob"}
    repos_of: dict[str, list[str]] = {}
    for img in images:
        for digest in img.blobs:
            if digest not in in_bundle:
                repos_of.setdefault(digest, []).append(img.name)
    all_repos = sorted({img.name for img in manifest.images})
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda d: _ensure_present(client, d, repos_of[d], all_repos), repos_of))


def _ensure_present(
    client: RegistryClient, digest: str, repos: list[str], candidates: list[str]
) -> str:
    """A blob a delta bundle left out: present in each repo, or mounted from one that has it."""
    source = next((r for r in [*repos, *candidates] if client.blob_exists(r, digest)), None)
    if source is None:
        raise FailedError(
            f"the delta bundle needs {digest}, which the site registry does not hold",
            remedy="load the bundle this delta was cut against first, or build a full bundle",
        )
    for repo in repos:
        if repo == source or client.blob_exists(repo, digest):
            continue
        if not client.mount_blob(repo, digest, source):
            raise FailedError(
                f"{digest} is in {source} but the site registry refused to mount it into {repo}",
                remedy="load the full bundle instead of the delta",
            )
    return "present"


def _push_files(
    manifest: BundleManifest,
    work: Path,
    target: LoadTarget,
    result: LoadResult,
    *,
    replace: bool = False,
) -> None:
    """Charts, wheels and binaries, a few at a time (DevPI takes each upload slowly); `replace`:
    a chart served with other bytes is replaced (see `LoadOptions.replace_changed`)."""

    def one(item: BundleItem) -> str | None:
        path = work / item.path
        if item.kind == "chart" and target.charts is not None:
            uploaded = target.charts.upload(
                item.name, item.version, path, item.sha256, replace=replace
            )
            return "charts" if uploaded else None
        if item.kind == "wheel" and target.pypi is not None:
            uploaded = target.pypi.upload(path, item.name, item.version, item.sha256)
            return "wheels" if uploaded else None
        if item.kind == "binary" and target.binaries_dir is not None:
            installed = _install_binary(path, target.binaries_dir / item.name, item.sha256)
            return "binaries" if installed else None
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        done = list(pool.map(one, manifest.items))
    result.charts_uploaded += done.count("charts")
    result.wheels_uploaded += done.count("wheels")
    result.binaries_installed += done.count("binaries")


def _install_binary(source: Path, dest: Path, sha256: str) -> bool:
    if dest.is_file() and sha256_file(dest) == sha256:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.copyfile(source, tmp)
    tmp.chmod(0o755)
    tmp.replace(dest)
    return True


def loaded_manifest_path(state_root: Path, manifest_sha256: str) -> Path:
    """Where a loaded bundle's manifest is kept (the `--since` of the next delta)."""
    return state_root / "airgap" / "loaded" / f"{manifest_sha256}.json"


def record_loaded(state_root: Path, manifest_bytes: bytes) -> Path:
    """Keep the manifest of a completed load (exactly as signed)."""
    path = loaded_manifest_path(state_root, hashlib.sha256(manifest_bytes).hexdigest())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(manifest_bytes)
    return path
