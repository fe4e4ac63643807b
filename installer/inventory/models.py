"""The inventory (`onprem.yml`): one file describing a whole site, as pydantic models.

Every field has a description: it feeds the JSON Schema (`installer inventory schema`) and the
inventory reference in the docs. Cross-field rules live in `rules.py`, called from the model
validators here, so the loader can point at the exact field that breaks a rule.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from installer.inventory import rules
from installer.inventory.types import (
    ByteSize,
    Cpu,
    DnsLabel,
    DnsName,
    FilePath,
    LabelKey,
    LabelValue,
    LoginUser,
    SecretRef,
    SshPort,
)

SCHEMA_VERSION = "installer/v1"


class Model(BaseModel):
    """Base of every inventory model: unknown keys are errors; models are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


# --- site -----------------------------------------------------------------------------------


class Site(Model):
    """The site as a whole."""

    name: DnsLabel = Field(description="Short name of the site, used in names and reports.")
    domain: DnsName = Field(
        description="Base DNS domain of the platform, e.g. `ml.example.com`. Cluster names"
        " default to `<cluster>.org.<domain>`."
    )
    airgapped: bool = Field(
        default=False,
        description="True when the site has no internet: every image, chart and wheel then comes"
        " from the air-gap bundle loaded into the auxiliary VM.",
    )
    state_dir: FilePath = Field(
        default="./.installer",
        validate_default=True,
        description="Where the installer keeps its journal, generated secrets (0600) and run"
        " logs; relative to the inventory file.",
    )
    pulumi_bin_dir: FilePath | None = Field(
        default=None,
        description="Folder on the installer host holding the Pulumi CLI and its plugins"
        " (`pulumi`, `pulumi-resource-kubernetes`). Absent: the state folder's copy (installed"
        " from the release's binaries by `airgap-load`), else the `pulumi` on PATH.",
    )


# --- upstream (connected sites) ------------------------------------------------------------


class Upstream(Model):
    """Where a connected site's hub gets the release's content (`airgap/release.yml`): the
    `airgap_load` phase mirrors every image, chart and wheel (and binary, with `binaries_dir`)
    from here into the VM's registry, ChartMuseum and DevPI, pulled as `installer airgap-bundle`
    pulls (same options) and pushed as `installer airgap-load` pushes."""

    registry_mirror: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?$",
        description="`host:port` of a registry holding the release's images under their full"
        " names (`<mirror>/ghcr.io/org/app:1`), like `airgap-bundle --registry-mirror`. Absent:"
        " each image is pulled from its own registry (the release's images must then all come"
        " from one registry).",
    )
    ca_cert: FilePath | None = Field(
        default=None,
        description="CA bundle (PEM) for the upstream registry, chart repository and wheel"
        " index, when not in the system trust store (`--upstream-ca`).",
    )
    user: str | None = Field(
        default=None,
        min_length=1,
        description="Login for the upstream services (`--upstream-user`); give it with `password`.",
    )
    password: SecretRef | None = Field(
        default=None,
        description="Password of `user`: `env:NAME` or `file:path` (`--upstream-password-file`).",
    )
    charts_url: str = Field(
        pattern=r"^https://",
        description="Chart repository serving `index.yaml` with the release's charts"
        " (`--charts-from`).",
    )
    wheels_url: str = Field(
        pattern=r"^https://",
        description="Python package index (simple API) with the release's wheels and their"
        " dependencies (`--wheels-from`).",
    )
    binaries_dir: FilePath | None = Field(
        default=None,
        description="Folder on the installer host holding the release's binaries (the Pulumi"
        " CLI and plugins, `--binaries-from`); they are installed into the state folder. Absent:"
        " the Pulumi CLI already on the installer host is used.",
    )
    pins: FilePath | None = Field(
        default=None,
        description="The release's pins (`airgap-bundle --pins`): the digest of every image and"
        " the sha256 of every chart, wheel and binary the upstream's content must match."
        " Absent: `airgap/release.pins.yml` of the installer's release.",
    )
    allow_unpinned: bool = Field(
        default=False,
        description="Development only: mirror content the pins do not name"
        " (`airgap-bundle --allow-unpinned`), each logged as a warning.",
    )

    @model_validator(mode="after")
    def _login_pair(self) -> Upstream:
        rules.check_upstream(self)
        return self


