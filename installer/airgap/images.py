"""Images: pull from an upstream into an OCI image layout, and read that layout back.

The layout keeps every blob once (`oci/blobs/sha256/<hex>`) however many images share it;
`oci/index.json` names each image by `org.opencontainers.image.ref.name` = `<name>:<tag>`.
Pulls run in two passes: manifests first (small), then every distinct blob in parallel,
largest first, streamed to disk and digest-checked. Blobs already on disk are kept: an
interrupted build resumes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from installer.airgap.files import file_item
from installer.airgap.manifest import LAYOUT_DIR, BundleImage, BundleItem
from installer.airgap.pins import DIFFERS_REMEDY
from installer.engines.registry import (
    INDEX_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    BlobSink,
    Manifest,
    RegistryClient,
    RegistryError,
    sha256_digest,
)
from installer.errors import BadInputError
from installer.release import ImageRef
from installer.site import normalize_image

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = {"imageLayoutVersion": "1.0.0"}


def blob_path(root: Path, digest: str) -> Path:
    """Where a blob lives in a layout rooted at `root` (the bundle's `oci/`)."""
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64:
        raise BadInputError(f"unsupported digest {digest!r}")
    return root / "blobs" / algo / hexpart


def upstream_repo(name: str, *, mirror: bool) -> tuple[str | None, str]:
    """(registry host, repository) for an upstream image name.

    Through a mirror the full name is the repository (`ghcr.io/org/app`); direct pulls split
    the host off (Docker Hub's API host is `registry-1.docker.io`).
    """
    full = normalize_image(name)
    if mirror:
        return None, full
    host, _, repo = full.partition("/")
    return ("registry-1.docker.io" if host == "docker.io" else host), repo


@dataclass
class _Pulled:
    image: ImageRef
    repo: str
    top: Manifest
    manifests: list[Manifest] = field(default_factory=list)  # children of an index
    blobs: dict[str, tuple[int, str]] = field(default_factory=dict)  # -> (size, media type)


def _children(top: Manifest) -> list[dict[str, Any]]:
    data = json.loads(top.data)
    return list(data.get("manifests", []))


def _platform_of(desc: dict[str, Any]) -> str:
    plat = desc.get("platform") or {}
    text = f"{plat.get('os', '')}/{plat.get('architecture', '')}"
    return text + (f"/{plat['variant']}" if plat.get("variant") else "")


def _filter_index(top: Manifest, platforms: list[str]) -> Manifest:
    data = json.loads(top.data)
    keep = [
        d
        for d in data.get("manifests", [])
        if any(_platform_of(d) == p or _platform_of(d).startswith(p + "/") for p in platforms)
    ]
    if not keep:
        raise BadInputError(f"index {top.digest} has no manifest for {', '.join(platforms)}")
    if len(keep) == len(data["manifests"]):
        return top
    data["manifests"] = keep
    raw = json.dumps(data, separators=(",", ":")).encode()
    return Manifest(data=raw, media_type=top.media_type, digest=sha256_digest(raw))


def _layers(manifest: Manifest) -> dict[str, tuple[int, str]]:
    data = json.loads(manifest.data)
    found: dict[str, tuple[int, str]] = {}
    for desc in [data.get("config"), *data.get("layers", [])]:
        if desc and not desc.get("urls"):  # foreign layers are not distributable
            found[desc["digest"]] = (int(desc["size"]), str(desc.get("mediaType", "")))
    return found


COMPRESSED_SUFFIXES = ("+gzip", "+zstd", ".gzip", ".zstd")
"""Media types whose content is compressed already (OCI `+gzip`/`+zstd` layers, Docker's
`rootfs.diff.tar.gzip`): compressing them again gains nothing."""


def is_compressed(media_type: str) -> bool:
    """The blob's content is compressed already (by its media type)."""
    return media_type.endswith(COMPRESSED_SUFFIXES)


def resolve(client: RegistryClient, image: ImageRef, repo: str, platforms: list[str]) -> _Pulled:
    """Fetch an image's manifests (and the index's children) and list its blobs. A pinned
    image is fetched by its digest (content-checked), whatever its tag points at now."""
    top = _top(client, image, repo)
    pulled = _Pulled(image=image, repo=repo, top=top)
    if top.media_type in INDEX_TYPES:
        if platforms:
            pulled.top = _filter_index(top, platforms)
        for desc in _children(pulled.top):
            child = client.get_manifest(repo, desc["digest"])
            if child.media_type in INDEX_TYPES:
                raise BadInputError(f"{image.name}: nested indexes are not supported")
            pulled.manifests.append(child)
            pulled.blobs.update(_layers(child))
    else:
        pulled.blobs.update(_layers(top))
    return pulled


def _top(client: RegistryClient, image: ImageRef, repo: str) -> Manifest:
    if image.digest is None:
        return client.get_manifest(repo, image.tag)
    try:
        return client.get_manifest(repo, image.digest)
    except RegistryError:
        if client.manifest_digest(repo, image.digest) is not None:
            raise
        now = client.manifest_digest(repo, image.tag)
        raise BadInputError(
            f"image {image.name}:{image.tag}: the source has no {image.digest} (the release's"
            f" pin); its tag points at {now or 'nothing'}",
            remedy=DIFFERS_REMEDY,
        ) from None


Wanted = dict[str, tuple[str, int, str]]
"""Blob digest -> (a repository that has it, size, media type): what a layout still needs."""


def resolve_images(
    client: RegistryClient,
    images: list[ImageRef],
    root: Path,
    *,
    mirror: bool,
    platforms: list[str],
    workers: int,
) -> tuple[list[BundleImage], Wanted]:
    """Fetch every manifest into the layout at `root`, write its index; list the blobs."""
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pulled = list(
            pool.map(
                lambda i: resolve(client, i, upstream_repo(i.name, mirror=mirror)[1], platforms),
                images,
            )
        )
    wanted: Wanted = {}
    for p in pulled:
        for digest, (size, media_type) in p.blobs.items():
            wanted.setdefault(digest, (p.repo, size, media_type))
        for m in [p.top, *p.manifests]:
            _write_blob(root, m.digest, m.data)
    result = [
        BundleImage(
            name=normalize_image(p.image.name),
            tag=p.image.tag,
            digest=p.top.digest,
            media_type=p.top.media_type,
            blobs=sorted({*(m.digest for m in p.manifests), *p.blobs}),
        )
        for p in pulled
    ]
    write_index(root, result)
    return result, wanted


def fetch_blobs(
    client: RegistryClient,
    wanted: Wanted,
    *,
    sink: Callable[[str], BlobSink | None],
    workers: int,
    on_done: Callable[[str], None],
) -> int:
    """Download every blob `sink(digest)` gives a sink for (None: it is there already),
    largest first, in parallel; `on_done(digest)` as each is ready.

    Returns the bytes that had to be downloaded.
    """
    sinks = {d: sink(d) for d in wanted}
    for digest, target in sinks.items():
        if target is None:
            on_done(digest)

    def one(digest: str) -> None:
        repo, size, _ = wanted[digest]
        target = sinks[digest]
        assert target is not None
        client.fetch_blob_into(repo, digest, target, size)
        on_done(digest)

    order = sorted((d for d, t in sinks.items() if t is not None), key=lambda d: -wanted[d][1])
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, order))
    return sum(wanted[d][1] for d in order)


