"""The lab VM provisioned as the artifact hub by `installer bootstrap --only auxvm`, then used
from the host side with strict TLS (trusting only the site CA) like a cluster node would."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from installer.checks.dnsquery import DnsError, query
from installer.engines.registry import RegistryClient, RegistryEndpoint
from installer.engines.ssh import SshTarget, run_command
from installer.errors import InstallerError
from tests.fixtures.auxvm import (
    LAB_INVENTORY,
    Hub,
    bootstrap_auxvm,
    systemctl,
    unit_state,
    unit_uptime,
)
from tests.integration.auxvm.artifacts import chart_archive, oci_layout, wheel

pytestmark = pytest.mark.e2e

USER, PULL_USER = "installer", "cluster-pull"
REGISTRY_PORT, CHARTS_PORT, DEVPI_PORT = 5000, 8080, 3141
"""The clusters' read-only endpoints (and DevPI)."""
REGISTRY_PUSH_PORT, CHARTS_PUSH_PORT = 5001, 8081
"""The installer's read-write endpoints."""


def _tls(hub: Hub) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(hub.ca_cert))


def _cert_dir(hub: Hub, tmp_path: Path) -> Path:
    folder = tmp_path / "certs"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(hub.ca_cert, folder / "ca.crt")
    return folder


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)