# --- auxiliary VM ---------------------------------------------------------------------------


class SshAccess(Model):
    """How the installer reaches a host over SSH. Host keys are always checked."""

    user: LoginUser = Field(description="Login user.")
    port: SshPort = Field(default=22, description="SSH port.")
    private_key: SecretRef = Field(
        description="Private key for the login: `file:~/.ssh/id_ed25519` or `env:NAME` holding"
        " the key text."
    )
    host_key_fingerprint: str | None = Field(
        default=None,
        pattern=r"^SHA256:[A-Za-z0-9+/]{43}=?$",
        description="Pinned host key fingerprint as `ssh-keygen -lf` prints it (`SHA256:...`)."
        " Give this or `known_hosts`.",
    )
    known_hosts: FilePath | None = Field(
        default=None,
        description="A known_hosts file holding the host's key. Give this or"
        " `host_key_fingerprint`; unknown host keys are refused, never accepted.",
    )
    become: bool = Field(default=True, description="Use sudo for changes that need root.")

    @model_validator(mode="after")
    def _host_key_pinned(self) -> SshAccess:
        rules.check_host_key_pinned(self)
        return self


class TlsSettings(Model):
    """TLS for the VM's services: a site CA the installer generates, or the operator's own."""

    ca: Literal["generate", "provided"] = Field(
        default="generate",
        description="`generate`: the installer creates a site CA once and keeps it in the state"
        " folder; `provided`: use `ca_cert` and `ca_key`.",
    )
    ca_cert: FilePath | None = Field(default=None, description="PEM CA certificate (provided).")
    ca_key: SecretRef | None = Field(default=None, description="PEM CA private key (provided).")
    extra_names: list[DnsName] = Field(
        default_factory=list, description="More DNS names for the VM's server certificate."
    )

    @model_validator(mode="after")
    def _provided_has_files(self) -> TlsSettings:
        rules.check_tls(self)
        return self


class ServiceEndpoint(Model):
    """One service on the VM."""

    port: int = Field(ge=1, le=65535, description="TCP port the service listens on (TLS).")
    data_path: str = Field(
        pattern=r"^/",
        description=(
            "Absolute path on the VM for the service's persistent data, in plain form (no . or"
            " ..): a folder of its own, not a system folder (/, /var/lib, /home, ...), not inside"
            " /etc, /usr, /tmp or the hub's /opt/onprem-hub, and neither the same as another"
            " service's nor inside it. The hub owns it and `destroy --purge` deletes it."
        ),
    )


def _push_port_optional(schema: dict[str, Any]) -> None:
    """`push_port` may be left out (it follows `port`), which the schema says too."""
    schema["required"] = [name for name in schema.get("required", []) if name != "push_port"]


