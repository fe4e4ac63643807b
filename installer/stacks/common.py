"""What every stack shares: typed arguments stored in the stack config, the Kubernetes provider.

A stack's arguments live in its `Pulumi.<cluster>.yaml` as one structured value (`<project>:args`)
plus one secret value per secret. The installer writes them (`installer stacks config`); the
program reads them back into the same pydantic model, so a hand-run `pulumi up` in `stacks/<x>`
and the installer's engine build exactly the same resources.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import pulumi
    import pulumi_kubernetes as k8s

FIELD_MANAGER = "onprem-installer"
"""Server-side apply field manager of everything the installer applies inside a cluster."""

ARGS_KEY = "args"
"""Config key (in the project's namespace) holding a stack's structured arguments."""

PROJECT_PREFIX = "onprem-"
"""Pulumi project names are `onprem-<component>` (one project per component, one stack per
cluster)."""


class StackModel(BaseModel):
    """Base of every stack argument model: unknown keys are errors, values immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class KubeTarget(StackModel):
    """Which cluster a stack talks to."""

    kubeconfig: str = Field(description="Absolute path of the kubeconfig file.")
    context: str | None = Field(default=None, description="Context; the current one if None.")


class StackArgs(StackModel):
    """Arguments every stack has."""

    cluster: str = Field(description="Cluster name (also the Pulumi stack name).")
    kube: KubeTarget = Field(description="The cluster's API.")


A = TypeVar("A", bound=StackArgs)


def project_name(component: str) -> str:
    """Pulumi project name of a component (`nodes` -> `onprem-nodes`)."""
    return f"{PROJECT_PREFIX}{component}"


def load_args(model: type[A]) -> A:
    """Inside a Pulumi program: the stack's arguments, validated."""
    import pulumi

    return model.model_validate(pulumi.Config().require_object(ARGS_KEY))


def kube_provider(name: str, target: KubeTarget, parent: pulumi.Resource) -> k8s.Provider:
    """An explicit Kubernetes provider for `target`, server-side apply on."""
    import pulumi
    import pulumi_kubernetes as k8s

    return k8s.Provider(
        name,
        kubeconfig=target.kubeconfig,
        context=target.context,
        enable_server_side_apply=True,
        # Config maps change in place (the controllers watch theirs by name); the provider's
        # default replaces them on every data change.
        enable_config_map_mutable=True,
        opts=pulumi.ResourceOptions(parent=parent),
    )


def managed_labels() -> dict[str, str]:
    """Labels on every object the installer creates (not on nodes, which it only patches)."""
    return {"app.kubernetes.io/managed-by": FIELD_MANAGER}
