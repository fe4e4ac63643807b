"""The bundle manifest (`manifest.json`) and its ed25519 signature (`manifest.json.sig`).

The manifest lists every file of the bundle with kind, name, version, size and sha256; the
signature covers its exact bytes. Keys are PEM files as `openssl genpkey -algorithm ed25519`
writes them (PKCS#8 private, SubjectPublicKeyInfo public).
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from installer.errors import BadInputError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
LAYOUT_DIR = "oci"

ItemKind = Literal["blob", "layout", "chart", "chart-index", "wheel", "binary", "hub"]
# No leading "-": a member name is never mistaken for an option by a tool.
_SAFE_PART = re.compile(r"^[A-Za-z0-9._+@=][A-Za-z0-9._+@=,~-]*$")


def check_member_path(path: str) -> str:
    """`path` if it is a plain relative POSIX path inside the bundle; raises otherwise."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        raise BadInputError(f"bundle: unsafe path {path!r}")
    parts = PurePosixPath(path).parts
    if any(p in (".", "..") or not _SAFE_PART.match(p) for p in parts) or "/".join(parts) != path:
        raise BadInputError(f"bundle: unsafe path {path!r}")
    return path


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BundleItem(_Model):
    """One file of the bundle."""

    kind: ItemKind = Field(description="What the file is.")
    name: str = Field(description="Blob digest, chart or wheel name, binary name.")
    version: str = Field(default="", description="Version, where the kind has one.")
    path: str = Field(description="Path inside the bundle.")
    size: int = Field(ge=0, description="Size in bytes.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the content.")

    @field_validator("path")
    @classmethod
    def _safe(cls, value: str) -> str:
        return check_member_path(value)

    @model_validator(mode="after")
    def _name_fits(self) -> BundleItem:
        check_item_name(self)
        return self


def check_item_name(item: BundleItem) -> None:
    """An item's name is as strict as its path: a blob is named after its own sha256, and every
    other name (a binary's is the file installed, a chart's and a wheel's go into URLs) is one
    plain path part; its version likewise. Raises BadInputError naming the member."""
    if item.kind == "blob":
        if item.name != f"sha256:{item.sha256}":
            raise BadInputError(
                f"bundle: blob {item.path} is named {item.name!r}, not after its sha256"
                f" ({item.sha256})"
            )
        return
    for what, value in (("name", item.name), ("version", item.version)):
        if (value or what == "name") and (value in (".", "..") or not _SAFE_PART.match(value)):
            raise BadInputError(f"bundle: {item.kind} {item.path} has an unsafe {what} {value!r}")


class BundleImage(_Model):
    """An image of the release: its tag points at `digest` (a manifest or an index)."""

    name: str = Field(description="Full upstream repository, e.g. `ghcr.io/org/app`.")
    tag: str = Field(description="Tag pushed on the site.")
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", description="Top manifest digest.")
    media_type: str = Field(description="Media type of the top manifest.")
    blobs: list[str] = Field(
        description="Every digest the image needs (child manifests, configs, layers)."
    )


class DeltaBase(_Model):
    """What a delta bundle was cut against; the site must already hold the rest."""

    kind: Literal["since", "have"] = Field(description="An older manifest or a digest list.")
    sha256: str = Field(description="sha256 of the base file.")
    omitted: list[str] = Field(description="Digests and files left out because the site has them.")


class BundleManifest(_Model):
    """The signed table of contents of a bundle."""

    format_version: int = Field(description="Bundle format version.")
    created: datetime = Field(description="When the bundle was built (UTC).")
    source: dict[str, str] = Field(description="Where the content came from.")
    platform_version: str = Field(description="Platform release the bundle carries.")
    images: list[BundleImage] = Field(description="Images and the tags they get.")
    items: list[BundleItem] = Field(description="Every file in the bundle, sorted by path.")
    delta: DeltaBase | None = Field(default=None, description="Set on delta bundles.")

    def to_bytes(self) -> bytes:
        """Canonical JSON: the bytes that are signed."""
        return (self.model_dump_json(indent=1) + "\n").encode()

    @property
    def total_size(self) -> int:
        """Bytes of all items."""
        return sum(i.size for i in self.items)

    def by_path(self) -> dict[str, BundleItem]:
        """Items keyed by their path."""
        return {i.path: i for i in self.items}


def new_manifest(
    *,
    source: dict[str, str],
    platform_version: str,
    images: list[BundleImage],
    items: list[BundleItem],
    delta: DeltaBase | None = None,
) -> BundleManifest:
    """A manifest stamped with the format version and the time."""
    return BundleManifest(
        format_version=FORMAT_VERSION,
        created=datetime.now(UTC),
        source=source,
        platform_version=platform_version,
        images=sorted(images, key=lambda i: (i.name, i.tag)),
        items=sorted(items, key=lambda i: i.path),
        delta=delta,
    )


def parse_manifest(data: bytes) -> BundleManifest:
    """Validate manifest bytes; a newer format version is refused."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise BadInputError("bundle: manifest too large")
    try:
        manifest = BundleManifest.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadInputError(f"bundle: invalid manifest: {where}: {first['msg']}") from None
    if manifest.format_version != FORMAT_VERSION:
        raise BadInputError(
            f"bundle: format version {manifest.format_version}; this installer reads"
            f" {FORMAT_VERSION}",
            remedy="use the installer release that built the bundle",
        )
    paths = [i.path for i in manifest.items]
    if len(set(paths)) != len(paths):
        raise BadInputError("bundle: manifest lists a path twice")
    return manifest


# --- keys and signatures --------------------------------------------------------------------


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PEM ed25519 private key (unencrypted PKCS#8)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise BadInputError(f"{path}: not a readable PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadInputError(f"{path}: not an ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read a PEM ed25519 public key."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: not a readable PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadInputError(f"{path}: not an ed25519 key")
    return key


def write_keypair(private_path: Path, public_path: Path) -> None:
    """Generate a signing key pair; the private key file is 0600."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    private_path.touch(mode=0o600, exist_ok=False)
    private_path.write_bytes(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def sign(data: bytes, key: Ed25519PrivateKey) -> bytes:
    """The detached signature file content (base64 of the 64-byte signature)."""
    return base64.b64encode(key.sign(data)) + b"\n"


def check_signature(data: bytes, signature: bytes, key: Ed25519PublicKey) -> None:
    """Raise BadInputError unless `signature` is the key's signature of `data`."""
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
        key.verify(raw, data)
    except (InvalidSignature, ValueError):
        raise BadInputError(
            "bundle: the manifest signature does not match the verify key",
            remedy="check --verify-key; a bundle altered after signing is refused",
        ) from None
