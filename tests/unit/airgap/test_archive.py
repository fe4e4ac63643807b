"""The bundle file: signed manifest first, every member checked; hostile bundles are refused."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from installer.airgap.archive import (
    CheckedChunks,
    Consumer,
    bundle_parts,
    bundle_size,
    read_head,
    verify_bundle,
    write_bundle,
)
from installer.airgap.manifest import (
    BundleItem,
    BundleManifest,
    load_private_key,
    load_public_key,
    new_manifest,
    sign,
    write_keypair,
)
from installer.errors import BadInputError, ExitCode


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "k.pem", tmp_path / "k.pub"
    write_keypair(private, public)
    assert private.stat().st_mode & 0o777 == 0o600
    return private, public


def _stage(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, BundleManifest]:
    stage = tmp_path / "stage"
    items = []
    for rel, data in files.items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_bytes(data)
        items.append(
            BundleItem(
                kind="wheel",
                name=rel.rsplit("/", 1)[-1],
                path=rel,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    manifest = new_manifest(source={}, platform_version="1", images=[], items=items)
    return stage, manifest


FILES = {"wheels/a-1-py3-none-any.whl": b"a" * 5000, "charts/b-1.tgz": bytes(range(256)) * 40}


@pytest.fixture
def bundle(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    stage, manifest = _stage(tmp_path, FILES)
    out = tmp_path / "b.tar.zst"
    signature = sign(manifest.to_bytes(), load_private_key(keys[0]))
    write_bundle(stage, manifest, signature, out)
    return out


def _refused(path: Path, pub: Path, fragment: str, extract: Path | None = None) -> None:
    with pytest.raises(BadInputError) as caught:
        verify_bundle(path, load_public_key(pub), extract_to=extract)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert fragment in caught.value.message


def test_good_bundle_verifies_and_extracts(
    tmp_path: Path, bundle: Path, keys: tuple[Path, Path]
) -> None:
    dest = tmp_path / "x"
    dest.mkdir()
    verified = verify_bundle(bundle, load_public_key(keys[1]), extract_to=dest)
    assert {i.path for i in verified.manifest.items} == set(FILES)
    for rel, data in FILES.items():
        assert (dest / rel).read_bytes() == data
    assert not list(dest.rglob("*.partial"))


def test_flipped_byte_is_refused(tmp_path: Path, bundle: Path, keys: tuple[Path, Path]) -> None:
    data = bytearray(bundle.read_bytes())
    for offset in (len(data) // 3, len(data) // 2, len(data) - 10):
        broken = tmp_path / f"flip{offset}.tar.zst"
        copy = bytearray(data)
        copy[offset] ^= 0x01
        broken.write_bytes(bytes(copy))
        _refused(broken, keys[1], "bundle:")


def test_truncated_bundle_is_refused(tmp_path: Path, bundle: Path, keys: tuple[Path, Path]) -> None:
    data = bundle.read_bytes()
    for cut in (len(data) // 4, len(data) // 2, len(data) - 4):
        short = tmp_path / f"cut{cut}.tar.zst"
        short.write_bytes(data[:cut])
        _refused(short, keys[1], "bundle:")


def test_wrong_key_is_refused(tmp_path: Path, bundle: Path) -> None:
    other, other_pub = tmp_path / "o.pem", tmp_path / "o.pub"
    write_keypair(other, other_pub)
    _refused(bundle, other_pub, "signature does not match")
    with pytest.raises(BadInputError):
        read_head(bundle, load_public_key(other_pub))


def _craft(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    path.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _signed_head(manifest: BundleManifest, key: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    data = manifest.to_bytes()
    return [
        _file("manifest.json", data),
        _file("manifest.json.sig", sign(data, load_private_key(key))),
    ]


def test_unsigned_bundle_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    _, manifest = _stage(tmp_path, FILES)
    path = _craft(tmp_path / "u.tar.zst", [_file("manifest.json", manifest.to_bytes())])
    _refused(path, keys[1], "unsigned")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("../evil", tarfile.REGTYPE),
        ("/etc/evil", tarfile.REGTYPE),
        ("wheels/../../evil", tarfile.REGTYPE),
        ("wheels/link", tarfile.SYMTYPE),
        ("wheels/hard", tarfile.LNKTYPE),
        ("wheels/dev", tarfile.CHRTYPE),
        ("wheels/fifo", tarfile.FIFOTYPE),
    ],
)
def test_hostile_members_are_refused(
    tmp_path: Path, keys: tuple[Path, Path], name: str, kind: bytes
) -> None:
    _, manifest = _stage(tmp_path, FILES)
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info.linkname = "../../../etc/passwd"
    payload = b"x" * 10 if kind == tarfile.REGTYPE else b""
    info.size = len(payload)
    path = _craft(tmp_path / "h.tar.zst", [*_signed_head(manifest, keys[0]), (info, payload)])
    dest = tmp_path / "dest"
    dest.mkdir()
    _refused(path, keys[1], "bundle:", extract=dest)
    assert list(dest.rglob("*")) == []
    assert not (tmp_path / "evil").exists()


def test_unsafe_path_in_signed_manifest_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    _, manifest = _stage(tmp_path, FILES)
    data = manifest.to_bytes().replace(b'"charts/b-1.tgz"', b'"../charts/b-1.tgz"')
    head = [
        _file("manifest.json", data),
        _file("manifest.json.sig", sign(data, load_private_key(keys[0]))),
    ]
    _refused(_craft(tmp_path / "p.tar.zst", head), keys[1], "unsafe path")


def test_member_larger_than_declared_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    _, manifest = _stage(tmp_path, FILES)
    big = _file("charts/b-1.tgz", b"\0" * 10_000_000)
    path = _craft(tmp_path / "bomb.tar.zst", [*_signed_head(manifest, keys[0]), big])
    assert path.stat().st_size < 100_000  # compresses to almost nothing: a size bomb
    _refused(path, keys[1], "manifest says")


def test_unlisted_member_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    _, manifest = _stage(tmp_path, FILES)
    extra = _file("wheels/extra.whl", b"zz")
    path = _craft(tmp_path / "x.tar.zst", [*_signed_head(manifest, keys[0]), extra])
    _refused(path, keys[1], "not listed")


def _planted_link(tmp_path: Path) -> tuple[Path, Path]:
    """A work folder whose `wheels` is a link to a folder outside it: (work, outside)."""
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "wheels").symlink_to(outside)
    return dest, outside


def test_symlink_in_work_folder_cannot_redirect_writes(
    tmp_path: Path, bundle: Path, keys: tuple[Path, Path]
) -> None:
    dest, outside = _planted_link(tmp_path)
    _refused(bundle, keys[1], "outside", extract=dest)
    assert list(outside.iterdir()) == []


def test_a_planted_link_gets_no_folder_made_outside(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    """A member deeper than the planted link: its folders are not made through the link (the
    containment check comes before any folder is made)."""
    stage, manifest = _stage(tmp_path, {"wheels/deep/er/a-1-py3-none-any.whl": b"w" * 100})
    nested = tmp_path / "nested.tar.zst"
    write_bundle(stage, manifest, sign(manifest.to_bytes(), load_private_key(keys[0])), nested)
    dest, outside = _planted_link(tmp_path)
    _refused(nested, keys[1], "outside", extract=dest)
    assert list(outside.iterdir()) == []
    # Without the link the same bundle extracts, its folders made inside.
    (dest / "wheels").unlink()
    verify_bundle(nested, load_public_key(keys[1]), extract_to=dest)
    assert (dest / "wheels" / "deep" / "er" / "a-1-py3-none-any.whl").read_bytes() == b"w" * 100


def test_parts_split_and_join(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    import os

    files = {"wheels/big-1-py3-none-any.whl": os.urandom(300_000)}
    stage, manifest = _stage(tmp_path, files)
    out = tmp_path / "p.tar.zst"
    signature = sign(manifest.to_bytes(), load_private_key(keys[0]))
    parts = write_bundle(stage, manifest, signature, out, max_size=100_000)
    assert len(parts) >= 3
    assert all(p.stat().st_size <= 100_000 for p in parts)
    assert bundle_parts(out) == parts == bundle_parts(parts[0])
    verify_bundle(out, load_public_key(keys[1]))
    parts[-2].unlink()
    _refused(out, keys[1], "bundle:")


def _checked(chunks: list[bytes], sha256: str) -> CheckedChunks:
    return CheckedChunks(iter(memoryview(c) for c in chunks), sha256, "oci/blobs/x", None)


def test_checked_chunks_hold_back_the_last_chunk_of_a_corrupted_member() -> None:
    good = [b"a" * 100, b"b" * 100, b"c" * 7]
    sha = hashlib.sha256(b"".join(good)).hexdigest()
    assert b"".join(bytes(c) for c in _checked(good, sha)) == b"".join(good)
    # A consumer streaming the member (a registry upload) never receives all of its bytes:
    # the mismatch is raised in place of the last chunk.
    received = []
    with pytest.raises(BadInputError, match="sha256 mismatch"):
        for chunk in _checked([*good[:2], b"C" * 7], sha):
            received.append(bytes(chunk))
    assert received == good[:2]


def test_checked_chunks_drain_checks_what_a_consumer_left() -> None:
    data = [b"x" * 50, b"y" * 50, b"z" * 50]
    chunks = _checked(data, hashlib.sha256(b"".join(data)).hexdigest())
    assert bytes(next(chunks)) == data[0]  # the consumer gave up after one chunk
    chunks.drain()
    bad = _checked(data, hashlib.sha256(b"other").hexdigest())
    next(bad)
    with pytest.raises(BadInputError, match="sha256 mismatch"):
        bad.drain()


def test_diverted_members_are_checked_and_not_extracted(
    tmp_path: Path, bundle: Path, keys: tuple[Path, Path]
) -> None:
    seen: dict[str, bytes] = {}

    def consume(chunks: CheckedChunks) -> None:
        seen[chunks.name] = b"".join(bytes(c) for c in chunks)

    def divert(item: BundleItem) -> Consumer | None:
        return consume if item.path == "charts/b-1.tgz" else None

    out = tmp_path / "out"
    out.mkdir()
    verify_bundle(bundle, load_public_key(keys[1]), extract_to=out, divert=divert)
    assert seen == {"charts/b-1.tgz": FILES["charts/b-1.tgz"]}
    assert not (out / "charts/b-1.tgz").exists()
    assert (out / "wheels/a-1-py3-none-any.whl").read_bytes() == FILES[
        "wheels/a-1-py3-none-any.whl"
    ]
    assert (out / ".verified").is_file()


def test_shared_passes_hash_only_their_members(
    tmp_path: Path, bundle: Path, keys: tuple[Path, Path]
) -> None:
    """Parallel passes each hash a share: a corrupted member fails only the pass that owns it,
    so the load needs every pass to succeed; no pass alone marks the folder verified."""
    key = load_public_key(keys[1])
    chart = "charts/b-1.tgz"
    moved: list[int] = []
    out = tmp_path / "out"
    out.mkdir()
    verify_bundle(
        bundle, key, extract_to=out, progress=moved.append, mine=lambda i: i.path != chart
    )
    assert not (out / chart).exists() and not (out / ".verified").exists()
    assert sum(moved) == len(FILES["wheels/a-1-py3-none-any.whl"])

    stage, manifest = _stage(tmp_path / "bad", FILES)
    (stage / chart).write_bytes(b"x" * len(FILES[chart]))  # same size, other bytes
    bad = tmp_path / "bad.tar.zst"
    write_bundle(stage, manifest, sign(manifest.to_bytes(), load_private_key(keys[0])), bad)
    verify_bundle(bad, key, mine=lambda i: i.path != chart)  # not its share: not hashed
    with pytest.raises(BadInputError, match="sha256 mismatch"):
        verify_bundle(bad, key, mine=lambda i: i.path == chart)


BOMB_CHECK = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from pathlib import Path
from installer.airgap.archive import verify_bundle
from installer.airgap.manifest import load_public_key
from installer.errors import BadInputError
try:
    verify_bundle(Path(sys.argv[1]), load_public_key(Path(sys.argv[2])))
    code = 0
except BadInputError as exc:
    print(exc.message)
    code = 2
except MemoryError:
    code = 9
# VmHWM, not ru_maxrss: at exec Linux folds the parent's peak (a pytest worker's, often
# above 300 MB) into the child's ru_maxrss; VmHWM belongs to this process's own memory.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("peak_mb", int(hwm.split()[1]) // 1024)
sys.exit(code)
"""


