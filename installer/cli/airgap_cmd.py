"""`installer airgap-bundle`, `airgap-verify`, `airgap-load`: the air-gapped bundle commands."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import SecretStr
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from installer.airgap.archive import open_bundle, verify_bundle
from installer.airgap.build import BuildOptions, build_bundle
from installer.airgap.files import Source
from installer.airgap.load import (
    LoadOptions,
    LoadTarget,
    load_bundle,
    make_target,
    record_loaded,
    site_release,
)
from installer.airgap.manifest import load_public_key
from installer.airgap.progress import Silent
from installer.cli.render import emit_json, err, is_json, out
from installer.cli.state import AllowDowngradeOption, OutputOption, ReplaceChangedOption, begin
from installer.engines.registry import RegistryEndpoint
from installer.errors import BadInputError
from installer.inventory import load_inventory
from installer.inventory.types import parse_quantity
from installer.redact import REDACTOR
from installer.release import (
    RELEASE_MANIFEST,
    ReleasePins,
    load_pins,
    load_release,
    pins_path,
)
from installer.site import hub_urls
from installer.state import HUB_PASSWORD_SECRET, HUB_USER, StateDir


class _Bars:
    """Rich progress bars, one per phase, with bytes and rate."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: Any = None

    def phase(self, name: str, total: int | None) -> None:
        if self._task is not None:
            self._progress.update(self._task, visible=True)
        self._task = self._progress.add_task(name, total=total)

    def advance(self, n: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)


