"""The `airgap_load` phase: fill the hub from the air-gap bundle (air-gapped sites only).

With a bundle (`bootstrap --bundle F --verify-key K`) the phase verifies it and pushes what the
hub lacks (`installer.airgap.load`). Without one it checks that the hub already holds every image
of the release manifest, and fails naming the missing ones otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from installer.airgap.archive import read_head
from installer.airgap.load import LoadOptions, load_bundle, plan_load, record_loaded, site_target
from installer.airgap.manifest import load_public_key
from installer.airgap.progress import Progress
from installer.engines.registry import RegistryClient
from installer.errors import BadInputError
from installer.phases.base import Change, Event, PhaseContext, PhasePlan, PhaseResult, Status
from installer.release import load_release
from installer.site import normalize_image

NAME = "airgap_load"


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


class AirgapLoadPhase:
    """Push the bundle's images, charts, wheels and binaries into the site's hub."""

    name = NAME

    def applies(self, ctx: PhaseContext) -> bool:
        """Only air-gapped sites load a bundle."""
        return ctx.inventory.site.airgapped

    def _options(self, ctx: PhaseContext) -> tuple[LoadOptions, Path] | None:
        if ctx.bundle is None:
            return None
        if ctx.verify_key is None:
            raise BadInputError(
                "--bundle needs --verify-key (the bundle's ed25519 public key)",
                remedy="pass --verify-key bundle-verify.pem",
            )
        target, state_root = site_target(ctx.inventory)
        opts = LoadOptions(
            bundle=ctx.bundle,
            verify_key=ctx.verify_key,
            target=target,
            work_dir=state_root / "airgap" / "work",
        )
        return opts, state_root

    def inputs(self, ctx: PhaseContext) -> Any:
        """The bundle's manifest digest (a new bundle re-runs the phase)."""
        if ctx.bundle is None or ctx.verify_key is None:
            return {"bundle": None, "release": load_release().platform_version}
        head = read_head(ctx.bundle, load_public_key(ctx.verify_key))
        return {"bundle": head.manifest_sha256}

    def _missing_release_images(self, ctx: PhaseContext) -> list[str]:
        target, _ = site_target(ctx.inventory)
        missing = []
        with RegistryClient(target.registry) as client:
            for image in load_release().images:
                name = normalize_image(image.name)
                if client.manifest_digest(name, image.tag) is None:
                    missing.append(f"{name}:{image.tag}")
        return missing

    def plan(self, ctx: PhaseContext) -> PhasePlan:
        """The images the hub lacks (HEAD requests only)."""
        given = self._options(ctx)
        if given is None:
            missing = self._missing_release_images(ctx)
            notes = ["no --bundle given: checked the hub against the release manifest"]
            files = False
        else:
            result = plan_load(given[0])
            missing, files, notes = result.images_missing, result.files_missing, []
        changes = [Change("hub/registry", "create", "image", ref) for ref in missing]
        if files:
            changes.append(Change("hub", "update", "files", "charts, wheels or binaries"))
        return PhasePlan(NAME, changes, notes)

    def apply(self, ctx: PhaseContext) -> PhaseResult:
        """Load the bundle (verified first); without one, require the hub to be complete."""
        given = self._options(ctx)
        if given is None:
            missing = self._missing_release_images(ctx)
            if missing:
                raise BadInputError(
                    f"the site is air-gapped and its hub lacks {len(missing)} image(s) of the"
                    f" release, e.g. {missing[0]}",
                    remedy="pass --bundle and --verify-key (or run installer airgap-load first)",
                )
            return PhaseResult(NAME, Status.OK, message="the hub holds every release image")
        opts, state_root = given
        result = load_bundle(opts, _Events(ctx))
        if result.nothing_to_do:
            return PhaseResult(NAME, Status.OK, message="the hub already holds the bundle")
        head = read_head(opts.bundle, load_public_key(opts.verify_key))
        record_loaded(state_root, head.manifest_bytes)
        changes = [Change("hub/registry", "create", "image", f"{result.images_tagged} image(s)")]
        return PhaseResult(
            NAME,
            Status.OK,
            changes if result.images_tagged else [],
            message=(
                f"{result.images_tagged} images, {result.charts_uploaded} charts,"
                f" {result.wheels_uploaded} wheels, {result.binaries_installed} binaries;"
                f" {result.retries} retries"
            ),
            details={"blobs": result.blobs, "seconds": result.seconds},
        )


def phase() -> AirgapLoadPhase:
    """The phase, for the catalog."""
    return AirgapLoadPhase()