def _pip_env() -> dict[str, str]:
    """This machine's environment without its CA bundle and index settings: pip must trust the
    site CA given with --cert and nothing else, and look at the hub only."""
    drop = {"PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "PIP_FIND_LINKS"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "PIP_CONFIG_FILE": os.devnull}


def _ssh(hub: Hub) -> SshTarget:
    return SshTarget(
        address=hub.vm.address,
        port=hub.vm.ssh_port,
        user=hub.vm.user,
        private_key=hub.vm.key.read_text(),
        known_hosts=hub.vm.known_hosts,
    )


def test_first_run_reports_the_hub_ready(provisioned_hub: Hub) -> None:
    final = provisioned_hub.first_run.final()
    assert final["ok"] is True
    (auxvm,) = [p for p in final["phases"] if p["phase"] == "auxvm"]
    assert auxvm["status"] == "ok"
    assert f"({provisioned_hub.address})" in auxvm["message"]


def test_registry_push_and_pull_with_the_site_ca(provisioned_hub: Hub, tmp_path: Path) -> None:
    hub = provisioned_hub
    certs = _cert_dir(hub, tmp_path)
    tag = uuid.uuid4().hex[:12]
    digest = oci_layout(tmp_path / "src", tag, payload=tag.encode())
    ref = f"docker://{hub.address}:{REGISTRY_PUSH_PORT}/hubtest/hello:{tag}"
    creds = f"{USER}:{hub.password}"
    # What a node pulls: the read-only endpoint, the pull login.
    node_ref = f"docker://{hub.address}:{REGISTRY_PORT}/hubtest/hello:{tag}"
    pull_creds = f"{PULL_USER}:{hub.pull_password}"

    pushed = _skopeo("copy", "--dest-cert-dir", str(certs), "--dest-creds", creds,
                     f"oci:{tmp_path / 'src'}:{tag}", ref)  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    pulled = _skopeo("copy", "--src-cert-dir", str(certs), "--src-creds", pull_creds,
                     node_ref, f"oci:{tmp_path / 'back'}:{tag}")  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    back = json.loads((tmp_path / "back" / "index.json").read_text())
    assert back["manifests"][0]["digest"] == digest

    endpoint = RegistryEndpoint(
        host=f"{hub.address}:{REGISTRY_PUSH_PORT}",
        ca_file=hub.ca_cert,
        username=USER,
        password=SecretStr(hub.password),
    )
    with RegistryClient(endpoint) as client:
        manifest = client.get_manifest("hubtest/hello", tag)
        assert manifest.digest == digest
        layer = json.loads(manifest.data)["layers"][0]
        size = client.fetch_blob("hubtest/hello", layer["digest"], tmp_path / "layer")
        assert size == layer["size"]

        # The project's client pushes too (blobs, then the manifest, into a new repository)
        # and skopeo pulls what it pushed.
        blobs = tmp_path / "src" / "blobs" / "sha256"
        config = json.loads(manifest.data)["config"]["digest"]
        pushed_config = client.push_blob("hubtest/own", config, blobs / config[7:])
        assert pushed_config in ("uploaded", "present")  # the config may be an earlier run's
        pushed_layer = client.push_blob("hubtest/own", layer["digest"], blobs / layer["digest"][7:])
        assert pushed_layer == "uploaded"  # the layer holds this run's tag
        client.put_manifest("hubtest/own", tag, manifest)
    own = f"docker://{hub.address}:{REGISTRY_PORT}/hubtest/own:{tag}"
    copied = _skopeo("copy", "--src-cert-dir", str(certs), "--src-creds", pull_creds,
                     own, f"oci:{tmp_path / 'own'}:{tag}")  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    own_index = json.loads((tmp_path / "own" / "index.json").read_text())
    assert own_index["manifests"][0]["digest"] == digest
    assert (
        tmp_path / "own" / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")
    ).is_file()

    # The data is on the persistent path; deletion is enabled (to replace a bad tag).
    stored = "/var/lib/onprem-hub/registry/docker/registry/v2/repositories/hubtest/own"
    assert run_command(_ssh(hub), ["sudo", "-n", "test", "-d", stored]).rc == 0, stored
    manifest_url = f"https://{hub.address}:{REGISTRY_PUSH_PORT}/v2/hubtest/own/manifests/{digest}"
    with httpx.Client(verify=_tls(hub), auth=(USER, hub.password)) as http:
        assert http.delete(manifest_url).status_code == 202
        assert http.get(manifest_url).status_code == 404
    # The read-only endpoint serves the same storage: the deletion shows there too.
    node_url = manifest_url.replace(f":{REGISTRY_PUSH_PORT}/", f":{REGISTRY_PORT}/")
    gone = httpx.get(node_url, verify=_tls(hub), auth=(PULL_USER, hub.pull_password))
    assert gone.status_code == 404


def test_the_pull_login_reads_and_cannot_write(provisioned_hub: Hub, tmp_path: Path) -> None:
    """Least privilege: the clusters' login pulls, and no endpoint lets it (or anyone on the
    clusters' port) push, delete or upload; the installer's login writes on the push ports."""
    hub = provisioned_hub
    certs = _cert_dir(hub, tmp_path)
    tag = uuid.uuid4().hex[:12]
    oci_layout(tmp_path / "src", tag, payload=tag.encode())
    source = f"oci:{tmp_path / 'src'}:{tag}"
    pull_creds = f"{PULL_USER}:{hub.pull_password}"
    for port, creds in (
        (REGISTRY_PORT, pull_creds),  # read-only endpoint: 405
        (REGISTRY_PORT, f"{USER}:{hub.password}"),  # read-only for the installer too
        (REGISTRY_PUSH_PORT, pull_creds),  # the push endpoint does not know the pull login
    ):
        ref = f"docker://{hub.address}:{port}/hubtest/denied:{tag}"
        pushed = _skopeo("copy", "--dest-cert-dir", str(certs), "--dest-creds", creds,
                         source, ref)  # fmt: skip
        assert pushed.returncode != 0, (port, creds.split(":")[0])
    denied = run_command(
        _ssh(hub),
        ["sudo", "-n", "test", "-e",
         "/var/lib/onprem-hub/registry/docker/registry/v2/repositories/hubtest/denied"],
    )  # fmt: skip
    assert denied.rc != 0, "a refused push left a repository behind"
    with httpx.Client(verify=_tls(hub), auth=(PULL_USER, hub.pull_password)) as http:
        base = f"https://{hub.address}:{REGISTRY_PORT}/v2"
        assert http.get(f"{base}/").status_code == 200
        upload = http.post(f"{base}/hubtest/denied/blobs/uploads/")
        assert upload.status_code == 405, upload.text
        assert http.delete(f"{base}/hubtest/hello/manifests/sha256:{'0' * 64}").status_code == 405
        assert http.get(f"https://{hub.address}:{REGISTRY_PUSH_PORT}/v2/").status_code == 401
        charts = f"https://{hub.address}:{CHARTS_PORT}"
        assert http.get(f"{charts}/index.yaml").status_code == 200
        assert http.post(f"{charts}/api/charts", content=b"x").status_code == 404
        assert http.get(f"https://{hub.address}:{CHARTS_PUSH_PORT}/index.yaml").status_code == 401
    # ChartMuseum's read-only endpoint knows the pull login only.
    installer_there = httpx.get(
        f"https://{hub.address}:{CHARTS_PORT}/index.yaml",
        verify=_tls(hub),
        auth=(USER, hub.password),
    )
    assert installer_there.status_code == 401


def test_registry_refuses_wrong_password_and_untrusted_tls(
    provisioned_hub: Hub, tmp_path: Path
) -> None:
    hub = provisioned_hub
    certs = _cert_dir(hub, tmp_path)
    ref = f"docker://{hub.address}:{REGISTRY_PUSH_PORT}/hubtest/hello:absent"
    wrong = _skopeo("inspect", "--cert-dir", str(certs), "--creds", f"{USER}:wrong-{uuid.uuid4()}",
                    ref)  # fmt: skip
    assert wrong.returncode != 0
    assert "unauthorized" in wrong.stderr.lower() or "authentication" in wrong.stderr.lower()
    untrusted = _skopeo("inspect", "--creds", f"{USER}:{hub.password}", ref)
    assert untrusted.returncode != 0
    assert "certificate" in untrusted.stderr.lower()
    for port in (REGISTRY_PORT, REGISTRY_PUSH_PORT):
        anonymous = httpx.get(f"https://{hub.address}:{port}/v2/", verify=_tls(hub))
        assert anonymous.status_code == 401


def test_chartmuseum_upload_and_fetch(provisioned_hub: Hub) -> None:
    hub = provisioned_hub
    version = f"0.1.{int(time.time())}"
    archive = chart_archive("hubtest", version)
    base = f"https://{hub.address}:{CHARTS_PUSH_PORT}"
    with httpx.Client(base_url=base, verify=_tls(hub), auth=(USER, hub.password)) as http:
        saved = http.post("/api/charts", content=archive)
        assert saved.status_code == 201, saved.text
        again = http.post("/api/charts", content=archive)
        assert again.status_code == 409
        index = http.get("/index.yaml")
        assert index.status_code == 200
        assert f"hubtest-{version}.tgz" in index.text
        fetched = http.get(f"/charts/hubtest-{version}.tgz")
        assert fetched.content == archive
        assert http.get(f"/api/charts/hubtest/{version}").json()["version"] == version
    stored = f"/var/lib/onprem-hub/charts/hubtest-{version}.tgz"
    assert run_command(_ssh(hub), ["sudo", "-n", "test", "-s", stored]).rc == 0, stored
    # The clusters' read-only endpoint serves the upload at once, to the pull login.
    pull = f"https://{hub.address}:{CHARTS_PORT}"
    with httpx.Client(base_url=pull, verify=_tls(hub), auth=(PULL_USER, hub.pull_password)) as http:
        index = http.get("/index.yaml")
        assert index.status_code == 200
        # Its chart URLs name the read-only endpoint too (`--chart-url`).
        assert f"https://hub.ml.lab.test:{CHARTS_PORT}/charts/hubtest-{version}.tgz" in index.text
        assert http.get(f"/charts/hubtest-{version}.tgz").content == archive
    for url in (base, pull):
        for auth in (None, (USER, f"wrong-{uuid.uuid4()}"), (PULL_USER, f"wrong-{uuid.uuid4()}")):
            refused = httpx.get(f"{url}/index.yaml", verify=_tls(hub), auth=auth)
            assert refused.status_code == 401


def test_pip_installs_a_wheel_from_devpi(provisioned_hub: Hub, tmp_path: Path) -> None:
    hub = provisioned_hub
    name, version = "hubtest_pkg", f"1.0.{int(time.time())}"
    built = wheel(tmp_path, name, version, f"VERSION = {version!r}\n")
    index = f"https://{hub.address}:{DEVPI_PORT}/root/platform/"
    form = {":action": "file_upload", "name": name, "version": version, "protocol_version": "1"}
    with httpx.Client(verify=_tls(hub), timeout=60) as http:
        for auth in ((USER, f"wrong-{uuid.uuid4()}"), None):
            refused = http.post(index, data=form, files={"content": (built.name, b"x")}, auth=auth)
            assert refused.status_code in (401, 403), refused.text
        uploaded = http.post(
            index,
            data=form,
            files={"content": (built.name, built.read_bytes())},
            auth=(USER, hub.password),
        )
        assert uploaded.status_code == 200, uploaded.text
    found = run_command(
        _ssh(hub), ["sudo", "-n", "find", "/var/lib/onprem-hub/devpi", "-name", built.name]
    )
    assert built.name in found.stdout, "the wheel is not on DevPI's persistent path"
    target = tmp_path / "site"
    # pip's system-trust backend cannot verify a server reached by IP address (no SNI name);
    # the classic backend checks the certificate's IP address entry against --cert.
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir",
         "--use-deprecated=legacy-certs",
         "--index-url", f"{index}+simple/", "--cert", str(hub.ca_cert),
         "--target", str(target), f"{name}=={version}"],
        capture_output=True, text=True, timeout=300, env=_pip_env(),
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr
    assert (target / f"{name}.py").read_text() == f"VERSION = {version!r}\n"


