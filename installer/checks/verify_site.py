"""Acceptance checks of what the phases built: registry, OIDC, storage, controllers.

A check whose subject a phase has not built yet fails and names that phase: verify proves an
install, so "not there" is never a pass.
"""

from __future__ import annotations

import json
import secrets
import ssl
import time
from functools import partial
from pathlib import Path

import httpx

from installer.checks.acceptance import MANAGED_BY, PURPOSE_LABEL, ProbeNamespace, untolerated_pod
from installer.checks.catalog import make
from installer.checks.context import HTTP_TIMEOUT_S, SiteAccess
from installer.checks.dnsquery import DnsError, query
from installer.checks.framework import Check, Finding, note, passed, problem
from installer.engines.kube import NodeInfo
from installer.errors import FailedError, InstallerError
from installer.inventory.models import Cluster
from installer.release import load_release
from installer.site import (
    cluster_names,
    hub_urls,
    mirrored_registries,
    normalize_image,
    runtime_configured,
)
from installer.state import HUB_PULL_PASSWORD_SECRET, HUB_PULL_USER

CONTROLLERS = ("job-controller", "app-controller")
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
PROVISION_WAIT_S = 120.0
_MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def controller_image() -> str:
    """The job controller's upstream image from the release manifest."""
    images = load_release().images_for("platform")
    image = next((i for i in images if i.name.endswith("/platformapi")), None)
    if image is None:  # a release manifest without it is a bug its own test catches
        raise FailedError("the release manifest lists no platformapi image")
    return f"{image.name}:{image.tag}"


def _pull_password(access: SiteAccess) -> str | None:
    path = access.state.secrets / HUB_PULL_PASSWORD_SECRET
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _no_ca() -> Finding:
    return problem(
        "there is no site CA: the auxvm phase has not run", "run `installer bootstrap --only auxvm`"
    )


def check_registry_image(access: SiteAccess) -> Finding:
    """The job controller's image resolves in the site registry, TLS verified by the site CA,
    with the clusters' pull login on the read-only endpoint (what a node does)."""
    ca = access.site_ca()
    if ca is None:
        return _no_ca()
    ref = normalize_image(controller_image())
    repository, _, tag = ref.rpartition(":")
    port = access.inventory.aux_vm.services.registry.port
    url = f"https://{access.vm_address}:{port}/v2/{repository}/manifests/{tag}"
    context = ssl.create_default_context(cafile=str(ca))
    headers = {"Accept": _MANIFEST_TYPES}
    try:
        with httpx.Client(verify=context, timeout=HTTP_TIMEOUT_S) as http:
            response = http.head(url, headers=headers)
            if response.status_code == 401:
                password = _pull_password(access)
                if password is None:
                    return problem(
                        f"{url} wants a login and the pull password is not in the state folder",
                        "run the auxvm phase from this state folder",
                    )
                response = http.head(url, headers=headers, auth=(HUB_PULL_USER, password))
    except httpx.HTTPError as exc:
        return problem(
            f"the site registry at {access.vm_address}:{port} does not answer over TLS: {exc}",
            "run the auxvm phase; check the registry's certificate against the site CA",
        )
    if response.status_code == 200:
        digest = response.headers.get("Docker-Content-Digest", "")
        return passed(f"{access.hub_host}:{port}/{ref} resolves ({digest or 'no digest'})")
    if response.status_code == 404:
        return problem(
            f"{access.hub_host}:{port}/{ref} is not in the site registry",
            "run airgap-load (air-gapped sites) or the platform phase's image sync",
        )
    return problem(f"{url} answered HTTP {response.status_code}")


_WRITE_REFUSED = (401, 403, 404, 405)
"""Answers that refuse a write: a login unknown there (401), forbidden (403), an API that is off
(404, ChartMuseum's `--disable-api`), a read-only registry (405)."""


