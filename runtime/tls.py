"""mTLS for the gRPC hops: contexts built from PEM files and reloaded when the files change,
the SPIFFE identities a peer certificate carries, and where each side finds its files.

Every context is TLS 1.3 only and offers ALPN ``h2``. A server context requires a client
certificate verified against the CA; a client context presents its own pair and verifies the
server against the same CA. :class:`ReloadingContext` keeps one ``ssl.SSLContext`` object alive
(servers and channels hold on to it) and loads a changed certificate pair into it, so new
handshakes use the new pair with no restart (cert-manager rotation). A changed CA bundle is
added to the trusted set; a CA that was removed stays trusted until the process restarts.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, final

import trio

from bobravoz.runtime.envconfig import ConfigError, EnvReader

log = logging.getLogger(__name__)

HUB_TLS_DIR: Final = "/var/run/hub-tls"
#: Seconds between checks of the certificate files for a change.
DEFAULT_RELOAD_INTERVAL: Final = 10.0
_SPIFFE: Final = re.compile(r"^spiffe://([^/]+)/ns/([^/]+)(?:/.*)?$")

Role = Literal["server", "client"]


@final
@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The PEM files of one side: its certificate chain, its private key, the CA bundle."""

    cert: str
    key: str
    ca: str

    def missing(self) -> list[str]:
        """The paths that do not name a readable file."""
        return [path for path in (self.cert, self.key, self.ca) if not os.access(path, os.R_OK)]

    def stamp(self) -> tuple[tuple[int, int, int], ...]:
        """What changes when any file is replaced (inode, size, modification time)."""
        stamps = []
        for path in (self.cert, self.key, self.ca):
            try:
                status = os.stat(path)
            except OSError:
                stamps.append((0, 0, 0))
            else:
                stamps.append((status.st_ino, status.st_size, status.st_mtime_ns))
        return tuple(stamps)


def _new_context(role: Role) -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if role == "server" else ssl.PROTOCOL_TLS_CLIENT)


def _configure(context: ssl.SSLContext, files: TlsFiles) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2"])
    context.load_cert_chain(files.cert, files.key)
    context.load_verify_locations(cafile=files.ca)


