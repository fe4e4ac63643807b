"""Checks of the site's names and services: wildcard DNS and the hub's TLS services."""

from __future__ import annotations

from functools import partial
from typing import Literal

from installer.checks.catalog import make
from installer.checks.context import ServiceKind, SiteAccess, identify_service
from installer.checks.dnsquery import Answer, DnsError, query, system_resolve
from installer.checks.framework import Check, Finding, note, passed, problem
from installer.inventory.models import Cluster
from installer.site import cluster_names

Stage = Literal["preflight", "verify"]


def probe_names(domain: str) -> list[str]:
    """One name per record the platform needs: the domain and a name under each wildcard."""
    return [domain, f"x.{domain}", f"x.jobs.{domain}", f"x.apps.{domain}"]


def evaluate_answers(answers: list[Answer], ingress: set[str]) -> Finding:
    """Every name resolves, and only to the ingress IPs."""
    problems = []
    for answer in answers:
        if not answer.addresses:
            problems.append(f"{answer.name} does not resolve")
        elif set(answer.addresses) - ingress:
            problems.append(f"{answer.name} -> {', '.join(answer.addresses)}")
    if problems:
        return problem(
            "; ".join(problems) + f" (want {', '.join(sorted(ingress))})",
            "add A records for the domain and its wildcards pointing at the ingress IPs, or"
            " let the VM serve them (aux_vm.dns.enabled)",
            want=sorted(ingress),
        )
    return passed(
        f"{len(answers)} names resolve to {', '.join(sorted(ingress))}",
        names=[a.name for a in answers],
    )


def check_dns(access: SiteAccess, cluster: Cluster, stage: Stage) -> Finding:
    """Resolve the cluster's names where clients will: the VM's DNS, or this host's resolver."""
    inv = access.inventory
    domain = cluster_names(inv, cluster).domain
    ingress = {str(ip) for ip in cluster.ingress_ips}
    names = probe_names(domain)
    dns = inv.aux_vm.dns
    if dns.enabled:
        server = f"{access.vm_address}:{dns.port}"
        try:
            answers = [query(n, access.vm_address, dns.port) for n in names]
        except DnsError as exc:
            if stage == "preflight":
                return note(
                    f"the VM will serve {domain} and its wildcards (aux_vm.dns.enabled);"
                    f" not serving yet ({exc})"
                )
            return problem(
                f"the VM's DNS at {server} does not answer: {exc}",
                "run the auxvm phase; check dnsmasq on the VM",
            )
        finding = evaluate_answers(answers, ingress)
        if not finding.ok and stage == "preflight" and all(not a.addresses for a in answers):
            return note(f"the VM will serve {domain} (aux_vm.dns.enabled); no records yet")
        return finding
    try:
        answers = [system_resolve(n) for n in names]
    except DnsError as exc:
        return problem(f"this host's resolver failed: {exc}", "check /etc/resolv.conf")
    return evaluate_answers(answers, ingress)


def check_hub_service(access: SiteAccess, kind: ServiceKind, port: int) -> Finding:
    """The service, when it already runs, answers over TLS verified by the site CA."""
    ca = access.site_ca()
    answer = identify_service(kind, access.vm_address, port, ca)
    if answer.state == "closed":
        return note(f"the {kind} is not installed yet ({answer.detail})")
    if ca is None:
        return note(f"no site CA yet, so the hub is not ours yet: {answer.detail}")
    if answer.state == "ours":
        return passed(answer.detail)
    if answer.state == "other-ca":
        return problem(
            answer.detail,
            "a hub set up from another state folder or CA: run from that folder"
            " (site.state_dir), or re-run the auxvm phase to re-issue its certificates",
        )
    return problem(
        answer.detail, "re-run the auxvm phase; the service's certificate must chain to the site CA"
    )


def dns_checks(access: SiteAccess, stage: Stage) -> list[Check]:
    """dns.wildcard for each cluster."""
    return [
        make(
            "dns.wildcard",
            f"cluster/{c.name}",
            partial(check_dns, access, c, stage),
            timeout_s=60,
        )
        for c in access.inventory.clusters
    ]


def hub_checks(access: SiteAccess) -> list[Check]:
    """hub.service for each service of the VM."""
    services = access.inventory.aux_vm.services
    kinds: list[tuple[str, ServiceKind, int]] = [
        ("registry", "registry", services.registry.port),
        ("registry-push", "registry", services.registry.push_port),
        ("chartmuseum", "chartmuseum", services.chartmuseum.port),
        ("chartmuseum-push", "chartmuseum", services.chartmuseum.push_port),
        ("devpi", "devpi", services.devpi.port),
    ]
    return [
        make("hub.service", f"hub/{name}", partial(check_hub_service, access, kind, port))
        for name, kind, port in kinds
    ]
