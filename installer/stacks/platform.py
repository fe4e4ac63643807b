"""The platform stack: the job controller and the app controller of one compute cluster.

Deployed as plain Pulumi resources, not Helm releases: every object is visible in a preview, a
changed preset is exactly one changed resource (the config map the controllers watch), and no
chart template stands between the inventory and what lands in the cluster. What they need comes
with them: namespaces, service accounts and RBAC, PriorityClasses, the registry pull secret, the
OIDC client secret, an Ingress for the cluster's domain.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pydantic import Field

from installer.site import JOB_LABEL, JOB_TAINT
from installer.stacks.common import (
    StackArgs,
    StackModel,
    kube_provider,
    load_args,
    managed_labels,
)

CONFIG_FILE = "config.json"
REGISTRY_PASSWORD_KEY = "registry_password"  # noqa: S105 - a config key, not a value
OIDC_SECRET_KEY = "oidc_client_secret"  # noqa: S105 - a config key, not a value


class Oidc(StackModel):
    """How the controllers check users' tokens."""

    issuer: str = Field(description="OIDC issuer URL (the realm's).")
    client_id: str = Field(description="The platform's client.")


class PlatformArgs(StackArgs):
    """Arguments of the platform stack."""

    namespace: str
    jobs_namespace: str
    apps_namespace: str
    registry: str = Field(description="Site registry host:port (pull secret, image prefix).")
    registry_user: str
    images: dict[str, str] = Field(description="Controller name -> site image reference.")
    domain: str
    config: dict[str, Any] = Field(description="The controllers' config document (wire format).")
    env: dict[str, str] = Field(description="Environment of both controllers (label keys etc).")
    oidc: Oidc


PRIORITY_CLASSES = {
    # Platform services outrank jobs so a full cluster never starves the controllers.
    "platform-services": 1_000_000,
    "platform-job": 1000,
    "platform-job-preemptible": 100,
}