@final
class ReloadingContext:
    """One live ``ssl.SSLContext`` for ``files``, reloaded in place when the files change.

    ``role="server"`` requires and verifies client certificates; ``role="client"`` presents
    the pair and verifies the server (its host name too when ``check_hostname``). Building
    raises ``ssl.SSLError``/``OSError`` for unreadable or mismatched files.
    """

    def __init__(self, files: TlsFiles, role: Role, *, check_hostname: bool = True) -> None:
        self.files = files
        self.role = role
        context = _new_context(role)
        if role == "client":
            context.check_hostname = check_hostname
        context.verify_mode = ssl.CERT_REQUIRED
        _configure(context, files)
        self.context = context
        self.reloads = 0
        self._stamp = files.stamp()

    def reload_if_changed(self) -> bool:
        """Load the files again if any changed since the last load; True when it did.

        A pair that does not load (half-written files, a key that does not match) leaves the
        current one in use and raises, so the caller logs it and tries again later.
        """
        stamp = self.files.stamp()
        if stamp == self._stamp:
            return False
        trial = _new_context(self.role)
        _configure(trial, self.files)  # raises before the live context is touched
        self.context.load_cert_chain(self.files.cert, self.files.key)
        self.context.load_verify_locations(cafile=self.files.ca)
        self._stamp = stamp
        self.reloads += 1
        return True

    async def watch(
        self,
        interval: float = DEFAULT_RELOAD_INTERVAL,
        on_reload: Callable[[ReloadingContext], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        """Check the files every ``interval`` seconds until cancelled; log every reload and
        every failed one (the old pair stays in use)."""
        while True:
            await trio.sleep(interval)
            try:
                changed = self.reload_if_changed()
            except (OSError, ssl.SSLError) as error:
                log.warning("TLS files %s changed but do not load: %s", self.files.cert, error)
                if on_error is not None:
                    on_error(error)
                continue
            if changed:
                log.info(
                    "reloaded TLS certificate %s (%s, reload %d)",
                    self.files.cert,
                    self.role,
                    self.reloads,
                )
                if on_reload is not None:
                    on_reload(self)


def server_auth_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A client context that verifies the server (host name included) against ``ca_file``, or
    the system's trust store without one, and presents no certificate: what an engram uses
    toward a connector that is not on loopback or a unix socket (the Go SDK's rule)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["h2"])
    return context


@final
@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """What a verified peer certificate says about who it is: its SPIFFE URI SANs."""

    spiffe_ids: tuple[str, ...]

    @property
    def namespaces(self) -> tuple[str, ...]:
        """The Kubernetes namespaces named by ``spiffe://<domain>/ns/<namespace>/...`` IDs."""
        found = []
        for spiffe_id in self.spiffe_ids:
            match = _SPIFFE.match(spiffe_id)
            if match is not None:
                found.append(match.group(2))
        return tuple(found)

    def describe(self) -> str:
        """The IDs for a message (``no SPIFFE ID`` when there is none)."""
        return ", ".join(self.spiffe_ids) if self.spiffe_ids else "no SPIFFE ID"


def peer_identity(certificate: Mapping[str, Any] | None) -> PeerIdentity | None:
    """The identity in ``ssl.SSLObject.getpeercert()`` output (None without a certificate)."""
    if not certificate:
        return None
    names: Sequence[tuple[str, str]] = certificate.get("subjectAltName", ())
    return PeerIdentity(
        tuple(value for kind, value in names if kind == "URI" and value.startswith("spiffe://"))
    )


@final
@dataclass(frozen=True, slots=True)
class TlsSettings:
    """One process's TLS: its server side, its client side, how often files are checked."""

    server: TlsFiles | None = None
    client: TlsFiles | None = None
    #: The host name the hub's certificate is checked against (defaults to the dialled host).
    hub_server_name: str | None = None
    reload_interval: float = DEFAULT_RELOAD_INTERVAL

    @property
    def enabled(self) -> bool:
        """True when any side speaks TLS."""
        return self.server is not None or self.client is not None


def security_mode(env: EnvReader) -> bool:
    """``BUBU_TRANSPORT_SECURITY_MODE``: True for ``tls``, False when empty; else ConfigError."""
    mode = env.text("BUBU_TRANSPORT_SECURITY_MODE", "").strip().lower()
    if mode not in {"", "tls"}:
        raise ConfigError(
            f"BUBU_TRANSPORT_SECURITY_MODE={mode!r}: only '' or 'tls' (plaintext is not a mode)"
        )
    return mode == "tls"


def _require(files: TlsFiles, names: tuple[str, str, str]) -> TlsFiles:
    problems = [
        f"{name}={path or '(unset)'}"
        for name, path in zip(names, (files.cert, files.key, files.ca), strict=True)
        if not path or not os.access(path, os.R_OK)
    ]
    if problems:
        raise ConfigError("TLS requires readable files, missing: " + ", ".join(problems))
    return files


def hub_server_files(env: EnvReader, *, required: bool) -> TlsFiles | None:
    """The hub's server files: ``BUBU_HUB_TLS_CERT_FILE``/``_KEY_FILE``/``BUBU_HUB_CA_FILE``,
    else the default mount ``/var/run/hub-tls/{tls.crt,tls.key,ca.crt}`` when it exists.

    TLS is on when ``required`` (cluster mode, ``BUBU_TRANSPORT_SECURITY_MODE=tls`` or
    ``BUBU_HUB_REQUIRE_TLS``) or when any of the variables is set; then every file must be
    readable (ConfigError naming the missing ones). None means plaintext.
    """
    names = ("BUBU_HUB_TLS_CERT_FILE", "BUBU_HUB_TLS_KEY_FILE", "BUBU_HUB_CA_FILE")
    default = (f"{HUB_TLS_DIR}/tls.crt", f"{HUB_TLS_DIR}/tls.key", f"{HUB_TLS_DIR}/ca.crt")
    given = [env.optional(name) for name in names]
    mounted = all(os.path.exists(path) for path in default)
    if not (required or any(given) or mounted):
        return None
    paths = [
        value or (fallback if mounted or required else "")
        for value, fallback in zip(given, default, strict=True)
    ]
    return _require(TlsFiles(*paths), names)


def connector_client_files(env: EnvReader, *, required: bool) -> TlsFiles | None:
    """The connector's client files toward the hub or a peer, with the Go fallbacks:
    ``BUBU_GRPC_CLIENT_CERT_FILE`` ← ``BUBU_GRPC_TLS_CERT_FILE``, the same for the key,
    ``BUBU_GRPC_CA_FILE`` ← ``BUBU_HUB_CA_FILE``. None means plaintext (only when not
    ``required`` and nothing is set)."""
    cert = env.optional("BUBU_GRPC_CLIENT_CERT_FILE") or env.optional("BUBU_GRPC_TLS_CERT_FILE")
    key = env.optional("BUBU_GRPC_CLIENT_KEY_FILE") or env.optional("BUBU_GRPC_TLS_KEY_FILE")
    ca = env.optional("BUBU_GRPC_CA_FILE") or env.optional("BUBU_HUB_CA_FILE")
    if not (required or cert or key or ca):
        return None
    names = ("BUBU_GRPC_CLIENT_CERT_FILE", "BUBU_GRPC_CLIENT_KEY_FILE", "BUBU_GRPC_CA_FILE")
    return _require(TlsFiles(cert or "", key or "", ca or ""), names)


def connector_server_files(env: EnvReader, client: TlsFiles | None) -> TlsFiles | None:
    """The connector's peer-to-peer server files: ``BUBU_GRPC_TLS_CERT_FILE``/``_KEY_FILE``
    and the CA, each falling back to the client side's (one certificate serves both)."""
    if client is None:
        return None
    names = ("BUBU_GRPC_TLS_CERT_FILE", "BUBU_GRPC_TLS_KEY_FILE", "BUBU_GRPC_CA_FILE")
    return _require(
        TlsFiles(
            env.optional("BUBU_GRPC_TLS_CERT_FILE") or client.cert,
            env.optional("BUBU_GRPC_TLS_KEY_FILE") or client.key,
            client.ca,
        ),
        names,
    )


__all__ = [
    "HUB_TLS_DIR",
    "PeerIdentity",
    "ReloadingContext",
    "TlsFiles",
    "TlsSettings",
    "connector_client_files",
    "connector_server_files",
    "hub_server_files",
    "peer_identity",
    "security_mode",
    "server_auth_context",
]
