"""One error root for the installer. Each error carries the exit code the CLI returns.

Exit codes: 0 ok, 1 failed checks or failed phase, 2 bad input, 3 environment problem.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, the contract with CI runbooks."""

    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    ENVIRONMENT = 3


class InstallerError(Exception):
    """Root of every error the installer raises on purpose; its message is for the operator."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, remedy: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def __str__(self) -> str:
        return self.message if not self.remedy else f"{self.message}\n  remedy: {self.remedy}"


class FailedError(InstallerError):
    """A phase or check failed (exit 1)."""

    exit_code = ExitCode.FAILED


class BadInputError(InstallerError):
    """Bad inventory, arguments or bundle (exit 2)."""

    exit_code = ExitCode.BAD_INPUT


class EnvironmentProblem(InstallerError):
    """Unreachable host, missing tool, refused credentials (exit 3)."""

    exit_code = ExitCode.ENVIRONMENT