class SplitServiceEndpoint(ServiceEndpoint):
    """A service with two endpoints over the same data: `port` is read-only, for the clusters'
    pull login (pull secrets, chart reads); `push_port` takes the installer's login, which
    pushes and deletes. The service's own htpasswd or basic auth has no per-user rights, so each
    right is a listener of its own."""

    model_config = ConfigDict(json_schema_extra=_push_port_optional)

    push_port: int = Field(
        ge=1,
        le=65535,
        description=(
            "TCP port of the installer's read-write endpoint (TLS); `port` + 1 when not given."
            " Only the installer's machine needs to reach it; nodes and clusters use `port`."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _push_port_follows_port(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "push_port" in data:
            return data
        try:
            port = int(data["port"])
        except (KeyError, TypeError, ValueError):
            return data  # the port's own error says what is wrong
        return {**data, "push_port": port + 1}


def _registry() -> SplitServiceEndpoint:
    return SplitServiceEndpoint(port=5000, push_port=5001, data_path="/var/lib/onprem-hub/registry")


def _chartmuseum() -> SplitServiceEndpoint:
    return SplitServiceEndpoint(port=8080, push_port=8081, data_path="/var/lib/onprem-hub/charts")


def _devpi() -> ServiceEndpoint:
    return ServiceEndpoint(port=3141, data_path="/var/lib/onprem-hub/devpi")


class AuxServices(Model):
    """The artifact hub services on the VM (ports are the upstream defaults)."""

    registry: SplitServiceEndpoint = Field(
        default_factory=_registry,
        description="Docker registry (distribution v2): pulls on `port`, pushes on `push_port`.",
    )
    chartmuseum: SplitServiceEndpoint = Field(
        default_factory=_chartmuseum,
        description="ChartMuseum Helm chart repository: reads on `port`, uploads on `push_port`.",
    )
    devpi: ServiceEndpoint = Field(default_factory=_devpi, description="DevPI Python index.")


class DnsServing(Model):
    """Wildcard DNS served by the VM (dnsmasq) for sites without their own DNS records."""

    enabled: bool = Field(default=False, description="Serve the platform's zone from the VM.")
    port: int = Field(default=53, ge=1, le=65535, description="DNS port on the VM.")
    upstream_servers: list[IPv4Address] = Field(
        default_factory=list,
        description="Resolvers for names outside the zone; empty on air-gapped sites.",
    )


class AuxVm(Model):
    """The auxiliary VM that becomes the site's artifact hub."""

    address: IPv4Address = Field(description="IPv4 address the cluster and installer reach.")
    hostname: DnsName | None = Field(
        default=None,
        description="DNS name of the VM; defaults to `hub.<site domain>`. Goes into the"
        " server certificate with the address.",
    )
    ssh: SshAccess = Field(description="SSH access for provisioning.")
    services: AuxServices = Field(
        default_factory=AuxServices, description="Ports and data paths of the hub services."
    )
    tls: TlsSettings = Field(default_factory=TlsSettings, description="TLS for the services.")
    dns: DnsServing = Field(default_factory=DnsServing, description="Optional wildcard DNS.")
    programs_dir: FilePath | None = Field(
        default=None,
        description="Folder on the installer host holding the hub's own programs, laid out as"
        " `airgap-bundle --hub-from` takes them: `chartmuseum`, optionally `registry`, and"
        " `devpi-wheels/*.whl`. Used when no `--bundle` carries them. Absent: `chartmuseum` from"
        " PATH, the registry from the VM's packages.",
    )

    @model_validator(mode="after")
    def _ports_unique(self) -> AuxVm:
        rules.check_vm_ports(self)
        return self


# --- node pools and presets -----------------------------------------------------------------

GpuVendor = Literal["nvidia", "amd", "intel"]
# The extended resource each vendor's device plugin advertises for a whole GPU.
GPU_RESOURCE: dict[str, str] = {
    "nvidia": "nvidia.com/gpu",
    "amd": "amd.com/gpu",
    "intel": "gpu.intel.com/i915",
}
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"


class PoolGpu(Model):
    """The accelerators of every node in a pool."""

    vendor: GpuVendor = Field(default="nvidia", description="GPU vendor.")
    model: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$",
        description="GPU product as feature discovery labels it, e.g. `NVIDIA-A100-SXM4-80GB`.",
    )
    count: int = Field(ge=1, le=64, description="GPUs per node.")
    memory: ByteSize | None = Field(default=None, description="Memory per GPU, e.g. `80Gi`.")
    mig_profiles: dict[str, int] = Field(
        default_factory=dict,
        description="MIG slices per node by profile (`1g.10gb: 7`) when MIG is configured.",
    )
    mig_strategy: Literal["mixed", "single"] = Field(
        default="mixed",
        description="How the NVIDIA device plugin advertises the MIG slices (with `mig_profiles`):"
        " `mixed`, one resource per profile (`nvidia.com/mig-1g.10gb`); `single`, every slice as"
        " `nvidia.com/gpu` (one profile per node).",
    )

    @property
    def slices(self) -> int:
        """MIG slices per node (0 without MIG)."""
        return sum(self.mig_profiles.values())

    def allocatable(self) -> dict[str, int]:
        """The extended resources each node of the pool advertises, and how many of each:
        whole GPUs, or with MIG its slices (per profile, or as GPUs with the single strategy)."""
        if not self.mig_profiles:
            return {GPU_RESOURCE[self.vendor]: self.count}
        if self.mig_strategy == "single":
            return {GPU_RESOURCE[self.vendor]: self.slices}
        return {f"{MIG_RESOURCE_PREFIX}{p}": n for p, n in sorted(self.mig_profiles.items())}


class Taint(Model):
    """An extra Kubernetes taint for a pool's nodes."""

    key: LabelKey = Field(description="Taint key.")
    value: LabelValue = Field(default="", description="Taint value.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        default="NoSchedule", description="Taint effect."
    )


class NodePool(Model):
    """A set of identical nodes that presets can target."""

    name: DnsLabel = Field(description="Pool name; becomes the node-pool label value.")
    nodes: list[DnsName] | None = Field(
        default=None, description="Node names in the pool. Give this or `selector`."
    )
    selector: dict[LabelKey, LabelValue] | None = Field(
        default=None,
        description="Label selector choosing the pool's nodes, e.g."
        " `{nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}`. Give this or `nodes`.",
    )
    cpu: Cpu = Field(description="Allocatable CPU cores per node (`64`, `63500m`).")
    memory: ByteSize = Field(description="Allocatable memory per node (`512Gi`).")
    disk: ByteSize | None = Field(default=None, description="Ephemeral disk per node.")
    gpu: PoolGpu | None = Field(default=None, description="Accelerators per node, if any.")
    preemptible: bool = Field(
        default=False, description="Nodes may go away; only preemptible jobs land here."
    )
    jobs: bool = Field(
        default=True,
        description="Platform jobs run here (adds the job label and taint). False keeps the pool"
        " for platform services.",
    )
    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, description="Extra labels for the pool's nodes."
    )
    taints: list[Taint] = Field(default_factory=list, description="Extra taints for the nodes.")

    @model_validator(mode="after")
    def _nodes_or_selector(self) -> NodePool:
        rules.check_pool(self)
        return self


class PresetGpu(Model):
    """Whole GPUs a preset asks for."""

    count: int = Field(ge=1, le=64, description="GPUs per job.")
    model: str | None = Field(
        default=None, description="Required GPU model; any pool GPU of the vendor when absent."
    )
    memory: ByteSize | None = Field(default=None, description="Minimum memory per GPU.")


class PresetMig(Model):
    """MIG slices of one profile a preset asks for."""

    count: int = Field(ge=1, le=56, description="Slices per job.")
    model: str | None = Field(default=None, description="GPU model the slices come from.")


class Preset(Model):
    """A resource preset: what a job or app asks for, in the platform's terms."""

    name: DnsLabel = Field(description="Preset name users pick (`gpu-a100x1`).")
    credits_per_hour: str = Field(
        default="0",
        pattern=r"^[0-9]+(\.[0-9]+)?$",
        description="Price in credits per hour, a decimal string.",
    )
    cpu: Cpu = Field(description="CPU cores (requests equal limits).")
    memory: ByteSize = Field(description="Memory (`60Gi`).")
    nvidia_gpu: PresetGpu | None = Field(default=None, description="NVIDIA GPUs.")
    amd_gpu: PresetGpu | None = Field(default=None, description="AMD GPUs.")
    intel_gpu: PresetGpu | None = Field(default=None, description="Intel GPUs.")
    nvidia_migs: dict[str, PresetMig] = Field(
        default_factory=dict, description="NVIDIA MIG slices by profile (`1g.10gb`)."
    )
    preemptible: bool = Field(
        default=False, description="Jobs may run on preemptible pools (and tolerate their taint)."
    )
    scheduler_enabled: bool = Field(default=False, description="Jobs go through the scheduler.")
    pools: list[DnsLabel] = Field(
        min_length=1, description="Pools the preset's jobs may land on (first is preferred)."
    )


# --- storage, Keycloak, platform ------------------------------------------------------------


class StorageDisk(Model):
    """A raw disk given to OpenEBS."""

    node: DnsName = Field(description="Node the disk is attached to.")
    device: str = Field(pattern=r"^/dev/", description="Block device path, e.g. `/dev/sdb`.")


class Storage(Model):
    """OpenEBS storage."""

    engine: Literal["cstor", "localpv-lvm", "localpv-hostpath"] = Field(
        default="cstor",
        description="OpenEBS engine: `cstor` as the platform's guide requires, or LocalPV.",
    )
    default_class: DnsLabel = Field(
        default="openebs-platform", description="Name of the default StorageClass."
    )
    replicas: int = Field(default=1, ge=1, le=5, description="Replicas per volume (cStor).")
    disks: list[StorageDisk] = Field(
        default_factory=list, description="Raw, unformatted, unmounted disks for cStor or LVM."
    )
    hostpath_dir: str = Field(
        default="/var/openebs/local", pattern=r"^/", description="Base path for localpv-hostpath."
    )

    @model_validator(mode="after")
    def _disks_for_engine(self) -> Storage:
        rules.check_storage(self)
        return self


class IdentityProvider(Model):
    """An upstream identity provider Keycloak brokers to."""

    alias: DnsLabel = Field(description="Alias in the realm (`corp-sso`).")
    type: Literal["oidc", "saml"] = Field(description="Protocol.")
    discovery_url: str | None = Field(
        default=None, pattern=r"^https://", description="OIDC discovery URL (oidc)."
    )
    metadata_url: str | None = Field(
        default=None, pattern=r"^https://", description="SAML metadata URL (saml)."
    )
    client_id: str | None = Field(default=None, description="Client id at the provider (oidc).")
    client_secret: SecretRef | None = Field(default=None, description="Client secret (oidc).")

    @model_validator(mode="after")
    def _fields_for_type(self) -> IdentityProvider:
        rules.check_identity_provider(self)
        return self


class Keycloak(Model):
    """Keycloak, the platform's identity service."""

    mode: Literal["in-cluster", "external"] = Field(
        default="in-cluster",
        description="`in-cluster`: deploy Keycloak from the site chart repo; `external`: use an"
        " existing Keycloak at `url`.",
    )
    url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Base URL the installer reaches Keycloak's admin API at: an external"
        " Keycloak's (required when external); for in-cluster, where the deployed one answers"
        " from the installer's machine (default `https://keycloak.<cluster domain>`).",
    )
    allow_insecure_http: bool = Field(
        default=False,
        description="Accept an `http://` url (a development site only): the admin password and"
        " tokens then cross the network in clear. Refused otherwise.",
    )
    ca_cert: FilePath | None = Field(
        default=None,
        description="CA bundle (PEM) that signed an external Keycloak's certificate, when it is"
        " not in the system trust store.",
    )
    admin_user: str = Field(default="admin", min_length=1, description="Admin login.")
    admin_password: SecretRef | None = Field(
        default=None,
        description="Admin password reference; generated and kept in the state folder when"
        " absent (in-cluster only).",
    )
    realm: DnsLabel = Field(default="apolo", description="Realm the platform uses.")
    client_id: DnsLabel = Field(default="platform", description="OIDC client of the platform.")
    identity_provider: IdentityProvider | None = Field(
        default=None, description="Optional upstream identity provider."
    )

    @model_validator(mode="after")
    def _mode_fields(self) -> Keycloak:
        rules.check_keycloak(self)
        return self