def test_devpi_login_refuses_wrong_passwords(provisioned_hub: Hub) -> None:
    hub = provisioned_hub
    url = f"https://{hub.address}:{DEVPI_PORT}/+login"
    with httpx.Client(verify=_tls(hub), headers={"Accept": "application/json"}) as http:
        for user in (USER, "root"):
            wrong = http.post(url, json={"user": user, "password": f"wrong-{uuid.uuid4()}"})
            assert wrong.status_code == 401
        assert http.post(url, json={"user": USER, "password": hub.password}).status_code == 200
        root = {"user": "root", "password": hub.devpi_root_password}
        assert http.post(url, json=root).status_code == 200


def test_vm_dns_serves_the_wildcard_zone(provisioned_hub: Hub) -> None:
    hub = provisioned_hub
    zone = "lab.org.ml.lab.test"
    for name in (f"x.jobs.{zone}", f"my-app.apps.{zone}", zone, f"grafana.{zone}"):
        assert query(name, hub.address).addresses == ("10.213.0.1",), name
    assert query("hub.ml.lab.test", hub.address).addresses == (hub.address,)
    # No upstream servers in the lab inventory (as on an air-gapped site): other names are
    # refused, never answered from this machine's resolver.
    with pytest.raises(DnsError, match="rcode 5"):
        query("elsewhere.example", hub.address)