def check_pull_login_read_only(access: SiteAccess) -> Finding:
    """The clusters' pull login reads and cannot write: the registry's read-only endpoint
    refuses its blob upload, ChartMuseum's refuses its chart upload, and neither push endpoint
    takes the login at all. On a hub that is right, every request is refused before anything is
    stored (an upload one wrongly opens is cancelled at once)."""
    ca = access.site_ca()
    if ca is None:
        return _no_ca()
    password = _pull_password(access)
    if password is None:
        return problem(
            "the pull password is not in the state folder", "run the auxvm phase from this folder"
        )
    svc = access.inventory.aux_vm.services
    base = f"https://{access.vm_address}"
    probe = "onprem-installer/verify-pull-login"
    attempts = [
        ("POST", f"{base}:{svc.registry.port}/v2/{probe}/blobs/uploads/"),
        ("GET", f"{base}:{svc.registry.push_port}/v2/"),
        ("POST", f"{base}:{svc.chartmuseum.port}/api/charts"),
        ("GET", f"{base}:{svc.chartmuseum.push_port}/api/charts"),
    ]
    context = ssl.create_default_context(cafile=str(ca))
    wrong: list[str] = []
    try:
        with httpx.Client(verify=context, timeout=HTTP_TIMEOUT_S) as http:
            read = http.get(f"{base}:{svc.registry.port}/v2/", auth=(HUB_PULL_USER, password))
            if read.status_code != 200:
                return problem(
                    f"the registry at {access.vm_address}:{svc.registry.port} refuses the pull"
                    f" login (HTTP {read.status_code})",
                    "re-run the auxvm phase from this state folder",
                )
            for method, url in attempts:
                answer = http.request(method, url, auth=(HUB_PULL_USER, password), content=b"")
                if answer.status_code not in _WRITE_REFUSED:
                    wrong.append(f"{method} {url} answered HTTP {answer.status_code}")
                    session = answer.headers.get("Location")
                    if answer.status_code == 202 and session:  # an upload opened: take it back
                        http.delete(httpx.URL(url).join(session), auth=(HUB_PULL_USER, password))
    except httpx.HTTPError as exc:
        return problem(f"a hub endpoint does not answer over TLS: {exc}", "run the auxvm phase")
    if wrong:
        return problem(
            f"the pull login {HUB_PULL_USER} can do more than read: {'; '.join(wrong)}",
            "re-run the auxvm phase: the read-only endpoints or their logins are not the hub's",
        )
    return passed(f"{HUB_PULL_USER} reads the registry; uploads and both push endpoints refuse it")


def oidc_issuer(access: SiteAccess, cluster: Cluster) -> tuple[str, Path | None]:
    """The realm's issuer URL and the CA that signs Keycloak's certificate."""
    kc = cluster.keycloak
    domain = cluster_names(access.inventory, cluster).domain
    base = kc.url.rstrip("/") if kc.url else f"https://keycloak.{domain}"
    ca = Path(kc.ca_cert) if kc.ca_cert else (access.site_ca() if kc.mode == "in-cluster" else None)
    return f"{base}/realms/{kc.realm}", ca


def site_address(access: SiteAccess, host: str) -> str | None:
    """Where `host` lives when the VM serves the site's names (None: this host's resolver).

    The installer host need not use the VM as its resolver, so names under the site domain are
    looked up at the VM directly and the request goes to that address with the name kept for
    TLS (SNI, certificate check) and the Host header.
    """
    dns = access.inventory.aux_vm.dns
    domain = access.inventory.site.domain
    if not dns.enabled or not (host == domain or host.endswith("." + domain)):
        return None
    answer = query(host, access.vm_address, dns.port)
    if not answer.addresses:
        raise DnsError(f"the VM's DNS has no address for {host}")
    return answer.addresses[0]


