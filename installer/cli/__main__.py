"""`python -m installer.cli` and the console script."""

from __future__ import annotations

import os
import sys

# gRPC (under Pulumi) logs a line on every fork the Ansible engine makes; only errors matter.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from installer.cli.app import main


def run() -> None:
    """Console-script entry: exit with the command's exit code."""
    sys.exit(main())


if __name__ == "__main__":
    run()