STAYS_UP_S = 3
"""How long a restarted program must have run, as systemd's main pid of its unit."""


def _on_vm(hub: Hub) -> Callable[[list[str]], str]:
    """Runs argv on the VM over SSH (pinned host key), gives its output."""
    ssh = _ssh(hub)

    def run(argv: list[str]) -> str:
        return run_command(ssh, argv).stdout

    return run


def _uptime(hub: Hub, program: str) -> tuple[int, int] | None:
    """`(pid, seconds up)` while systemd has the program's unit active and running, else None."""
    return unit_uptime(_on_vm(hub), program)


def _pid(hub: Hub, program: str) -> int:
    """The unit's main pid (0 while it is not running)."""
    return unit_state(_on_vm(hub), program)[2]


def _answers(hub: Hub, program: str) -> bool:
    """Whether `program` serves again, seen from the host side (strict TLS, site CA)."""
    if program == "dns":
        return query("x.jobs.lab.org.ml.lab.test", hub.address).addresses == ("10.213.0.1",)
    url, status = {
        "registry": (f"https://{hub.address}:{REGISTRY_PUSH_PORT}/v2/", 401),
        "registry-pull": (f"https://{hub.address}:{REGISTRY_PORT}/v2/", 401),
        "chartmuseum": (f"https://{hub.address}:{CHARTS_PUSH_PORT}/index.yaml", 401),
        "chartmuseum-pull": (f"https://{hub.address}:{CHARTS_PORT}/index.yaml", 401),
        # Through the TLS proxy to devpi-server: both must run for a 200.
        "devpi": (f"https://{hub.address}:{DEVPI_PORT}/+api", 200),
        "devpi-proxy": (f"https://{hub.address}:{DEVPI_PORT}/+api", 200),
    }[program]
    return httpx.get(url, verify=_tls(hub), timeout=5).status_code == status


