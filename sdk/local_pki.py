"""An ephemeral certificate authority for ``bobravoz up --tls`` and the tests.

:class:`LocalPki` makes a CA in a folder and issues ECDSA P-256 certificates whose SANs are
what the transport checks: DNS names and IP addresses for host-name verification, and a SPIFFE
URI ``spiffe://<trust domain>/ns/<namespace>/sa/<name>`` for the namespace identity. Files are
written atomically (a reader never sees half a key), so reissuing to the same paths is how a
rotation is exercised. Nothing here is meant for a cluster: use cert-manager there.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bobravoz.runtime.tls import TlsFiles

DEFAULT_TRUST_DOMAIN = "bobravoz.local"
_VALIDITY = datetime.timedelta(days=1)


def _write(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@final
@dataclass(frozen=True, slots=True)
class IssuedIdentity:
    """One issued certificate: its files and the SPIFFE ID it carries (if any)."""

    files: TlsFiles
    spiffe_id: str | None
    serial: int


@final
class LocalPki:
    """A CA whose key lives in ``folder`` (mode 0600), issuing certificates on demand."""

    def __init__(self, folder: Path, *, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.trust_domain = trust_domain
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = _name(f"bobravoz local CA {os.getpid()}")
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
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
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = folder / "ca.crt"
        _write(self.ca_file, self._certificate.public_bytes(serialization.Encoding.PEM), 0o644)

    def spiffe_id(self, namespace: str, name: str) -> str:
        """``spiffe://<trust domain>/ns/<namespace>/sa/<name>``."""
        return f"spiffe://{self.trust_domain}/ns/{namespace}/sa/{name}"

    def issue(
        self,
        name: str,
        *,
        namespace: str | None = "default",
        dns_names: tuple[str, ...] = ("localhost",),
        ip_addresses: tuple[str, ...] = ("127.0.0.1", "::1"),
        folder: Path | None = None,
    ) -> IssuedIdentity:
        """Issue ``<folder>/<name>.crt`` and ``.key`` (server and client use), valid one day.

        With ``namespace`` the certificate carries the SPIFFE URI of that namespace (None:
        no URI SAN). Issuing the same name again replaces the files (a rotation).
        """
        target = folder or self.folder
        target.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        spiffe = self.spiffe_id(namespace, name) if namespace is not None else None
        names: list[x509.GeneralName] = [x509.DNSName(dns) for dns in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        if spiffe is not None:
            names.append(x509.UniformResourceIdentifier(spiffe))
        now = datetime.datetime.now(datetime.UTC)
        serial = x509.random_serial_number()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self._certificate.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        cert_file = target / f"{name}.crt"
        key_file = target / f"{name}.key"
        pem_key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write(key_file, pem_key, 0o600)
        _write(cert_file, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
        files = TlsFiles(str(cert_file), str(key_file), str(self.ca_file))
        return IssuedIdentity(files=files, spiffe_id=spiffe, serial=serial)


__all__ = ["DEFAULT_TRUST_DOMAIN", "IssuedIdentity", "LocalPki"]
