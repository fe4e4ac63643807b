"""Environment overrides of programs the installer runs or installs, and their guard.

A development machine points the installer at programs of its own (`INSTALLER_HUB_*`,
`INSTALLER_PULUMI_BIN_DIR`, the lab's `LAB_PULUMI_BIN_DIR`). Where the site takes its programs
from a signed bundle (a run given `--bundle`, or an air-gapped site), a variable must not replace
verified content without anyone noticing: it is refused (exit 2) unless the development flag
`INSTALLER_ALLOW_DEV_OVERRIDES=1` is set too, and then every use is logged as a warning.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from installer.errors import BadInputError

DEV_OVERRIDES = "INSTALLER_ALLOW_DEV_OVERRIDES"

log = logging.getLogger(__name__)


def env_override(name: str, *, guarded: bool, replaces: str) -> Path | None:
    """The folder or file the variable `name` names, or None when it is unset.

    With `guarded` (the site's programs come from a signed bundle) it is refused unless the
    development flag is set, and logged as a warning when it is."""
    value = os.environ.get(name)
    if not value:
        return None
    if guarded:
        if os.environ.get(DEV_OVERRIDES) != "1":
            raise BadInputError(
                f"{name}={value} would replace {replaces} on a site that installs from a"
                " signed bundle",
                remedy=f"unset {name}; on a development site only, set {DEV_OVERRIDES}=1 as well",
            )
        log.warning(
            "DEVELOPMENT OVERRIDE (%s=1): %s=%s replaces %s", DEV_OVERRIDES, name, value, replaces
        )
    return Path(value)
