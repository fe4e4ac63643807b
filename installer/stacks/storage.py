"""The storage stack: OpenEBS from the site chart repository, its StorageClasses, the default.

LocalPV engines: the upstream `openebs` umbrella chart (4.x), values in the chart's own keys
(`engines.*`, `localpv-provisioner.*`, `lvm-localpv.*`, ...). cStor: the `cstor` chart of the
cstor-operators project (3.x; the 4.x umbrella no longer carries it), then a CStorPoolCluster on
the inventory's disks as NDM names them (`installer.stacks.storage_cstor`). Either chart comes
from the site's ChartMuseum over TLS with the hub login, at the release manifest's version. The
StorageClasses are this stack's, not the chart's, so the default class and its name follow the
inventory.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pydantic import Field

from installer.stacks.common import StackArgs, StackModel, kube_provider, load_args, managed_labels
from installer.stacks.storage_cstor import (
    BlockDeviceSelection,
    CStorPools,
    pool_cluster_spec,
    pools_from_outputs,
)

CHART_PASSWORD_KEY = "chart_repo_password"  # noqa: S105 - a config key, not a value
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


class ChartSource(StackModel):
    """Where a chart comes from: the site ChartMuseum."""

    repo: str = Field(description="Chart repository URL (https).")
    chart: str
    version: str
    username: str
    ca_file: str = Field(description="CA bundle that signed the repository's certificate.")


class StorageClassSpec(StackModel):
    """One StorageClass the stack owns."""

    name: str
    provisioner: str
    parameters: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    default: bool = False
    binding_mode: str = "WaitForFirstConsumer"
    reclaim_policy: str = "Delete"


class StorageArgs(StackArgs):
    """Arguments of the storage stack."""

    engine: str
    namespace: str = "openebs"
    release: str = Field(default="openebs", description="Helm release name.")
    source: ChartSource
    values: dict[str, Any] = Field(description="Values of the chart (its own keys).")
    classes: list[StorageClassSpec]
    cstor: CStorPools | None = Field(
        default=None, description="The cStor pool cluster (engine cstor only)."
    )


class OpenEbsStorage(pulumi.ComponentResource):
    """OpenEBS and the site's StorageClasses in one cluster."""

    def __init__(
        self,
        name: str,
        args: StorageArgs,
        chart_password: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("onprem:storage:OpenEbsStorage", name, None, opts)
        provider = kube_provider(f"{name}-kube", args.kube, self)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        self.namespace = k8s.core.v1.Namespace(
            "ns-openebs",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=args.namespace, labels=managed_labels()),
            opts=child,
        )
        self.release = k8s.helm.v3.Release(
            args.release,
            name=args.release,
            namespace=args.namespace,
            chart=args.source.chart,
            version=args.source.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(
                repo=args.source.repo,
                username=args.source.username,
                password=pulumi.Output.secret(chart_password),
                ca_file=args.source.ca_file,
            ),
            values=args.values,
            atomic=True,
            cleanup_on_fail=True,
            wait_for_jobs=True,
            timeout=600,
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[self.namespace])
            ),
        )
        after_chart: list[pulumi.Resource] = [self.release]
        if args.cstor is not None:
            after_chart = [self._pool_cluster(args, args.cstor, child)]
        self.classes = [
            k8s.storage.v1.StorageClass(
                f"class-{spec.name}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=spec.name,
                    labels=managed_labels(),
                    annotations={
                        **spec.annotations,
                        DEFAULT_CLASS_ANNOTATION: "true" if spec.default else "false",
                    },
                ),
                provisioner=spec.provisioner,
                parameters=spec.parameters or None,
                volume_binding_mode=spec.binding_mode,
                reclaim_policy=spec.reclaim_policy,
                allow_volume_expansion=spec.provisioner != "openebs.io/local",
                opts=pulumi.ResourceOptions.merge(
                    child, pulumi.ResourceOptions(depends_on=after_chart)
                ),
            )
            for spec in args.classes
        ]
        default = [s.name for s in args.classes if s.default]
        self.register_outputs({"default_class": default[0] if default else None})

    def _pool_cluster(
        self, args: StorageArgs, spec: CStorPools, child: pulumi.ResourceOptions
    ) -> pulumi.Resource:
        """NDM's block devices for the inventory's disks, then the CStorPoolCluster on them."""
        self.block_devices = BlockDeviceSelection(
            "block-devices",
            spec=spec,
            namespace=args.namespace,
            kubeconfig=args.kube.kubeconfig,
            context=args.kube.context,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.release]),
        )
        self.pool_cluster = k8s.apiextensions.CustomResource(
            f"cspc-{spec.name}",
            api_version="cstor.openebs.io/v1",
            kind="CStorPoolCluster",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=spec.name, namespace=args.namespace, labels=managed_labels()
            ),
            spec=self.block_devices.pools.apply(
                lambda raw: pool_cluster_spec(pools_from_outputs(raw), spec)
            ),
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[self.block_devices])
            ),
        )
        return self.pool_cluster


def program() -> None:
    """The Pulumi program of `stacks/storage`."""
    args = load_args(StorageArgs)
    component = OpenEbsStorage(
        args.cluster, args, chart_password=pulumi.Config().require_secret(CHART_PASSWORD_KEY)
    )
    pulumi.export("classes", [c.metadata.name for c in component.classes])
