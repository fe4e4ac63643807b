"""The hub's own programs in the bundle: ChartMuseum, the registry program, DevPI's wheelhouse.

An air-gapped site has nowhere else to get them: the `auxvm` phase installs them on the VM
before `airgap_load` fills the hub. They travel as bundle items of kind `hub` under `hub/`:

    hub/chartmuseum              the ChartMuseum program (required)
    hub/registry                 the registry program (optional: the VM's package otherwise)
    hub/devpi-wheels/<x>.whl     DevPI server and its dependencies (required, at least one)

`airgap-bundle --hub-from DIR` takes them from a folder laid out like that (`chartmuseum`,
`registry`, `devpi-wheels/*.whl`). `extract_hub` verifies the bundle's signature and writes
only the `hub` items, each checked against the signed manifest's sha256 by the archive reader,
into `<state>/airgap/hub/`; a later run with the same bundle re-uses that folder after
re-hashing it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from installer.airgap.archive import Bundle, verify_bundle
from installer.airgap.files import file_item, sha256_file
from installer.airgap.manifest import BundleItem, BundleManifest
from installer.errors import BadInputError

HUB_DIR = "hub"
CHARTMUSEUM = "chartmuseum"
REGISTRY = "registry"
DEVPI_WHEELS = "devpi-wheels"
PROGRAMS = (CHARTMUSEUM, REGISTRY)
MARK = ".verified"
_REMEDY = (
    "lay the folder out as chartmuseum, registry (optional) and devpi-wheels/*.whl"
    " (DevPI server and every dependency)"
)


def stage_hub(folder: Path, stage: Path) -> list[BundleItem]:
    """Copy the hub's programs from `folder` into `stage/hub/`; their bundle items."""
    if not folder.is_dir():
        raise BadInputError(f"--hub-from {folder}: not a folder", remedy=_REMEDY)
    dest = stage / HUB_DIR
    if dest.exists():
        shutil.rmtree(dest)  # nothing left over from an earlier build's folder
    (dest / DEVPI_WHEELS).mkdir(parents=True)
    items: list[BundleItem] = []
    for name in PROGRAMS:
        source = folder / name
        if not source.exists():
            if name == CHARTMUSEUM:
                raise BadInputError(f"--hub-from {folder}: no {name}", remedy=_REMEDY)
            continue
        if not source.is_file():
            raise BadInputError(f"--hub-from {folder}: {name} is not a file", remedy=_REMEDY)
        shutil.copyfile(source, dest / name)  # follows a symlink: the bundle holds the program
        (dest / name).chmod(0o755)
        items.append(file_item(stage, f"{HUB_DIR}/{name}", "hub", name))
    wheels = sorted((folder / DEVPI_WHEELS).glob("*.whl"))
    if not wheels:
        raise BadInputError(f"--hub-from {folder}: no {DEVPI_WHEELS}/*.whl", remedy=_REMEDY)
    for wheel in wheels:
        shutil.copyfile(wheel, dest / DEVPI_WHEELS / wheel.name)
        dist, version = wheel.name.split("-")[:2]
        rel = f"{HUB_DIR}/{DEVPI_WHEELS}/{wheel.name}"
        items.append(file_item(stage, rel, "hub", dist, version))
    return items


def hub_items(manifest: BundleManifest) -> list[BundleItem]:
    """The bundle's `hub` items."""
    return [i for i in manifest.items if i.kind == "hub"]


def extract_hub(bundle: Bundle, airgap_dir: Path) -> Path | None:
    """Verify the bundle and extract its hub items into `airgap_dir/hub/`; that folder, or
    None when the bundle carries no hub programs (built without `--hub-from`).

    Only `hub` members are hashed and written (each against the signed manifest before it gets
    its final name); the rest of the bundle is read past, its headers still checked. A bundle
    that fails, or whose file now holds another manifest than the one opened, leaves the
    previous folder (or none) in place and nothing of itself.
    """
    head = bundle.head
    wanted = hub_items(head.manifest)
    if not wanted:
        return None
    final = airgap_dir / HUB_DIR
    if _intact(final, wanted, head.manifest_sha256):
        return final
    scratch = airgap_dir / ".hub-extract"
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True, mode=0o700)
    try:
        verified = verify_bundle(
            bundle.path, bundle.key, extract_to=scratch, mine=lambda item: item.kind == "hub"
        )
        if verified.manifest_sha256 != head.manifest_sha256:
            raise BadInputError(
                f"bundle {bundle.path} changed while it was in use (its manifest is another)",
                remedy="leave the bundle alone while the installer runs, then run again",
            )
        extracted = scratch / HUB_DIR
        for name in PROGRAMS:
            if (extracted / name).is_file():
                (extracted / name).chmod(0o755)
        (extracted / MARK).write_text(head.manifest_sha256 + "\n")
        if final.exists():
            shutil.rmtree(final)
        extracted.replace(final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def _intact(folder: Path, items: list[BundleItem], manifest_sha256: str) -> bool:
    """True when `folder` holds exactly these items, by sha256, from this bundle."""
    mark = folder / MARK
    if not mark.is_file() or mark.read_text().strip() != manifest_sha256:
        return False
    present = {
        p.relative_to(folder.parent).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MARK
    }
    if present != {i.path for i in items}:
        return False
    return all(sha256_file(folder.parent / i.path) == i.sha256 for i in items)
