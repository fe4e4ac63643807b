"""What the auxvm phase hands the play: the site PKI, the DNS zones, rendered service configs,
and the errors a failed play becomes."""

from __future__ import annotations

import ipaddress
import logging
import shlex
import stat
from pathlib import Path

import jinja2
import pytest
import yaml
from cryptography import x509

from installer.engines.ansible import TaskOutcome
from installer.errors import BadInputError, EnvironmentProblem, ExitCode, FailedError
from installer.inventory import load_inventory
from installer.inventory.models import TlsSettings
from installer.overrides import DEV_OVERRIDES
from installer.phases.auxvm import (
    ENV_CHARTMUSEUM,
    ENV_DEVPI_WHEELS,
    ENV_REGISTRY,
    HubSources,
    _failure_error,
    hub_sources,
    hub_vars,
)
from installer.pki import ensure_pki, plan_pki
from installer.site import cluster_names, dns_zones
from installer.state import StateDir
from tests.fixtures.playbooks import failed_result

REPO = Path(__file__).resolve().parents[3]
TEMPLATES = REPO / "templates" / "aux-vm"
GOLDEN = Path(__file__).parent / "golden"
ROLES = REPO / "playbooks" / "roles" / "hub"
LAB = REPO / "inventories" / "lab.yml"
TRUE = {"true", "yes", "on", "1"}


def _sans(path: Path) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        sorted(san.get_values_for_type(x509.DNSName)),
        [str(i) for i in san.get_values_for_type(x509.IPAddress)],
    )


