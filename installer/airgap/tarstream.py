"""A minimal streaming tar (pax) writer and reader over zstd, for the bundle.

The standard library's stream mode copies every byte several times through its block buffer;
for gigabytes of layers that dominates the run. This one reads and writes file contents in
large chunks straight through, and hands out views of the decompressed data without copying.
It understands what the bundle writer produces (ustar headers, pax `x` records for long names
and large sizes) and reports every other member type so the caller can refuse it.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import mmap
import os
import tarfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from installer.errors import BadInputError

BLOCK = 512
CHUNK = 4 * 1024 * 1024
ALIGN = 4096
"""Stored frames start on this boundary; reads and writes past the page cache are in whole
such pages."""
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


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
STORED_FRAME_HEADER = ZSTD_MAGIC + bytes([0x00, 7 << 3])
"""The header of the bundle's stored frames (no content size, no checksum, a 128 KiB window):
a frame with exactly this header holds stored ("raw") blocks only, which readers hand out as
views of what they read, with no decompression and no copy."""
_SKIPPABLE_MIN, _SKIPPABLE_MAX = 0x184D2A50, 0x184D2A5F
SKIPPABLE_MAGIC = _SKIPPABLE_MIN.to_bytes(4, "little")
"""The magic of the skippable frames the writer puts before stored frames (zeros inside)."""
BLOCK_MAX = 128 * 1024
"""zstd's largest block, and the window stored frames declare (so decoders need 128 KiB)."""
_BUFFERS = 3
"""Read buffers: the one being parsed, the one read ahead, and the one the last view handed
out points into (a reader holds one chunk back until it has the next, however many reads
that takes), which a read never reuses."""


class _PartReader:
    """A part file read front to back (a reader may jump ahead), past the page cache where the
    file system allows (`O_DIRECT`): a bundle is read once from end to end, and filling the
    cache with gigabytes costs a machine more than the read itself, and evicts what it does
    reuse. Such reads wait for the disk, so the next chunk is read ahead by a thread of its
    own."""

    def __init__(self, path: Path) -> None:
        self.offset = 0
        self._bufs = [mmap.mmap(-1, CHUNK) for _ in range(_BUFFERS)]  # page-aligned
        self._ahead: tuple[mmap.mmap, Future[int]] | None = None
        self._pool: ThreadPoolExecutor | None = None
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            self._direct = True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._fd = os.open(path, os.O_RDONLY)
            self._direct = False

    def _read_ahead(self, *busy: object) -> None:
        """Start reading the next chunk into a buffer none of `busy` is."""
        buf = next(b for b in self._bufs if all(b is not x for x in busy))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bundle-read")
        self._ahead = (buf, self._pool.submit(os.preadv, self._fd, [buf], self.offset))

    def read(self, keep: object = None) -> memoryview:
        """The next bytes (empty at the end), in a buffer other than `keep` (the buffer of a
        view still held): valid until the next call with another `keep`."""
        if self._direct and self.offset % ALIGN == 0:
            if self._ahead is None:
                self._read_ahead(keep)
            assert self._ahead is not None
            (buf, pending), self._ahead = self._ahead, None
            try:
                n = pending.result()
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._direct = False  # an alignment this file system does not take
            else:
                self.offset += n
                if n == CHUNK:
                    self._read_ahead(keep, buf)
                return memoryview(buf)[:n]
        data = os.pread(self._fd, CHUNK, self.offset)
        self.offset += len(data)
        return memoryview(data)

    def seek(self, offset: int) -> int:
        """Read on from `offset`: how many bytes the next read returns before it (a read past
        the page cache starts on a page boundary)."""
        if self._ahead is not None:
            self._ahead[1].exception()  # a read in flight lands in its buffer before any other
            self._ahead = None
        before = offset % ALIGN if self._direct else 0
        self.offset = offset - before
        return before

    def close(self) -> None:
        self._ahead = None  # read ahead, never used (shutdown waits for it)
        if self._pool is not None:
            self._pool.shutdown()
        os.close(self._fd)


ZSTD_FEED = 1024
"""Input bytes per zstd decompression call. A zstd block holds at most 128 KiB and takes at
least 4 bytes, so one call yields at most 32 MiB whatever the frame: a bomb (gigabytes from a
few hundred kilobytes) comes out in bounded pieces, each checked against the declared sizes."""


