"""Field types of the inventory: Kubernetes quantities, DNS names, secret references, paths."""

from __future__ import annotations

import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    SecretStr,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from installer.errors import BadInputError
from installer.redact import REDACTOR

# --- rule violations with paths -------------------------------------------------------------


class RuleViolations(ValueError):
    """Cross-field rule failures, each with the field path (relative to the validated model).

    Raised from model validators; the loader turns each into a positioned problem.
    """

    def __init__(self, violations: list[tuple[tuple[str | int, ...], str]]) -> None:
        self.violations = violations
        super().__init__("; ".join(msg for _, msg in violations))


# --- quantities -----------------------------------------------------------------------------

_SUFFIX = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(
    r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?\s*$"
)


def parse_quantity(value: object) -> Decimal:
    """Parse a Kubernetes quantity (`120Gi`, `500m`, `2`, `1.5`) into a Decimal.

    >>> parse_quantity("1Ki")
    Decimal('1024')
    """
    if isinstance(value, bool):
        raise ValueError("expected a quantity such as 4, 500m or 64Gi, not a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("quantity must not be negative")
        return Decimal(str(value))
    if not isinstance(value, str):
        raise ValueError("expected a quantity such as 4, 500m or 64Gi")
    match = _QUANTITY.match(value)
    if not match:
        raise ValueError(f"'{value}' is not a Kubernetes quantity (examples: 4, 500m, 64Gi, 1.5T)")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"'{value}' is not a number") from None
    return number * _SUFFIX[match.group(2) or ""]


def _to_cpu(value: object) -> float:
    cores = parse_quantity(value)
    if cores <= 0:
        raise ValueError("cpu must be greater than 0")
    if cores != cores.quantize(Decimal("0.001")):
        raise ValueError("cpu precision is 1m (0.001 cores)")
    return float(cores)


def _to_bytes(value: object) -> int:
    amount = parse_quantity(value)
    if amount <= 0:
        raise ValueError("size must be greater than 0")
    if amount != amount.to_integral_value():
        raise ValueError("size must be a whole number of bytes")
    return int(amount)


_QUANTITY_SCHEMA = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "pattern": _QUANTITY.pattern},
    ]
}

Cpu = Annotated[float, BeforeValidator(_to_cpu), WithJsonSchema(_QUANTITY_SCHEMA)]
"""CPU cores; accepts `4`, `0.5` or `500m`."""

ByteSize = Annotated[int, BeforeValidator(_to_bytes), WithJsonSchema(_QUANTITY_SCHEMA)]
"""Bytes; accepts `64Gi`, `500M` or a plain number of bytes."""


def format_bytes(value: int) -> str:
    """Render bytes as the largest exact binary quantity (`68719476736` -> `64Gi`)."""
    for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = int(_SUFFIX[suffix])
        if value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


# --- names ----------------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DNS_NAME_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(
            f"'{value}' is not a DNS label: use 1-63 lowercase letters, digits and '-',"
            " starting and ending with a letter or digit"
        )
    return value


def _dns_name(value: str) -> str:
    name = value.rstrip(".")
    if len(name) > 253 or not name:
        raise ValueError(f"'{value}' is not a DNS name (1-253 characters)")
    for label in name.split("."):
        if not _DNS_NAME_LABEL.match(label):
            raise ValueError(
                f"'{value}' is not a DNS name: label '{label}' must be 1-63 lowercase letters,"
                " digits and '-', starting and ending with a letter or digit"
            )
    return name


LoginUser = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z_][a-z0-9_.-]*$")
]
"""A POSIX login name (the SSH user of the VM or of the nodes)."""
SshPort = Annotated[int, Field(ge=1, le=65535)]

DnsLabel = Annotated[str, AfterValidator(_dns_label)]
"""A DNS-1123 label: a name Kubernetes accepts for objects and label values."""

DnsName = Annotated[str, AfterValidator(_dns_name)]
"""A fully qualified DNS name without the trailing dot."""