class Platform(Model):
    """The platform's job and app controllers in one cluster."""

    version: str | None = Field(
        default=None, description="Platform release; the release manifest's when absent."
    )
    jobs_namespace: DnsLabel = Field(default="platform-jobs", description="Namespace for jobs.")
    apps_namespace: DnsLabel = Field(default="platform-apps", description="Namespace for apps.")
    namespace: DnsLabel = Field(default="platform", description="Namespace of the controllers.")


class NodeSsh(Model):
    """How preflight reaches the cluster's nodes over SSH for the hardware probes (`gpu.probe`,
    `storage.disks`). Read-only commands only; host keys are always checked."""

    user: LoginUser = Field(description="Login user on every node.")
    port: SshPort = Field(default=22, description="SSH port of the nodes.")
    private_key: SecretRef = Field(
        description="Private key for the login: `file:~/.ssh/nodes_ed25519` (or `env:NAME`"
        " holding the key text)."
    )
    known_hosts: FilePath = Field(
        description="A known_hosts file holding every probed node's host key, under the address"
        " the installer connects to (`[addr]:port` off port 22). A node whose key is missing or"
        " different fails its check; unknown keys are never accepted."
    )
    become: bool = Field(
        default=True,
        description="Run the probes that need root (`blkid` of the OpenEBS disks) with"
        " `sudo -n`; false when `user` is root.",
    )
    address_source: Literal["internal-ip", "addresses"] = Field(
        default="internal-ip",
        description="`internal-ip`: connect to each node's `InternalIP` as the cluster reports"
        " it (an entry in `addresses` overrides it); `addresses`: only nodes listed in"
        " `addresses` are probed, the others are reported as not reachable.",
    )
    addresses: dict[DnsName, IPv4Address] = Field(
        default_factory=dict,
        description="Address to reach a node at, by node name (`{a100-1: 10.0.0.11}`), where"
        " the SSH address is not the node's InternalIP.",
    )
    jump: Literal["none", "aux-vm"] = Field(
        default="none",
        description="`aux-vm`: reach the nodes through the auxiliary VM (`aux_vm.ssh`), like"
        " `ssh -J`, when the installer host cannot reach the node network itself.",
    )
    timeout_s: float = Field(
        default=20.0,
        gt=0,
        le=300,
        description="Time limit in seconds for connecting to one node; probes of the nodes run"
        " in parallel.",
    )

    @model_validator(mode="after")
    def _addresses(self) -> NodeSsh:
        rules.check_node_ssh(self)
        return self


