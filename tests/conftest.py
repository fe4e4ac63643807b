"""Shared test set-up. Fixtures live in tests/fixtures/, one module per area."""

pytest_plugins = [
    "tests.fixtures.inventories",
    "tests.fixtures.lab",
    "tests.fixtures.lab_services",
    "tests.fixtures.registries",
    "tests.fixtures.hubservices",
    "tests.fixtures.auxvm",
]
