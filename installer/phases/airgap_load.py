"""The `airgap_load` phase: fill the site's hub with the release's content.

Where the content comes from:
- an air-gapped site: the bundle given to bootstrap (`--bundle F --verify-key K`), verified, then
  pushed where the hub lacks it (`installer.airgap.load`);
- a connected site with `upstream:`: the release is mirrored from the upstream. It is pulled as
  `installer airgap-bundle` pulls (into `<state>/airgap/mirror/`, signed with a site-local key
  made once) and pushed as `installer airgap-load` pushes (verified first, HEAD before PUT,
  manifests after their blobs, resumable). The signed manifest of the last mirror is kept with
  the hash of what it was made from (release and upstream): a re-run with the same inputs only
  compares the hub with it (HEAD requests) and changes nothing when the hub holds everything;
- neither: the hub must already hold the release; the phase checks and names what is missing.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from installer.airgap.archive import bundle_parts, open_bundle
from installer.airgap.build import BuildOptions, build_bundle
from installer.airgap.files import Source
from installer.airgap.load import (
    LoadOptions,
    LoadResult,
    LoadTarget,
    SiteLacks,
    close_services,
    load_bundle,
    plan_load,
    record_loaded,
    site_lacks,
    site_release,
    site_target,
)
from installer.airgap.manifest import (
    BundleManifest,
    parse_manifest,
    write_keypair,
)
from installer.airgap.progress import Progress
from installer.engines.registry import RegistryClient, RegistryEndpoint
from installer.errors import BadInputError, EnvironmentProblem, InstallerError
from installer.inventory import Inventory
from installer.inventory.models import Upstream
from installer.journal import inputs_hash
from installer.phases.base import Change, Event, PhaseContext, PhasePlan, PhaseResult, Status
from installer.release import (
    RELEASE_MANIFEST,
    ReleaseManifest,
    ReleasePins,
    load_pins,
    load_release,
    pins_path,
)
from installer.site import normalize_image

NAME = "airgap_load"
WORKERS = 8

NO_UPSTREAM_REMEDY = (
    "add an upstream: section to the inventory (registry mirror, chart repository, wheel index:"
    " docs/inventory.md) so bootstrap mirrors the release into the hub, or load a bundle first"
    " (installer airgap-load)"
)
UPSTREAM_REMEDY = (
    "check the inventory's upstream: section (URLs, ca_cert, user, password) and that the"
    " upstream answers from this host"
)


class _Events(Progress):
    """Bundle progress as phase events: one per phase, and every ~64 MiB moved."""

    def __init__(self, ctx: PhaseContext) -> None:
        self._ctx = ctx
        self._name = ""
        self._total: int | None = None
        self._done = 0
        self._next = 0

    def phase(self, name: str, total: int | None) -> None:
        self._name, self._total, self._done, self._next = name, total, 0, 0
        self._ctx.emit(Event("step", NAME, name, {"total": total}))

    def advance(self, n: int) -> None:
        self._done += n
        if self._done >= self._next:
            self._next = self._done + 64 * 2**20
            data = {"done": self._done, "total": self._total}
            self._ctx.emit(Event("progress", NAME, self._name, data))


# --- the mirror of a connected site ---------------------------------------------------------


@dataclass(frozen=True)
class Mirror:
    """`<state>/airgap/mirror/`: the site-local signing key, the bundle being built, its
    resume folder, and the record of the last complete mirror."""

    root: Path

    @property
    def bundle(self) -> Path:
        """The bundle pulled from the upstream (removed once loaded)."""
        return self.root / "release.tar.zst"

    @property
    def stage(self) -> Path:
        """Where the pull gathers content; an interrupted pull resumes from it."""
        return self.root / "work"

    @property
    def sign_key(self) -> Path:
        """The site-local ed25519 private key (0600), made on first use."""
        return self.root / "sign.pem"

    @property
    def verify_key(self) -> Path:
        """Its public half."""
        return self.root / "sign.pub"

    @property
    def manifest(self) -> Path:
        """The signed manifest of the last complete mirror."""
        return self.root / "manifest.json"

    @property
    def inputs(self) -> Path:
        """The hash of the release and upstream that manifest was made from."""
        return self.root / "inputs.sha256"

    def ensure_key(self) -> None:
        """Make the signing key pair once."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        if not self.sign_key.is_file():
            self.verify_key.unlink(missing_ok=True)
            write_keypair(self.sign_key, self.verify_key)

    def recorded(self, digest: str) -> BundleManifest | None:
        """The last mirror's manifest, when it was made from inputs hashing to `digest`."""
        try:
            if self.inputs.read_text().strip() != digest:
                return None
            return parse_manifest(self.manifest.read_bytes())
        except (OSError, BadInputError):
            return None

    def record(self, manifest_bytes: bytes, digest: str) -> None:
        """Keep a complete mirror's manifest; drop the bundle and the pull's folder."""
        tmp = self.manifest.with_name(self.manifest.name + ".partial")
        tmp.write_bytes(manifest_bytes)
        tmp.replace(self.manifest)
        self.inputs.write_text(digest + "\n")
        for part in bundle_parts(self.bundle) if self.bundle.exists() else []:
            part.unlink(missing_ok=True)
        shutil.rmtree(self.stage, ignore_errors=True)


