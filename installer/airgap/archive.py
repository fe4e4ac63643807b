"""The bundle file: a zstd-compressed tar, optionally split into parts; writing and safe reading.

Reading is one streaming pass: the first member must be `manifest.json`, the second its
signature; the signature is checked before any other byte is trusted, and every later member
must be a regular file the manifest lists, with the listed size and sha256. Links, devices,
absolute paths, `..` and unlisted files are refused; decompressed bytes are capped by the
manifest's total, so a size bomb stops early. Nothing reaches its final name before its digest
matched.

A member can be diverted to a consumer instead of a file (the load streams large blobs straight
to the registry): the consumer reads a `CheckedChunks` stream, which holds back the member's
last chunk until the whole member's sha256 matched, so a consumer never sees all of a member
whose digest is wrong.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, BinaryIO, cast

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from installer.airgap.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    SIGNATURE_NAME,
    BundleItem,
    BundleManifest,
    check_member_path,
    check_signature,
    load_public_key,
    parse_manifest,
)
from installer.airgap.tarstream import Member, TarReader, TarWriter
from installer.errors import BadInputError

CHUNK = 1024 * 1024
_TAR_OVERHEAD = 3 * 512  # header, pax header, padding per member
VERIFIED_MARK = ".verified"


def part_name(output: Path, index: int) -> Path:
    """The name of part `index` of a split bundle: `bundle.tar.zst.000`."""
    return output.with_name(f"{output.name}.{index:03d}")


def bundle_parts(path: Path) -> list[Path]:
    """The files a bundle is made of: itself, or its numbered parts in order."""
    if path.name[-4:-3] == "." and path.name[-3:].isdigit():
        path = path.with_name(path.name[:-4])
    if path.is_file():
        return [path]
    parts: list[Path] = []
    while part_name(path, len(parts)).is_file():
        parts.append(part_name(path, len(parts)))
    if not parts:
        raise BadInputError(f"{path}: no such bundle (nor parts {part_name(path, 0).name}, ...)")
    return parts


def bundle_size(path: Path) -> int:
    """The bytes of a bundle on disk: every part of a split one (given by its name or its first
    part's)."""
    return _size(bundle_parts(path))


def _size(parts: list[Path]) -> int:
    return sum(part.stat().st_size for part in parts)


class _PartWriter(io.RawIOBase):
    """A write-only file that rolls over to a new part every `max_size` bytes."""

    def __init__(self, output: Path, max_size: int | None) -> None:
        super().__init__()
        self.output, self.max_size = output, max_size
        self.written: list[Path] = []
        self._handle: IO[bytes] | None = None
        self._in_part = 0

    def _next(self) -> IO[bytes]:
        if self._handle is not None:
            self._handle.close()
        final = part_name(self.output, len(self.written)) if self.max_size else self.output
        tmp = final.with_name(final.name + ".partial")
        self.written.append(final)
        self._handle = tmp.open("wb")
        self._in_part = 0
        return self._handle

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data)
        handle = self._handle or self._next()
        while view:
            room = len(view) if not self.max_size else self.max_size - self._in_part
            if room <= 0:
                handle = self._next()
                continue
            n = handle.write(view[:room])
            self._in_part += n
            view = view[n:]
        return len(data)

    def abort(self) -> None:
        """Close and remove every part written so far."""
        if self._handle is not None:
            self._handle.close()
        for final in self.written:
            final.with_name(final.name + ".partial").unlink(missing_ok=True)

    def finish(self) -> list[Path]:
        if self._handle is None:
            self._next()
        assert self._handle is not None
        self._handle.close()
        for final in self.written:
            final.with_name(final.name + ".partial").replace(final)
        return self.written