def _get_via(url: str, address: str | None, verify: ssl.SSLContext | bool) -> httpx.Response:
    if address is None:
        return httpx.get(url, verify=verify, timeout=HTTP_TIMEOUT_S)
    target = httpx.URL(url)
    with httpx.Client(verify=verify, timeout=HTTP_TIMEOUT_S) as client:
        request = client.build_request(
            "GET",
            target.copy_with(host=address),
            headers={"Host": target.netloc.decode()},
            extensions={"sni_hostname": target.host},
        )
        return client.send(request)


def check_oidc(access: SiteAccess, cluster: Cluster) -> Finding:
    """The issuer's discovery document answers and names the same issuer."""
    issuer, ca = oidc_issuer(access, cluster)
    url = f"{issuer}/.well-known/openid-configuration"
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca else True
    host = httpx.URL(url).host
    try:
        address = site_address(access, host)
    except DnsError as exc:
        return problem(f"{host} does not resolve through the site's DNS: {exc}", "see dns.wildcard")
    try:
        response = _get_via(url, address, verify)
    except httpx.HTTPError as exc:
        return problem(f"{url}: {exc}", "run the keycloak phase; check Keycloak's address and CA")
    if response.status_code == 404:
        return problem(
            f"{url} answered 404: the realm {cluster.keycloak.realm} does not exist",
            "run the keycloak phase",
        )
    if response.status_code != 200:
        return problem(f"{url} answered HTTP {response.status_code}", "run the keycloak phase")
    try:
        document = json.loads(response.text)
    except ValueError:
        return problem(f"{url} did not answer with JSON")
    if document.get("issuer") != issuer:
        return problem(
            f"discovery names issuer {document.get('issuer')!r}, the platform expects {issuer}",
            "set Keycloak's hostname so that its issuer matches the platform's",
        )
    return passed(f"{issuer} publishes its discovery document")


def check_storage_classes(access: SiteAccess, cluster: Cluster) -> Finding:
    """The inventory's default class exists and is the only default."""
    classes = access.kube(cluster).storage_classes()
    want = cluster.storage.default_class
    defaults = [c.name for c in classes if c.default]
    if want not in {c.name for c in classes}:
        names = ", ".join(c.name for c in classes) or "none"
        return problem(
            f"StorageClass {want} does not exist (classes: {names})", "run the storage phase"
        )
    if defaults != [want]:
        return problem(
            f"the default StorageClass is {', '.join(defaults) or 'not set'}, not only {want}",
            "run the storage phase; remove the default annotation from other classes",
        )
    return passed(f"StorageClass {want} exists and is the default")


def _simulated(nodes: list[NodeInfo]) -> bool:
    return bool(nodes) and all(n.annotations.get(KWOK_ANNOTATION) == "fake" for n in nodes)


def check_provisioning(access: SiteAccess, namespaces: ProbeNamespace, cluster: Cluster) -> Finding:
    """A claim of the default class binds (real nodes only)."""
    kube = access.kube(cluster)
    if _simulated(kube.nodes()):
        return note(
            "volume provisioning cannot be checked here: every node is simulated (kwok), so"
            " no storage driver runs; it is checked on real clusters"
        )
    kube, namespace = namespaces.get(access, cluster)
    name = f"provision-{secrets.token_hex(3)}"
    labels = {**MANAGED_BY, PURPOSE_LABEL: "verify"}
    kube.create_pvc(namespace, name, cluster.storage.default_class, "64Mi", labels)
    # WaitForFirstConsumer classes bind only once a pod uses the claim: give it one.
    pod = untolerated_pod(access, cluster.node_pools[0], name)
    spec = pod["spec"]
    spec.pop("affinity")
    spec["tolerations"] = [{"operator": "Exists"}]
    spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": name}}]
    spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    try:
        kube.create_pod(namespace, pod)
        deadline = time.monotonic() + PROVISION_WAIT_S
        phase = kube.pvc_phase(namespace, name)
        while phase != "Bound" and time.monotonic() < deadline:
            time.sleep(1)
            phase = kube.pvc_phase(namespace, name)
    finally:
        kube.delete_pod(namespace, name)
    if phase != "Bound":
        return problem(
            f"a 64Mi claim of {cluster.storage.default_class} is {phase} after"
            f" {PROVISION_WAIT_S:g}s",
            "check the OpenEBS pods and their disks",
        )
    return passed(f"a claim of {cluster.storage.default_class} bound")