_write_lock = threading.Lock()


def _write_blob(root: Path, digest: str, data: bytes) -> None:
    path = blob_path(root, digest)
    if path.is_file():
        return
    tmp = path.with_name(path.name + ".partial")
    with _write_lock:
        tmp.write_bytes(data)
        tmp.replace(path)


def write_index(root: Path, images: list[BundleImage]) -> None:
    """Write `oci-layout` and `index.json` naming every image by `<name>:<tag>`."""
    manifests = []
    for img in images:
        manifests.append(
            {
                "mediaType": img.media_type,
                "digest": img.digest,
                "size": blob_path(root, img.digest).stat().st_size,
                "annotations": {REF_NAME: f"{img.name}:{img.tag}"},
            }
        )
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    (root / "oci-layout").write_text(json.dumps(LAYOUT_FILE) + "\n")
    (root / "index.json").write_text(json.dumps(index, indent=1) + "\n")


def layout_items(
    stage: Path, images: list[BundleImage], omit: set[str], sizes: dict[str, int]
) -> list[BundleItem]:
    """Bundle items for the layout: its two files and every blob not in `omit`.

    Sizes come from `sizes` (the manifests' descriptors; the blob may still be downloading)
    or, for manifests, from the file on disk.
    """
    root = stage / LAYOUT_DIR
    items = [file_item(stage, f"{LAYOUT_DIR}/{n}", "layout") for n in ("oci-layout", "index.json")]
    digests = {d for img in images for d in [img.digest, *img.blobs]}
    for digest in sorted(digests - omit):
        path = blob_path(root, digest)
        items.append(
            BundleItem(
                kind="blob",
                name=digest,
                path=str(path.relative_to(stage)),
                size=sizes[digest] if digest in sizes else path.stat().st_size,
                sha256=digest.partition(":")[2],
            )
        )
    return items


def read_manifest_blob(root: Path, digest: str, media_type: str | None = None) -> Manifest:
    """A manifest stored in the layout; its media type from the descriptor or its content."""
    data = blob_path(root, digest).read_bytes()
    doc = json.loads(data)
    kind = media_type or doc.get("mediaType") or (OCI_INDEX if "manifests" in doc else OCI_MANIFEST)
    return Manifest(data=data, media_type=kind, digest=digest)


def child_descriptors(manifest: Manifest) -> list[dict[str, Any]]:
    """The manifests an index points at (empty for an image manifest)."""
    return _children(manifest) if manifest.media_type in INDEX_TYPES else []