def write_bundle(
    stage: Path,
    manifest: BundleManifest,
    signature: bytes,
    output: Path,
    *,
    max_size: int | None = None,
    level: int = 1,
    progress: Callable[[int], None] | None = None,
    order: Iterable[BundleItem] | None = None,
) -> list[Path]:
    """Pack the manifest, its signature and every item from `stage` into `output` (or parts).

    Items go in `order` when given (any order: readers match members by path), else in the
    manifest's. A failure removes what was written.
    """
    for stale in [output, *output.parent.glob(output.name + ".[0-9][0-9][0-9]")]:
        stale.unlink(missing_ok=True)
    sink = _PartWriter(output, max_size)
    try:
        _pack(stage, manifest, signature, sink, level, progress, order)
    except BaseException:
        sink.abort()
        raise
    return sink.finish()


def _pack(
    stage: Path,
    manifest: BundleManifest,
    signature: bytes,
    sink: _PartWriter,
    level: int,
    progress: Callable[[int], None] | None,
    order: Iterable[BundleItem] | None,
) -> None:
    compressor = zstandard.ZstdCompressor(level=level, threads=-1, write_checksum=True)
    with compressor.stream_writer(cast(IO[bytes], sink), closefd=False) as zout:
        tar = TarWriter(cast(BinaryIO, zout))
        tar.add_bytes(MANIFEST_NAME, manifest.to_bytes())
        tar.add_bytes(SIGNATURE_NAME, signature)
        for item in manifest.items if order is None else order:
            tar.add_file(item.path, stage / item.path, item.size)
            if progress:
                progress(item.size)
        tar.close()


@dataclass(frozen=True)
class VerifiedBundle:
    """What a verified bundle holds."""

    manifest: BundleManifest
    manifest_sha256: str
    parts: list[Path]
    manifest_bytes: bytes
    read_bytes: int = 0
    """Bytes read from the part files (a pass with `mine` jumps over what is not its own)."""


@dataclass(frozen=True)
class Bundle:
    """A bundle opened once (`open_bundle`): its signature checked, its manifest parsed, its
    parts and size known. The CLI opens it and hands this object to the phases, the load and
    the hub programs' extraction, which read the content through it: each member is checked
    against this manifest, and a pass that finds another manifest in the file is refused."""

    path: Path
    key: Ed25519PublicKey
    head: VerifiedBundle
    size: int
    """Bytes on disk, every part of a split bundle included."""

    @property
    def manifest(self) -> BundleManifest:
        """The signed manifest."""
        return self.head.manifest

    @property
    def manifest_bytes(self) -> bytes:
        """The signed manifest as it is in the bundle."""
        return self.head.manifest_bytes

    @property
    def manifest_sha256(self) -> str:
        """The sha256 of the signed manifest: the bundle's identity."""
        return self.head.manifest_sha256

    @property
    def parts(self) -> list[Path]:
        """The files it is made of."""
        return self.head.parts


def open_bundle(path: Path, verify_key: Path) -> Bundle:
    """Open a bundle: its parts found, its manifest's signature checked with the public key in
    `verify_key` (BadInputError otherwise), its size added up."""
    key = load_public_key(verify_key)
    head = read_head(path, key)
    return Bundle(path, key, head, _size(head.parts))


class _Reader:
    """The bundle's members, with the stream capped until the manifest raises the cap."""

    def __init__(self, parts: list[Path]) -> None:
        self.parts = parts
        self.tar = TarReader(parts, cap=MAX_MANIFEST_BYTES + 8 * _TAR_OVERHEAD)

    def members(self) -> Iterator[Member]:
        while (member := self.tar.next()) is not None:
            yield member

    def read_small(self, member: Member, expect: str, limit: int) -> bytes:
        if member.name != expect or member.kind != "file" or member.size > limit:
            raise BadInputError(f"bundle: expected {expect} as the next member, got {member.name}")
        return self.tar.read(limit)

    def close(self) -> None:
        self.tar.close()


def _guarded(func: Callable[[], VerifiedBundle]) -> VerifiedBundle:
    try:
        return func()
    except (zstandard.ZstdError, EOFError) as exc:
        raise BadInputError(
            f"bundle: corrupt or truncated ({type(exc).__name__}: {exc})",
            remedy="copy the bundle again and compare its size with the source",
        ) from None


