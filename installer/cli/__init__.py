"""The command line: parses, calls the library, renders results, maps errors to exit codes."""
