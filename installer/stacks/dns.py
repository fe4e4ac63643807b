"""The dns stack: the cluster side of the wildcard zone.

- The ingress controller is exposed on the inventory's ingress IPs (a Service with those
  external IPs in front of the controller's pods), which is where every wildcard name points.
- The records the zone needs (`<domain>`, `*.<domain>`, `*.jobs.<domain>`, `*.apps.<domain>`,
  from `installer.site.cluster_names`, the one source) are published in a ConfigMap, with the
  dnsmasq lines the VM serves when it is the site's DNS, so both sides read one list.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_kubernetes as k8s
from pydantic import Field

from installer.stacks.common import StackArgs, StackModel, kube_provider, load_args, managed_labels


class DnsRecord(StackModel):
    """One name of the zone and the addresses it resolves to."""

    name: str
    addresses: list[str]


class DnsArgs(StackArgs):
    """Arguments of the dns stack."""

    namespace: str = "platform-ingress"
    domain: str
    ingress_ips: list[str]
    ingress_selector: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "traefik"},
        description="Pod labels of the ingress controller (the platform ships traefik).",
    )
    records: list[DnsRecord]
    vm_serves_dns: bool


def dnsmasq_lines(domain: str, addresses: list[str]) -> list[str]:
    """dnsmasq config for the zone: `address=/<domain>/<ip>` answers the name and every name
    below it, which covers the wildcard records."""
    return [f"address=/{domain}/{ip}" for ip in addresses]


class WildcardDns(pulumi.ComponentResource):
    """Ingress exposure and the zone's records for one cluster."""

    def __init__(self, name: str, args: DnsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("onprem:dns:WildcardDns", name, None, opts)
        provider = kube_provider(f"{name}-kube", args.kube, self)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        labels = managed_labels()
        self.namespace = k8s.core.v1.Namespace(
            "ns-ingress",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=args.namespace, labels=labels),
            opts=child,
        )
        in_ns = pulumi.ResourceOptions.merge(
            child, pulumi.ResourceOptions(depends_on=[self.namespace])
        )
        self.service = k8s.core.v1.Service(
            "ingress-exposure",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="ingress", namespace=args.namespace, labels=labels
            ),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=args.ingress_selector,
                external_ips=args.ingress_ips,
                ports=[
                    k8s.core.v1.ServicePortArgs(name="http", port=80, target_port=8000),
                    k8s.core.v1.ServicePortArgs(name="https", port=443, target_port=8443),
                ],
            ),
            opts=in_ns,
        )
        records = [r.model_dump() for r in args.records]
        data = {"records.json": json.dumps(records, indent=2, sort_keys=True)}
        if args.vm_serves_dns:
            data["dnsmasq.conf"] = "\n".join(dnsmasq_lines(args.domain, args.ingress_ips)) + "\n"
        self.records = k8s.core.v1.ConfigMap(
            "zone-records",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="wildcard-dns", namespace=args.namespace, labels=labels
            ),
            data=data,
            opts=in_ns,
        )
        self.register_outputs({"records": [r.name for r in args.records]})


def program() -> None:
    """The Pulumi program of `stacks/dns`."""
    args = load_args(DnsArgs)
    WildcardDns(args.cluster, args)
    pulumi.export("records", [r.name for r in args.records])