JOB_RULES = [
    {
        "api_groups": [""],
        "resources": [
            "pods",
            "pods/log",
            "pods/exec",
            "pods/portforward",
            "services",
            "secrets",
            "configmaps",
            "persistentvolumeclaims",
            "events",
        ],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    },
    {
        "api_groups": ["networking.k8s.io"],
        "resources": ["networkpolicies", "ingresses"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    },
]
APP_RULES = [
    *JOB_RULES,
    {
        "api_groups": ["apps"],
        "resources": ["deployments", "statefulsets", "replicasets"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    },
    {
        "api_groups": ["batch"],
        "resources": ["jobs"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    },
]
NODE_RULES = [{"api_groups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]


def dockerconfig(registry: str, user: str, password: str) -> str:
    """The `.dockerconfigjson` of one registry login."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps(
        {"auths": {registry: {"username": user, "password": password, "auth": token}}},
        sort_keys=True,
    )


class PlatformControllers(pulumi.ComponentResource):
    """The job and app controllers with everything they need, in one cluster."""

    def __init__(
        self,
        name: str,
        args: PlatformArgs,
        registry_password: pulumi.Input[str],
        oidc_client_secret: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("onprem:platform:PlatformControllers", name, None, opts)
        provider = kube_provider(f"{name}-kube", args.kube, self)
        self._opts = pulumi.ResourceOptions(parent=self, provider=provider)
        labels = managed_labels()

        self.namespaces = {
            ns: k8s.core.v1.Namespace(
                f"ns-{ns}",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=ns, labels=labels),
                opts=self._opts,
            )
            for ns in (args.namespace, args.jobs_namespace, args.apps_namespace)
        }
        self.priority_classes = [
            k8s.scheduling.v1.PriorityClass(
                f"priority-{pc}",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=pc, labels=labels),
                value=value,
                global_default=False,
                description="On-prem platform priority class.",
                opts=self._opts,
            )
            for pc, value in PRIORITY_CLASSES.items()
        ]
        password = pulumi.Output.secret(registry_password)
        pull_data = password.apply(lambda p: dockerconfig(args.registry, args.registry_user, p))
        self.pull_secrets = [
            k8s.core.v1.Secret(
                f"pull-secret-{ns}",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name="site-registry", namespace=ns, labels=labels
                ),
                type="kubernetes.io/dockerconfigjson",
                string_data={".dockerconfigjson": pull_data},
                opts=self._in(ns),
            )
            for ns in self.namespaces
        ]
        self.oidc_secret = k8s.core.v1.Secret(
            "oidc-client",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="platform-oidc", namespace=args.namespace, labels=labels
            ),
            string_data={
                "client_id": args.oidc.client_id,
                "client_secret": pulumi.Output.secret(oidc_client_secret),
                "issuer": args.oidc.issuer,
            },
            opts=self._in(args.namespace),
        )
        self.config_map = k8s.core.v1.ConfigMap(
            "controller-config",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="platform-config", namespace=args.namespace, labels=labels
            ),
            data={CONFIG_FILE: json.dumps(args.config, indent=2, sort_keys=True)},
            opts=self._in(args.namespace),
        )
        self.deployments: dict[str, k8s.apps.v1.Deployment] = {}
        for controller, rules, scope in (
            ("job-controller", JOB_RULES, args.jobs_namespace),
            ("app-controller", APP_RULES, args.apps_namespace),
        ):
            self._rbac(controller, rules, scope, args)
            self.deployments[controller] = self._deployment(controller, args)
        self.ingress = k8s.networking.v1.Ingress(
            "platform-ingress",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="platform",
                namespace=args.namespace,
                labels=labels,
                # The ingress controller may come later (or never report an address on bare
                # metal); the Ingress is done when it exists.
                annotations={"pulumi.com/skipAwait": "true"},
            ),
            spec=k8s.networking.v1.IngressSpecArgs(
                rules=[
                    k8s.networking.v1.IngressRuleArgs(
                        host=host,
                        http=k8s.networking.v1.HTTPIngressRuleValueArgs(
                            paths=[
                                k8s.networking.v1.HTTPIngressPathArgs(
                                    path="/",
                                    path_type="Prefix",
                                    backend=k8s.networking.v1.IngressBackendArgs(
                                        service=k8s.networking.v1.IngressServiceBackendArgs(
                                            name=service,
                                            port=k8s.networking.v1.ServiceBackendPortArgs(
                                                number=8080
                                            ),
                                        )
                                    ),
                                )
                            ]
                        ),
                    )
                    for host, service in (
                        (args.domain, "job-controller"),
                        (f"*.apps.{args.domain}", "app-controller"),
                    )
                ]
            ),
            opts=self._in(args.namespace),
        )
        self.register_outputs({"config_map": self.config_map.metadata.name})

    def _in(self, namespace: str) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions.merge(
            self._opts, pulumi.ResourceOptions(depends_on=[self.namespaces[namespace]])
        )

    def _rbac(
        self, controller: str, rules: list[dict[str, Any]], scope: str, args: PlatformArgs
    ) -> None:
        labels = managed_labels()
        k8s.core.v1.ServiceAccount(
            f"sa-{controller}",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=controller, namespace=args.namespace, labels=labels
            ),
            image_pull_secrets=[k8s.core.v1.LocalObjectReferenceArgs(name="site-registry")],
            opts=self._in(args.namespace),
        )
        subject = k8s.rbac.v1.SubjectArgs(
            kind="ServiceAccount", name=controller, namespace=args.namespace
        )
        k8s.rbac.v1.Role(
            f"role-{controller}",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=controller, namespace=scope, labels=labels),
            rules=[k8s.rbac.v1.PolicyRuleArgs(**rule) for rule in rules],
            opts=self._in(scope),
        )
        k8s.rbac.v1.RoleBinding(
            f"rolebinding-{controller}",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=controller, namespace=scope, labels=labels),
            role_ref=k8s.rbac.v1.RoleRefArgs(
                api_group="rbac.authorization.k8s.io", kind="Role", name=controller
            ),
            subjects=[subject],
            opts=self._in(scope),
        )
        cluster_name = f"onprem-platform-{controller}"
        k8s.rbac.v1.ClusterRole(
            f"clusterrole-{controller}",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=cluster_name, labels=labels),
            rules=[k8s.rbac.v1.PolicyRuleArgs(**rule) for rule in NODE_RULES],
            opts=self._opts,
        )
        k8s.rbac.v1.ClusterRoleBinding(
            f"clusterrolebinding-{controller}",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=cluster_name, labels=labels),
            role_ref=k8s.rbac.v1.RoleRefArgs(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=cluster_name
            ),
            subjects=[subject],
            opts=self._opts,
        )

    def _deployment(self, controller: str, args: PlatformArgs) -> k8s.apps.v1.Deployment:
        labels = {**managed_labels(), "app.kubernetes.io/name": controller}
        selector = {"app.kubernetes.io/name": controller}
        env = [k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in sorted(args.env.items())]
        env.append(
            k8s.core.v1.EnvVarArgs(name="NP_CONFIG_PATH", value=f"/etc/platform/{CONFIG_FILE}")
        )
        k8s.core.v1.Service(
            f"svc-{controller}",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=controller, namespace=args.namespace, labels=labels
            ),
            spec=k8s.core.v1.ServiceSpecArgs(
                selector=selector,
                ports=[k8s.core.v1.ServicePortArgs(name="http", port=8080, target_port=8080)],
            ),
            opts=self._in(args.namespace),
        )
        return k8s.apps.v1.Deployment(
            f"deploy-{controller}",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=controller, namespace=args.namespace, labels=labels
            ),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        service_account_name=controller,
                        priority_class_name="platform-services",
                        # Off the job nodes when the site has others; on small sites where every
                        # node runs jobs, the controllers still land (they tolerate the taint).
                        tolerations=[
                            k8s.core.v1.TolerationArgs(
                                key=JOB_TAINT, operator="Exists", effect="NoSchedule"
                            )
                        ],
                        affinity=k8s.core.v1.AffinityArgs(
                            node_affinity=k8s.core.v1.NodeAffinityArgs(
                                preferred_during_scheduling_ignored_during_execution=[
                                    k8s.core.v1.PreferredSchedulingTermArgs(
                                        weight=100,
                                        preference=k8s.core.v1.NodeSelectorTermArgs(
                                            match_expressions=[
                                                k8s.core.v1.NodeSelectorRequirementArgs(
                                                    key=JOB_LABEL, operator="DoesNotExist"
                                                )
                                            ]
                                        ),
                                    )
                                ]
                            )
                        ),
                        image_pull_secrets=[
                            k8s.core.v1.LocalObjectReferenceArgs(name="site-registry")
                        ],
                        containers=[
                            k8s.core.v1.ContainerArgs(
                                name=controller,
                                image=args.images[controller],
                                env=env,
                                ports=[k8s.core.v1.ContainerPortArgs(container_port=8080)],
                                volume_mounts=[
                                    k8s.core.v1.VolumeMountArgs(
                                        name="config", mount_path="/etc/platform", read_only=True
                                    )
                                ],
                            )
                        ],
                        volumes=[
                            k8s.core.v1.VolumeArgs(
                                name="config",
                                config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                                    name="platform-config"
                                ),
                            )
                        ],
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions.merge(
                self._in(args.namespace),
                pulumi.ResourceOptions(
                    depends_on=[self.config_map, *self.pull_secrets, *self.priority_classes]
                ),
            ),
        )


def program() -> None:
    """The Pulumi program of `stacks/platform`."""
    args = load_args(PlatformArgs)
    config = pulumi.Config()
    component = PlatformControllers(
        args.cluster,
        args,
        registry_password=config.require_secret(REGISTRY_PASSWORD_KEY),
        oidc_client_secret=config.require_secret(OIDC_SECRET_KEY),
    )
    pulumi.export("config_map", component.config_map.metadata.name)
