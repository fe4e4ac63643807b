"""Broken inventories: each is refused with exit code 2, file:line:column, the field, no traceback.

Each case edits a valid base inventory (base.yml) the way an operator might get it wrong; the
expected line, field path and message fragment are pinned.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from installer.inventory import InputFileError, load_inventory

BASE = Path(__file__).with_name("base.yml")


@dataclass(frozen=True)
class Broken:
    id: str
    old: str
    new: str
    line: int
    path: str
    message: str


CASES = [
    Broken(
        "yaml-unclosed-flow",
        "ingress_ips: [192.0.2.20]",
        "ingress_ips: [192.0.2.20",
        15,
        "",
        "YAML syntax error",
    ),
    Broken(
        "yaml-bad-indent",
        "    kubeconfig: kubeconfig",
        "   kubeconfig: kubeconfig",
        13,
        "",
        "YAML syntax error",
    ),
    Broken("yaml-tab", "  name: lab", "\tname: lab", 3, "", "'\\t'"),
    Broken(
        "yaml-duplicate-key",
        "  domain: ml.example.com",
        "  domain: ml.example.com\n  domain: other.example.com",
        5,
        "",
        "duplicate key",
    ),
    Broken(
        "top-level-list",
        "apiVersion: installer/v1",
        "- apiVersion: installer/v1",
        2,
        "",
        "YAML syntax error",
    ),
    Broken(
        "wrong-api-version",
        "apiVersion: installer/v1",
        "apiVersion: installer/v2",
        1,
        "apiVersion",
        "installer/v1",
    ),
    Broken("unknown-top-key", "site:", "sites: {}\nsite:", 2, "sites", "did you mean 'site'"),
    Broken(
        "unknown-key-typo",
        "        cpu: 64",
        "        cpus: 64",
        22,
        "clusters[0].node_pools[1].cpus",
        "did you mean 'cpu'",
    ),
    Broken(
        "missing-required",
        "    kubeconfig: kubeconfig\n",
        "",
        12,
        "clusters[0].kubeconfig",
        "required key is missing",
    ),
    Broken(
        "wrong-type-port",
        "    user: ops",
        "    user: ops\n    port: twenty-two",
        9,
        "aux_vm.ssh.port",
        "valid integer",
    ),
    Broken(
        "port-out-of-range",
        "    user: ops",
        "    user: ops\n    port: 70000",
        9,
        "aux_vm.ssh.port",
        "65535",
    ),
    Broken(
        "bad-ip", "  address: 192.0.2.10", "  address: 192.0.2.300", 6, "aux_vm.address", "IPv4"
    ),
    Broken(
        "bad-quantity",
        "        memory: 32Gi",
        "        memory: 32GiB",
        19,
        "clusters[0].node_pools[0].memory",
        "not a Kubernetes quantity",
    ),
    Broken(
        "negative-cpu",
        "        cpu: 8\n",
        "        cpu: -8\n",
        18,
        "clusters[0].node_pools[0].cpu",
        "negative",
    ),
    Broken("bad-site-name", "  name: lab", "  name: Lab_Site", 3, "site.name", "not a DNS label"),
    Broken(
        "bad-domain",
        "  domain: ml.example.com",
        "  domain: ml..example.com",
        4,
        "site.domain",
        "not a DNS name",
    ),
    Broken(
        "inline-secret",
        "private_key: file:id_ed25519",
        "private_key: hunter2hunter2",
        9,
        "aux_vm.ssh.private_key",
        "never written inline",
    ),
    Broken(
        "secret-not-string",
        "private_key: file:id_ed25519",
        "private_key: {value: x}",
        9,
        "aux_vm.ssh.private_key",
        "secret reference",
    ),
    Broken(
        "dangling-preset-pool",
        "pools: [cpu]}",
        "pools: [cpu, gpu]}",
        26,
        "clusters[0].presets[0].pools[1]",
        "pool 'gpu' does not exist",
    ),
    Broken(
        "gpu-preset-on-cpu-pool",
        "nvidia_gpu: {count: 1}, pools: [a100]}",
        "nvidia_gpu: {count: 1}, pools: [cpu]}",
        27,
        "clusters[0].presets[1].pools[0]",
        "pool 'cpu' has none",
    ),
    Broken(
        "preset-too-big",
        "{name: cpu-small, cpu: 2,",
        "{name: cpu-small, cpu: 12,",
        26,
        "clusters[0].presets[0].pools[0]",
        "cpu 12 > 8 per node",
    ),
    Broken(
        "gpu-count-too-big",
        "nvidia_gpu: {count: 1}",
        "nvidia_gpu: {count: 9}",
        27,
        "clusters[0].presets[1].pools[0]",
        "9 GPUs > 8 per node",
    ),
    Broken(
        "gpu-model-mismatch",
        "nvidia_gpu: {count: 1}",
        "nvidia_gpu: {count: 1, model: NVIDIA-H100-80GB-HBM3}",
        27,
        "clusters[0].presets[1].pools[0]",
        "GPU model NVIDIA-H100-80GB-HBM3",
    ),
    Broken(
        "duplicate-pool",
        "      - name: a100\n",
        "      - name: cpu\n",
        20,
        "clusters[0].node_pools[1].name",
        "used twice",
    ),
    Broken(
        "duplicate-preset",
        "{name: a100x1,",
        "{name: cpu-small,",
        27,
        "clusters[0].presets[1].name",
        "used twice",
    ),
    Broken(
        "node-in-two-pools",
        "nodes: [a100-1]",
        "nodes: [cpu-1]",
        21,
        "clusters[0].node_pools[1].nodes[0]",
        "already in pool 'cpu'",
    ),
    Broken(
        "nodes-and-selector",
        "        nodes: [a100-1]",
        "        nodes: [a100-1]\n        selector: {nvidia.com/gpu.product: x}",
        20,
        "clusters[0].node_pools[1]",
        "exactly one of nodes",
    ),
    Broken(
        "no-host-key",
        "    known_hosts: known_hosts\n",
        "",
        7,
        "aux_vm.ssh",
        "host key must be pinned",
    ),
    Broken(
        "port-collision",
        "    known_hosts: known_hosts",
        "    known_hosts: known_hosts\n  services:\n    registry: {port: 3141, data_path: /r}",
        11,
        "aux_vm.services.devpi.port",
        "already used by registry",
    ),
    Broken(
        "push-port-collision",
        "    known_hosts: known_hosts",
        "    known_hosts: known_hosts\n  services:\n"
        "    registry: {port: 5000, push_port: 3141, data_path: /srv/hub/registry}",
        11,
        "aux_vm.services.devpi.port",
        "already used by registry's push endpoint",
    ),
    Broken(
        # The push port follows the port (8079 + 1) onto ChartMuseum's.
        "default-push-port-collision",
        "    known_hosts: known_hosts",
        "    known_hosts: known_hosts\n  services:\n"
        "    registry: {port: 8079, data_path: /srv/hub/registry}",
        11,
        "aux_vm.services.chartmuseum.port",
        "port 8080 is already used by registry's push endpoint",
    ),
    Broken(
        "cstor-without-disks",
        "storage: {engine: localpv-hostpath}",
        "storage: {engine: cstor}",
        28,
        "clusters[0].storage.disks",
        "needs at least one raw disk",
    ),
    Broken(
        "keycloak-over-http",
        "    storage: {engine: localpv-hostpath}",
        "    storage: {engine: localpv-hostpath}\n"
        "    keycloak: {mode: external, url: 'http://kc.example', admin_password: env:KC}",
        29,
        "clusters[0].keycloak.url",
        "would send the Keycloak admin password in clear",
    ),
    Broken(
        "external-keycloak-no-url",
        "    storage: {engine: localpv-hostpath}",
        "    storage: {engine: localpv-hostpath}\n"
        "    keycloak: {mode: external, admin_password: env:KC}",
        29,
        "clusters[0].keycloak.url",
        "needs the url",
    ),
    Broken(
        "bad-label-key",
        "        nodes: [a100-1]",
        "        nodes: [a100-1]\n        labels: {'bad key!': x}",
        22,
        "clusters[0].node_pools[1].labels.bad key!",
        "not a Kubernetes label key",
    ),
    Broken(
        "empty-preset-pools",
        "pools: [cpu]}",
        "pools: []}",
        26,
        "clusters[0].presets[0].pools",
        "at least 1 item",
    ),
    Broken(
        "boolean-as-quantity",
        "        memory: 512Gi",
        "        memory: true",
        23,
        "clusters[0].node_pools[1].memory",
        "not a boolean",
    ),
    Broken(
        "preset-memory-too-big",
        "{name: cpu-small, cpu: 2, memory: 8Gi,",
        "{name: cpu-small, cpu: 2, memory: 64Gi,",
        26,
        "clusters[0].presets[0].pools[0]",
        "memory 64Gi > 32Gi per node",
    ),
    Broken(
        "amd-preset-on-nvidia-pool",
        "nvidia_gpu: {count: 1}",
        "amd_gpu: {count: 1}",
        27,
        "clusters[0].presets[1].pools[0]",
        "asks for amd GPUs and pool 'a100' has nvidia",
    ),
    Broken(
        "mig-preset-on-pool-without-mig",
        "nvidia_gpu: {count: 1}, pools",
        "nvidia_migs: {1g.10gb: {count: 1}}, pools",
        27,
        "clusters[0].presets[1].pools[0]",
        "MIG 1g.10gb x1 > 0 per node",
    ),
    Broken(
        "two-gpu-vendors-in-a-preset",
        "nvidia_gpu: {count: 1}",
        "nvidia_gpu: {count: 1}, amd_gpu: {count: 1}",
        27,
        "clusters[0].presets[1]",
        "one GPU vendor at most",
    ),
    Broken(
        "mig-profiles-on-amd",
        "gpu: {model:",
        "gpu: {vendor: amd, mig_profiles: {1g.10gb: 7}, model:",
        24,
        "clusters[0].node_pools[1].gpu.mig_profiles",
        "only on NVIDIA",
    ),
    Broken(
        "gpu-count-zero",
        "count: 8,",
        "count: 0,",
        24,
        "clusters[0].node_pools[1].gpu.count",
        "greater than or equal to 1",
    ),
    Broken(
        "dns-port-collision",
        "    known_hosts: known_hosts",
        "    known_hosts: known_hosts\n  dns: {enabled: true, port: 22}",
        11,
        "aux_vm.dns.port",
        "port 22 is already used by ssh",
    ),
    Broken(
        "data-path-collision",
        "    known_hosts: known_hosts",
        "    known_hosts: known_hosts\n  services:\n"
        "    devpi: {port: 3142, data_path: /var/lib/onprem-hub/registry}",
        12,
        "aux_vm.services.devpi.data_path",
        "already used by registry",
    ),
    Broken(
        "data-path-system-folder",
        "    known_hosts: known_hosts",
        "    known_hosts: known_hosts\n  services:\n"
        "    registry: {port: 5000, data_path: /var/lib}",
        12,
        "aux_vm.services.registry.data_path",
        "data path /var/lib is a system folder",
    ),
    Broken(
        "data-path-root",
        "    known_hosts: known_hosts",
        "    known_hosts: known_hosts\n  services:\n    chartmuseum: {port: 8080, data_path: /}",
        12,
        "aux_vm.services.chartmuseum.data_path",
        "data path / is a system folder",
    ),
    Broken(
        "data-path-in-etc",
        "    known_hosts: known_hosts",
        "    known_hosts: known_hosts\n  services:\n    devpi: {port: 3141, data_path: /etc/ssh}",
        12,
        "aux_vm.services.devpi.data_path",
        "data path /etc/ssh is inside /etc",
    ),
    Broken(
        "data-path-dot-dot",
        "    known_hosts: known_hosts",
        "    known_hosts: known_hosts\n  services:\n"
        "    devpi: {port: 3141, data_path: /srv/hub/../../etc}",
        12,
        "aux_vm.services.devpi.data_path",
        "has . or .. in it",
    ),
    Broken(
        "data-path-nested",
        "    known_hosts: known_hosts",
        "    known_hosts: known_hosts\n  services:\n"
        "    devpi: {port: 3141, data_path: /var/lib/onprem-hub/registry/devpi}",
        12,
        "aux_vm.services.devpi.data_path",
        "inside one another",
    ),
    Broken(
        "tls-provided-without-key",
        "    known_hosts: known_hosts",
        "    known_hosts: known_hosts\n  tls: {ca: provided, ca_cert: ca.pem}",
        11,
        "aux_vm.tls.ca_key",
        "needs ca_key",
    ),
    Broken(
        "bad-fingerprint",
        "    known_hosts: known_hosts",
        "    host_key_fingerprint: MD5:ab:cd",
        10,
        "aux_vm.ssh.host_key_fingerprint",
        "should match pattern",
    ),
    Broken(
        "inline-keycloak-password",
        "    storage: {engine: localpv-hostpath}",
        "    storage: {engine: localpv-hostpath}\n    keycloak: {admin_password: hunter2}",
        29,
        "clusters[0].keycloak.admin_password",
        "never written inline",
    ),
    Broken(
        "oidc-provider-without-secret",
        "    storage: {engine: localpv-hostpath}",
        "    storage: {engine: localpv-hostpath}\n    keycloak:\n      identity_provider:"
        " {alias: sso, type: oidc, client_id: platform,"
        " discovery_url: https://sso.example.com/.well-known/openid-configuration}",
        30,
        "clusters[0].keycloak.identity_provider.client_secret",
        "needs client_secret",
    ),
    Broken(
        "node-listed-twice",
        "nodes: [cpu-1, cpu-2]",
        "nodes: [cpu-1, cpu-1]",
        17,
        "clusters[0].node_pools[0].nodes[1]",
        "listed twice",
    ),
    Broken(
        "bad-node-name",
        "nodes: [a100-1]",
        "nodes: [A100_1]",
        21,
        "clusters[0].node_pools[1].nodes[0]",
        "not a DNS name",
    ),
    Broken(
        "unknown-key-no-near-match",
        "        cpu: 64",
        "        zzz: 1\n        cpu: 64",
        22,
        "clusters[0].node_pools[1].zzz",
        "expected one of:",
    ),
    Broken(
        "fractional-bytes",
        "        memory: 32Gi",
        "        memory: 1500m",
        19,
        "clusters[0].node_pools[0].memory",
        "whole number of bytes",
    ),
    Broken(
        "cpu-below-1m",
        "        cpu: 8\n",
        "        cpu: 0.0001\n",
        18,
        "clusters[0].node_pools[0].cpu",
        "precision is 1m",
    ),
    Broken(
        "list-for-a-scalar",
        "  address: 192.0.2.10",
        "  address: [192.0.2.10]",
        6,
        "aux_vm.address",
        "IPv4",
    ),
    Broken(
        "mapping-for-a-list",
        "ingress_ips: [192.0.2.20]",
        "ingress_ips: {first: 192.0.2.20}",
        14,
        "clusters[0].ingress_ips",
        "valid list",
    ),
    Broken(
        "no-ingress-ips",
        "ingress_ips: [192.0.2.20]",
        "ingress_ips: []",
        14,
        "clusters[0].ingress_ips",
        "at least 1 item",
    ),
    Broken(
        "bad-skip-check-id",
        "    storage: {engine: localpv-hostpath}",
        "    storage: {engine: localpv-hostpath}\nskip_checks: {dns wildcard: later}",
        29,
        "skip_checks.dns wildcard",
        "not a check id",
    ),
]


def _write(tmp_path: Path, case: Broken) -> Path:
    base = BASE.read_text(encoding="utf-8")
    assert case.old in base, f"case {case.id} no longer applies to base.yml"
    path = tmp_path / f"{case.id}.yml"
    path.write_text(base.replace(case.old, case.new, 1), encoding="utf-8")
    return path


def test_base_is_valid() -> None:
    inv = load_inventory(BASE)
    assert [p.name for p in inv.clusters[0].node_pools] == ["cpu", "a100"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_loader_names_file_line_and_field(tmp_path: Path, case: Broken) -> None:
    path = _write(tmp_path, case)
    with pytest.raises(InputFileError) as info:
        load_inventory(path)
    matching = [p for p in info.value.problems if p.path == case.path and case.message in p.message]
    assert matching, f"no problem {case.path!r} ~ {case.message!r} in {info.value.problems}"
    problem = matching[0]
    assert problem.file == str(path)
    assert problem.line == case.line, str(problem)
    assert problem.column >= 1


def test_keycloak_over_http_only_when_allowed_in_so_many_words(tmp_path: Path) -> None:
    path = tmp_path / "http.yml"
    path.write_text(
        BASE.read_text(encoding="utf-8").replace(
            "    storage: {engine: localpv-hostpath}",
            "    storage: {engine: localpv-hostpath}\n    keycloak: {mode: external,"
            " url: 'http://kc.example', allow_insecure_http: true, admin_password: env:KC}",
            1,
        ),
        encoding="utf-8",
    )
    assert str(load_inventory(path).clusters[0].keycloak.url) == "http://kc.example"


def test_duplicate_cluster_names(tmp_path: Path) -> None:
    base = BASE.read_text(encoding="utf-8")
    second = base[base.index("clusters:\n") + len("clusters:\n") :]
    path = tmp_path / "dup.yml"
    path.write_text(base + second, encoding="utf-8")
    with pytest.raises(InputFileError) as info:
        load_inventory(path)
    (problem,) = info.value.problems
    assert (problem.line, problem.path) == (29, "clusters[1].name")
    assert "used twice" in problem.message


def _two_clusters_one_realm(client_ids: tuple[str, str]) -> str:
    base = BASE.read_text(encoding="utf-8")
    cluster = base[base.index("clusters:\n") + len("clusters:\n") :]
    clusters = []
    for name, client in zip(("main", "infer"), client_ids, strict=True):
        clusters.append(
            cluster.replace("  - name: main", f"  - name: {name}").rstrip("\n")
            + "\n    keycloak: {mode: external, url: 'https://sso.example.com',"
            + f" admin_password: env:KC, client_id: {client}}}\n"
        )
    return base[: base.index("clusters:\n") + len("clusters:\n")] + "".join(clusters)


def test_clusters_sharing_a_realm_need_clients_of_their_own(tmp_path: Path) -> None:
    # Each cluster's keycloak stack owns its OIDC client: taking one cluster back would delete
    # the client the other logs in with.
    path = tmp_path / "shared.yml"
    path.write_text(_two_clusters_one_realm(("platform", "platform")), encoding="utf-8")
    with pytest.raises(InputFileError) as info:
        load_inventory(path)
    (problem,) = info.value.problems
    assert problem.path == "clusters[1].keycloak.client_id"
    assert problem.line == 47
    assert "already cluster 'main's" in problem.message
    assert "client_id: platform-infer" in problem.message
    path.write_text(_two_clusters_one_realm(("platform", "platform-infer")), encoding="utf-8")
    inv = load_inventory(path)
    assert [c.keycloak.client_id for c in inv.clusters] == ["platform", "platform-infer"]


def _special_files(tmp_path: Path) -> dict[str, tuple[Path, int, str]]:
    empty = tmp_path / "empty.yml"
    empty.write_text("", encoding="utf-8")
    comments = tmp_path / "comments.yml"
    comments.write_text("# nothing here\n\n", encoding="utf-8")
    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"apiVersion: installer/v1\n\x00\x01\x02\xff")
    latin = tmp_path / "latin1.yml"
    latin.write_bytes(b"apiVersion: installer/v1\nsite:\n  name: caf\xe9\n")
    huge = tmp_path / "huge.yml"
    with huge.open("wb") as handle:
        handle.write(b"apiVersion: installer/v1\n")
        handle.write(b"# padding\n" * (5 * 1024 * 1024))  # 50 MB of comments
    scalar = tmp_path / "scalar.yml"
    scalar.write_text("just a string\n", encoding="utf-8")
    multi = tmp_path / "multi.yml"
    multi.write_text(BASE.read_text(encoding="utf-8") + "---\nfoo: 1\n", encoding="utf-8")
    return {
        "empty": (empty, 1, "is empty"),
        "comments-only": (comments, 1, "is empty"),
        "binary": (binary, 2, "binary"),
        "not-utf8": (latin, 3, "not UTF-8"),
        "50MB": (huge, 1, "the limit is 4 MiB"),
        "scalar": (scalar, 1, "must be a mapping"),
        "two-documents": (multi, 1, "2 YAML documents"),
        "missing-file": (tmp_path / "nope.yml", 1, "cannot read inventory"),
        "directory": (tmp_path, 1, "cannot read inventory"),
    }


UNREADABLE = [
    "empty",
    "comments-only",
    "binary",
    "not-utf8",
    "50MB",
    "scalar",
    "two-documents",
    "missing-file",
    "directory",
]


@pytest.mark.parametrize("name", UNREADABLE)
def test_unreadable_files(tmp_path: Path, name: str) -> None:
    path, line, message = _special_files(tmp_path)[name]
    with pytest.raises(InputFileError) as info:
        load_inventory(path)
    (problem,) = info.value.problems
    assert problem.line == line
    assert message in problem.message


CLI_CASES = ["dangling-preset-pool", "inline-secret", "yaml-unclosed-flow", "unknown-key-typo"]


@pytest.mark.parametrize("case_id", CLI_CASES)
def test_cli_exit_2_with_position_and_no_traceback(tmp_path: Path, case_id: str) -> None:
    case = next(c for c in CASES if c.id == case_id)
    path = _write(tmp_path, case)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "installer.cli",
            "--log-dir",
            str(tmp_path / "runs"),
            "validate",
            "--inventory",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:{case.line}:" in proc.stderr
    assert case.path in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


# Every broken inventory above, through the real entry point in one process (one start-up for
# all of them): text and JSON output, exit code 2, file:line and field, no traceback.
DRIVER = """
import contextlib, io, json, sys
from installer.cli.app import main