def check_controller(access: SiteAccess, cluster: Cluster, name: str) -> Finding:
    """A controller Deployment is Available."""
    namespace = cluster.platform.namespace
    state = access.kube(cluster).deployment(namespace, name)
    if state is None:
        return problem(
            f"Deployment {namespace}/{name} does not exist: the platform phase has not run",
            "run `installer bootstrap --only platform`",
        )
    if not state.available:
        return problem(
            f"Deployment {namespace}/{name} is not Available ({state.ready_replicas}/"
            f"{state.replicas} ready): {state.message}",
            f"kubectl -n {namespace} describe deployment {name}",
        )
    return passed(f"{namespace}/{name} Available ({state.ready_replicas}/{state.replicas})")


def platform_namespaces(cluster: Cluster) -> list[str]:
    """The namespaces of the platform's controllers, jobs and apps."""
    platform = cluster.platform
    names = [platform.namespace, platform.jobs_namespace, platform.apps_namespace]
    return list(dict.fromkeys(names))


def _shown(items: list[str], limit: int = 6) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


def check_images_from_hub(access: SiteAccess, cluster: Cluster) -> Finding:
    """Every image of the platform's pods comes from the hub: named on it (rewritten), or under
    an upstream name whose registry the nodes mirror to the hub (the nodes phase configured
    them)."""
    hub = hub_urls(access.inventory).registry
    mirrored = (
        {r.name for r in mirrored_registries([i.name for i in load_release().images])}
        if runtime_configured(cluster)
        else set()
    )
    kube = access.kube(cluster)
    pods = [pod for ns in platform_namespaces(cluster) for pod in kube.pod_images(ns)]
    if not pods:
        return problem(
            f"no pod runs in {', '.join(platform_namespaces(cluster))}: the platform phase has"
            " not run",
            "run `installer bootstrap --only platform`",
        )
    by_name = by_mirror = 0
    stray: list[str] = []
    for pod in pods:
        for container, image in pod.images.items():
            ref = normalize_image(image)
            if ref.startswith(f"{hub}/"):
                by_name += 1
            elif ref.split("/", 1)[0] in mirrored:
                by_mirror += 1
            else:
                stray.append(f"{pod.namespace}/{pod.name} {container}: {image}")
    if stray:
        why = (
            "neither on the hub nor from a registry the nodes mirror to it"
            if mirrored
            else "not on the hub, and the nodes' runtime is not configured to mirror (node_runtime)"
        )
        return problem(
            f"{len(stray)} image(s) {why}: {_shown(stray)}",
            "re-run the platform phase (it names every image on the hub); for an image a chart"
            " or operator injects, configure the nodes' runtime (clusters[].node_runtime with"
            " node_ssh) so its registry is mirrored",
        )
    return passed(
        f"{by_name + by_mirror} image(s) of {len(pods)} pod(s) come from the hub ({by_name} by"
        f" name, {by_mirror} through the nodes' mirrors)"
    )


def check_no_failed_pulls(access: SiteAccess, cluster: Cluster) -> Finding:
    """No container of the platform's namespaces waits on a failed pull, and no event there
    reports one."""
    kube = access.kube(cluster)
    failed: list[str] = []
    for ns in platform_namespaces(cluster):
        for pod in kube.pod_images(ns):
            failed += [f"{ns}/{pod.name} {c}: {why}" for c, why in pod.pull_failures.items()]
        failed += [f"{ns}/{obj}: {message}" for obj, message in kube.pull_failure_events(ns)]
    if failed:
        return problem(
            f"{len(failed)} failed image pull(s): {_shown(failed)}",
            "check that the nodes trust the site CA and reach the hub (the nodes phase with"
            " clusters[].node_runtime), and that the hub holds the image (airgap-load)",
        )
    return passed(f"no failed image pull in {', '.join(platform_namespaces(cluster))}")


