"""The air-gapped bundle: format, build, verify, load, delta (docs/airgap-bundle.md)."""
