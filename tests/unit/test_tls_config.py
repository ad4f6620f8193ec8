"""TLS configuration and identity rules: where each side finds its files, what is refused at
start-up (never a silent plaintext fallback), how a rotation is loaded, and how a certificate's
SPIFFE ID is held against the namespace a stream claims."""

from __future__ import annotations

import contextlib
import functools
import ssl
from pathlib import Path

import pytest
import trio

from bobravoz.connector.config import load_config
from bobravoz.controllers.main import ManagerOptions
from bobravoz.controllers.main import main as manager_main
from bobravoz.runtime.binding_envelope import BindingEnvelope, BindingInfo, encode_binding
from bobravoz.runtime.endpoints import Endpoint, parse_endpoint
from bobravoz.runtime.envconfig import ConfigError
from bobravoz.runtime.grpc_bridge import (
    ServerStream,
    open_grpc_channel,
    open_grpc_loop,
    serve_grpc,
)
from bobravoz.runtime.handshake import HandshakeError, check_identity
from bobravoz.runtime.hub.main import hub_settings, hub_tls
from bobravoz.runtime.status import RemoteStatusError, StatusCode
from bobravoz.runtime.tls import (
    PeerIdentity,
    ReloadingContext,
    TlsFiles,
    peer_identity,
    server_auth_context,
)
from bobravoz.sdk.engram import EngramSettings, load_settings
from bobravoz.sdk.local_pki import LocalPki

LOOPBACK = Endpoint(host="127.0.0.1", port=9000)
LOOPBACK_ANY = Endpoint(host="127.0.0.1", port=0)
CONNECTOR = {
    "BUBU_HUB_ENDPOINT": "127.0.0.1:9000",
    "BUBU_STORYRUN_ID": "run-1",
    "BUBU_POD_NAMESPACE": "default",
    "BUBU_STEP_NAME": "producer",
    "BUBU_CONNECTOR_GENERATION": "1",
}


@pytest.fixture
def pki(tmp_path: Path) -> LocalPki:
    return LocalPki(tmp_path / "pki")


def hub_env(files: TlsFiles) -> dict[str, str]:
    return {
        "BUBU_HUB_TLS_CERT_FILE": files.cert,
        "BUBU_HUB_TLS_KEY_FILE": files.key,
        "BUBU_HUB_CA_FILE": files.ca,
    }


def test_hub_plaintext_only_on_local_endpoints() -> None:
    assert hub_tls({}, LOOPBACK) is None
    assert hub_tls({}, parse_endpoint("unix:///tmp/hub.sock")) is None
    with pytest.raises(ConfigError, match=r"refusing to serve plaintext on 0\.0\.0\.0:9000"):
        hub_tls({}, Endpoint(host="0.0.0.0", port=9000))


