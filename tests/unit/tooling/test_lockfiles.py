"""The pins hold without the network: every Go-built lab tool builds from a committed lockfile
that names the version lab/versions.env pins, nothing in lab/ resolves a module on its own, and
the Python lockfiles agree with pyproject.toml and constraints.txt and hash every file."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest

from tests.fixtures.lab import LAB_DIR, REPO, read_versions

TOOLCHAIN = LAB_DIR / "toolchain"
REQUIREMENTS = REPO / "requirements"

# tool -> (the module whose version lab/versions.env pins, the versions.env key, a prefix)
ANCHORS = {
    "etcd": ("go.etcd.io/etcd/server/v3", "ETCD_VERSION", ""),
    "kwok": ("sigs.k8s.io/kwok", "KWOK_VERSION", ""),
    "crictl": ("sigs.k8s.io/cri-tools", "CRICTL_VERSION", ""),
    "kubernetes": ("k8s.io/kubernetes", "KUBE_VERSION", ""),
    "pulumi": ("github.com/pulumi/pulumi/pkg/v3", "PULUMI_VERSION", "v"),
    "pulumi-kubernetes": (
        "github.com/pulumi/pulumi-kubernetes/provider/v4",
        "PULUMI_KUBERNETES_PROVIDER_MODULE",
        "",
    ),
    "helm": ("helm.sh/helm/v3", "HELM_VERSION", ""),
}


def lab_scripts() -> list[Path]:
    """Every script of lab/, not the sites' runtime state (lab/.state, lab/.state-<site>: the
    second site comes up while a test run collects)."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(LAB_DIR):
        if Path(folder) == LAB_DIR:
            dirs[:] = [d for d in dirs if not d.startswith(".state")]
        for name in files:
            path = Path(folder) / name
            if path.is_file() and (
                path.suffix == ".sh" or (path.suffix == "" and path.read_bytes()[:2] == b"#!")
            ):
                found.append(path)
    return sorted(found)


def code_lines(path: Path) -> list[tuple[int, str]]:
    """The non-comment lines of a shell script, continuation lines joined to their start."""
    out: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if not pending:
            start = number
        pending += " " + line.rstrip("\\")
        if not line.endswith("\\"):
            out.append((start, pending.strip()))
            pending = ""
    return out


def required(gomod: Path) -> dict[str, str]:
    """module -> version of every require line of a go.mod."""
    found: dict[str, str] = {}
    for m in re.finditer(
        r"^\s*(?:require\s+)?([a-z0-9.\-/]+\.[a-z]+/\S*)\s+(v\S+)", gomod.read_text(), re.M
    ):
        found[m.group(1)] = m.group(2)
    return found


def test_lab_scripts_are_found() -> None:
    names = {p.name for p in lab_scripts()}
    assert {"build.sh", "30-pulumi.sh", "40-helm.sh", "refresh", "check"} <= names


@pytest.mark.parametrize("path", lab_scripts(), ids=lambda p: str(p.relative_to(LAB_DIR)))
def test_no_go_get_or_install_without_an_exact_version(path: Path) -> None:
    for number, line in code_lines(path):
        for m in re.finditer(r"\bgo (?:get|install)\b([^;&|]*)", line):
            args = [a for a in m.group(1).split() if not a.startswith("-")]
            assert args, f"{path}:{number}: `go get/install` without a module: {line}"
            for arg in args:
                assert re.search(r"@(v\d+\.\d+\.\d+\S*|\$\w+|\$\{\w+\})\"?$", arg), (
                    f"{path}:{number}: {arg} names no exact version: {line}"
                )


@pytest.mark.parametrize("path", lab_scripts(), ids=lambda p: str(p.relative_to(LAB_DIR)))
def test_every_go_build_runs_in_a_committed_lockfile(path: Path) -> None:
    """A build outside a lockfile (or with -mod=mod) could resolve a newer release by itself."""
    for number, line in code_lines(path):
        if "-mod=mod" in line:
            assert path.name == "refresh", f"{path}:{number}: -mod=mod outside refresh: {line}"
        if re.search(r"\bgo build\b", line):
            in_lock = re.search(r"\bgo_locked [\w-]+ ", line)
            # The provider's build copies its lockfile into a scratch folder (30-pulumi.sh).
            copied = "lock_dir pulumi-kubernetes" in path.read_text()
            assert in_lock or copied, f"{path}:{number}: go build outside a lockfile: {line}"


def test_builds_are_read_only() -> None:
    lib = (LAB_DIR / "lib.sh").read_text()
    assert 'export GOFLAGS="-mod=readonly' in lib