def test_a_decompression_bomb_is_refused_in_bounded_memory(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    """A signed head, then one zstd frame of 4 GiB of zeros (about 128 KiB on disk): refused
    with exit 2, the verifier never above 300 MB, whatever one read of the file holds."""
    _, manifest = _stage(tmp_path, FILES)
    path = _craft(tmp_path / "bomb.tar.zst", _signed_head(manifest, keys[0]))
    zeros = bytes(1 << 24)
    with (
        path.open("ab") as out,
        zstandard.ZstdCompressor(level=1).stream_writer(out, closefd=False) as frame,
    ):
        for _ in range(256):
            frame.write(zeros)
    assert path.stat().st_size < 1_000_000
    proc = subprocess.run(
        [sys.executable, "-c", BOMB_CHECK, str(path), str(keys[1])],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
    peak = int(proc.stdout.split("peak_mb")[1])
    assert peak < 300, proc.stdout


def test_the_size_of_a_split_bundle_counts_every_part(tmp_path: Path) -> None:
    whole = tmp_path / "site.tar.zst"
    for i, size in enumerate((1000, 1000, 17)):
        (tmp_path / f"site.tar.zst.{i:03d}").write_bytes(b"x" * size)
    assert bundle_size(whole) == 2017
    assert bundle_size(tmp_path / "site.tar.zst.000") == 2017
    whole.write_bytes(b"y" * 5)  # a bundle in one file wins over stray parts beside it
    assert bundle_size(whole) == 5
    with pytest.raises(BadInputError, match="no such bundle"):
        bundle_size(tmp_path / "other.tar.zst")