@contextmanager
def _progress() -> Iterator[_Bars | Silent]:
    if is_json() or not err.is_terminal:
        yield Silent()
        return
    columns = (
        TextColumn("{task.description:<22}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as progress:
        yield _Bars(progress)


def _secret(path: Path | None, env: str) -> SecretStr | None:
    value = path.read_text().strip() if path else os.environ.get(env)
    if not value:
        return None
    REDACTOR.register(value)
    return SecretStr(value)


def _pins(release: Path, given: Path | None) -> ReleasePins | None:
    """The pins given, else those beside the release manifest, else None."""
    path = given or pins_path(release)
    if given is None and not path.is_file():
        return None
    return load_pins(path)


def _size(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(parse_quantity(text))
    except ValueError as exc:
        raise BadInputError(f"--max-size {text!r}: {exc}") from None
    if value < 1024 * 1024:
        raise BadInputError("--max-size must be at least 1Mi")
    return value


CaOption = Annotated[Path | None, typer.Option(help="CA bundle (PEM) for the upstream services.")]
UserOption = Annotated[str | None, typer.Option(help="Login for the upstream services.")]
PasswordFile = Annotated[
    Path | None,
    typer.Option(help="File holding the upstream password (or env INSTALLER_UPSTREAM_PASSWORD)."),
]


def airgap_bundle(
    output_file: Annotated[Path, typer.Option("--output-file", "-f", help="Bundle file.")],
    sign_key: Annotated[Path, typer.Option(help="ed25519 private key (PEM) to sign with.")],
    release: Annotated[Path, typer.Option(help="Release manifest.")] = RELEASE_MANIFEST,
    inventory: Annotated[
        Path | None, typer.Option("--inventory", "-i", help="Check its platform version.")
    ] = None,
    registry_mirror: Annotated[
        str | None,
        typer.Option(help="host:port of a registry holding images under their full names."),
    ] = None,
    upstream_ca: CaOption = None,
    upstream_user: UserOption = None,
    upstream_password_file: PasswordFile = None,
    charts_from: Annotated[str | None, typer.Option(help="Chart repo URL or folder.")] = None,
    wheels_from: Annotated[str | None, typer.Option(help="Wheel index URL or folder.")] = None,
    binaries_from: Annotated[Path | None, typer.Option(help="Folder with the binaries.")] = None,
    hub_from: Annotated[
        Path | None,
        typer.Option(
            help="Folder with the hub's programs: chartmuseum, registry (optional),"
            " devpi-wheels/*.whl; an air-gapped site's auxvm phase installs them from the bundle."
        ),
    ] = None,
    platform: Annotated[
        list[str] | None, typer.Option(help="Keep only these platforms of indexes (os/arch).")
    ] = None,
    since: Annotated[
        Path | None, typer.Option(help="Older manifest.json or bundle: make a delta.")
    ] = None,
    have: Annotated[
        Path | None, typer.Option(help="File of digests the site has: make a delta.")
    ] = None,
    max_size: Annotated[
        str | None, typer.Option(help="Split into parts of this size (e.g. 4Gi).")
    ] = None,
    work_dir: Annotated[Path | None, typer.Option(help="Resume folder.")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Parallel transfers.")] = 8,
    pins: Annotated[
        Path | None,
        typer.Option(
            help="The release's pins (image digests, sha256 of charts, wheels, binaries);"
            " default: <release>.pins.yml beside the release manifest."
        ),
    ] = None,
    allow_unpinned: Annotated[
        bool,
        typer.Option(
            "--allow-unpinned",
            help="Development only: build entries without a pin (each logged as a warning).",
        ),
    ] = False,
    write_pins: Annotated[
        Path | None,
        typer.Option(help="Record the pins of what was gathered (cutting a release)."),
    ] = None,
    output: OutputOption = None,
) -> None:
    """Pack every image, chart, wheel and binary of the release (and, with `--hub-from`, the
    hub's own programs) into one signed bundle, each checked against the release's pins."""
    begin("airgap-bundle", output)
    rel = load_release(release)
    pinned = _pins(release, pins)
    if write_pins is not None and platform:
        raise BadInputError(
            "--write-pins records the upstream's image digests: it cannot be given with"
            " --platform (which keeps part of each index)",
            remedy="cut the pins from a build of every platform",
        )
    if inventory is not None:
        inv = load_inventory(inventory)
        wanted = {c.platform.version for c in inv.clusters if c.platform.version}
        if wanted - {rel.platform_version}:
            raise BadInputError(
                f"the inventory asks for platform {', '.join(sorted(wanted))}; the release"
                f" manifest is {rel.platform_version}",
                remedy="use the installer release that matches the inventory",
            )
    password = _secret(upstream_password_file, "INSTALLER_UPSTREAM_PASSWORD")

    def source(location: str | None) -> Source | None:
        if location is None:
            return None
        return Source(location, upstream_ca, upstream_user, password)

    opts = BuildOptions(
        release=rel,
        output=output_file,
        sign_key=sign_key,
        upstream=RegistryEndpoint(registry_mirror, upstream_ca, upstream_user, password)
        if registry_mirror
        else None,
        charts=source(charts_from),
        wheels=source(wheels_from),
        binaries=binaries_from,
        hub=hub_from,
        work_dir=work_dir,
        platforms=platform or [],
        since=since,
        have=have,
        max_size=_size(max_size),
        workers=workers,
        pins=pinned,
        allow_unpinned=allow_unpinned,
    )
    if allow_unpinned:
        err.print("[yellow]DEVELOPMENT: --allow-unpinned: content without a pin is not checked[/]")
    with _progress() as bars:
        result = build_bundle(opts, bars)
    if write_pins is not None:
        tmp = write_pins.with_name(write_pins.name + ".partial")
        tmp.write_text(result.pins.to_yaml(), encoding="utf-8")
        tmp.replace(write_pins)
    parts = [str(p) for p in result.parts]
    payload = {
        "ok": True,
        "parts": parts,
        "bundle_bytes": result.bundle_bytes,
        "content_bytes": result.content_bytes,
        "images": len(result.manifest.images),
        "items": len(result.manifest.items),
        "omitted": result.omitted,
        "retries": result.retries,
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
    }
    if is_json():
        emit_json(payload)
        return
    kind = "delta bundle" if result.manifest.delta else "bundle"
    out.print(
        f"[green]{kind}:[/] {', '.join(parts)}: {payload['images']} images,"
        f" {payload['items']} files, {result.bundle_bytes:,} bytes"
        f" ({result.content_bytes:,} before compression)"
    )


def airgap_verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle file (or its first part).")],
    verify_key: Annotated[Path, typer.Option(help="ed25519 public key (PEM).")],
    output: OutputOption = None,
) -> None:
    """Check the signature, format version and every digest; list what the bundle holds."""
    begin("airgap-verify", output)
    key = load_public_key(verify_key)
    with _progress() as bars:
        bars.phase("verify", None)
        verified = verify_bundle(bundle, key, progress=bars.advance)
    manifest = verified.manifest
    if is_json():
        emit_json(
            {
                "ok": True,
                "manifest_sha256": verified.manifest_sha256,
                **manifest.model_dump(mode="json"),
            }
        )
        return
    out.print(
        f"[green]verified:[/] {bundle}: platform {manifest.platform_version}, created"
        f" {manifest.created:%Y-%m-%d %H:%M}Z, {len(manifest.items)} files,"
        f" {manifest.total_size:,} bytes" + (" (delta)" if manifest.delta else "")
    )
    for img in manifest.images:
        out.print(f"  image  {img.name}:{img.tag}  {img.digest}", markup=False)
    for item in manifest.items:
        if item.kind not in ("blob", "layout"):
            out.print(f"  {item.kind:<6} {item.name} {item.version}", markup=False)


def airgap_load(
    bundle: Annotated[Path, typer.Argument(help="Bundle file (or its first part).")],
    verify_key: Annotated[Path, typer.Option(help="ed25519 public key (PEM).")],
    inventory: Annotated[
        Path | None, typer.Option("--inventory", "-i", help="The site's inventory.")
    ] = None,
    registry: Annotated[
        str | None, typer.Option(help="Target registry host:port instead of the inventory's.")
    ] = None,
    charts_url: Annotated[str | None, typer.Option(help="Target ChartMuseum URL.")] = None,
    pypi_url: Annotated[str | None, typer.Option(help="Target DevPI index URL.")] = None,
    binaries_dir: Annotated[Path | None, typer.Option(help="Where binaries go.")] = None,
    ca: Annotated[Path | None, typer.Option(help="CA of the target services.")] = None,
    user: Annotated[str | None, typer.Option(help="Login of the target services.")] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(help="Target password file (or env INSTALLER_HUB_PASSWORD)."),
    ] = None,
    work_dir: Annotated[Path | None, typer.Option(help="Extraction (resume) folder.")] = None,
    keep_work: Annotated[
        bool, typer.Option(help="Keep the extracted bundle after a complete load.")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Parallel transfers.")] = 8,
    allow_downgrade: AllowDowngradeOption = False,
    replace_changed: ReplaceChangedOption = False,
    output: OutputOption = None,
) -> None:
    """Verify the bundle, then fill the hub's registry, ChartMuseum and DevPI from it."""
    begin("airgap-load", output)
    target, state = _target(
        inventory, registry, charts_url, pypi_url, binaries_dir, ca, user, password_file
    )
    opened = open_bundle(bundle, verify_key)
    opts = LoadOptions(
        bundle=opened,
        target=target,
        work_dir=work_dir or (state / "airgap" / "work"),
        workers=workers,
        keep_work=keep_work,
        site_release=site_release(state),
        allow_downgrade=allow_downgrade,
        replace_changed=replace_changed,
    )
    with _progress() as bars:
        result = load_bundle(opts, bars)
    if not result.nothing_to_do:
        record_loaded(state, opened.manifest_bytes)
    payload = {"ok": True, **result.__dict__}
    if is_json():
        emit_json(payload)
        return
    if result.nothing_to_do:
        out.print(f"[green]up to date:[/] {result.images_present} images already on the site")
        return
    blobs = ", ".join(f"{n} {k}" for k, n in sorted(result.blobs.items())) or "none"
    out.print(
        f"[green]loaded:[/] {result.images_tagged} images tagged (blobs: {blobs}),"
        f" {result.charts_uploaded} charts, {result.wheels_uploaded} wheels,"
        f" {result.binaries_installed} binaries; {result.retries} retries"
    )
    if result.skipped:
        out.print(f"[yellow]not loaded (no target given):[/] {', '.join(result.skipped)}")


def _target(
    inventory: Path | None,
    registry: str | None,
    charts_url: str | None,
    pypi_url: str | None,
    binaries_dir: Path | None,
    ca: Path | None,
    user: str | None,
    password_file: Path | None,
) -> tuple[LoadTarget, Path]:
    password = _secret(password_file, "INSTALLER_HUB_PASSWORD")
    state_root = Path(".installer")
    if inventory is not None:
        inv = load_inventory(inventory)
        state = StateDir(Path(inv.site.state_dir))
        state_root = state.root
        urls = hub_urls(inv)
        registry = registry or urls.registry_push
        charts_url = charts_url or urls.charts_push
        pypi_url = pypi_url or urls.pypi.removesuffix("+simple/")
        binaries_dir = binaries_dir or (state.pulumi / "bin")
        ca = ca or state.ca_cert
        user = user or HUB_USER
        password = password or state.secret(HUB_PASSWORD_SECRET)
    if registry is None:
        raise BadInputError("give --inventory (or --registry for a registry of your own)")

    target = make_target(registry, charts_url, pypi_url, binaries_dir, ca, user, password)
    return target, state_root