class NodeRuntime(Model):
    """containerd on the cluster's nodes, configured by the nodes phase over `node_ssh` (with
    sudo): it trusts the site CA, pulls `docker.io`, `ghcr.io`, `registry.k8s.io`, `quay.io` and
    every registry of the release through the hub, takes the sandbox (pause) image from the hub
    and logs in with the hub's read-only pull login. See docs/aux-vm.md, "On the nodes"."""

    configure: Literal["auto", "ssh", "none"] = Field(
        default="auto",
        description="`ssh`: configure every node over `node_ssh`; `none`: the operator does (the"
        " nodes must trust the site CA and reach the hub themselves); `auto`: `ssh` when"
        " `node_ssh` is given, else `none`.",
    )
    nodes: list[DnsName] | None = Field(
        default=None,
        description="The nodes to configure; absent: every node the cluster lists. A node that"
        " cannot be reached fails the phase, naming it.",
    )
    config_path: str = Field(
        default="/etc/containerd/config.toml",
        pattern=r"^/.*[^/]$",
        description="containerd's configuration file on the nodes, edited in place (the site's"
        " keys only; the original is kept on the node for `destroy`). Created, in the layout of"
        " the node's containerd, where missing.",
    )
    certs_dir: str = Field(
        default="/etc/containerd/certs.d",
        pattern=r"^/.*[^/]$",
        description="containerd's registry hosts folder (`registry.config_path`): one"
        " `<registry>/hosts.toml` per mirrored registry and the site CA beside the hub's.",
    )
    restart: list[str] = Field(
        default_factory=lambda: ["systemctl", "restart", "containerd"],
        min_length=1,
        description="The command (argument list, run with sudo) that restarts containerd after"
        " its configuration file changed; hosts.toml files and the CA are read at each pull and"
        " need none.",
    )
    cri_endpoint: str = Field(
        default="unix:///run/containerd/containerd.sock",
        pattern=r"^unix:///.+",
        description="containerd's CRI socket on the nodes, for verify's pull through a node's"
        " runtime (`crictl --runtime-endpoint`).",
    )
    crictl: str = Field(
        default="crictl",
        min_length=1,
        description="crictl on the nodes (a name on sudo's PATH, or a path), for verify's pull"
        " of a release image by its upstream name through the node's runtime.",
    )


