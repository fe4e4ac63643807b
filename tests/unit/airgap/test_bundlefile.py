"""The bundle written in place: raw frames filled by downloads in any order, a compressed tail,
parts, resume from what an interrupted build wrote; standard tools read the result."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import mmap
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from installer.airgap.archive import bundle_parts, verify_bundle
from installer.airgap.bundlefile import ALIGN, BLOCK_MAX, STATE_NAME, BundleWriter
from installer.airgap.manifest import (
    BundleItem,
    BundleManifest,
    load_private_key,
    load_public_key,
    new_manifest,
    sign,
    write_keypair,
)
from installer.airgap.tarstream import BLOCK
from installer.errors import BadInputError

BIG = os.urandom(20 * BLOCK_MAX + 777)  # more than a raw sink holds before it writes
SMALL = b"tiny layer"
LOCAL = {"charts/c-1.tgz": b"chart" * 3000, "oci/index.json": b'{"schemaVersion": 2}'}


def _item(path: str, data: bytes, kind: str = "blob") -> BundleItem:
    digest = hashlib.sha256(data).hexdigest()
    name = f"sha256:{digest}" if kind == "blob" else path.rsplit("/", 1)[-1]
    return BundleItem(kind=kind, name=name, path=path, size=len(data), sha256=digest)


RAW = {
    f"oci/blobs/sha256/{hashlib.sha256(BIG).hexdigest()}": BIG,
    f"oci/blobs/sha256/{hashlib.sha256(SMALL).hexdigest()}": SMALL,
}


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    write_keypair(private, public)
    return private, public


MANIFESTS: dict[tuple[Path, str], BundleManifest] = {}
"""One manifest per test and version: a re-run signs the same bytes (as `build` does)."""


def _setup(tmp_path: Path, version: str = "1") -> tuple[Path, BundleManifest, list[BundleItem]]:
    stage = tmp_path / "stage"
    for rel, data in LOCAL.items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_bytes(data)
    raw = [_item(p, d) for p, d in RAW.items()]
    items = [*raw, *(_item(p, d, "chart") for p, d in LOCAL.items())]
    items.sort(key=lambda i: i.path)
    key = (tmp_path, version)
    if key not in MANIFESTS:
        MANIFESTS[key] = new_manifest(source={}, platform_version=version, images=[], items=items)
    return stage, MANIFESTS[key], raw


def _writer(
    tmp_path: Path, keys: tuple[Path, Path], max_size: int | None = None, version: str = "1"
) -> tuple[BundleWriter, list[BundleItem], Path]:
    stage, manifest, raw = _setup(tmp_path, version)
    writer = BundleWriter(tmp_path / "b.tar.zst", stage, max_size=max_size, level=3)
    data = manifest.to_bytes()
    writer.start(data, sign(data, load_private_key(keys[0])), raw)
    return writer, raw, stage


def _fill(writer: BundleWriter, item: BundleItem, start: int = 0, step: int = 50_000) -> None:
    sink = writer.sink(item.path)
    have, _ = sink.resume()
    assert have == start
    data = RAW[item.path]
    for pos in range(start, len(data), step):
        sink.write(data[pos : pos + step])
    sink.commit()


def _finish(writer: BundleWriter, stage: Path) -> list[Path]:
    tail = writer.tail()
    for rel, data in LOCAL.items():
        tail.add_file(rel, stage / rel, len(data))
    return writer.finish(tail.close())


def _check(tmp_path: Path, out: Path, keys: tuple[Path, Path]) -> None:
    dest = tmp_path / "x"
    dest.mkdir(exist_ok=True)
    verify_bundle(out, load_public_key(keys[1]), extract_to=dest)
    for rel, data in {**RAW, **LOCAL}.items():
        assert (dest / rel).read_bytes() == data
    # Any zstd decoder and tar reader take it as one archive.
    raw = b"".join(p.read_bytes() for p in bundle_parts(out))
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True)
    plain = reader.read()
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        names = tar.getnames()
        assert set(names) == {"manifest.json", "manifest.json.sig", *RAW, *LOCAL}
        member = tar.extractfile(next(n for n in RAW if RAW[n] is BIG))
        assert member is not None and member.read() == BIG


def test_frames_filled_in_any_order_read_as_one_archive(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    writer, raw, stage = _writer(tmp_path, keys)
    for item in reversed(raw):
        _fill(writer, item, step=BLOCK_MAX)  # block-sized writes land on block boundaries
    parts = _finish(writer, stage)
    assert parts == [tmp_path / "b.tar.zst"]
    assert not (stage / STATE_NAME).exists()
    assert not list(tmp_path.glob("*.partial"))
    _check(tmp_path, parts[0], keys)


def test_parts_cut_through_frames(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    writer, raw, stage = _writer(tmp_path, keys, max_size=100_000)
    for item in raw:
        _fill(writer, item, step=33_333)
    parts = _finish(writer, stage)
    assert len(parts) > 5 and all(p.stat().st_size <= 100_000 for p in parts)
    assert bundle_parts(tmp_path / "b.tar.zst") == parts
    _check(tmp_path, tmp_path / "b.tar.zst", keys)


def test_interrupted_build_resumes_from_what_the_file_holds(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    writer, raw, _ = _writer(tmp_path, keys, max_size=300_000)
    big = next(i for i in raw if i.size == len(BIG))
    sink = writer.sink(big.path)
    assert sink.resume()[0] == 0
    half = len(BIG) // 2
    sink.write(BIG[:half])
    writer.close()  # killed: no commit, no finish

    writer, raw, stage = _writer(tmp_path, keys, max_size=300_000)
    sink = writer.sink(big.path)
    have, hasher = sink.resume()
    # A block boundary the state recorded, no further than what was written.
    assert 0 < have <= half
    assert hasher.hexdigest() == hashlib.sha256(BIG[:have]).hexdigest()
    sink.write(BIG[have:])
    sink.commit()
    _fill(writer, next(i for i in raw if i.size == len(SMALL)))
    _check(tmp_path, _finish(writer, stage)[0], keys)


def test_a_completed_frame_is_kept_and_another_layout_starts_over(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    writer, raw, _ = _writer(tmp_path, keys)
    _fill(writer, raw[0])
    writer.close()
    again, _, _ = _writer(tmp_path, keys)
    assert again.is_done(raw[0].path)
    again.close()
    other, _, _ = _writer(tmp_path, keys, version="2")  # another manifest: another layout
    assert not other.is_done(raw[0].path)
    assert other.sink(raw[0].path).resume()[0] == 0


def test_corrupt_block_written_earlier_is_fetched_again(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    writer, raw, _ = _writer(tmp_path, keys)
    big = next(i for i in raw if i.size == len(BIG))
    sink = writer.sink(big.path)
    sink.resume()
    sink.write(BIG[: 12 * BLOCK_MAX])
    writer.close()  # killed
    writer, raw, _ = _writer(tmp_path, keys)
    assert writer.sink(big.path).resume()[0] > 0  # the blocks written so far count
    writer.file.pwrite(b"\xff\xff\xff", writer.frames[big.path].block_at(1))
    writer.close()
    writer, raw, _ = _writer(tmp_path, keys)
    assert writer.sink(big.path).resume()[0] == 0  # not the header this run wrote


def test_a_download_cannot_write_past_its_frame(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    writer, raw, _ = _writer(tmp_path, keys)
    small = next(i for i in raw if i.size == len(SMALL))
    sink = writer.sink(small.path)
    sink.resume()
    with pytest.raises(BadInputError, match="more bytes"):
        sink.write(SMALL + b"!")


def test_non_zero_padding_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    writer, raw, stage = _writer(tmp_path, keys)
    for item in raw:
        _fill(writer, item)
    small = next(i for i in raw if i.size == len(SMALL))
    frame = writer.frames[small.path]
    # The padding after the content, in the frame's only block.
    writer.file.pwrite(b"X", frame.block_at(0) + 3 + len(frame.header) + small.size + 5)
    out = _finish(writer, stage)[0]
    with pytest.raises(BadInputError, match="non-zero"):
        verify_bundle(out, load_public_key(keys[1]))
    assert BLOCK > 5


def _resident_pages(path: Path) -> list[bool]:
    """Which pages of `path` are in the page cache (`mincore`, which reads nothing)."""
    size = path.stat().st_size
    libc = ctypes.CDLL(None, use_errno=True)
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_COPY) as m:
        address = ctypes.addressof(ctypes.c_char.from_buffer(m))
        vec = (ctypes.c_ubyte * (-(-size // mmap.PAGESIZE)))()
        if libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size), vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore")
        return [bool(v & 1) for v in vec]


def test_raw_frames_own_whole_pages_written_past_the_page_cache(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    writer, raw, stage = _writer(tmp_path, keys)
    for item in raw:
        _fill(writer, item, step=100_000)
    frames = sorted(writer.frames.values(), key=lambda f: f.start)
    # The frames went to the disk, not into the page cache: none of their pages is resident.
    resident = _resident_pages(writer.file.partial(0))
    for frame in frames:
        assert not any(resident[frame.start // ALIGN : frame.stop // ALIGN]), frame.item.path
    fd = os.open(writer.file.partial(0), os.O_RDONLY)
    try:
        for frame in frames:
            assert frame.start % ALIGN == 0
            # Between the frame's end and the next page boundary: a skippable frame.
            gap = os.pread(fd, frame.stop - frame.start - frame.length, frame.start + frame.length)
            assert gap[:4] == b"\x50\x2a\x4d\x18" and set(gap[8:]) <= {0}
    finally:
        os.close(fd)
    assert writer.file.direct
    _check(tmp_path, _finish(writer, stage)[0], keys)


def test_parts_on_page_boundaries_are_written_past_the_cache(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    writer, raw, stage = _writer(tmp_path, keys, max_size=64 * ALIGN)
    for item in raw:
        _fill(writer, item, step=77_777)
    assert writer.file.direct
    parts = _finish(writer, stage)
    assert len(parts) > 5
    _check(tmp_path, tmp_path / "b.tar.zst", keys)


def test_a_file_system_without_direct_writes_gets_the_same_bundle(
    tmp_path: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Such a file system refuses the open flag with EINVAL (tmpfs did before Linux 6.6).
    real_open = os.open

    def no_direct(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", no_direct)
    writer, raw, stage = _writer(tmp_path, keys)
    for item in raw:
        _fill(writer, item)
    assert not writer.file.direct
    _check(tmp_path, _finish(writer, stage)[0], keys)


def test_a_flipped_byte_in_an_alignment_gap_is_refused(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    writer, raw, stage = _writer(tmp_path, keys)
    for item in raw:
        _fill(writer, item)
    frame = min(writer.frames.values(), key=lambda f: f.start)
    end = frame.start + frame.length
    assert frame.stop - end > 8 + 1
    out = _finish(writer, stage)[0]
    data = bytearray(out.read_bytes())
    data[end + 8] ^= 0x01  # the first byte inside the skippable frame after the first layer
    out.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match="skippable"):
        verify_bundle(out, load_public_key(keys[1]))


@pytest.mark.parametrize("max_size", [None, 10_000_000], ids=["one-file", "parts"])
def test_passes_over_a_written_bundle_each_read_little_more_than_their_share(
    tmp_path: Path, keys: tuple[Path, Path], max_size: int | None
) -> None:
    """Two passes that split the layers between them (as a load's do) each jump over the
    other's raw frames: together they read the bundle about once, and verify all of it."""
    layers = [os.urandom(24 * 1024 * 1024 + n) for n in (1, 2, 3)]  # reads are of 4 MiB
    stage = tmp_path / "stage"
    stage.mkdir()
    raw = [_item(f"oci/blobs/sha256/{hashlib.sha256(d).hexdigest()}", d) for d in layers]
    manifest = new_manifest(source={}, platform_version="1", images=[], items=raw)
    out = tmp_path / "b.tar.zst"
    writer = BundleWriter(out, stage, max_size=max_size, level=3)
    data = manifest.to_bytes()
    writer.start(data, sign(data, load_private_key(keys[0])), raw)
    for item, layer in zip(raw, layers, strict=True):
        sink = writer.sink(item.path)
        sink.resume()
        sink.write(layer)
        sink.commit()
    at = writer.frames[raw[1].path].block_at(20) + 3  # inside the second layer's frame
    size = sum(p.stat().st_size for p in writer.finish(writer.tail().close()))
    key = load_public_key(keys[1])
    first = {raw[0].path}
    one = verify_bundle(out, key, mine=lambda i: i.path in first)
    two = verify_bundle(out, key, mine=lambda i: i.path not in first)
    assert one.read_bytes + two.read_bytes < size * 1.5
    assert one.read_bytes < size - len(layers[0])
    # A jump skips nothing its pass hashes: a flipped byte in a layer fails that layer's pass.
    for part in bundle_parts(out):
        if at < part.stat().st_size:
            with part.open("r+b") as handle:
                handle.seek(at)
                byte = handle.read(1)[0]
                handle.seek(at)
                handle.write(bytes([byte ^ 1]))
            break
        at -= part.stat().st_size
    verify_bundle(out, key, mine=lambda i: i.path in first)
    with pytest.raises(BadInputError, match="sha256 mismatch"):
        verify_bundle(out, key, mine=lambda i: i.path not in first)
