"""The bundle file written in place, so that downloads go straight into it (no copy on disk).

The compressed stream (one file, or the parts `--max-size` cuts it into) is laid out as:

- head: one zstd frame holding `manifest.json` and its signature;
- raw: one zstd frame per downloaded blob whose content is already compressed (gzip or zstd
  layers): its tar header, content and padding in stored ("raw") zstd blocks. Its size follows
  from the blob's size alone, so every such frame has a fixed place in the file before any byte
  is downloaded, and the downloads write into their frames in parallel, as they arrive. Each
  frame starts on a 4 KiB boundary of the file, the gap before it filled by a zstd skippable
  frame, so that every download owns whole pages of the file and writes them past the page
  cache (`O_DIRECT`, where the file system allows): the bundle is not read back soon, and
  filling the cache with it costs the machine more than the write itself;
- tail: zstd frames (compressed at the bundle's level, with a content checksum) holding every
  other member (the files gathered in the work folder), then the end-of-archive blocks.

Any zstd decoder reads it as one stream, and any tar reader as one archive. Raw frames carry no
zstd checksum: every byte they hold is checked otherwise (the content's sha256 is in the signed
manifest, a tar header has its own checksum, readers check that padding is zeros).

Resume: `<work>/bundle-state.json` names the layout (a hash of the manifest, the frames'
places and the part size) and, per raw frame, how far its content is known to be written (a
block boundary, recorded every few MiB) or that it is complete and verified. A resumed build
re-hashes what a frame already holds and asks the upstream for the rest only.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import struct
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import zstandard

from installer.airgap.manifest import MANIFEST_NAME, SIGNATURE_NAME, BundleItem
from installer.airgap.tarstream import (
    ALIGN,
    BLOCK,
    BLOCK_MAX,
    SKIPPABLE_MAGIC,
    STORED_FRAME_HEADER,
    TarWriter,
)
from installer.errors import BadInputError, EnvironmentProblem

_RECORD_MAX = 64 * 1024 * 1024
STATE_NAME = "bundle-state.json"
_WRITER_VERSION = 2
_STAGE = 2 * 1024 * 1024
"""A raw sink's buffer: whole pages are written from it once it holds `_FLUSH` bytes."""
_FLUSH = 1024 * 1024