@pytest.mark.parametrize(
    "program",
    ["registry", "registry-pull", "chartmuseum", "chartmuseum-pull", "devpi", "devpi-proxy", "dns"],
)
def test_killed_service_comes_back(provisioned_hub: Hub, program: str) -> None:
    hub = provisioned_hub
    before = _pid(hub, program)
    assert before > 0, program
    killed = run_command(_ssh(hub), ["sudo", "-n", "kill", "-KILL", str(before)])
    assert killed.rc == 0, killed.stderr
    deadline = time.monotonic() + 60
    while True:
        try:
            after = _pid(hub, program)
            if after not in (0, before) and _answers(hub, program):
                break
        except (ValueError, OSError, httpx.TransportError, InstallerError, DnsError):
            pass
        assert time.monotonic() < deadline, f"{program} did not come back within 60 s"
        time.sleep(0.5)
    # The restarted program is the unit's main process, it stays up (systemd has it active and
    # running for some seconds), and what answers is it (its process group), not something the
    # killed one left behind.
    while (up := _uptime(hub, program)) is None or up[1] < STAYS_UP_S:
        assert time.monotonic() < deadline, f"{program} is not RUNNING for {STAYS_UP_S} s: {up}"
        time.sleep(0.5)
    assert up[0] == after
    assert _answers(hub, program)
    port, proto = {
        "registry": (REGISTRY_PUSH_PORT, "t"),
        "registry-pull": (REGISTRY_PORT, "t"),
        "chartmuseum": (CHARTS_PUSH_PORT, "t"),
        "chartmuseum-pull": (CHARTS_PORT, "t"),
        "devpi": (3142, "t"),
        "devpi-proxy": (DEVPI_PORT, "t"),
        "dns": (53, "u"),
    }[program]
    listening = run_command(_ssh(hub), ["sudo", "-n", "ss", f"-Hl{proto}np", f"sport = :{port}"])
    pids = sorted({int(m) for m in re.findall(r"pid=(\d+)", listening.stdout)})
    assert pids, listening.stdout
    groups = run_command(_ssh(hub), ["ps", "-o", "pgid=", "-p", ",".join(map(str, pids))])
    assert {int(g) for g in groups.stdout.split()} == {after}, (listening.stdout, groups.stdout)


