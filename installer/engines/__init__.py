"""Thin typed adapters over the real tools (registry, Ansible, Pulumi, SSH, Kubernetes)."""