def read_head(path: Path, key: Ed25519PublicKey) -> VerifiedBundle:
    """The signed manifest of a bundle, reading only its first two members."""

    def run() -> VerifiedBundle:
        reader = _Reader(bundle_parts(path))
        try:
            return _head(reader, key)
        finally:
            reader.close()

    return _guarded(run)


def _head(reader: _Reader, key: Ed25519PublicKey) -> VerifiedBundle:
    members = reader.members()
    first = next(members, None)
    if first is None:
        raise BadInputError("bundle: empty archive")
    data = reader.read_small(first, MANIFEST_NAME, MAX_MANIFEST_BYTES)
    second = next(members, None)
    if second is None:
        raise BadInputError("bundle: unsigned (no manifest.json.sig)")
    signature = reader.read_small(second, SIGNATURE_NAME, 4096)
    check_signature(data, signature, key)
    manifest = parse_manifest(data)
    return VerifiedBundle(manifest, hashlib.sha256(data).hexdigest(), reader.parts, data)


Consumer = Callable[["CheckedChunks"], None]
"""Reads a diverted member's chunks (all, some or none: the rest is read and checked after)."""


def verify_bundle(
    path: Path,
    key: Ed25519PublicKey,
    *,
    extract_to: Path | None = None,
    progress: Callable[[int], None] | None = None,
    divert: Callable[[BundleItem], Consumer | None] | None = None,
    mine: Callable[[BundleItem], bool] | None = None,
) -> VerifiedBundle:
    """Check signature, every member's path, type, size and sha256; optionally extract.

    With `extract_to`, files are written as `<path>.partial` and renamed once their digest
    matched; a `.verified` mark names the manifest once the whole bundle passed. `divert(item)`
    may return a consumer for a member, which then gets its content instead of a file.

    With `mine`, only the members it accepts are hashed (and extracted or diverted); the others
    are checked (path, type, size) and passed over, jumped over unread where the layout lets,
    and no mark is written: several such passes over one bundle, in parallel, each take a share
    of the members (their union must be all).
    """

    def run() -> VerifiedBundle:
        reader = _Reader(bundle_parts(path))
        try:
            head = _head(reader, key)
            _body(reader, head.manifest, extract_to, progress, divert, mine)
        finally:
            reader.close()
        if extract_to is not None and mine is None:
            mark_verified(extract_to, head.manifest_sha256)
        return replace(head, read_bytes=reader.tar.read_bytes)

    return _guarded(run)


def _body(
    reader: _Reader,
    manifest: BundleManifest,
    extract_to: Path | None,
    progress: Callable[[int], None] | None,
    divert: Callable[[BundleItem], Consumer | None] | None = None,
    mine: Callable[[BundleItem], bool] | None = None,
) -> None:
    items = manifest.by_path()
    reader.tar.source.cap += manifest.total_size + _TAR_OVERHEAD * (len(items) + 2)
    seen: set[str] = set()
    root = extract_to.resolve() if extract_to else None
    for member in reader.members():
        name = check_member_path(member.name.rstrip("/") if member.kind == "dir" else member.name)
        if member.kind == "dir":
            continue
        if member.kind != "file":
            kind = "link" if member.kind in ("symlink", "hardlink") else "special file"
            raise BadInputError(f"bundle: {kind} {name!r} refused (only regular files allowed)")
        item = items.get(name)
        if item is None or name in seen:
            raise BadInputError(f"bundle: {name!r} is not listed in the manifest (or repeated)")
        if member.size != item.size:
            raise BadInputError(f"bundle: {name}: {member.size} bytes, manifest says {item.size}")
        seen.add(name)
        if mine is not None and not mine(item):
            reader.tar.pass_over()  # another pass hashes it
            continue
        chunks = CheckedChunks(reader.tar.content(), item.sha256, name, progress)
        consumer = divert(item) if divert is not None else None
        if consumer is not None:
            consumer(chunks)
            chunks.drain()  # what the consumer left is still read and its digest checked
            continue
        _copy_checked(chunks, _target(root, name) if root else None)
    reader.tar.finish()  # trailing bytes: reaching the end checks the framing
    missing = sorted(set(items) - seen)
    if missing:
        raise BadInputError(
            f"bundle: truncated or incomplete: {len(missing)} listed files missing"
            f" (first: {missing[0]})",
            remedy="copy the bundle (all its parts) again",
        )