def _release(upstream: Upstream | None) -> ReleaseManifest:
    """The release to mirror: binaries only when the upstream names a folder for them."""
    release = load_release()
    if upstream is not None and upstream.binaries_dir is None:
        return release.model_copy(update={"binaries": []})
    return release


def describe(upstream: Upstream) -> str:
    """The upstream in one line, for messages (never the password)."""
    registry = upstream.registry_mirror or "each image's own registry"
    return f"{registry}, charts {upstream.charts_url}, wheels {upstream.wheels_url}"


def _check_registries(upstream: Upstream, release: ReleaseManifest) -> None:
    """Without a mirror every image is pulled from its own registry: one registry only."""
    if upstream.registry_mirror is not None:
        return
    hosts = sorted({normalize_image(i.name).split("/", 1)[0] for i in release.images})
    if len(hosts) > 1:
        raise BadInputError(
            f"the release's images come from {len(hosts)} registries ({', '.join(hosts)}) and"
            " the inventory's upstream names no registry_mirror",
            remedy="set upstream.registry_mirror: a registry holding the images under their"
            " full names (host:port)",
        )


def upstream_pins(upstream: Upstream) -> ReleasePins | None:
    """The pins the upstream's content is held to: the inventory's, else the release's own
    (`airgap/release.pins.yml`), else None (refused by the build unless `allow_unpinned`)."""
    path = upstream.pins or pins_path(RELEASE_MANIFEST)
    return load_pins(path) if path.is_file() else None


def _build_options(upstream: Upstream, release: ReleaseManifest, mirror: Mirror) -> BuildOptions:
    password = upstream.password.resolve() if upstream.password is not None else None
    ca, user = upstream.ca_cert, upstream.user
    registry = None
    if upstream.registry_mirror is not None:
        registry = RegistryEndpoint(upstream.registry_mirror, ca, user, password)
    return BuildOptions(
        release=release,
        output=mirror.bundle,
        sign_key=mirror.sign_key,
        upstream=registry,
        charts=Source(upstream.charts_url, ca, user, password),
        wheels=Source(upstream.wheels_url, ca, user, password),
        binaries=upstream.binaries_dir,
        work_dir=mirror.stage,
        workers=WORKERS,
        pins=upstream_pins(upstream),
        allow_unpinned=upstream.allow_unpinned,
    )


def _hub_target(inv: Inventory) -> tuple[LoadTarget, Path]:
    """The hub as a load target; an environment problem until the auxvm phase made its CA."""
    target, state_root = site_target(inv)
    ca = target.registry.ca_file
    if ca is not None and not ca.is_file():
        raise EnvironmentProblem(
            f"the hub is not set up yet: its CA {ca} does not exist",
            remedy="run installer bootstrap (its auxvm phase sets up the hub first)",
        )
    return target, state_root


def lacks_changes(lacks: SiteLacks) -> list[Change]:
    """The changes a load would make, one per missing image, chart, wheel or binary, and one per
    chart or wheel the hub serves with other bytes (which the load refuses, or replaces where it
    may: `airgap-load --replace-changed`)."""
    return [
        *(Change("hub/registry", "create", "image", name) for name in lacks.images),
        *(Change("hub/charts", "create", "chart", name) for name in lacks.charts),
        *(Change("hub/pypi", "create", "wheel", name) for name in lacks.wheels),
        *(Change("state/pulumi", "create", "binary", name) for name in lacks.binaries),
        *(Change(_SERVICE[d.kind], "replace", d.kind, d.name, d.detail) for d in lacks.differs),
    ]


