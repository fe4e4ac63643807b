"""Small real artifacts for the hub tests: an OCI image layout, a Helm chart archive, a wheel."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

from tests.fixtures.registries import image, layer


def oci_layout(folder: Path, tag: str, payload: bytes) -> str:
    """Write a one-layer OCI image layout at `folder` (tag `tag`); returns the manifest digest."""
    img = image([layer({"hello.txt": payload}, oci=True)], oci=True)
    blobs = folder / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for blob in [*img.blobs, img.manifest]:
        (blobs / blob.digest.removeprefix("sha256:")).write_bytes(blob.data)
    (folder / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            img.manifest.descriptor(annotations={"org.opencontainers.image.ref.name": tag})
        ],
    }
    (folder / "index.json").write_text(json.dumps(index))
    return img.manifest.digest


def chart_archive(name: str, version: str) -> bytes:
    """A minimal Helm chart packaged as `helm package` does (`<name>/Chart.yaml`, gzip'd tar)."""
    files = {
        f"{name}/Chart.yaml": (
            f"apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: '1.0'\n"
            "description: hub test chart\ntype: application\n"
        ).encode(),
        f"{name}/values.yaml": b"replicas: 1\n",
        f"{name}/templates/configmap.yaml": (
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        ),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def wheel(folder: Path, name: str, version: str, module_text: str) -> Path:
    """A pure-Python wheel with one module `<name>.py`, as a build backend would write it."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": module_text.encode(),
        f"{dist}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: hub test\n"
        ).encode(),
        f"{dist}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: hub-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for path, data in files.items():
        writer.writerow([path, _record_hash(data), str(len(data))])
    writer.writerow([f"{dist}/RECORD", "", ""])
    files[f"{dist}/RECORD"] = record.getvalue().encode()
    target = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return target