RUNTIME_PULL_TIMEOUT_S = 120.0


def runtime_pull_image() -> str:
    """The release image a node pulls by its upstream name (busybox, preloaded on every node of
    a site without internet)."""
    nodes = [i for i in load_release().images_for("nodes") if i.name.endswith("/busybox")]
    if not nodes:  # a release manifest without it is a bug its own test catches
        raise FailedError("the release manifest lists no busybox image for the nodes")
    return f"{nodes[0].name}:{nodes[0].tag}"


def check_runtime_pull(access: SiteAccess, cluster: Cluster) -> Finding:
    """On the first node the nodes phase configures, containerd pulls a release image by its
    upstream name (`crictl pull` over SSH, with sudo): trust, mirror and login work there."""
    if not runtime_configured(cluster):
        return note(
            "the nodes' runtime is not configured by the installer (node_runtime.configure);"
            " pulls through it are not checked"
        )
    runtime = cluster.node_runtime
    nodes = runtime.nodes or [n.name for n in access.kube(cluster).nodes()]
    if not nodes:
        return problem("the cluster lists no node", "check the cluster's nodes")
    host = access.node_host(cluster, nodes[0])
    if host is None:
        return problem(f"no SSH address for node {nodes[0]}", "add it to node_ssh.addresses")
    image = runtime_pull_image()
    sudo = ["sudo", "-n"] if cluster.node_ssh is not None and cluster.node_ssh.become else []
    argv = [*sudo, runtime.crictl, "--runtime-endpoint", runtime.cri_endpoint, "pull", image]
    try:
        result = host.run(argv, timeout_s=RUNTIME_PULL_TIMEOUT_S)
    except (InstallerError, OSError) as exc:
        return problem(f"{host.where}: {exc}", "check node_ssh for the node")
    if result.rc != 0:
        why = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return problem(
            f"{nodes[0]}: `crictl pull {image}` through the node's containerd failed: {why[0]}",
            "re-run the nodes phase; check the node's route to the hub, its trust of the site"
            " CA and node_runtime.crictl / cri_endpoint",
        )
    return passed(f"{nodes[0]} pulled {image} by its upstream name through its containerd")


def site_checks(access: SiteAccess, namespaces: ProbeNamespace) -> list[Check]:
    """The non-scheduling acceptance checks."""
    api = ("kube.api",)
    checks = [
        make("hub.registry_image", "hub/registry", partial(check_registry_image, access)),
        make("hub.pull_read_only", "hub/pull-login", partial(check_pull_login_read_only, access)),
    ]
    for cluster in access.inventory.clusters:
        target = f"cluster/{cluster.name}"
        checks += [
            make("oidc.discovery", target, partial(check_oidc, access, cluster)),
            make(
                "storage.classes",
                target,
                partial(check_storage_classes, access, cluster),
                requires=api,
            ),
            make(
                "storage.provisioning",
                target,
                partial(check_provisioning, access, namespaces, cluster),
                requires=("storage.classes",),
                timeout_s=PROVISION_WAIT_S + 30,
            ),
        ]
        checks += [
            make(
                "platform.controllers",
                f"{target}/deployment/{name}",
                partial(check_controller, access, cluster, name),
                requires=api,
            )
            for name in CONTROLLERS
        ]
        checks += [
            make("images.from_hub", target, partial(check_images_from_hub, access, cluster),
                 requires=api),
            make("images.pull_failures", target, partial(check_no_failed_pulls, access, cluster),
                 requires=api),
            make("images.runtime_pull", target, partial(check_runtime_pull, access, cluster),
                 requires=api, timeout_s=RUNTIME_PULL_TIMEOUT_S + 30),
        ]  # fmt: skip
    return checks