_SERVICE = {"chart": "hub/charts", "wheel": "hub/pypi"}


def hub_lacks(manifest: BundleManifest, target: LoadTarget) -> list[Change]:
    """What of `manifest` the hub does not hold (HEAD and index requests only)."""
    try:
        return lacks_changes(site_lacks(manifest, target, workers=WORKERS))
    finally:
        close_services(target)


def _loaded_changes(result: LoadResult) -> list[Change]:
    counts = [
        ("hub/registry", "image", result.images_tagged),
        ("hub/charts", "chart", result.charts_uploaded),
        ("hub/pypi", "wheel", result.wheels_uploaded),
        ("state/pulumi", "binary", result.binaries_installed),
    ]
    return [Change(t, "create", kind, f"{n} {kind}(s)") for t, kind, n in counts if n]


def _loaded_message(result: LoadResult) -> str:
    return (
        f"{result.images_tagged} images, {result.charts_uploaded} charts,"
        f" {result.wheels_uploaded} wheels, {result.binaries_installed} binaries;"
        f" {result.retries} retries"
    )


# --- the phase ------------------------------------------------------------------------------


class AirgapLoadPhase:
    """Fill the site's hub: from the bundle, from the upstream, or check it is full."""

    name = NAME

    def applies(self, ctx: PhaseContext) -> bool:
        """Every site needs the release in its hub."""
        return True

    def _options(self, ctx: PhaseContext) -> tuple[LoadOptions, Path] | None:
        if ctx.bundle is None:
            return None
        target, state_root = site_target(ctx.inventory)
        opts = LoadOptions(
            bundle=ctx.bundle,
            target=target,
            work_dir=state_root / "airgap" / "work",
            site_release=site_release(state_root),
            allow_downgrade=ctx.allow_downgrade,
            replace_changed=ctx.replace_changed,
        )
        return opts, state_root

    def _upstream(self, ctx: PhaseContext) -> Upstream | None:
        """The upstream to mirror from: connected sites that name one, without a bundle."""
        if ctx.bundle is not None or ctx.inventory.site.airgapped:
            return None
        return ctx.inventory.upstream

    def inputs(self, ctx: PhaseContext) -> Any:
        """The bundle's manifest digest, or the release and upstream mirrored from."""
        if ctx.bundle is not None:
            return {"bundle": ctx.bundle.manifest_sha256}
        upstream = self._upstream(ctx)
        release = _release(upstream)
        data: dict[str, Any] = {"bundle": None, "release": release.platform_version}
        if not ctx.inventory.site.airgapped:
            data["release_sha256"] = inputs_hash(release.model_dump(mode="json"))
            data["upstream"] = upstream.model_dump(mode="json") if upstream else None
            pins = upstream_pins(upstream) if upstream else None
            data["pins_sha256"] = inputs_hash(pins.model_dump(mode="json")) if pins else None
        return data

    def _mirror(self, ctx: PhaseContext) -> tuple[Mirror, str]:
        _, state_root = site_target(ctx.inventory)
        return Mirror(state_root / "airgap" / "mirror"), inputs_hash(self.inputs(ctx))

    def _missing_release(self, ctx: PhaseContext) -> list[str]:
        """Release images and charts the hub lacks, by name and tag (no upstream to ask)."""
        target, _ = _hub_target(ctx.inventory)
        release = load_release()
        missing = []
        with RegistryClient(target.registry) as client:
            for image in release.images:
                name = normalize_image(image.name)
                if client.manifest_digest(name, image.tag) is None:
                    missing.append(f"image {name}:{image.tag}")
        if target.charts is not None:
            try:
                for chart in release.charts:
                    if not target.charts.has(chart.name, chart.version):
                        missing.append(f"chart {chart.name} {chart.version}")
            finally:
                target.charts.close()
        return missing

    def plan(self, ctx: PhaseContext) -> PhasePlan:
        """What the hub lacks (HEAD requests only; the upstream is not contacted)."""
        upstream = self._upstream(ctx)
        if upstream is not None:
            return self._plan_mirror(ctx, upstream)
        given = self._options(ctx)
        if given is None:
            missing = self._missing_release(ctx)
            notes = ["no bundle and no upstream: checked the hub against the release manifest"]
            changes = [Change("hub", "create", *ref.split(" ", 1)) for ref in missing]
            return PhasePlan(NAME, changes, notes)
        return PhasePlan(NAME, lacks_changes(plan_load(given[0])))

    def _plan_mirror(self, ctx: PhaseContext, upstream: Upstream) -> PhasePlan:
        mirror, digest = self._mirror(ctx)
        manifest = mirror.recorded(digest)
        release = load_release().platform_version
        pull = Change("hub", "update", "release", release, f"mirror from {describe(upstream)}")
        if manifest is None:
            note = "the hub has no mirror of this release from this upstream yet"
            return PhasePlan(NAME, [pull], [note])
        try:
            target, _ = _hub_target(ctx.inventory)
            changes = hub_lacks(manifest, target)
        except EnvironmentProblem as exc:
            return PhasePlan(NAME, [pull], [f"the hub cannot be checked: {exc.message}"])
        return PhasePlan(NAME, changes)

    def apply(self, ctx: PhaseContext) -> PhaseResult:
        """Load the bundle, mirror the upstream, or require the hub to be complete."""
        upstream = self._upstream(ctx)
        if upstream is not None:
            return self._apply_mirror(ctx, upstream)
        given = self._options(ctx)
        if given is None:
            missing = self._missing_release(ctx)
            if missing:
                if ctx.inventory.site.airgapped:
                    why = "the site is air-gapped and its hub lacks"
                    remedy = "pass --bundle and --verify-key (or run installer airgap-load first)"
                else:
                    why = "the inventory names no upstream and the hub lacks"
                    remedy = NO_UPSTREAM_REMEDY
                raise BadInputError(
                    f"{why} {len(missing)} item(s) of the release, e.g. {missing[0]}",
                    remedy=remedy,
                )
            return PhaseResult(NAME, Status.OK, message="the hub holds every release image")
        opts, state_root = given
        result = load_bundle(opts, _Events(ctx))
        if result.nothing_to_do:
            return PhaseResult(NAME, Status.OK, message="the hub already holds the bundle")
        record_loaded(state_root, opts.bundle.manifest_bytes)
        return PhaseResult(
            NAME,
            Status.OK,
            _loaded_changes(result),
            message=_loaded_message(result),
            details={"blobs": result.blobs, "seconds": result.seconds},
        )

    def _apply_mirror(self, ctx: PhaseContext, upstream: Upstream) -> PhaseResult:
        mirror, digest = self._mirror(ctx)
        target, state_root = _hub_target(ctx.inventory)
        release = _release(upstream)
        manifest = mirror.recorded(digest)
        if manifest is not None:
            ctx.step(NAME, "compare the hub with the last mirror of the release")
            if not hub_lacks(manifest, target):
                return PhaseResult(
                    NAME,
                    Status.OK,
                    message=f"the hub holds release {release.platform_version}"
                    f" ({len(manifest.images)} images, {len(manifest.items)} files)",
                )
        _check_registries(upstream, release)
        ctx.step(NAME, f"pull release {release.platform_version} from {describe(upstream)}")
        mirror.ensure_key()
        events = _Events(ctx)
        try:
            built = build_bundle(_build_options(upstream, release, mirror), events)
        except InstallerError as exc:
            if not isinstance(exc, EnvironmentProblem | BadInputError):
                raise
            raise type(exc)(
                f"upstream ({describe(upstream)}): {exc.message}",
                remedy=exc.remedy or UPSTREAM_REMEDY,
            ) from None
        ctx.step(NAME, f"push into the hub ({built.content_bytes:,} bytes pulled)")
        opts = LoadOptions(
            bundle=open_bundle(mirror.bundle, mirror.verify_key),
            target=target,
            work_dir=state_root / "airgap" / "work",
            workers=WORKERS,
            site_release=site_release(state_root),
            allow_downgrade=ctx.allow_downgrade,
            replace_changed=ctx.replace_changed,
        )
        result = load_bundle(opts, events)
        manifest_bytes = opts.bundle.manifest_bytes
        record_loaded(state_root, manifest_bytes)
        mirror.record(manifest_bytes, digest)
        seconds = {**{f"pull_{k}": v for k, v in built.seconds.items()}, **result.seconds}
        message = f"mirrored from the upstream: {_loaded_message(result)}"
        if result.nothing_to_do:
            message = "the hub already held the release pulled from the upstream"
        return PhaseResult(
            NAME,
            Status.OK,
            _loaded_changes(result),
            message=message,
            details={"blobs": result.blobs, "seconds": seconds, "pulled": built.bytes_received},
        )


def phase() -> AirgapLoadPhase:
    """The phase, for the catalog."""
    return AirgapLoadPhase()