class Cluster(Model):
    """One Kubernetes cluster of the site."""

    name: DnsLabel = Field(description="Cluster name; one Pulumi stack per component uses it.")
    kubeconfig: FilePath = Field(description="Kubeconfig file, relative to the inventory.")
    context: str | None = Field(
        default=None, description="Kubeconfig context; the file's current context when absent."
    )
    domain: DnsName | None = Field(
        default=None,
        description="DNS name of the cluster; `<name>.org.<site domain>` when absent. Jobs get"
        " `*.jobs.<domain>`, apps `*.apps.<domain>`.",
    )
    ingress_ips: list[IPv4Address] = Field(
        min_length=1, description="Addresses the wildcard DNS names point at."
    )
    node_pools: list[NodePool] = Field(min_length=1, description="Node pools.")
    presets: list[Preset] = Field(default_factory=list, description="Resource presets.")
    storage: Storage = Field(
        description="OpenEBS storage; required because the engine depends on the site's disks."
    )
    keycloak: Keycloak = Field(default_factory=Keycloak, description="Identity service.")
    platform: Platform = Field(default_factory=Platform, description="Platform controllers.")
    node_ssh: NodeSsh | None = Field(
        default=None,
        description="SSH access to the nodes for preflight's hardware probes (`nvidia-smi`,"
        " raw disks). Absent: those checks report `info` and GPUs are checked through node"
        " labels only.",
    )
    node_runtime: NodeRuntime = Field(
        default_factory=NodeRuntime,
        description="containerd on the nodes: trust of the site CA, mirrors to the hub, the"
        " sandbox image and the pull login (over `node_ssh`).",
    )

    @model_validator(mode="after")
    def _cross_rules(self) -> Cluster:
        rules.check_cluster(self)
        return self


class Inventory(Model):
    """A whole on-prem site: `installer bootstrap --inventory onprem.yml` installs it."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    version: Literal["installer/v1"] = Field(
        alias="apiVersion", description="Inventory format version; `installer/v1`."
    )
    site: Site = Field(description="The site.")
    aux_vm: AuxVm = Field(description="The auxiliary VM (artifact hub).")
    upstream: Upstream | None = Field(
        default=None,
        description="Connected sites: where the hub's content comes from. Absent: the hub must"
        " already hold the release (loaded with `installer airgap-load`).",
    )
    clusters: list[Cluster] = Field(min_length=1, description="Kubernetes clusters of the site.")
    skip_checks: dict[str, str] = Field(
        default_factory=dict,
        description="Preflight or verify check ids to skip, each with the reason shown in"
        " reports (`dns.wildcard: records are added by the network team after install`).",
    )

    @model_validator(mode="after")
    def _site_rules(self) -> Inventory:
        rules.check_inventory(self)
        return self

    def cluster(self, name: str) -> Cluster:
        """The cluster called `name` (KeyError when absent)."""
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(name)