_LABEL_KEY = re.compile(
    r"^(([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


def _label_key(value: str) -> str:
    if not _LABEL_KEY.match(value) or len(value) > 316:
        raise ValueError(f"'{value}' is not a Kubernetes label key (prefix/name)")
    return value


def _label_value(value: str) -> str:
    if not _LABEL_VALUE.match(value):
        raise ValueError(f"'{value}' is not a Kubernetes label value (63 characters, alphanumeric)")
    return value


LabelKey = Annotated[str, AfterValidator(_label_key)]
LabelValue = Annotated[str, AfterValidator(_label_value)]


# --- paths ----------------------------------------------------------------------------------


def under_inventory(path: Path, base: Path | None) -> Path:
    """`path` taken relative to the inventory's folder `base` when it is relative, `..` taken
    out: the same file is one path however an inventory names it."""
    if path.is_absolute() or base is None:
        return path
    return Path(os.path.normpath(base / path))


def _resolve_path(value: object, info: ValidationInfo) -> Path:
    if not isinstance(value, str | Path) or not str(value).strip():
        raise ValueError("expected a file path")
    base = (info.context or {}).get("base_dir")
    return under_inventory(Path(str(value)).expanduser(), base if isinstance(base, Path) else None)


FilePath = Annotated[
    Path, BeforeValidator(_resolve_path), WithJsonSchema({"type": "string", "minLength": 1})
]
"""A path; relative paths are taken relative to the inventory file's folder. Not checked to exist
at validation time (the installer host may differ from the one that validates): preflight does."""


# --- secret references ----------------------------------------------------------------------

_SECRET_REF = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$")


class SecretRef:
    """A reference to a secret kept outside the inventory: `env:NAME` or `file:PATH`.

    The inventory never holds a secret inline, so it can be committed and shared. The value is
    read only when needed and is a `SecretStr`, which never prints.
    """

    __slots__ = ("_base_dir", "ref")

    def __init__(self, ref: str, base_dir: Path | None = None) -> None:
        if not _SECRET_REF.match(ref):
            raise ValueError(
                "secrets are never written inline; give a reference: env:VARIABLE_NAME or"
                " file:/path/to/secret"
            )
        self.ref = ref
        self._base_dir = base_dir

    @property
    def kind(self) -> str:
        """`env` or `file`."""
        return self.ref.split(":", 1)[0]

    @property
    def target(self) -> str:
        """The variable name or the file path."""
        return self.ref.split(":", 1)[1]

    def path(self) -> Path | None:
        """The file a `file:` reference points at (resolved against the inventory folder)."""
        if self.kind != "file":
            return None
        return under_inventory(Path(self.target).expanduser(), self._base_dir)

    def resolve(self) -> SecretStr:
        """Read the secret. Raises BadInputError naming the reference (never the value)."""
        if self.kind == "env":
            value = os.environ.get(self.target)
            if value is None:
                raise BadInputError(
                    f"secret {self.ref}: environment variable {self.target} is not set",
                    remedy=f"export {self.target}=... before running the installer",
                )
            REDACTOR.register(value)
            return SecretStr(value)
        path = self.path()
        assert path is not None
        try:
            text = path.read_text(encoding="utf-8").rstrip("\n")
        except OSError as exc:
            raise BadInputError(
                f"secret {self.ref}: cannot read {path}: {exc.strerror or exc}",
                remedy="create the file (mode 0600) or point the reference elsewhere",
            ) from None
        REDACTOR.register(text)
        return SecretStr(text)

    def __repr__(self) -> str:
        return f"SecretRef({self.ref!r})"

    def __str__(self) -> str:
        return self.ref

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretRef) and other.ref == self.ref

    def __hash__(self) -> int:
        return hash(self.ref)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def build(value: Any, info: core_schema.ValidationInfo) -> SecretRef:
            if isinstance(value, SecretRef):
                return value
            if not isinstance(value, str):
                raise ValueError(
                    "expected a secret reference string: env:VARIABLE_NAME or file:/path"
                )
            base = (info.context or {}).get("base_dir")
            return cls(value, base if isinstance(base, Path) else None)

        return core_schema.with_info_plain_validator_function(
            build, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": _SECRET_REF.pattern}
