"""A site chart repository for the storage e2e: the lab's stand-in charts behind TLS (a CA made
for the site, written where the installer keeps the site CA) and basic auth with the hub login.

It serves what ChartMuseum serves to Helm (`index.yaml` and the chart archives); the lab's own
upstream repository has another login, so the site's repository is this one.
"""

from __future__ import annotations

import base64
import datetime
import hmac
import ipaddress
import shutil
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0] if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        return builder.sign(key, hashes.SHA256())
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
    )
    return builder.sign(issuer[1], hashes.SHA256())


def _pem(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)


@contextmanager
def site_chart_repo(charts: Path, state: Path, user: str, password: str) -> Iterator[int]:
    """Serve `charts` on 127.0.0.1 (TLS, basic auth); yields the port. The site CA goes to
    `<state>/pki/ca.crt`."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("e2e site CA", ca_key, None)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("127.0.0.1", key, (ca.subject, ca_key))
    _pem(state / "pki" / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    tls = state / "chartrepo"
    _pem(tls / "server.crt", cert.public_bytes(serialization.Encoding.PEM))
    _pem(
        tls / "server.key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    root = state / "chartrepo" / "charts"
    shutil.copytree(charts, root, dirs_exist_ok=True)
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            if not hmac.compare_digest(self.headers.get("Authorization", ""), expected):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="charts"')
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls / "server.crt", tls / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
