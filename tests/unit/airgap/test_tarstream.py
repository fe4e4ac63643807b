"""The bundle reader's stored frames: content handed out as views of the read buffers (no
copy), views that stay valid while the next is read, and refusal of what a stored frame may
not hold."""

from __future__ import annotations

import io
import mmap
import os
import struct
import tarfile
from pathlib import Path

import pytest
import zstandard

from installer.airgap.tarstream import CHUNK, STORED_FRAME_HEADER, TarReader
from installer.errors import BadInputError

BLOCK_MAX = 128 * 1024


def stored(data: bytes) -> bytes:
    """`data` as one stored frame (full blocks, then the last)."""
    out = bytearray(STORED_FRAME_HEADER)
    blocks = [data[i : i + BLOCK_MAX] for i in range(0, len(data), BLOCK_MAX)] or [b""]
    for n, block in enumerate(blocks):
        out += struct.pack("<I", (len(block) << 3) | int(n == len(blocks) - 1))[:3] + block
    return bytes(out)


def skippable(length: int) -> bytes:
    return struct.pack("<II", 0x184D2A50, length) + bytes(length)


def member(name: str, content: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info.tobuf(tarfile.PAX_FORMAT) + content + bytes(-len(content) % 512)


def write(tmp_path: Path, *frames: bytes) -> Path:
    path = tmp_path / "b.tar.zst"
    path.write_bytes(b"".join(frames))
    return path


def test_stored_content_comes_as_views_that_outlive_the_next_read(tmp_path: Path) -> None:
    content = os.urandom(3 * CHUNK + 12345)
    data = member("big", content)
    cut = len(data) // 2
    # The member's content goes on in a second stored frame behind a skippable frame larger
    # than all the read buffers: many reads happen while the reader holds its last view.
    path = write(
        tmp_path,
        stored(data[:cut]),
        skippable(5 * CHUNK),
        stored(data[cut:]),
        zstandard.ZstdCompressor().compress(bytes(1024)),
    )
    reader = TarReader([path], cap=10 * CHUNK)
    found = reader.next()
    assert found is not None and found.size == len(content)
    got, held, held_bytes = bytearray(), None, b""
    for view in reader.content():
        assert isinstance(view.obj, mmap.mmap)  # a view of what was read: no copy
        if held is not None:
            assert held.tobytes() == held_bytes  # still what it was when handed out
            got += held
        held, held_bytes = view, view.tobytes()
    assert held is not None
    got += held
    assert bytes(got) == content
    assert reader.next() is None
    reader.close()


def test_a_stored_frame_with_a_compressed_block_is_refused(tmp_path: Path) -> None:
    data = member("x", b"abc")
    frame = bytearray(stored(data))
    frame[len(STORED_FRAME_HEADER)] |= 0b100  # block type 2: compressed
    reader = TarReader([write(tmp_path, bytes(frame))], cap=10**6)
    with pytest.raises(BadInputError, match="another kind of block"):
        reader.next()


@pytest.mark.parametrize("cut", [3, len(STORED_FRAME_HEADER) + 2, 700])
def test_a_truncated_stored_frame_is_refused(tmp_path: Path, cut: int) -> None:
    frame = stored(member("x", os.urandom(2000)))
    reader = TarReader([write(tmp_path, frame[:cut])], cap=10**6)
    with pytest.raises(BadInputError, match="truncated"):
        while reader.next() is not None:
            list(reader.content())


def test_standard_tools_read_the_same_stream(tmp_path: Path) -> None:
    content = os.urandom(300_000)
    path = write(
        tmp_path,
        stored(member("a", content)),
        skippable(100),
        zstandard.ZstdCompressor().compress(member("b", b"hello") + bytes(1024)),
    )
    plain = (
        zstandard.ZstdDecompressor()
        .stream_reader(io.BytesIO(path.read_bytes()), read_across_frames=True)
        .read()
    )
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        extracted = tar.extractfile("a")
        assert extracted is not None and extracted.read() == content


@pytest.mark.parametrize(
    ("where", "flip"),
    [(0, 0x01), (6, 0x10), (20, 0x01)],
    ids=["magic", "length", "content"],
)
def test_a_flipped_byte_in_a_skippable_frame_is_refused(
    tmp_path: Path, where: int, flip: int
) -> None:
    gap = bytearray(skippable(100))
    gap[where] ^= flip
    path = write(tmp_path, stored(member("a", b"x" * 1000)), bytes(gap), stored(bytes(1024)))
    reader = TarReader([path], cap=10**6)
    with pytest.raises(BadInputError):
        while reader.next() is not None:
            list(reader.content())
        reader.finish()