def test_pki_is_created_once_and_reissued_when_names_change(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    tls = TlsSettings()
    pki, plan = ensure_pki(state, tls, "lab", ["hub.ml.lab.test"], ["10.213.0.2"])
    assert plan.create_ca and plan.issue_server_cert
    assert stat.S_IMODE((tmp_path / "pki" / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(pki.server_key.stat().st_mode) == 0o600
    assert _sans(pki.server_cert) == (["hub.ml.lab.test"], ["10.213.0.2"])
    ca_before = pki.ca_cert.read_bytes()
    cert_before = pki.server_cert.read_bytes()

    again = plan_pki(state, tls, ["hub.ml.lab.test"], ["10.213.0.2"])
    assert not again.create_ca and not again.issue_server_cert
    _, plan = ensure_pki(state, tls, "lab", ["hub.ml.lab.test"], ["10.213.0.2"])
    assert pki.server_cert.read_bytes() == cert_before

    names = ["hub.ml.lab.test", "registry.ml.lab.test"]
    assert plan_pki(state, tls, names, ["10.213.0.2"]).reason == "the VM's names changed"
    pki, plan = ensure_pki(state, tls, "lab", names, ["10.213.0.2"])
    assert plan.issue_server_cert and not plan.create_ca
    assert pki.ca_cert.read_bytes() == ca_before
    assert _sans(pki.server_cert) == (names, ["10.213.0.2"])
    issuer = x509.load_pem_x509_certificate(ca_before).subject
    assert x509.load_pem_x509_certificate(pki.server_cert.read_bytes()).issuer == issuer


def test_provided_ca_signs_the_server_certificate(tmp_path: Path) -> None:
    given = StateDir(tmp_path / "operator")
    ensure_pki(given, TlsSettings(), "corp", ["x.example"], ["10.0.0.1"])
    key_file = tmp_path / "operator" / "pki" / "ca.key"
    tls = TlsSettings(ca="provided", ca_cert=given.ca_cert, ca_key=f"file:{key_file}")
    state = StateDir(tmp_path / "site")
    pki, plan = ensure_pki(state, tls, "site", ["hub.site.example"], ["10.1.0.5"])
    assert not plan.create_ca
    assert not (tmp_path / "site" / "pki" / "ca.key").exists()
    assert pki.ca_cert.read_bytes() == given.ca_cert.read_bytes()
    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    assert cert.issuer == x509.load_pem_x509_certificate(given.ca_cert.read_bytes()).subject


def test_dns_zones_come_from_cluster_names() -> None:
    inv = load_inventory(LAB)
    zones = dns_zones(inv)
    records = [r for z in zones for r in z["records"]]
    expected = [r for c in inv.clusters for r in cluster_names(inv, c).records]
    assert records == expected
    assert {z["zone"] for z in zones} == {
        "lab.org.ml.lab.test",
        "jobs.lab.org.ml.lab.test",
        "apps.lab.org.ml.lab.test",
    }
    assert all(z["addresses"] == ["10.213.0.1"] for z in zones)


def _render(name: str, variables: dict[str, object]) -> str:
    env = jinja2.Environment(  # noqa: S701 - config files, not HTML
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
    )
    # The two Ansible filters these templates use.
    env.filters["quote"] = lambda s: shlex.quote(str(s))
    env.filters["bool"] = lambda v: v if isinstance(v, bool) else str(v).lower() in TRUE
    return env.get_template(name).render(**variables)


@pytest.fixture
def lab_vars(tmp_path: Path) -> dict[str, object]:
    inv = load_inventory(LAB)
    state = StateDir(tmp_path)
    pki, _ = ensure_pki(state, inv.aux_vm.tls, "lab", ["hub.ml.lab.test"], ["10.213.0.2"])
    variables = hub_vars(inv, state, pki, HubSources(None, None, None))
    return {
        **variables,
        "ansible_managed": "Ansible managed",
        "hub_etc_dir": "/etc/onprem-hub",
        "hub_run_dir": "/run/onprem-hub",
        "hub_log_dir": "/var/log/onprem-hub",
        "hub_tls_dir": "/etc/onprem-hub/tls",
        "hub_service_user": "onprem-hub",
        "hub_registry_delete_enabled": True,
        "hub_registry_realm": "onprem-hub",
        "hub_dns_listen": variables["hub_address"],
        "hub_devpi_backend_port": 3142,
        "hub_devpi_max_upload": "512m",
    }


@pytest.mark.parametrize("template", ["dnsmasq.conf.j2", "devpi-nginx.conf.j2"])
def test_service_configs_match_golden_files(template: str, lab_vars: dict[str, object]) -> None:
    rendered = _render(template, lab_vars)
    golden = GOLDEN / template.removesuffix(".j2")
    assert rendered == golden.read_text(), f"regenerate {golden} if the change is intended"


def _registry_endpoints(variables: dict[str, object]) -> list[dict[str, object]]:
    """The role's hub_registry_endpoints, rendered with the site's variables."""
    defaults = yaml.safe_load((ROLES / "registry" / "defaults" / "main.yml").read_text())
    endpoints = []
    for raw in defaults["hub_registry_endpoints"]:
        port = jinja2.Template(raw["port"]).render(**variables)
        endpoints.append({**raw, "port": int(port)})
    return endpoints


@pytest.mark.parametrize("program", ["registry", "registry-pull"])
def test_registry_configs_match_golden_files(program: str, lab_vars: dict[str, object]) -> None:
    endpoint = next(e for e in _registry_endpoints(lab_vars) if e["program"] == program)
    rendered = _render("registry-config.yml.j2", {**lab_vars, "hub_registry_endpoint": endpoint})
    golden = GOLDEN / f"{program}-config.yml"
    assert rendered == golden.read_text(), f"regenerate {golden} if the change is intended"


def test_registry_pull_endpoint_is_read_only_on_the_inventory_port(
    lab_vars: dict[str, object],
) -> None:
    """The clusters' port runs the read-only registry; the installer's port is the other one."""
    inv = load_inventory(LAB)
    by_program = {e["program"]: e for e in _registry_endpoints(lab_vars)}
    pull, push = by_program["registry-pull"], by_program["registry"]
    assert pull["port"] == inv.aux_vm.services.registry.port
    assert push["port"] == inv.aux_vm.services.registry.push_port
    pull_config = yaml.safe_load(
        _render("registry-config.yml.j2", {**lab_vars, "hub_registry_endpoint": pull})
    )
    push_config = yaml.safe_load(
        _render("registry-config.yml.j2", {**lab_vars, "hub_registry_endpoint": push})
    )
    assert pull_config["storage"]["maintenance"]["readonly"] == {"enabled": True}
    assert pull_config["storage"]["delete"] == {"enabled": False}
    assert pull_config["storage"]["maintenance"]["uploadpurging"]["enabled"] is False
    assert "readonly" not in push_config["storage"]["maintenance"]
    assert pull_config["auth"]["htpasswd"]["path"] != push_config["auth"]["htpasswd"]["path"]


def test_vars_hold_paths_not_secrets(tmp_path: Path, lab_vars: dict[str, object]) -> None:
    text = repr(lab_vars)
    assert "secrets/hub-password" in text
    assert "BEGIN" not in text


def test_unreachable_host_key_mismatch_is_an_environment_problem() -> None:
    inv = load_inventory(LAB)
    msg = "Failed to connect to the host via ssh: Host key verification failed."
    outcome = TaskOutcome("aux-vm", "Check", "hub/common", msg)
    err = _failure_error(failed_result(unreachable=[outcome]), inv)
    assert isinstance(err, EnvironmentProblem)
    assert err.exit_code is ExitCode.ENVIRONMENT
    assert "labops@10.213.0.2:22" in err.message
    assert "step 'Check'" in err.message
    assert err.remedy and "host key" in err.remedy


def test_failed_task_carries_step_and_remedy() -> None:
    inv = load_inventory(LAB)
    msg = "port 5000 on aux-vm is taken by another program (python3). remedy: stop that program"
    err = _failure_error(
        failed_result(failures=[TaskOutcome("aux-vm", "Refuse ports", "hub/common", msg)]), inv
    )
    assert isinstance(err, FailedError)
    assert err.exit_code is ExitCode.FAILED
    assert "step 'Refuse ports' failed: port 5000" in err.message
    assert err.remedy == "stop that program"


def test_missing_sudo_is_an_environment_problem() -> None:
    inv = load_inventory(LAB)
    msg = "Missing sudo password"
    err = _failure_error(
        failed_result(failures=[TaskOutcome("aux-vm", "Look", "hub/common", msg)]), inv
    )
    assert isinstance(err, EnvironmentProblem)
    assert err.remedy and "sudo" in err.remedy


def test_address_is_in_the_certificate_as_an_ip(tmp_path: Path) -> None:
    pki, _ = ensure_pki(StateDir(tmp_path), TlsSettings(), "lab", ["h.example"], ["10.9.8.7"])
    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.9.8.7")]


def test_program_sources_env_then_bundle_then_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "hub" / "devpi-wheels").mkdir(parents=True)
    (bundle / "hub" / "chartmuseum").write_text("")
    for name in (ENV_CHARTMUSEUM, ENV_DEVPI_WHEELS, ENV_REGISTRY):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert hub_sources(None) == HubSources(None, None, None)
    found = hub_sources(bundle)
    assert found.chartmuseum_binary == bundle / "hub" / "chartmuseum"
    assert found.devpi_wheelhouse == bundle / "hub" / "devpi-wheels"
    assert found.registry_binary is None
    monkeypatch.setenv(ENV_CHARTMUSEUM, "/opt/cm")
    assert hub_sources(bundle).chartmuseum_binary == Path("/opt/cm")


def test_an_override_of_a_bundles_program_needs_the_development_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where the programs come from a signed bundle (guarded), a variable does not replace one
    quietly: refused (exit 2) without INSTALLER_ALLOW_DEV_OVERRIDES=1, a warning with it."""
    bundle = tmp_path / "bundle"
    (bundle / "hub").mkdir(parents=True)
    (bundle / "hub" / "chartmuseum").write_text("")
    monkeypatch.delenv(DEV_OVERRIDES, raising=False)
    monkeypatch.setenv(ENV_CHARTMUSEUM, "/opt/cm")
    with pytest.raises(BadInputError) as refused:
        hub_sources(bundle, guarded=True)
    assert refused.value.exit_code == ExitCode.BAD_INPUT
    assert f"{ENV_CHARTMUSEUM}=/opt/cm would replace the signed bundle's hub program" in str(
        refused.value
    )
    assert DEV_OVERRIDES in (refused.value.remedy or "")
    monkeypatch.setenv(DEV_OVERRIDES, "1")
    # A run's log set-up (runlog) stops the installer's records at its own logger.
    monkeypatch.setattr(logging.getLogger("installer"), "propagate", True)
    with caplog.at_level("WARNING"):
        assert hub_sources(bundle, guarded=True).chartmuseum_binary == Path("/opt/cm")
    assert "DEVELOPMENT OVERRIDE" in caplog.text and ENV_CHARTMUSEUM in caplog.text


def test_hub_passwords_are_created_once_0600_and_reused(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    first = {name: state.secret(name).get_secret_value() for name in ("hub-password", "x-root")}
    assert stat.S_IMODE(state.secrets.stat().st_mode) == 0o700
    for name, value in first.items():
        path = state.secrets / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().strip() == value
        assert len(value) >= 32
    again = StateDir(tmp_path / "state")
    assert {n: again.secret(n).get_secret_value() for n in first} == first
    assert first["hub-password"] != first["x-root"]


def test_the_inventory_programs_dir_comes_after_the_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`aux_vm.programs_dir` describes where a site keeps the hub's programs: no environment."""
    programs = tmp_path / "programs"
    (programs / "devpi-wheels").mkdir(parents=True)
    (programs / "chartmuseum").write_text("")
    bundle = tmp_path / "bundle"
    (bundle / "hub").mkdir(parents=True)
    (bundle / "hub" / "chartmuseum").write_text("")
    for name in (ENV_CHARTMUSEUM, ENV_DEVPI_WHEELS, ENV_REGISTRY):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    found = hub_sources(None, programs)
    assert found == HubSources(programs / "chartmuseum", programs / "devpi-wheels", None)
    mixed = hub_sources(bundle, programs)
    assert mixed.chartmuseum_binary == bundle / "hub" / "chartmuseum"  # the bundle's first
    assert mixed.devpi_wheelhouse == programs / "devpi-wheels"  # what it lacks, from the folder