@pytest.mark.parametrize(
    "environ",
    [
        {"BUBU_TRANSPORT_SECURITY_MODE": "tls"},
        {"BUBU_HUB_REQUIRE_TLS": "true"},
        {"BUBU_HUB_TLS_CERT_FILE": "/nonexistent/tls.crt"},
    ],
)
def test_hub_tls_asked_for_without_files_names_them(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as refused:
        hub_tls(environ, LOOPBACK)
    assert "BUBU_HUB_TLS_KEY_FILE" in str(refused.value)
    assert "BUBU_HUB_CA_FILE" in str(refused.value)


def test_cluster_mode_never_serves_plaintext() -> None:
    with pytest.raises(ConfigError, match="BUBU_HUB_TLS_CERT_FILE"):
        hub_tls({}, LOOPBACK, cluster=True)


def test_manager_refuses_to_start_without_hub_certificates(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("BUBU_HUB_TLS_CERT_FILE", "BUBU_HUB_TLS_KEY_FILE", "BUBU_HUB_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    options = ManagerOptions(
        api_server=None,
        hub_listen=LOOPBACK,
        health_listen=LOOPBACK,
        webhook_listen=None,
        webhook_cert_dir=None,
        config_namespace="bobravoz-system",
        config_name="config",
        leader_elect=False,
        identity="test",
        connector_image=None,
    )
    assert manager_main(options) == 2
    assert "BUBU_HUB_TLS_CERT_FILE" in capsys.readouterr().err


def test_hub_context_is_tls13_mtls(pki: LocalPki) -> None:
    context = hub_tls(hub_env(pki.issue("hub").files), LOOPBACK)
    assert context is not None
    assert context.context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.context.verify_mode == ssl.CERT_REQUIRED


def test_hub_files_that_do_not_load_are_a_start_up_error(pki: LocalPki, tmp_path: Path) -> None:
    files = pki.issue("hub").files
    other = pki.issue("other").files
    with pytest.raises(ConfigError, match="do not load"):
        hub_tls(hub_env(TlsFiles(files.cert, other.key, files.ca)), LOOPBACK)


def test_hub_identity_mode_is_checked() -> None:
    assert hub_settings({}).identity == "namespace"
    assert hub_settings({"BOBRAVOZ_HUB_IDENTITY": "off"}).identity == "off"
    with pytest.raises(ConfigError, match="BOBRAVOZ_HUB_IDENTITY"):
        hub_settings({"BOBRAVOZ_HUB_IDENTITY": "trust-me"})


def test_connector_tls_mode_needs_its_files() -> None:
    with pytest.raises(ConfigError) as refused:
        load_config({**CONNECTOR, "BUBU_TRANSPORT_SECURITY_MODE": "tls"})
    for name in ("BUBU_GRPC_CLIENT_CERT_FILE", "BUBU_GRPC_CLIENT_KEY_FILE", "BUBU_GRPC_CA_FILE"):
        assert name in str(refused.value)


@pytest.mark.parametrize("mode", ["plaintext", "insecure", "mtls"])
def test_connector_security_mode_is_tls_or_empty(mode: str) -> None:
    with pytest.raises(ConfigError, match="BUBU_TRANSPORT_SECURITY_MODE"):
        load_config({**CONNECTOR, "BUBU_TRANSPORT_SECURITY_MODE": mode})


def test_connector_never_dials_plaintext_off_the_machine() -> None:
    with pytest.raises(ConfigError, match=r"refusing to dial 10\.1\.2\.3:9000 in plaintext"):
        load_config({**CONNECTOR, "BUBU_HUB_ENDPOINT": "10.1.2.3:9000"})
    with pytest.raises(ConfigError, match="BOBRAVOZ_P2P_LISTEN"):
        load_config({**CONNECTOR, "BOBRAVOZ_P2P_LISTEN": "0.0.0.0:50052"})


def test_connector_go_fallbacks(pki: LocalPki) -> None:
    files = pki.issue("connector").files
    config = load_config(
        {
            **CONNECTOR,
            "BUBU_HUB_ENDPOINT": "hub.bobravoz-system.svc:9000",
            "BUBU_TRANSPORT_SECURITY_MODE": "tls",
            "BUBU_GRPC_TLS_CERT_FILE": files.cert,
            "BUBU_GRPC_TLS_KEY_FILE": files.key,
            "BUBU_HUB_CA_FILE": files.ca,
            "BUBU_GRPC_HUB_SERVER_NAME": "bobravoz-grpc-hub.bobravoz-system.svc",
            "BOBRAVOZ_P2P_LISTEN": "0.0.0.0:50052",
        }
    )
    assert config.client_tls == files
    assert config.server_tls == files
    assert config.hub_server_name == "bobravoz-grpc-hub.bobravoz-system.svc"
    assert config.p2p_listen == Endpoint(host="0.0.0.0", port=50052)
    with pytest.raises(ConfigError, match="engram-facing listener stays local"):
        load_config(
            {
                **CONNECTOR,
                "BUBU_TRANSPORT_SECURITY_MODE": "tls",
                "BUBU_GRPC_CLIENT_CERT_FILE": files.cert,
                "BUBU_GRPC_CLIENT_KEY_FILE": files.key,
                "BUBU_GRPC_CA_FILE": files.ca,
                "BUBU_GRPC_LOCAL_ENDPOINT": "0.0.0.0:50051",
            }
        )


def serial_of(context: ReloadingContext, client_files: TlsFiles) -> int:
    """The serial of the certificate ``context`` would present (read by a handshake over
    memory BIOs with a client holding ``client_files``)."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(client_files.ca)
    client.load_cert_chain(client_files.cert, client_files.key)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    near = client.wrap_bio(incoming, outgoing, server_hostname="localhost")
    far = context.context.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (near, far):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(outgoing.read())
        incoming.write(s_out.read())
    certificate = near.getpeercert()
    assert certificate is not None
    return int(str(certificate["serialNumber"]), 16)


def test_rotation_loads_the_new_pair_and_keeps_the_old_one_on_a_bad_write(
    pki: LocalPki,
) -> None:
    client = pki.issue("client").files
    first = pki.issue("hub")
    context = ReloadingContext(first.files, "server")
    assert not context.reload_if_changed()
    assert serial_of(context, client) == first.serial
    second = pki.issue("hub")
    assert context.reload_if_changed()
    assert serial_of(context, client) == second.serial
    # Half a rotation on disk: a new key next to the old certificate does not load, and the
    # pair in use stays the last good one until the certificate arrives too.
    Path(second.files.key).write_bytes(Path(pki.issue("spare").files.key).read_bytes())
    with pytest.raises(ssl.SSLError):
        context.reload_if_changed()
    assert serial_of(context, client) == second.serial
    assert context.reloads == 1


def test_peer_identity_reads_spiffe_uris_only() -> None:
    certificate = {
        "subjectAltName": (
            ("DNS", "localhost"),
            ("URI", "https://example.com/ns/evil"),
            ("URI", "spiffe://cluster.local/ns/default/sa/engram"),
        )
    }
    identity = peer_identity(certificate)
    assert identity == PeerIdentity(("spiffe://cluster.local/ns/default/sa/engram",))
    assert identity.namespaces == ("default",)
    assert peer_identity(None) is None
    assert peer_identity({}) is None
    assert PeerIdentity(("spiffe://td/workload",)).namespaces == ()


def test_identity_check() -> None:
    default = PeerIdentity(("spiffe://td/ns/default/sa/a",))
    check_identity("default", secure=True, peer=default)
    check_identity("default", secure=False, peer=None)  # plaintext: local development only
    check_identity("other", secure=True, peer=default, mode="off")
    with pytest.raises(HandshakeError) as refused:
        check_identity("other", secure=True, peer=default)
    assert refused.value.code == StatusCode.PERMISSION_DENIED
    assert refused.value.reason == "identity_mismatch"
    assert "namespace default" in refused.value.message
    assert "'other'" in refused.value.message
    for peer in (None, PeerIdentity(()), PeerIdentity(("spiffe://td/workload",))):
        with pytest.raises(HandshakeError) as missing:
            check_identity("default", secure=True, peer=peer)
        assert missing.value.reason == "identity_missing"


def test_engram_dials_tls_only_off_the_machine(pki: LocalPki) -> None:
    def settings(endpoint: str, **extra: str) -> EngramSettings:
        binding = BindingEnvelope(
            name="b", namespace="default", info=BindingInfo(endpoint=endpoint)
        )
        return load_settings({"BUBU_TRANSPORT_BINDING": encode_binding(binding), **extra})

    assert not settings("unix:///tmp/connector.sock").tls
    assert not settings("127.0.0.1:50051").tls
    remote = settings("10.0.0.7:50051", BUBU_GRPC_CA_FILE=str(pki.ca_file))
    assert remote.tls
    assert remote.ca_file == str(pki.ca_file)
    with pytest.raises(ConfigError, match="BUBU_TRANSPORT_SECURITY_MODE"):
        settings("127.0.0.1:50051", BUBU_TRANSPORT_SECURITY_MODE="plaintext")


async def test_server_auth_channel_reaches_a_tls_server(pki: LocalPki) -> None:
    """The engram's server-auth context (no client certificate) against a TLS server."""
    server = ReloadingContext(pki.issue("connector").files, "server")
    server.context.verify_mode = ssl.CERT_NONE  # a connector serving engrams off loopback
    seen: list[bool] = []

    def accept(stream: ServerStream) -> None:
        seen.append(stream.secure)
        stream.finish(StatusCode.UNIMPLEMENTED, "test server")

    async with open_grpc_loop(), trio.open_nursery() as nursery:
        bound = await nursery.start(
            functools.partial(serve_grpc, tls=server), LOOPBACK_ANY, ("/t.v1.T/Call",), accept
        )
        context = server_auth_context(str(pki.ca_file))
        async with open_grpc_channel(bound.endpoint, tls=context) as channel:
            with pytest.raises(RemoteStatusError) as refused:
                async with channel.open_stream("/t.v1.T/Call"):
                    pass
        assert refused.value.code == StatusCode.UNIMPLEMENTED
        assert seen == [True]
        nursery.cancel_scope.cancel()