def aligned(offset: int) -> int:
    """Where a raw frame may start at or after `offset`: room for a skippable frame (8 bytes
    at least) before the next `ALIGN` boundary."""
    return -(-(offset + 8) // ALIGN) * ALIGN


def skippable(length: int) -> bytes:
    """A zstd skippable frame of `length` bytes in all (8 at least), zeros as its content:
    decoders skip it."""
    return SKIPPABLE_MAGIC + struct.pack("<I", length - 8) + bytes(length - 8)


def tar_header(name: str, size: int) -> bytes:
    """The header block(s) the bundle's tar writer puts before a member."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    info.uname = info.gname = "root"
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _block_header(size: int, last: bool) -> bytes:
    return struct.pack("<I", (size << 3) | int(last))[:3]


@dataclass(frozen=True)
class RawFrame:
    """The place of one member stored in raw blocks: decompressed offset `x` of the member
    (its tar header, content, padding) lies in block `x // BLOCK_MAX`."""

    item: BundleItem
    start: int
    header: bytes

    @property
    def stop(self) -> int:
        """Where what follows starts: the frame, then a skippable frame up to the boundary."""
        return aligned(self.start + self.length)

    @property
    def content_size(self) -> int:
        """Decompressed bytes: header, content, padding."""
        return len(self.header) + self.item.size + (-self.item.size % BLOCK)

    @property
    def blocks(self) -> int:
        """Number of raw blocks."""
        return max(1, -(-self.content_size // BLOCK_MAX))

    @property
    def length(self) -> int:
        """Bytes in the file."""
        return len(STORED_FRAME_HEADER) + self.content_size + 3 * self.blocks

    def block_at(self, k: int) -> int:
        """File offset of block `k`'s header."""
        return self.start + len(STORED_FRAME_HEADER) + k * (3 + BLOCK_MAX)

    def block_header(self, k: int) -> bytes:
        """The header of block `k`."""
        size = min(BLOCK_MAX, self.content_size - k * BLOCK_MAX)
        return _block_header(size, k == self.blocks - 1)


class SplitFile:
    """One logical file written at offsets, stored as `output` or as parts of `max_size`
    bytes (`<output>.000`, ...), each as `<name>.partial` until `finish`."""

    def __init__(self, output: Path, max_size: int | None) -> None:
        self.output, self.max_size = output, max_size
        self._fds: dict[int, int] = {}
        self._direct_fds: dict[int, int] = {}
        self._lock = threading.Lock()
        # Parts must start on page boundaries for writes past the page cache.
        self.direct = not max_size or max_size % ALIGN == 0

    def final(self, index: int) -> Path:
        """The final name of part `index`."""
        if not self.max_size:
            return self.output
        return self.output.with_name(f"{self.output.name}.{index:03d}")

    def partial(self, index: int) -> Path:
        """Where part `index` is written."""
        final = self.final(index)
        return final.with_name(final.name + ".partial")

    def exists(self) -> bool:
        """The first part was started by an earlier run."""
        return self.partial(0).is_file()

    def _fd(self, index: int) -> int:
        with self._lock:
            fd = self._fds.get(index)
            if fd is None:
                fd = os.open(self.partial(index), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
                self._fds[index] = fd
            return fd

    def _spans(self, offset: int, length: int) -> list[tuple[int, int, int]]:
        """(part, offset in part, length) pieces of a logical range."""
        if not self.max_size:
            return [(0, offset, length)]
        spans = []
        while length > 0:
            index, local = divmod(offset, self.max_size)
            n = min(length, self.max_size - local)
            spans.append((index, local, n))
            offset, length = offset + n, length - n
        return spans

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        """Write `data` at logical `offset`."""
        view = memoryview(data)
        for index, local, n in self._spans(offset, len(view)):
            piece, view = view[:n], view[n:]
            while piece:
                written = os.pwrite(self._fd(index), piece, local)
                piece, local = piece[written:], local + written

    def _direct_fd(self, index: int) -> int | None:
        with self._lock:
            if not self.direct:
                return None
            fd = self._direct_fds.get(index)
            if fd is None:
                flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_DIRECT
                try:
                    fd = self._direct_fds[index] = os.open(self.partial(index), flags, 0o644)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    self.direct = False  # the file system has no such writes
            return fd

    def write_pages(self, pages: memoryview, offset: int) -> None:
        """Write whole `ALIGN`-sized pages at an `ALIGN`-aligned logical `offset` from a
        page-aligned buffer, past the page cache where the file system allows (else as
        `pwrite`). The pages must be the caller's own: no other write touches them."""
        for index, local, n in self._spans(offset, len(pages)):
            piece, pages = pages[:n], pages[n:]
            fd = self._direct_fd(index)
            try:
                while piece and fd is not None:
                    written = os.pwrite(fd, piece, local)
                    piece, local = piece[written:], local + written
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.direct = False  # an alignment this file system does not take
            if piece:
                self.pwrite(piece, local + index * (self.max_size or 0))

    def allocate(self, length: int) -> None:
        """Reserve the first `length` bytes on disk: no space fails now, before any
        download, and writing into reserved blocks costs the file system less."""
        for index, local, n in self._spans(0, length):
            try:
                os.posix_fallocate(self._fd(index), local, n)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise EnvironmentProblem(
                        f"{self.partial(index)}: no space left for {n:,} bytes",
                        remedy="free space there, or write the bundle elsewhere",
                    ) from None
                return  # a file system that cannot reserve: written as it comes

    def pread(self, offset: int, length: int) -> bytes:
        """Read back what was written (short where nothing was)."""
        out = bytearray()
        for index, local, n in self._spans(offset, length):
            if not self.partial(index).is_file():
                break
            data = os.pread(self._fd(index), n, local)
            out += data
            if len(data) < n:
                break
        return bytes(out)

    def finish(self, length: int) -> list[Path]:
        """Cut to `length` bytes, drop parts past it, give every part its final name."""
        count = 1 if not self.max_size else max(1, -(-length // self.max_size))
        for index in range(count):
            size = (
                length if not self.max_size else min(self.max_size, length - index * self.max_size)
            )
            os.ftruncate(self._fd(index), size)
        self.close()
        extra = count
        while self.max_size and self.partial(extra).is_file():
            self.partial(extra).unlink()
            extra += 1
        finals = [self.final(i) for i in range(count)]
        for index, final in enumerate(finals):
            self.partial(index).replace(final)
        return finals

    def close(self) -> None:
        """Close every part."""
        with self._lock:
            for fd in [*self._fds.values(), *self._direct_fds.values()]:
                os.close(fd)
            self._fds.clear()
            self._direct_fds.clear()

    def discard(self) -> None:
        """Remove every part written so far."""
        self.close()
        index = 0
        while self.partial(index).is_file():
            self.partial(index).unlink()
            index += 1
            if not self.max_size:
                break


class _SequentialSink:
    """A write-only file object appending at a logical offset of a `SplitFile`."""

    def __init__(self, target: SplitFile, offset: int) -> None:
        self.target, self.offset = target, offset

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.target.pwrite(data, self.offset)
        self.offset += len(data)
        return len(data)

    def flush(self) -> None:
        """Nothing buffered here."""


class BundleWriter:
    """Writes a bundle in place: the head, raw frames filled by downloads, then the tail."""

    def __init__(
        self,
        output: Path,
        stage: Path,
        *,
        max_size: int | None,
        level: int,
    ) -> None:
        for stale in [output, *output.parent.glob(output.name + ".[0-9][0-9][0-9]")]:
            stale.unlink(missing_ok=True)
        self.file = SplitFile(output, max_size)
        self.stage, self.level = stage, level
        self.state_path = stage / STATE_NAME
        self.frames: dict[str, RawFrame] = {}
        self.tail_start = 0
        self._state: dict[str, Any] = {}
        self._lock = threading.Lock()

    # --- layout and resume ------------------------------------------------------------------

    def start(self, manifest: bytes, signature: bytes, raw: list[BundleItem]) -> None:
        """Write the head and place a raw frame for each of `raw`; keep what an earlier run
        of the same layout wrote."""
        head = _compress_head(manifest, signature, self.level)
        offset = aligned(len(head)) if raw else len(head)
        head += skippable(offset - len(head)) if raw else b""
        for item in raw:
            frame = RawFrame(item, offset, tar_header(item.path, item.size))
            self.frames[item.path] = frame
            offset = frame.stop
        self.tail_start = offset
        plan = hashlib.sha256(
            json.dumps(
                {
                    "writer": _WRITER_VERSION,
                    "manifest": hashlib.sha256(manifest).hexdigest(),
                    "head": len(head),
                    "max_size": self.file.max_size,
                    "raw": [(f.item.path, f.item.size, f.start) for f in self.frames.values()],
                }
            ).encode()
        ).hexdigest()
        state = self._read_state()
        if state.get("plan") != plan or not self.file.exists():
            self.file.discard()
            state = {"plan": plan, "done": [], "progress": {}}
        self._state = state
        self._save()
        self.file.allocate(self.tail_start)
        self.file.pwrite(head, 0)

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".partial")
        tmp.write_text(json.dumps(self._state))
        tmp.replace(self.state_path)

    def is_done(self, path: str) -> bool:
        """The frame of `path` is complete and its content verified."""
        with self._lock:
            return path in self._state["done"]

    def _record(self, path: str, progress: int | None) -> None:
        with self._lock:
            if progress is None:
                self._state["progress"].pop(path, None)
                self._state["done"].append(path)
            elif progress:
                self._state["progress"][path] = progress
            else:
                self._state["progress"].pop(path, None)
            self._save()

    def sink(self, path: str) -> RawSink:
        """Where the download of `path` writes."""
        return RawSink(self, self.frames[path])

    # --- tail -------------------------------------------------------------------------------

    def tail(self) -> TailWriter:
        """The writer of the compressed members after the raw frames."""
        return TailWriter(self)

    def finish(self, length: int) -> list[Path]:
        """Everything is written: give the file (parts) their final names."""
        parts = self.file.finish(length)
        self.state_path.unlink(missing_ok=True)
        return parts

    def close(self) -> None:
        """Close the file, keeping it (and the state) to resume from."""
        self.file.close()


def _compress_head(manifest: bytes, signature: bytes, level: int) -> bytes:
    chunks: list[bytes] = []

    class _Collect:
        def write(self, data: bytes) -> int:
            chunks.append(bytes(data))
            return len(data)

    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
    with compressor.stream_writer(cast(BinaryIO, _Collect()), closefd=False) as zout:
        tar = TarWriter(cast(BinaryIO, zout))
        tar.add_bytes(MANIFEST_NAME, manifest)
        tar.add_bytes(SIGNATURE_NAME, signature)
    return b"".join(chunks)


class TailWriter:
    """Compressed members appended after the raw frames; `close` ends the archive and
    returns the bundle's total length."""

    def __init__(self, writer: BundleWriter) -> None:
        self._sink = _SequentialSink(writer.file, writer.tail_start)
        compressor = zstandard.ZstdCompressor(level=writer.level, threads=-1, write_checksum=True)
        self._zout = compressor.stream_writer(cast(BinaryIO, self._sink), closefd=False)
        self._tar = TarWriter(cast(BinaryIO, self._zout))

    def add_file(self, name: str, path: Path, size: int) -> None:
        """A member copied from a file of the work folder."""
        self._tar.add_file(name, path, size)

    def close(self) -> int:
        """End the archive; the logical length of the bundle."""
        self._tar.close()
        self._zout.flush(zstandard.FLUSH_FRAME)
        return self._sink.offset


class RawSink:
    """A download written into its raw frame (see `BlobSink`): the frame's bytes (block
    headers and content) gather in a page-aligned buffer, whose whole pages go to the file
    past the page cache; the frame owns the pages from its start to `RawFrame.stop`."""

    def __init__(self, writer: BundleWriter, frame: RawFrame) -> None:
        self.writer, self.frame = writer, frame
        self._stage: mmap.mmap | None = None
        self._base = frame.start  # the file offset of the buffer's first byte (aligned)
        self._pos = 0  # bytes in the buffer
        self._content = 0  # content bytes written
        self._fill = 0  # bytes of the current block filled (after its header)
        self._index = 0  # the current block
        self._recorded = 0
        # How much a resumed build may have to fetch again, against how often the state file
        # is rewritten: an eighth of the blob, between one block and 64 MiB.
        self._every = min(_RECORD_MAX, max(BLOCK_MAX, frame.item.size // 8))

    def resume(self) -> tuple[int, Any]:
        """Content bytes already in the frame (re-hashed from it), and their hash."""
        hasher = hashlib.sha256()
        frame, path = self.frame, self.frame.item.path
        with self.writer._lock:
            progress = int(self.writer._state["progress"].get(path, 0))
        hlen = len(frame.header)
        blocks = progress // BLOCK_MAX if progress % BLOCK_MAX == 0 else 0
        good = 0
        for k in range(blocks):
            data = self.writer.file.pread(frame.block_at(k), 3 + BLOCK_MAX)
            if len(data) != 3 + BLOCK_MAX or data[:3] != frame.block_header(k):
                break  # not what this run wrote: take the blob from its start
            hasher.update(memoryview(data)[3 + (hlen if k == 0 else 0) :])
            good = k + 1
        if good < blocks or good == 0:
            self._start(0)
            return 0, hashlib.sha256()
        self._start(good)
        return good * BLOCK_MAX - hlen, hasher

    def _start(self, block: int) -> None:
        """Go on from the start of `block` (what comes before it is in the file)."""
        frame = self.frame
        self._index, self._fill = block, 0
        self._content = max(0, block * BLOCK_MAX - len(frame.header))
        self._recorded = block * BLOCK_MAX
        self._pos = 0
        if block == 0:
            self._base = frame.start
            self._emit(STORED_FRAME_HEADER)
            self._put(frame.header)
            return
        # The page the block starts in is rewritten whole: its head comes from the file.
        at = frame.block_at(block)
        self._base = at - at % ALIGN
        self._emit(self.writer.file.pread(self._base, at - self._base))

    def restart(self) -> None:
        """Throw away what the frame holds: the content comes again from its start."""
        self.writer._record(self.frame.item.path, 0)
        self._start(0)

    def _emit(self, data: bytes | memoryview) -> None:
        """Append the frame's next bytes to the buffer, writing whole pages when it fills."""
        if self._stage is None:
            self._stage = mmap.mmap(-1, _STAGE)
        view = memoryview(data)
        while view:
            n = min(len(view), _STAGE - self._pos)
            self._stage[self._pos : self._pos + n] = view[:n]
            self._pos += n
            view = view[n:]
            if self._pos >= _FLUSH:
                self._write_pages()

    def _write_pages(self) -> None:
        """Write the buffer's whole pages; keep the rest (less than a page) at its start."""
        if self._stage is None:
            return
        n = self._pos - self._pos % ALIGN
        if not n:
            return
        with memoryview(self._stage) as view:
            self.writer.file.write_pages(view[:n], self._base)
        self._stage.move(0, n, self._pos - n)
        self._base += n
        self._pos -= n
        # Record the blocks now wholly in the file, every `_every` bytes.
        frame = self.frame
        done = min(frame.blocks, (self._base - frame.block_at(0)) // (3 + BLOCK_MAX))
        if done < frame.blocks and done * BLOCK_MAX - self._recorded >= self._every:
            self._recorded = done * BLOCK_MAX
            self.writer._record(frame.item.path, self._recorded)

    def _put(self, data: bytes | memoryview) -> None:
        """Content (decompressed) bytes, each block behind its header."""
        view = memoryview(data)
        while view:
            if self._fill == 0:
                if self._index >= self.frame.blocks:
                    raise BadInputError(f"{self.frame.item.name}: more bytes than its frame")
                self._emit(self.frame.block_header(self._index))
            n = min(len(view), BLOCK_MAX - self._fill)
            self._emit(view[:n])
            self._fill += n
            view = view[n:]
            if self._fill == BLOCK_MAX:
                self._index, self._fill = self._index + 1, 0

    def write(self, chunk: bytes | memoryview) -> None:
        """The next bytes of the content (never past its declared size: the next frame)."""
        if self._content + len(chunk) > self.frame.item.size:
            raise BadInputError(
                f"{self.frame.item.name}: more bytes than its {self.frame.item.size}"
            )
        self._content += len(chunk)
        self._put(chunk)

    def commit(self) -> None:
        """The content is complete and its digest matched: pad, close the frame (and the
        skippable frame after it), write, record."""
        frame = self.frame
        pad = -frame.item.size % BLOCK
        if pad:
            self._put(bytes(pad))
        if (
            self._index * BLOCK_MAX + self._fill != frame.content_size
            or self._content != frame.item.size
        ):
            raise BadInputError(f"{frame.item.name}: {self._content} bytes, not {frame.item.size}")
        end = frame.start + frame.length
        if self._base + self._pos != end:
            raise BadInputError(f"{frame.item.name}: the frame does not end where it should")
        self._emit(skippable(frame.stop - end))
        self._write_pages()
        self._release()
        self.writer._record(frame.item.path, None)

    def discard(self) -> None:
        """The content did not match its digest: nothing of it counts."""
        self.writer._record(self.frame.item.path, 0)
        self._release()

    def close(self) -> None:
        """The fetch ended: what is held in whole pages goes to the file (a resumed build
        starts from it); the buffer is let go once the frame is complete or thrown away."""
        if self._stage is not None and self._pos:
            self._write_pages()

    def _release(self) -> None:
        if self._stage is not None:
            self._stage.close()
            self._stage, self._pos = None, 0
