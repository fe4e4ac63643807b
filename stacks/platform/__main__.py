"""The platform stack; run by hand after `installer stacks config` (see docs/stacks.md)."""

from installer.stacks import program_of

program_of("platform")()
