"""SANDBOX: serve the Salesforce sandbox over TLS on 127.0.0.1.

simple-salesforce always speaks ``https://`` to the instance, so the sandbox needs a
certificate. :func:`local_certificate` makes a throwaway CA and a server certificate for
127.0.0.1/localhost with ``cryptography`` (a runtime dependency, so demo mode needs no
dev tools); tests may bring their own (e.g. trustme). The client trusts the CA through the
connection's ``config.ca_file``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import tempfile
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp

from core.sandbox import SandboxServer


@dataclass(frozen=True)
class TlsFiles:
    ca_file: str  # PEM: the CA certificate clients trust
    cert_file: str  # PEM: server certificate chain
    key_file: str  # PEM: server private key


def local_certificate(directory: str | None = None) -> TlsFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = Path(directory or tempfile.mkdtemp(prefix="switchyard-sf-sandbox-"))
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Switchyard SANDBOX CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files = TlsFiles(str(folder / "ca.pem"), str(folder / "server.pem"), str(folder / "server.key"))
    Path(files.ca_file).write_bytes(ca.public_bytes(pem))
    Path(files.cert_file).write_bytes(cert.public_bytes(pem))
    Path(files.key_file).write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


class TlsSandboxServer(SandboxServer):
    """:class:`core.sandbox.SandboxServer`, serving https:// with the given certificate."""

    def __init__(self, app: ASGIApp, tls: TlsFiles, *, host: str = "127.0.0.1") -> None:
        super().__init__(app, host=host, ssl_certfile=tls.cert_file, ssl_keyfile=tls.key_file)
        self.tls = tls

    @property
    def url(self) -> str:
        return super().url.replace("http://", "https://", 1)
