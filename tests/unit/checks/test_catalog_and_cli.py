"""Every check id is built, documented and skippable; the commands' input errors; support bundle."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from installer.checks import preflight_checks, verify_checks
from installer.checks.acceptance import ProbeNamespace
from installer.checks.catalog import SPECS, ids
from installer.checks.context import SiteAccess
from installer.checks.support_bundle import gather, redact_inventory_text
from installer.inventory import load_inventory

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "inventories" / "onprem.example.yml"
LAB = REPO / "inventories" / "lab.yml"


def built_ids(path: Path) -> tuple[set[str], set[str]]:
    access = SiteAccess(load_inventory(path))
    return (
        {c.id for c in preflight_checks(access)},
        {c.id for c in verify_checks(access, ProbeNamespace())},
    )


def test_every_catalogued_check_is_built_for_the_example_site() -> None:
    preflight, verify = built_ids(EXAMPLE)
    assert preflight == set(ids("preflight"))
    assert verify == set(ids("verify"))


def test_docs_list_every_check_with_its_remedy() -> None:
    docs = (REPO / "docs" / "checks.md").read_text()
    for spec in SPECS:
        assert f"| `{spec.id}` | {spec.severity} | {spec.what} | {spec.remedy} |" in docs, spec.id


def test_lab_site_builds_a_check_per_preset_and_job_pool() -> None:
    access = SiteAccess(load_inventory(LAB))
    targets = [
        c.target for c in verify_checks(access, ProbeNamespace()) if c.id.startswith("sched.")
    ]
    assert targets == [
        "cluster/lab/preset/cpu-small",
        "cluster/lab/preset/cpu-large",
        "cluster/lab/preset/a100x1",
        "cluster/lab/preset/a100x8",
        "cluster/lab/preset/h100x1",
        "cluster/lab/pool/cpu",
        "cluster/lab/pool/a100",
        "cluster/lab/pool/h100",
    ]


def installer(*args: str, log_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "installer.cli", "--log-dir", str(log_dir), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )


def test_preflight_missing_bundle_is_bad_input(tmp_path: Path) -> None:
    proc = installer(
        "-o", "json", "preflight", "-i", str(LAB), "--bundle", str(tmp_path / "nope.tar.zst"),
        log_dir=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "no such bundle" in json.loads(proc.stdout)["error"]["message"]


def test_verify_bad_inventory_is_bad_input(tmp_path: Path) -> None:
    proc = installer("verify", "-i", str(tmp_path / "missing.yml"), log_dir=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_inventory_secrets_are_masked() -> None:
    text = (
        "aux_vm:\n  ssh:\n    private_key: file:~/.ssh/id\n    user: ops\n"
        "keycloak:\n  admin_password: env:KC_PASS\n  client_secret: file:/run/s\n"
        "  - ca_key: env:CA\n"
    )
    masked = redact_inventory_text(text)
    assert "~/.ssh/id" not in masked and "KC_PASS" not in masked and "/run/s" not in masked
    assert "env:CA" not in masked
    assert "    private_key: ***" in masked and "user: ops" in masked


def test_support_bundle_without_cluster(tmp_path: Path) -> None:
    logs = tmp_path / "runs"
    for i in range(3):
        run = logs / f"2026010{i}T000000Z-preflight-{i}"
        run.mkdir(parents=True)
        (run / "installer.log").write_text(f"log {i}\n")
        (run / "preflight-report.json").write_text('{"ok": true}\n')
    inv = tmp_path / "site.yml"
    inv.write_text(EXAMPLE.read_text().replace("kubeconfig: ", f"kubeconfig: {tmp_path}/no-such-"))
    bundle = gather(load_inventory(inv), inv, logs, runs=2)
    path = bundle.write(tmp_path / "out" / "support.tar.gz")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
        notes = tar.extractfile("support/NOTES.txt").read().decode()  # type: ignore[union-attr]
    runs = sorted(n.split("/")[2] for n in names if n.startswith("support/runs/"))
    assert runs == sorted(["20260101T000000Z-preflight-1", "20260102T000000Z-preflight-2"] * 2)
    assert {"support/versions.json", "support/inventory.yml", "support/NOTES.txt"} <= names
    assert "no node summary" in notes and "no journal" in notes


def test_support_bundle_leaves_out_keys_and_masks_state_secrets(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "secrets").mkdir(parents=True)
    (state / "secrets" / "hub-password").write_text("s3cr3t-hub-pass\n")
    run = tmp_path / "runs" / "20260101T000000Z-bootstrap-1"
    (run / "ansible" / "secrets").mkdir(parents=True)
    (run / "ansible" / "secrets" / "aux-vm.key").write_text("KEY MATERIAL")
    (run / "ansible" / "env").mkdir()
    (run / "ansible" / "env" / "ssh_key").write_text("KEY MATERIAL")
    (run / "tls.pem").write_text("KEY MATERIAL")
    (run / "events.jsonl").write_text('{"message": "login with s3cr3t-hub-pass"}\n')
    inv = tmp_path / "site.yml"
    inv.write_text(
        EXAMPLE.read_text()
        .replace("kubeconfig: ", f"kubeconfig: {tmp_path}/no-such-")
        .replace("state_dir: ", f"state_dir: {state}  # was: ", 1)
    )
    site = load_inventory(inv)
    assert Path(site.site.state_dir) == state
    bundle = gather(site, inv, tmp_path / "runs")
    names = set(bundle.members)
    assert names >= {f"runs/{run.name}/events.jsonl"}
    assert not any("secrets" in n or n.endswith((".key", ".pem", "ssh_key")) for n in names)
    events = bundle.members[f"runs/{run.name}/events.jsonl"].decode()
    assert "s3cr3t-hub-pass" not in events and "***" in events


def _skipping_site(tmp_path: Path) -> Path:
    """The example site with every preflight check skipped by the inventory (nothing is reached)
    and one skip entry naming no check, which the report shows as a warning."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["skip_checks"] = {
        **{check_id: f"{check_id} is checked by hand" for check_id in ids("preflight")},
        "gpu.probe": "no GPUs yet",
        "dns.wildcard": "the network team adds the records after the install",
        "vm.typo": "an id that matches no check",
    }
    path = tmp_path / "site.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_inventory_skips_show_their_reason_and_warnings_fail_only_with_strict(
    tmp_path: Path,
) -> None:
    site = _skipping_site(tmp_path)
    proc = installer("-o", "json", "preflight", "-i", str(site), log_dir=tmp_path / "a")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    skipped = [r for r in report["results"] if r["status"] == "skip"]
    assert {r["id"] for r in skipped} == set(ids("preflight"))
    dns = next(r for r in skipped if r["id"] == "dns.wildcard")
    assert dns["message"] == (
        "skipped by the inventory: the network team adds the records after the install"
    )
    (warning,) = [r for r in report["results"] if r["status"] == "warn"]
    assert warning["id"] == "checks.skip_unknown" and "'vm.typo'" in warning["message"]
    assert report["ok"] is True and report["strict"] is False

    strict = installer(
        "-o", "json", "preflight", "-i", str(site), "--strict", log_dir=tmp_path / "b"
    )
    assert strict.returncode == 1, strict.stderr
    assert json.loads(strict.stdout)["ok"] is False

    table = installer("preflight", "-i", str(site), "--strict", log_dir=tmp_path / "c")
    assert table.returncode == 1
    text = " ".join(table.stdout.split())  # the table wraps long cells
    assert "skipped by the inventory: no GPUs yet" in text
    assert "preflight failed" in text and "(strict: warnings fail)" in text