class _Source:
    """Concatenated part files, decompressed frame after frame, with a cap on the output.

    Stored frames (`STORED_FRAME_HEADER`) are read block by block here, their content handed
    out as views of the read buffers; skippable frames are skipped; every other frame goes
    through zstd."""

    def __init__(self, parts: list[Path], cap: int) -> None:
        self._parts = list(parts)
        # Where each part starts in the stream, and where the last one ends.
        self._starts = list(itertools.accumulate((p.stat().st_size for p in parts), initial=0))
        self._index = -1  # the part being read (or, with no handle, the last one read)
        self._handle: _PartReader | None = None
        self._before = 0  # bytes of the next read that precede where a jump landed
        self.read_bytes = 0  # read from the part files
        self._in = memoryview(b"")  # read, not yet parsed
        self._blocks = False  # inside a stored frame, before a block header
        self._stored = 0  # bytes left of the current stored block
        self._last = False  # the current stored block ends its frame
        self._obj: Any = None  # the zstd decompressor of the current (other) frame
        self._buf = memoryview(b"")
        self._buf_obj: object = None  # the buffer `_buf` points into
        self._keep: object = None  # the buffer the last view handed out points into
        self.cap = cap
        self.count = 0

    def _load(self) -> bool:
        """Read more input; False at the end of the last part."""
        while True:
            if self._handle is None:
                if self._index + 1 >= len(self._parts):
                    return False
                self._index += 1
                self._handle = _PartReader(self._parts[self._index])
            data = self._handle.read(keep=self._keep)
            self.read_bytes += len(data)
            data, self._before = data[self._before :], 0
            if data:
                self._in = data
                return True
            self._handle.close()
            self._handle = None

    def _position(self) -> int:
        """Where in the stream (all parts) the next input byte to parse lies."""
        if self._handle is None:
            return self._starts[self._index + 1]
        return self._starts[self._index] + self._handle.offset - len(self._in)

    def _seek(self, target: int) -> None:
        """Parse on from stream offset `target` (a place in this part or a later one, or one
        read before)."""
        index = min(bisect.bisect_right(self._starts, target), len(self._parts)) - 1
        if self._handle is None or index != self._index:
            if self._handle is not None:
                self._handle.close()
            self._index, self._handle = index, _PartReader(self._parts[index])
        self._before = self._handle.seek(target - self._starts[index])
        self._in = memoryview(b"")

    def pass_over(self, n: int) -> int:
        """Move past the next `n` bytes of output; how many were passed over without reading
        (at least what was read already), all `n` when they are the rest of a stored frame laid
        out as the bundle writer lays one out: blocks of `BLOCK_MAX` bytes, the last one
        shorter. Where they lie then follows from `n` alone: the reader jumps there, and if
        what it finds is not the start of a frame, goes back and passes over nothing more.

        The bytes jumped over are not checked here: this is for a reader that is one of
        several over the same bundle, and another checks them."""
        done = min(n, len(self._buf))
        self._buf = self._buf[done:]
        self.count += done
        rest = n - done
        if rest < CHUNK or not self._blocks:  # not in a stored frame, or too little to jump
            return done
        if self._stored:  # in a block: its rest, then the frame's remaining blocks
            if rest < self._stored or self._last != (rest == self._stored):
                return done  # the frame ends elsewhere
            headers = -(-(rest - self._stored) // BLOCK_MAX)
        else:
            headers = -(-rest // BLOCK_MAX)
        here, state = self._position(), (self._stored, self._last)
        self._seek(here + rest + 3 * headers)
        if (
            self._load()
            and len(self._in) >= 4
            and (self._in[:4] == ZSTD_MAGIC or self._in[:4] == SKIPPABLE_MAGIC)
        ):
            self._blocks, self._stored, self._last = False, 0, False
            self.count += rest
            if self.count > self.cap:
                raise BadInputError("bundle: more data than its manifest declares (size bomb?)")
            return n
        self._seek(here)  # laid out otherwise: read it after all
        self._blocks = True
        self._stored, self._last = state
        return done

    def _more(self, where: str) -> None:
        """Input to parse, read if none is left; the stream may not end inside `where`."""
        if not self._in and not self._load():
            raise BadInputError(
                f"bundle: truncated (the data ends inside a {where})",
                remedy="copy the bundle (all its parts) again",
            )

    def _small(self, n: int, where: str) -> bytes | None:
        """The next `n` bytes (a header), across reads; None at a clean end (nothing left)."""
        out = b""
        while len(out) < n:
            if not out and where == "frame" and not self._in and not self._load():
                return None  # a clean end, between frames
            self._more(where)
            k = min(n - len(out), len(self._in))
            out += bytes(self._in[:k])
            self._in = self._in[k:]
        return out

    def _piece(self) -> memoryview | None:
        """The next piece of output (maybe empty); None at the end of the stream."""
        if self._obj is not None:
            return self._zstd()
        if self._stored:
            self._more("compressed frame")
            view = self._in[: self._stored]
            self._in = self._in[len(view) :]
            self._stored -= len(view)
            if not self._stored and self._last:
                self._blocks = False
            return view
        if self._blocks:
            raw = self._small(3, "compressed frame")
            assert raw is not None
            header = int.from_bytes(raw, "little")
            size, kind = header >> 3, (header >> 1) & 3
            if kind != 0 or size > BLOCK_MAX:
                raise BadInputError("bundle: corrupt (a stored frame holds another kind of block)")
            self._stored, self._last = size, bool(header & 1)
            if not size and self._last:
                self._blocks = False
            return memoryview(b"")
        head = self._small(4, "frame")
        if head is None:
            return None
        if _SKIPPABLE_MIN <= int.from_bytes(head, "little") <= _SKIPPABLE_MAX:
            # The writer's gaps: its own magic and zeros, so that no byte of a bundle goes
            # unchecked (a decoder would skip anything there).
            if head != SKIPPABLE_MAGIC:
                raise BadInputError("bundle: corrupt (a skippable frame of another kind)")
            length = self._small(4, "skippable frame")
            assert length is not None
            left = int.from_bytes(length, "little")
            while left:
                self._more("frame")
                k = min(left, len(self._in))
                if self._in[:k].tobytes() != bytes(k):
                    raise BadInputError("bundle: corrupt (non-zero bytes in a skippable frame)")
                self._in, left = self._in[k:], left - k
            return memoryview(b"")
        rest = self._small(2, "compressed frame") if head == ZSTD_MAGIC else b""
        if head + (rest or b"") == STORED_FRAME_HEADER:
            self._blocks = True
            return memoryview(b"")
        self._obj = zstandard.ZstdDecompressor().decompressobj()
        return memoryview(self._obj.decompress(head + (rest or b"")))

    def _zstd(self) -> memoryview:
        """What the next input of the current zstd frame decompresses to: at most `ZSTD_FEED`
        bytes of it per call, so that the output of one call is bounded (the decompressor has
        no output limit of its own, and a block of 128 KiB can come from 4 bytes)."""
        assert self._obj is not None
        self._more("compressed frame")
        data, self._in = self._in[:ZSTD_FEED], self._in[ZSTD_FEED:]
        out = self._obj.decompress(data)
        if self._obj.eof:
            unused = self._obj.unused_data
            self._in = memoryview(unused + self._in.tobytes()) if unused else self._in
            self._obj = None
        return memoryview(out)

    def _fill(self) -> bool:
        while not self._buf:
            piece = self._piece()
            if piece is None:
                return False
            self._buf, self._buf_obj = piece, piece.obj
        return True

    def take(self, n: int) -> memoryview:
        """Up to `n` bytes (at least one unless the stream ended), without copying."""
        if not self._fill():
            return memoryview(b"")
        view, self._buf = self._buf[:n], self._buf[n:]
        self._keep = self._buf_obj
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

    def pass_over(self) -> None:
        """Move past the current member reading as little of it as the layout lets: for a
        reader that is one of several over the same bundle, where another checks it."""
        moved = self.source.pass_over(self._left)
        self._left -= moved
        self._size = max(0, self._size - moved)
        self.skip()

    @property
    def read_bytes(self) -> int:
        """Bytes read from the part files so far."""
        return self.source.read_bytes

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
