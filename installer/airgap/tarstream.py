"""A minimal streaming tar (pax) writer and reader over zstd, for the bundle.

The standard library's stream mode copies every byte several times through its block buffer;
for gigabytes of layers that dominates the run. This one reads and writes file contents in
large chunks straight through, and hands out views of the decompressed data without copying.
It understands what the bundle writer produces (ustar headers, pax `x` records for long names
and large sizes) and reports every other member type so the caller can refuse it.
"""

from __future__ import annotations

import errno
import mmap
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from installer.errors import BadInputError

BLOCK = 512
CHUNK = 4 * 1024 * 1024
ALIGN = 4096
MAX_PAX = 64 * 1024
_ZEROS = bytes(BLOCK * 2)


# --- writing --------------------------------------------------------------------------------


class TarWriter:
    """Writes tar members to a binary sink (the zstd compressor)."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self._buffer = bytearray(CHUNK)

    def _header(self, name: str, size: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, 0
        info.uname = info.gname = "root"
        self.sink.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _pad(self, size: int) -> None:
        if size % BLOCK:
            self.sink.write(bytes(BLOCK - size % BLOCK))

    def add_bytes(self, name: str, data: bytes) -> None:
        """A member holding `data`."""
        self._header(name, len(data))
        self.sink.write(data)
        self._pad(len(data))

    def add_file(self, name: str, path: Path, size: int) -> None:
        """A member copied from `path`, which must hold exactly `size` bytes."""
        self._header(name, size)
        view = memoryview(self._buffer)
        left = size
        with path.open("rb", buffering=0) as handle:
            while left:
                n = handle.readinto(view[: min(left, CHUNK)])
                if not n:
                    raise BadInputError(f"{path}: shorter than its {size} bytes")
                self.sink.write(view[:n])
                left -= n
        self._pad(size)

    def close(self) -> None:
        """The end-of-archive blocks."""
        self.sink.write(_ZEROS)


# --- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """A member header: `kind` is file, dir, symlink, hardlink or other."""

    name: str
    kind: str
    size: int


class _PartReader:
    """A part file read from start to end, past the page cache where the file system allows
    (`O_DIRECT`): a bundle is read once or twice from end to end, and filling the cache with
    gigabytes costs a machine more than the read itself, and evicts what it does reuse."""

    def __init__(self, path: Path) -> None:
        self.offset = 0
        self._buf = mmap.mmap(-1, CHUNK)  # page-aligned, as such reads need
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            self._direct = True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._fd = os.open(path, os.O_RDONLY)
            self._direct = False

    def read(self) -> bytes | memoryview:
        """The next bytes (empty at the end); a view is valid until the next call."""
        if self._direct and self.offset % ALIGN == 0:
            try:
                n = os.preadv(self._fd, [self._buf], self.offset)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._direct = False  # an alignment this file system does not take
            else:
                self.offset += n
                return memoryview(self._buf)[:n]
        data = os.pread(self._fd, CHUNK, self.offset)
        self.offset += len(data)
        return data

    def close(self) -> None:
        os.close(self._fd)


class _Source:
    """Concatenated part files, decompressed frame after frame, with a cap on the output."""

    def __init__(self, parts: list[Path], cap: int) -> None:
        self._parts = list(parts)
        self._handle: _PartReader | None = None
        self._obj = zstandard.ZstdDecompressor().decompressobj()
        self._started = False
        self._buf = memoryview(b"")
        self.cap = cap
        self.count = 0

    def _raw(self) -> bytes | memoryview:
        while True:
            if self._handle is None:
                if not self._parts:
                    return b""
                self._handle = _PartReader(self._parts.pop(0))
            data = self._handle.read()
            if data:
                return data
            self._handle.close()
            self._handle = None

    def _fill(self) -> bool:
        while not self._buf:
            data = self._raw()
            if not data:
                if self._started and not self._obj.eof:
                    raise BadInputError(
                        "bundle: truncated (the data ends inside a compressed frame)",
                        remedy="copy the bundle (all its parts) again",
                    )
                return False
            pieces = []
            while data:
                if self._obj.eof:  # the next frame
                    self._obj = zstandard.ZstdDecompressor().decompressobj()
                self._started = True
                pieces.append(self._obj.decompress(data))
                data = self._obj.unused_data if self._obj.eof else b""
            self._buf = memoryview(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        return True

    def take(self, n: int) -> memoryview:
        """Up to `n` bytes (at least one unless the stream ended), without copying."""
        if not self._fill():
            return memoryview(b"")
        view, self._buf = self._buf[:n], self._buf[n:]
        self.count += len(view)
        if self.count > self.cap:
            raise BadInputError("bundle: more data than its manifest declares (size bomb?)")
        return view

    def exact(self, n: int) -> bytes:
        """Exactly `n` bytes; a short stream is a truncated bundle."""
        parts, left = [], n
        while left:
            view = self.take(left)
            if not view:
                raise BadInputError("bundle: truncated (the archive ends mid-member)")
            parts.append(bytes(view))
            left -= len(view)
        return b"".join(parts)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


class TarReader:
    """Reads members one after the other from a (split) zstd-compressed tar."""

    def __init__(self, parts: list[Path], cap: int) -> None:
        self.source = _Source(parts, cap)
        self._left = 0  # unread content + padding of the current member
        self._size = 0  # unread content of the current member
        self.ended = False

    def next(self) -> Member | None:
        """The next member's header, or None at the end of the archive."""
        self.skip()
        pax: dict[str, str] = {}
        while True:
            block = self.source.exact(BLOCK)
            if block == _ZEROS[:BLOCK]:
                self.ended = True
                return None
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError as exc:
                raise BadInputError(f"bundle: corrupt tar header ({exc})") from None
            if info.type == tarfile.XHDTYPE:
                if info.size > MAX_PAX:
                    raise BadInputError("bundle: oversized pax header")
                pax.update(_pax_records(self.source.exact(_padded(info.size))[: info.size]))
                continue
            name = pax.get("path", info.name)
            size = int(pax["size"]) if "size" in pax else info.size
            kind = (
                "file"
                if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE)
                else "dir"
                if info.type == tarfile.DIRTYPE
                else "symlink"
                if info.type == tarfile.SYMTYPE
                else "hardlink"
                if info.type == tarfile.LNKTYPE
                else "other"
            )
            self._left = _padded(size) if kind == "file" else 0
            self._size = size if kind == "file" else 0
            return Member(name=name, kind=kind, size=size if kind == "file" else 0)

    def content(self) -> Iterator[memoryview]:
        """The current member's bytes, in views valid until the next call."""
        while self._size:
            view = self.source.take(min(self._size, CHUNK))
            if not view:
                raise BadInputError("bundle: truncated (the archive ends mid-member)")
            self._size -= len(view)
            self._left -= len(view)
            yield view

    def read(self, limit: int) -> bytes:
        """The whole current member (small ones only)."""
        if self._size > limit:
            raise BadInputError(f"bundle: member larger than {limit} bytes")
        return b"".join(bytes(v) for v in self.content())

    def skip(self) -> None:
        """Discard what is left of the current member; its padding must be zeros (every byte
        of the archive is checked: content by its digest, headers by their checksum)."""
        while self._left:
            view = self.source.take(self._left)
            if not view:
                raise BadInputError("bundle: truncated (the archive ends mid-member)")
            if self._size:
                n = min(self._size, len(view))
                self._size -= n
                view = view[n:]
                self._left -= n
            if view and view.tobytes() != bytes(len(view)):
                raise BadInputError("bundle: corrupt (non-zero bytes after a member)")
            self._left -= len(view)

    def finish(self) -> None:
        """Read to the end of the stream: trailing data is checked for framing too."""
        while self.source.take(CHUNK):
            pass

    def close(self) -> None:
        """Close the part files."""
        self.source.close()


def _padded(size: int) -> int:
    return size + (-size % BLOCK)


def _pax_records(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            raise BadInputError("bundle: malformed pax header")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise BadInputError("bundle: malformed pax header") from None
        if length <= 0 or pos + length > len(data):
            raise BadInputError("bundle: malformed pax header")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records