@pytest.mark.parametrize("tool", sorted(ANCHORS))
def test_each_lockfile_names_the_pinned_version(tool: str) -> None:
    module, key, prefix = ANCHORS[tool]
    folder = TOOLCHAIN / tool
    assert (folder / "go.sum").stat().st_size > 0, f"{tool}: no go.sum"
    pins = required(folder / "go.mod")
    assert pins.get(module) == prefix + read_versions()[key], (
        f"{tool}: lockfile has {module} {pins.get(module)}; lab/versions.env pins "
        f"{prefix}{read_versions()[key]} (run lab/toolchain/refresh {tool})"
    )


def test_kubernetes_staging_modules_follow_the_pinned_release() -> None:
    staging = "v0." + read_versions()["KUBE_VERSION"].removeprefix("v1.")
    replaces = re.findall(
        r"^replace (k8s\.io/\S+) => (\S+) (\S+)$",
        (TOOLCHAIN / "kubernetes" / "go.mod").read_text(),
        re.M,
    )
    assert len(replaces) > 20
    assert all(new == old and version == staging for old, new, version in replaces), replaces


def test_drift_guard_knows_every_lockfile() -> None:
    check = (TOOLCHAIN / "check").read_text()
    listed = set(re.search(r"GO_TOOLS=\(([^)]*)\)", check).group(1).split())  # type: ignore[union-attr]
    committed = {p.name for p in TOOLCHAIN.iterdir() if (p / "go.mod").is_file()}
    assert committed == listed == set(ANCHORS)


# --- Python ----------------------------------------------------------------------------------

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+?)(?: \\)?$")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(name: str) -> dict[str, str]:
    """name -> version of a hashed lockfile; every entry carries at least one sha256."""
    text = (REQUIREMENTS / name).read_text()
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", text):
        first = block.splitlines()[0]
        m = PIN.match(first)
        if not m:
            continue
        assert "--hash=sha256:" in block, f"{name}: {first} has no hash"
        pins[norm(m.group(1))] = m.group(2)
    return pins


def pyproject_pins(extra: str | None) -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return {norm(s.split("==")[0]): s.split("==")[1] for s in specs}


def test_runtime_lock_holds_every_runtime_pin() -> None:
    pins = lock_pins("runtime.lock")
    for name, version in pyproject_pins(None).items():
        assert pins.get(name) == version, f"runtime.lock: {name} {pins.get(name)} != {version}"
    tools = {"pytest", "pytest-xdist", "ruff", "mypy", "molecule", "ansible-lint", "hypothesis"}
    assert not tools & set(pins), "runtime.lock carries test tools"


def test_dev_lock_holds_every_pin_and_the_build_backend() -> None:
    pins = lock_pins("dev.lock")
    wanted = {**pyproject_pins(None), **pyproject_pins("dev")}
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    wanted |= {norm(s.split("==")[0]): s.split("==")[1] for s in build}
    for name, version in wanted.items():
        assert pins.get(name) == version, f"dev.lock: {name} {pins.get(name)} != {version}"


def test_constraints_agree_with_the_dev_lock() -> None:
    pins = lock_pins("dev.lock")
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, version = line.split("==")
        if norm(name) in pins:
            assert pins[norm(name)] == version, (
                f"constraints.txt {line} vs dev.lock {pins[norm(name)]}"
            )
    assert set(pins) <= {
        norm(line.split("==")[0]) for line in (REPO / "constraints.txt").read_text().splitlines()
    }


def test_devpi_lock_follows_versions_env() -> None:
    pins = lock_pins("devpi.lock")
    versions = read_versions()
    assert pins["devpi-server"] == versions["DEVPI_SERVER_VERSION"]
    assert pins["devpi-client"] == versions["DEVPI_CLIENT_VERSION"]


@pytest.mark.parametrize(
    ("path", "lock"),
    [
        ("Makefile", "requirements/dev.lock"),
        ("lab/components/60-upstream.sh", "requirements/runtime.lock"),
        ("lab/components/60-upstream.sh", "requirements/devpi.lock"),
        ("lab/components/70-hub.sh", "requirements/devpi.lock"),
    ],
)
def test_installs_require_hashes(path: str, lock: str) -> None:
    text = (REPO / path).read_text().replace("\\\n", " ")
    assert lock in text
    for m in re.finditer(r"pip\S* (?:install|download|wheel)\b[^\n]*", text):
        command = m.group(0)
        if "-r " in command or "--requirement" in command:
            assert "--require-hashes" in command, f"{path}: {command}"
        else:  # only the project itself, from the repo, with no dependencies of its own
            assert "--no-deps" in command and ("-e ." in command or 'REPO_DIR"' in command), command
