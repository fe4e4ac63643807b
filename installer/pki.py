"""The site CA and the hub's server certificate, kept in the state folder's `pki/`.

The CA is generated once (or taken from the inventory); the server certificate names the hub's
DNS name, any extra names and the VM's address, and is re-issued only when those names change,
the CA changes, or it nears expiry. Keys are written 0600. Ansible copies the results to the VM.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from installer.engines.ssh import register_key_text
from installer.errors import BadInputError
from installer.inventory.models import TlsSettings
from installer.state import StateDir

CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class HubPki:
    """Where the hub's TLS files are on the installer's machine."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class PkiPlan:
    """What `ensure_pki` would do."""

    create_ca: bool
    issue_server_cert: bool
    reason: str = ""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    tmp.replace(path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_ca(
    state: StateDir, tls: TlsSettings
) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    if tls.ca == "provided":
        assert tls.ca_cert is not None and tls.ca_key is not None
        try:
            cert = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
        except (OSError, ValueError) as exc:
            raise BadInputError(
                f"aux_vm.tls.ca_cert {tls.ca_cert}: not a readable PEM certificate ({exc})",
                remedy="point ca_cert at the site CA's PEM certificate",
            ) from None
        try:
            key = serialization.load_pem_private_key(
                tls.ca_key.resolve().get_secret_value().encode(), password=None
            )
        except (ValueError, TypeError):
            raise BadInputError(
                f"aux_vm.tls.ca_key {tls.ca_key}: not an unencrypted PEM private key",
                remedy="give the CA key without a passphrase (kept 0600, read only here)",
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise BadInputError(
                f"aux_vm.tls.ca_key {tls.ca_key}: unsupported key type",
                remedy="give an RSA or ECDSA CA key",
            )
        return cert, key
    key_path = state.pki / "ca.key"
    cert = x509.load_pem_x509_certificate(state.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    register_key_text(key_path.read_text(encoding="utf-8"))
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise BadInputError(f"{key_path}: not the CA key the installer writes (ECDSA)")
    return cert, key


def _create_ca(state: StateDir, site: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"onprem-installer CA ({site})")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(state.pki / "ca.key", _pem_key(key), 0o600)
    _write(state.ca_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def server_names(hostname: str, extra: list[str], address: str) -> tuple[list[str], list[str]]:
    """DNS names and IP addresses the server certificate must carry, sorted."""
    return sorted({hostname, *extra}), [address]


def _cert_matches(path: Path, ca: x509.Certificate, dns: list[str], ips: list[str]) -> str:
    """'' when the certificate at `path` is fine, else why it must be re-issued."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return "no server certificate yet"
    if cert.issuer != ca.subject:
        return "the CA changed"
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return "the certificate expires soon"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "the certificate has no names"
    have_dns = sorted(san.get_values_for_type(x509.DNSName))
    have_ips = sorted(str(i) for i in san.get_values_for_type(x509.IPAddress))
    if have_dns != dns or have_ips != sorted(ips):
        return "the VM's names changed"
    return ""


def plan_pki(state: StateDir, tls: TlsSettings, dns: list[str], ips: list[str]) -> PkiPlan:
    """What `ensure_pki` would create or re-issue, changing nothing."""
    create_ca = tls.ca == "generate" and not state.ca_cert.exists()
    if create_ca:
        return PkiPlan(True, True, "no site CA yet")
    ca, _ = _load_ca(state, tls)
    why = _cert_matches(state.pki / "hub.crt", ca, dns, ips)
    if not why and not (state.pki / "hub.key").exists():
        why = "no server key"
    return PkiPlan(False, bool(why), why)


def ensure_pki(
    state: StateDir, tls: TlsSettings, site: str, dns: list[str], ips: list[str]
) -> tuple[HubPki, PkiPlan]:
    """Create the CA (once) and the server certificate (when needed); returns paths and what
    was done."""
    plan = plan_pki(state, tls, dns, ips)
    if plan.create_ca:
        _create_ca(state, site)
    ca, ca_key = _load_ca(state, tls)
    if tls.ca == "provided":
        _write(state.ca_cert, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    if plan.issue_server_cert:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        san += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(state.pki / "hub.key", _pem_key(key), 0o600)
        chain = cert.public_bytes(serialization.Encoding.PEM)
        _write(state.pki / "hub.crt", chain, 0o644)
    register_key_text((state.pki / "hub.key").read_text(encoding="utf-8"))
    return HubPki(state.ca_cert, state.pki / "hub.crt", state.pki / "hub.key"), plan
