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


def stored(data: bytes, size: int = BLOCK_MAX) -> bytes:
    """`data` as one stored frame (full blocks of `size` bytes, then the last; the writer's
    blocks are of `BLOCK_MAX`)."""
    out = bytearray(STORED_FRAME_HEADER)
    blocks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
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


def _three_members(big_frame: bytes) -> list[bytes]:
    return [
        zstandard.ZstdCompressor().compress(member("before", b"b" * 100)),
        skippable(200),
        big_frame,
        skippable(300),
        stored(member("after", b"after" * 1000)),
        zstandard.ZstdCompressor().compress(bytes(1024)),
    ]


def _split(tmp_path: Path, data: bytes, sizes: list[int]) -> list[Path]:
    parts, pos = [], 0
    for n, size in enumerate([*sizes, len(data)]):
        part = tmp_path / f"p{n}"
        part.write_bytes(data[pos : pos + size])
        parts.append(part)
        pos += size
    return parts


def _read_passing_over_big(parts: list[Path]) -> TarReader:
    """Reads every member but `big`, which it passes over; checks what it reads."""
    reader = TarReader(parts, cap=100 * CHUNK)
    names = []
    while (found := reader.next()) is not None:
        names.append(found.name)
        if found.name == "big":
            reader.pass_over()
        else:
            content = reader.read(10**6)
            assert content == {"before": b"b" * 100, "after": b"after" * 1000}[found.name]
    assert names == ["before", "big", "after"]
    reader.finish()
    reader.close()
    return reader


BIG = os.urandom(6 * CHUNK + 1234)


@pytest.mark.parametrize(
    "sizes",
    [[], [5 * CHUNK + 777], [CHUNK + 1, 3 * CHUNK - 5, 4000]],
    ids=["one-file", "parts-cut-in-the-frame", "many-parts"],
)
def test_a_stored_frame_laid_out_as_the_writer_does_is_jumped_over(
    tmp_path: Path, sizes: list[int]
) -> None:
    """Several readers over one bundle each read little more than their own share: a member
    that is the rest of a stored frame of full blocks is jumped over, not read, in one file or
    across the parts of a split bundle, and what follows it is read as before."""
    data = b"".join(_three_members(stored(member("big", BIG))))
    reader = _read_passing_over_big(_split(tmp_path, data, sizes))
    assert reader.read_bytes < len(data) - len(BIG) + 3 * CHUNK


def test_a_stored_frame_laid_out_otherwise_is_read_after_all(tmp_path: Path) -> None:
    """Blocks smaller than the writer's: the jump finds no frame where it lands, goes back,
    and the member is read through (checked framing, nothing lost)."""
    data = b"".join(_three_members(stored(member("big", BIG), 64 * 1024)))
    reader = _read_passing_over_big(_split(tmp_path, data, [2 * CHUNK + 3]))
    assert reader.read_bytes >= len(data)