def test_a_program_left_on_another_certificate_is_restarted(
    provisioned_hub: Hub, tmp_path: Path
) -> None:
    """What a run that stopped between a new certificate and a restart leaves: the files as the
    next run wants them, a program serving the old certificate. The next run restarts that
    program alone."""
    hub = provisioned_hub
    tls = "/etc/onprem-hub/tls"
    ssh = _ssh(hub)
    other = tmp_path / "other"
    other.mkdir()
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=a-stale-certificate", "-keyout", str(other / "k"), "-out", str(other / "c")],
        capture_output=True, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    # The stale pair goes to the VM over SSH (the VM has a file system of its own).
    stale = f"/tmp/onprem-stale-{uuid.uuid4().hex[:8]}"
    assert run_command(ssh, ["sh", "-c", f"umask 077 && mkdir {stale}"]).rc == 0
    for name in ("c", "k"):
        sent = run_command(
            ssh, ["sh", "-c", f"cat >{stale}/{name}"], stdin=(other / name).read_bytes()
        )
        assert sent.rc == 0, sent.stderr
    swap = (
        f"sudo -n cp -p {tls}/hub.crt {tls}/hub.crt.keep && sudo -n cp -p {tls}/hub.key"
        f" {tls}/hub.key.keep && sudo -n cp {stale}/c {tls}/hub.crt && sudo -n cp {stale}/k"
        f" {tls}/hub.key && {' '.join(systemctl('restart', 'registry-pull'))} && sudo -n"
        f" mv {tls}/hub.crt.keep {tls}/hub.crt && sudo -n mv {tls}/hub.key.keep {tls}/hub.key"
        f" && rm -rf {stale}"
    )
    assert run_command(ssh, ["sh", "-c", swap]).rc == 0
    assert not _answers_strictly(hub, REGISTRY_PORT)
    pushing = _pid(hub, "registry")
    # A failed run records nothing: the next one plays (the probe record stands for the last
    # converging run, whose inputs were another certificate's).
    (hub.state / "auxvm" / "probe.json").unlink()
    again = bootstrap_auxvm(LAB_INVENTORY, tmp_path / "logs", hub.env)
    assert again.rc == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert _answers_strictly(hub, REGISTRY_PORT)
    assert _pid(hub, "registry") == pushing, "a program serving the right certificate restarted"


def _answers_strictly(hub: Hub, port: int) -> bool:
    try:
        url = f"https://{hub.address}:{port}/v2/"
        return httpx.get(url, verify=_tls(hub), timeout=5).status_code == 401
    except httpx.TransportError:
        return False


def test_second_run_changes_nothing_and_keeps_secrets_out_of_logs(
    provisioned_hub: Hub, tmp_path: Path
) -> None:
    hub = provisioned_hub
    again = bootstrap_auxvm(LAB_INVENTORY, tmp_path / "logs", hub.env)
    assert again.rc == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert again.phase_changes() == 0
    message = again.final()["phases"][0]["message"]
    # The drift probe read the VM as the first run left it: the play did not run again.
    assert "changed=0" in message and "drift probe" in message, message
    assert not list((tmp_path / "logs").rglob("artifacts/auxvm")), "the play ran again"
    record = hub.state / "auxvm" / "probe.json"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    # The generated passwords were re-used, not made again, and stay owner-only.
    for name, value in (
        ("hub-password", hub.password),
        ("hub-pull-password", hub.pull_password),
        ("devpi-root-password", hub.devpi_root_password),
    ):
        path = hub.state / "secrets" / name
        assert path.read_text().strip() == value
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secrets = [hub.password, hub.pull_password, hub.devpi_root_password]
    key_body = [
        line
        for line in (hub.state / "pki" / "hub.key").read_text().splitlines()
        if not line.startswith("-----")
    ]
    for folder in (hub.first_run.log_dir, tmp_path / "logs", hub.state / "ansible", record.parent):
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert files, folder
        for path in files:
            text = path.read_bytes().decode("utf-8", "replace")
            for secret in [*secrets, *key_body]:
                assert secret not in text, f"a secret leaked into {path}"