def _target(root: Path, name: str) -> Path:
    """Where member `name` goes under `root`. Its folders are looked at (never followed) and made
    one at a time, each only after its parent proved to be a real folder inside `root`: a link
    planted in the work folder can neither redirect the write nor get folders made outside."""
    folder = root
    for part in Path(name).parts[:-1]:
        folder = folder / part
        try:
            found = os.lstat(folder)
        except FileNotFoundError:
            folder.mkdir(mode=0o755)
            continue
        if not stat.S_ISDIR(found.st_mode):
            raise BadInputError(
                f"bundle: {name!r} would be written outside {root}"
                f" ({folder} is a link or a file, not a folder)",
                remedy=f"remove {folder}; the work folder is the installer's own",
            )
    return root / name


class CheckedChunks:
    """A member's content, hashed as it is read; the last chunk is held back until the
    member's sha256 matched (a mismatch raises instead), so whoever reads to the end has
    read verified bytes.

    An iterator object, not a generator: a reader that stops early (a failed upload) leaves
    it where it was, and `drain()` goes on from there.
    """

    def __init__(
        self,
        source: Iterator[memoryview],
        sha256: str,
        name: str,
        progress: Callable[[int], None] | None,
    ) -> None:
        self._source, self.sha256, self.name, self._progress = source, sha256, name, progress
        self._hasher = hashlib.sha256()
        self._held: memoryview | None = None
        self._done = False

    def __iter__(self) -> CheckedChunks:
        return self

    def __next__(self) -> memoryview:
        if self._done:
            raise StopIteration
        for chunk in self._source:
            self._hasher.update(chunk)
            if self._progress:
                self._progress(len(chunk))
            held, self._held = self._held, chunk
            if held is not None:
                return held
        self._done = True
        if self._hasher.hexdigest() != self.sha256:
            raise BadInputError(f"bundle: {self.name}: sha256 mismatch (corrupted)")
        if self._held is None:
            raise StopIteration
        return self._held

    def drain(self) -> None:
        """Read (and check) whatever is left."""
        for _ in self:
            pass


def _copy_checked(chunks: CheckedChunks, target: Path | None) -> None:
    partial = target.with_name(target.name + ".partial") if target else None
    if partial is None or target is None:
        chunks.drain()
        return
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb", buffering=0) as out:
            for chunk in chunks:
                out.write(chunk)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)


def first_member(path: Path, name: str) -> bytes:
    """The first member's content, unverified (for `--since` with an older bundle)."""

    def run() -> bytes:
        reader = _Reader(bundle_parts(path))
        try:
            member = next(reader.members(), None)
            if member is None:
                raise BadInputError(f"{path}: empty bundle")
            return reader.read_small(member, name, MAX_MANIFEST_BYTES)
        finally:
            reader.close()

    try:
        return run()
    except (zstandard.ZstdError, EOFError) as exc:
        raise BadInputError(f"{path}: corrupt or truncated ({exc})") from None


def mark_verified(work: Path, manifest_sha256: str) -> None:
    """Record that `work` holds what a pass over the whole bundle verified."""
    (work / VERIFIED_MARK).write_text(manifest_sha256 + "\n")


def already_extracted(work: Path, manifest_sha256: str) -> bool:
    """True when `work` holds this bundle fully verified by an earlier run."""
    mark = work / VERIFIED_MARK
    return mark.is_file() and mark.read_text().strip() == manifest_sha256
