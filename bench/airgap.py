"""Air-gap bundle benchmark: `installer airgap-bundle` / `airgap-load` against skopeo, side by side.

A synthetic release (20 images by default: shared base layers, one 500 MB layer, about 2 GB in
all) is pushed to a local upstream registry (docker-registry, TLS + htpasswd). Then, in one run:

- build: `installer airgap-bundle` versus `skopeo copy docker://... oci:<one layout>:<ref>` for
  each image, one after the other (what an operator would script);
- load: `installer airgap-load` into an empty registry versus `skopeo copy oci:... docker://...`
  per image into another empty registry, `--rounds` times each, in turn (the median counts);
  then a re-load when everything is present;
- floor: the same bytes through `sha256sum` and a plain `cp`, and pushed from files into a
  third empty registry with the least client work (what the registry itself costs a load), and
  the CPU seconds OpenSSL's sha256 (the load's) takes over them (what verifying adds to that);
- and, for the whole job (one file to carry): skopeo plus `tar -I 'zstd -1 -T0'` of its layout,
  and `tar -x` of that file before its load.

Prints `name: ours_s skopeo_s ratio` per figure, plus sizes, peak memory, CPU seconds of each side
(`client+registry`) and the load average. Every step starts after a `sync`, so that the page
cache one step dirtied is not written back during the next. `--scale 0.05` makes a small release
for a quick check. Generated layers are cached under the bench cache folder.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from installer.airgap.files import sha256_file
from installer.airgap.manifest import write_keypair
from installer.engines.registry import OCI_MANIFEST, Manifest, RegistryClient, sha256_digest
from installer.release import ReleasePins, pins_path
from tests.fixtures.peakrss import run_measured
from tests.fixtures.registries import PASSWORD, USER, Registry, make_pki, start_registry

MB = 1024 * 1024
CACHE = Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "onprem-installer" / "bench"))
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


class _Hashing(io.RawIOBase):
    """Forwards writes and hashes them."""

    def __init__(self, inner: io.RawIOBase | gzip.GzipFile | io.BufferedWriter) -> None:
        super().__init__()
        self.inner, self.hash, self.size = inner, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.hash.update(data)
        self.size += len(data)
        self.inner.write(data)
        return len(data)


class _Random(io.RawIOBase):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


def make_layer(folder: Path, name: str, size: int) -> dict[str, object]:
    """A gzip (stored blocks: cheap to make, still valid gzip) tar layer of random bytes."""
    meta = folder / f"{name}.json"
    if meta.is_file():
        return json.loads(meta.read_text())  # type: ignore[no-any-return]
    tmp = folder / f"{name}.partial"
    with tmp.open("wb") as raw:
        outer = _Hashing(raw)
        with gzip.GzipFile(fileobj=outer, mode="wb", compresslevel=0, mtime=0) as gz:
            inner = _Hashing(gz)
            with tarfile.open(fileobj=inner, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                info = tarfile.TarInfo(f"data/{name}")
                info.size = size
                tar.addfile(info, _Random(size))
    digest = "sha256:" + outer.hash.hexdigest()
    tmp.replace(folder / digest[7:])
    desc = {"digest": digest, "size": outer.size, "diff_id": "sha256:" + inner.hash.hexdigest()}
    meta.write_text(json.dumps(desc))
    return desc


def plan(scale: float, images: int) -> list[list[tuple[str, int]]]:
    """Layers per image: two shared bases, one big layer in the first image, one own layer each."""
    base1, base2 = int(200 * MB * scale), int(100 * MB * scale)
    big = int(500 * MB * scale)
    own = int((2000 * MB * scale - base1 - base2 - big) / images)
    layers = []
    for n in range(images):
        mine = [("base1", base1), ("base2", base2), (f"own{n:02d}", own)]
        if n == 0:
            mine.append(("big", big))
        layers.append(mine)
    return layers


def seed(client: RegistryClient, folder: Path, scale: float, count: int) -> dict[str, str]:
    """Generate (once) and push the synthetic images; returns `name:tag` -> manifest digest
    (the release's pins: the bundle pulls by digest, as a real release's does)."""
    folder.mkdir(parents=True, exist_ok=True)
    layout = plan(scale, count)
    wanted = {name: size for img in layout for name, size in img}
    with ThreadPoolExecutor(max_workers=2) as pool:
        descs = dict(
            zip(wanted, pool.map(lambda kv: make_layer(folder, *kv), wanted.items()), strict=True)
        )
    refs: dict[str, str] = {}
    jobs = []
    for n, img in enumerate(layout):
        repo = f"bench.example/airgap/img-{n:02d}"
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {
                    "type": "layers",
                    "diff_ids": [descs[name]["diff_id"] for name, _ in img],
                },
            }
        ).encode()
        cfg_path = folder / f"config-{n:02d}"
        cfg_path.write_bytes(config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": OCI_LAYER,
                    "digest": descs[name]["digest"],
                    "size": descs[name]["size"],
                }
                for name, _ in img
            ],
        }
        raw = json.dumps(manifest).encode()
        jobs.append((repo, cfg_path, sha256_digest(config), [descs[name] for name, _ in img], raw))
        refs[f"{repo}:1.0"] = sha256_digest(raw)

    def push(job: tuple[str, Path, str, list[dict[str, object]], bytes]) -> None:
        repo, cfg_path, cfg_digest, layers, raw = job
        client.push_blob(repo, cfg_digest, cfg_path)
        for desc in layers:
            digest = str(desc["digest"])
            client.push_blob(repo, digest, folder / digest[7:])
        client.put_manifest(repo, "1.0", Manifest(raw, OCI_MANIFEST, sha256_digest(raw)))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(push, jobs))
    return refs


CPU = {"ours": 0.0, "skopeo": 0.0}
"""CPU seconds (user + system) of the measured commands of the current step, per side."""


def timed_rss(
    argv: list[str], env: dict[str, str] | None = None, side: str = "ours"
) -> tuple[float, int, str]:
    """(seconds, the command's own peak RSS, stdout), read by `run_measured`'s launcher (wait4
    here would report this process's peak instead); exits on failure. Adds the command's CPU
    time to `CPU[side]`."""
    run = run_measured(argv, env={**os.environ, **(env or {})})
    CPU[side] += run.cpu_seconds
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed: {run.stderr.decode()[-2000:]}")
    return run.seconds, run.peak_rss, run.stdout.decode()


def skopeo_push(layout: Path, site: Registry, certs: Path, creds: str, refs: list[str]) -> float:
    """Seconds for `skopeo copy` of each image from `layout` to `site`, one after the other."""
    return sum(
        timed_rss(
            [
                "skopeo",
                "copy",
                "--quiet",
                "--dest-cert-dir",
                str(certs),
                "--dest-creds",
                creds,
                f"oci:{layout}:{ref}",
                f"docker://{site.host}/{ref}",
            ],
            side="skopeo",
        )[0]
        for ref in refs
    )


def proc_cpu(reg: Registry) -> float:
    """CPU seconds a registry process has used so far."""
    fields = Path(f"/proc/{reg.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    """CPU seconds (user + system) of this process, all its threads, so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def settle() -> None:
    """Write back what the previous step left in the page cache, so that its writeback does
    not slow the next step (each side starts with the same clean state)."""
    os.sync()


def du(path: Path) -> int:
    """Bytes of the files under `path`."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def line(name: str, ours: float, peer: float) -> str:
    """One figure."""
    return f"{name}: {ours:.2f} {peer:.2f} {ours / peer:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1.0 = about 2 GB")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument(
        "--rounds", type=int, default=3, help="loads of each side, in turn (the median counts)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not shutil.which("skopeo"):
        raise SystemExit("skopeo is not installed (lab/apt-packages.txt)")

    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-airgap-"))
    registries = []
    try:
        pki = make_pki(work / "pki")
        upstream = start_registry(work / "upstream", pki)
        registries.append(upstream)
        started = time.monotonic()
        with RegistryClient(upstream.endpoint(), connections=8) as client:
            pins = seed(
                client, CACHE / f"airgap-{args.scale:g}-{args.images}", args.scale, args.images
            )
        refs = list(pins)
        print(f"# seeded {len(refs)} images in {time.monotonic() - started:.1f}s", file=sys.stderr)

        certs = work / "certs"
        certs.mkdir()
        shutil.copyfile(pki.ca_cert, certs / "ca.crt")
        creds = f"{USER}:{PASSWORD}"
        env = {"INSTALLER_UPSTREAM_PASSWORD": PASSWORD, "INSTALLER_HUB_PASSWORD": PASSWORD}
        release = work / "release.yml"
        release.write_text(
            'platform_version: "bench"\nimages:\n'
            + "".join(
                f'  - {{name: {r.rsplit(":", 1)[0]}, tag: "1.0", component: platform}}\n'
                for r in refs
            )
            + "charts: []\n"
        )
        pins_path(release).write_text(
            ReleasePins(platform_version="bench", images=pins).to_yaml(), encoding="utf-8"
        )
        key, pub = work / "sign.pem", work / "sign.pub"
        write_keypair(key, pub)
        cli = [sys.executable, "-m", "installer.cli", "--log-dir", str(work / "logs")]

        bundle = work / "out" / "bundle.tar.zst"
        bundle.parent.mkdir()
        cpu: dict[str, str] = {}
        settle()
        up_cpu = proc_cpu(upstream)
        ours_build, ours_rss, out = timed_rss(
            [
                *cli,
                "airgap-bundle",
                "--release",
                str(release),
                "-f",
                str(bundle),
                "--sign-key",
                str(key),
                "--registry-mirror",
                upstream.host,
                "--upstream-ca",
                str(pki.ca_cert),
                "--upstream-user",
                USER,
                "--workers",
                str(args.workers),
                "-o",
                "json",
            ],
            env,
        )
        built = json.loads(out)
        up_ours = proc_cpu(upstream) - up_cpu

        layout = work / "skopeo-layout"
        settle()
        up_cpu = proc_cpu(upstream)
        skopeo_build, skopeo_rss = 0.0, 0
        for ref in refs:
            seconds, rss, _ = timed_rss(
                [
                    "skopeo",
                    "copy",
                    "--quiet",
                    "--src-cert-dir",
                    str(certs),
                    "--src-creds",
                    creds,
                    f"docker://{upstream.host}/{ref}",
                    f"oci:{layout}:{ref}",
                ],
                side="skopeo",
            )
            skopeo_build += seconds
            skopeo_rss = max(skopeo_rss, rss)
        cpu["build"] = (
            f"{CPU['ours']:.1f}+{up_ours:.1f} {CPU['skopeo']:.1f}+{proc_cpu(upstream) - up_cpu:.1f}"
        )
        # What an operator adds to get one file to carry: tar + zstd of the layout.
        started = time.monotonic()
        layout_tar = work / "out" / "skopeo-layout.tar.zst"
        subprocess.run(
            ["tar", "-I", "zstd -1 -T0", "-cf", str(layout_tar), "-C", str(layout), "."],
            check=True,
        )
        skopeo_tar = time.monotonic() - started
        started = time.monotonic()
        unpacked = work / "skopeo-unpacked"
        unpacked.mkdir()
        subprocess.run(
            ["tar", "-I", "zstd", "-xf", str(layout_tar), "-C", str(unpacked)], check=True
        )
        skopeo_untar = time.monotonic() - started
        shutil.rmtree(unpacked)

        def our_load(site: Registry) -> tuple[float, int, dict[str, object]]:
            seconds, rss, out = timed_rss(
                [
                    *cli,
                    "airgap-load",
                    str(bundle),
                    "--verify-key",
                    str(pub),
                    "--registry",
                    site.host,
                    "--ca",
                    str(pki.ca_cert),
                    "--user",
                    USER,
                    "--work-dir",
                    str(work / "load-work"),
                    "--workers",
                    str(args.workers),
                    "-o",
                    "json",
                ],
                env,
            )
            return seconds, rss, json.loads(out)

        # Each side loads `--rounds` times, in turn, each time into a fresh empty registry; its
        # registry of the round before is stopped and its data deleted first, so that data does
        # not pile up from round to round. The order alternates (ours first in odd rounds).
        rounds: dict[str, list[float]] = {"ours": [], "skopeo": []}
        reg_cpu: dict[str, float] = {"ours": 0.0, "skopeo": 0.0}
        CPU.update(ours=0.0, skopeo=0.0)
        load_rss = 0
        site: dict[str, Registry] = {}
        for n in range(args.rounds):
            for side in ("ours", "skopeo") if n % 2 == 0 else ("skopeo", "ours"):
                if side in site:
                    site[side].stop()
                    registries.remove(site[side])
                    shutil.rmtree(work / f"site-{side}", ignore_errors=True)
                    if side == "ours":
                        shutil.rmtree(work / "load-work", ignore_errors=True)
                site[side] = start_registry(work / f"site-{side}", pki)
                registries.append(site[side])
                settle()
                before = proc_cpu(site[side])
                if side == "ours":
                    seconds, rss, report = our_load(site[side])
                    load_rss = max(load_rss, rss)
                    print(f"# our phases: load {report['seconds']}", file=sys.stderr)
                else:
                    seconds = skopeo_push(layout, site[side], certs, creds, refs)
                reg_cpu[side] += proc_cpu(site[side]) - before
                rounds[side].append(seconds)
        print(
            "# load rounds (s): "
            + "; ".join(f"{side} {', '.join(f'{s:.2f}' for s in r)}" for side, r in rounds.items()),
            file=sys.stderr,
        )
        cpu["load"] = " ".join(
            f"{CPU[side] / args.rounds:.1f}+{reg_cpu[side] / args.rounds:.1f}"
            for side in ("ours", "skopeo")
        )
        ours_load, skopeo_load = (
            statistics.median(rounds["ours"]),
            statistics.median(rounds["skopeo"]),
        )
        ours_reload, _, report = our_load(site["ours"])
        assert report["nothing_to_do"] is True
        skopeo_reload = skopeo_push(layout, site["skopeo"], certs, creds, refs)

        blobs = sorted(p for p in (layout / "blobs" / "sha256").iterdir())
        # The registry's own share of a load: every distinct blob pushed from files (page
        # cache) with the least client work (no decompression, no hashing), in parallel.
        site_floor = start_registry(work / "site-floor", pki)
        registries.append(site_floor)
        settle()
        reg_before, own_before = proc_cpu(site_floor), self_cpu()
        started = time.monotonic()
        with (
            RegistryClient(site_floor.endpoint(), connections=args.workers) as client,
            ThreadPoolExecutor(max_workers=args.workers) as pool,
        ):
            list(pool.map(lambda p: client.push_blob("floor/x", f"sha256:{p.name}", p), blobs))
        floor_ingest = time.monotonic() - started
        own, reg = self_cpu() - own_before, proc_cpu(site_floor) - reg_before
        cpu["floor-ingest"] = f"{own:.1f}+{reg:.1f}"
        settle()
        started = time.monotonic()
        subprocess.run(["sha256sum", *map(str, blobs)], check=True, capture_output=True)
        floor_hash = time.monotonic() - started
        # What verifying adds to a client's work: the same bytes read (from the page cache, as
        # `sha256sum` just read them) through OpenSSL's sha256, the load's, in CPU seconds.
        settle()
        own_before = self_cpu()
        for blob in blobs:
            sha256_file(blob)
        floor_verify = self_cpu() - own_before
        settle()
        started = time.monotonic()
        subprocess.run(["cp", "-r", str(layout / "blobs"), str(work / "floor-copy")], check=True)
        floor_copy = time.monotonic() - started

        print(f"# release: {len(refs)} images, {du(layout / 'blobs') / MB:.0f} MiB distinct blobs")
        print(line("build", ours_build, skopeo_build))
        print(line("build-to-one-file", ours_build, skopeo_build + skopeo_tar))
        print(line("load", ours_load, skopeo_load))
        print(line("load-from-one-file", ours_load, skopeo_untar + skopeo_load))
        print(line("reload", ours_reload, skopeo_reload))
        print(f"floor-sha256: {floor_hash:.2f}")
        print(f"floor-copy: {floor_copy:.2f}")
        print(f"floor-registry-ingest: {floor_ingest:.2f}")
        print(f"floor-verify-cpu-s: {floor_verify:.2f}")
        for name, text in cpu.items():
            print(f"cpu-s {name}: {text}")
        loads = f"{load_start[0]:.1f} -> {os.getloadavg()[0]:.1f}"
        print(f"load-average (1 min, start -> end): {loads}")
        content, layout_size = built["content_bytes"], du(layout)
        ratio = content / layout_size
        print(f"size-uncompressed-MiB: {content / MB:.1f} {layout_size / MB:.1f} {ratio:.2f}")
        print(f"size-bundle-MiB: {built['bundle_bytes'] / MB:.1f}")
        print(f"peak-rss-MiB build: {ours_rss / MB:.0f} {skopeo_rss / MB:.0f}")
        print(f"peak-rss-MiB load: {load_rss / MB:.0f}")
        print(f"# our phases: build {built['seconds']}", file=sys.stderr)
    finally:
        for reg in registries:
            reg.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"# kept {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
