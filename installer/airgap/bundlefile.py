"""The bundle file written in place, so that downloads go straight into it (no copy on disk).

The compressed stream (one file, or the parts `--max-size` cuts it into) is laid out as:

- head: one zstd frame holding `manifest.json` and its signature;
- raw: one zstd frame per downloaded blob whose content is already compressed (gzip or zstd
  layers): its tar header, content and padding in stored ("raw") zstd blocks. Its size follows
  from the blob's size alone, so every such frame has a fixed place in the file before any byte
  is downloaded, and the downloads write into their frames in parallel, as they arrive;
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
import os
import struct
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import zstandard

from installer.airgap.manifest import MANIFEST_NAME, SIGNATURE_NAME, BundleItem
from installer.airgap.tarstream import BLOCK, TarWriter
from installer.errors import BadInputError, EnvironmentProblem

MAGIC = b"\x28\xb5\x2f\xfd"
BLOCK_MAX = 128 * 1024
"""zstd's largest block, and the window the raw frames declare (so decoders need 128 KiB)."""
_FRAME_HEADER = MAGIC + bytes([0x00, 7 << 3])  # no size, no checksum; window 2**(10+7)
_RECORD_MAX = 64 * 1024 * 1024
STATE_NAME = "bundle-state.json"
_WRITER_VERSION = 1


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
        return len(_FRAME_HEADER) + self.content_size + 3 * self.blocks

    def block_at(self, k: int) -> int:
        """File offset of block `k`'s header."""
        return self.start + len(_FRAME_HEADER) + k * (3 + BLOCK_MAX)

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
        self._lock = threading.Lock()

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

    def pwritev(self, pieces: list[bytes | memoryview], offset: int) -> None:
        """Write `pieces` one after the other from logical `offset`, in one call when they
        fall in one part."""
        total = sum(len(p) for p in pieces)
        spans = self._spans(offset, total)
        if len(spans) == 1 and os.pwritev(self._fd(spans[0][0]), pieces, spans[0][1]) == total:
            return
        self.pwrite(b"".join(pieces), offset)  # across parts (or written short): in one piece

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
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

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
        offset = len(head)
        for item in raw:
            frame = RawFrame(item, offset, tar_header(item.path, item.size))
            self.frames[item.path] = frame
            offset += frame.length
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
    """A download written into its raw frame, block by block (see `BlobSink`)."""

    def __init__(self, writer: BundleWriter, frame: RawFrame) -> None:
        self.writer, self.frame = writer, frame
        self._block = bytearray(3 + BLOCK_MAX)
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
        self._index, self._fill = block, 0
        self._content = max(0, block * BLOCK_MAX - len(self.frame.header))
        self._recorded = block * BLOCK_MAX
        self._block[:3] = self.frame.block_header(block)
        if block == 0:
            self.writer.file.pwrite(_FRAME_HEADER, self.frame.start)
            self._put(self.frame.header)

    def restart(self) -> None:
        """Throw away what the frame holds: the content comes again from its start."""
        self.writer._record(self.frame.item.path, 0)
        self._start(0)

    def _put(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._fill == 0 and len(view) >= BLOCK_MAX and self._index < self.frame.blocks:
                view = self._whole_blocks(view)
                continue
            n = min(len(view), BLOCK_MAX - self._fill)
            self._block[3 + self._fill : 3 + self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == BLOCK_MAX:
                self._flush()

    def _whole_blocks(self, view: memoryview) -> memoryview:
        """Write the whole blocks at the start of `view` from it, with no copy; the rest."""
        frame, first = self.frame, self._index
        pieces: list[bytes | memoryview] = []
        while len(view) >= BLOCK_MAX and self._index < frame.blocks:
            pieces += [frame.block_header(self._index), view[:BLOCK_MAX]]
            view = view[BLOCK_MAX:]
            self._index += 1
        self.writer.file.pwritev(pieces, frame.block_at(first))
        self._index -= 1
        self._next()
        return view

    def _flush(self) -> None:
        """Write the current block; start the next."""
        self.writer.file.pwrite(
            memoryview(self._block)[: 3 + self._fill], self.frame.block_at(self._index)
        )
        self._next()

    def _next(self) -> None:
        """The current block is written: the next one starts empty."""
        frame = self.frame
        self._index += 1
        self._fill = 0
        if self._index < frame.blocks:
            self._block[:3] = frame.block_header(self._index)
            written = self._index * BLOCK_MAX
            if written - self._recorded >= self._every:
                self._recorded = written
                self.writer._record(frame.item.path, written)

    def write(self, chunk: bytes | memoryview) -> None:
        """The next bytes of the content (never past its declared size: the next frame)."""
        if self._content + len(chunk) > self.frame.item.size:
            raise BadInputError(
                f"{self.frame.item.name}: more bytes than its {self.frame.item.size}"
            )
        self._content += len(chunk)
        self._put(chunk)

    def commit(self) -> None:
        """The content is complete and its digest matched: pad, close the frame, record."""
        pad = -self.frame.item.size % BLOCK
        if pad:
            self._put(bytes(pad))
        if self._fill or self._index < self.frame.blocks:
            self._flush()
        if self._index != self.frame.blocks or self._content != self.frame.item.size:
            raise BadInputError(
                f"{self.frame.item.name}: {self._content} bytes, not {self.frame.item.size}"
            )
        self.writer._record(self.frame.item.path, None)

    def discard(self) -> None:
        """The content did not match its digest: nothing of it counts."""
        self.writer._record(self.frame.item.path, 0)

    def close(self) -> None:
        """Nothing open of its own (the file is the writer's)."""