results = {}
for name, path in json.loads(sys.argv[1]).items():
    for mode in ("text", "json"):
        out, err = io.StringIO(), io.StringIO()
        argv = ["--log-dir", sys.argv[2], "-o", mode, "validate", "--inventory", path]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        results[f"{name}/{mode}"] = {"code": code, "out": out.getvalue(), "err": err.getvalue()}
print(json.dumps(results))
"""

# name -> (file, line, field path, message fragment)
Expected = dict[str, tuple[Path, int, str, str]]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Expected, dict[str, Any]]:
    work = tmp_path_factory.mktemp("broken")
    expected: Expected = {}
    for case in CASES:
        expected[case.id] = (_write(work, case), case.line, case.path, case.message)
    base = BASE.read_text(encoding="utf-8")
    dup = work / "duplicate-cluster.yml"
    dup.write_text(base + base[base.index("clusters:\n") + len("clusters:\n") :])
    expected["duplicate-cluster"] = (dup, 29, "clusters[1].name", "used twice")
    (work / "special").mkdir()
    for name, (path, line, message) in _special_files(work / "special").items():
        expected[name] = (path, line, "", message)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            DRIVER,
            json.dumps({name: str(e[0]) for name, e in expected.items()}),
            str(work / "runs"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return expected, json.loads(proc.stdout.splitlines()[-1])


CLI_NAMES = [*(c.id for c in CASES), "duplicate-cluster", *UNREADABLE]


def test_at_least_25_broken_inventories_reach_the_cli() -> None:
    assert len(CLI_NAMES) >= 25
    assert len(set(CLI_NAMES)) == len(CLI_NAMES)


@pytest.mark.parametrize("name", CLI_NAMES)
def test_cli_text_exit_2_file_line_field_no_traceback(
    cli_runs: tuple[Expected, dict[str, Any]], name: str
) -> None:
    expected, results = cli_runs
    path, line, field, message = expected[name]
    got = results[f"{name}/text"]
    assert got["code"] == 2, got["err"]
    assert "Traceback" not in got["err"] + got["out"]
    lines = [ln.strip() for ln in got["err"].splitlines()]
    prefix = f"{path}:{line}:"
    hits = [ln for ln in lines if ln.startswith(prefix) and message in ln]
    assert hits, f"no line {prefix} ... {message!r} in {got['err']}"
    if field:
        assert any(f": {field}: " in ln for ln in hits), hits


@pytest.mark.parametrize("name", CLI_NAMES)
def test_cli_json_exit_2_carries_the_problem(
    cli_runs: tuple[Expected, dict[str, Any]], name: str
) -> None:
    expected, results = cli_runs
    path, line, field, message = expected[name]
    got = results[f"{name}/json"]
    assert got["code"] == 2, got["err"]
    (doc_line,) = got["out"].splitlines()
    error = json.loads(doc_line)["error"]
    assert error["exit_code"] == 2
    assert any(
        (p["file"], p["line"], p["path"]) == (str(path), line, field) and message in p["message"]
        for p in error["problems"]
    ), error["problems"]
