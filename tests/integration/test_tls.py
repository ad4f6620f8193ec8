"""Integration: mTLS on every network hop, with real processes and an ephemeral CA.

A hub, connectors and example engrams run as separate processes with certificates from
:class:`~bobravoz.sdk.local_pki.LocalPki`. What is shown: producer -> hub -> consumer and a
peer-to-peer edge work over mTLS; plaintext, TLS 1.2, no client certificate and a certificate
from another CA never reach gRPC; a certificate of namespace ``other`` claiming ``default`` is
refused PERMISSION_DENIED (hub and P2P listener) and counted; a certificate rotated on disk is
served to new handshakes without a restart while open streams keep flowing.
"""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path

import pytest
import trio
from procs import CLI, REPO, Cluster, Proc, metric, open_cluster, scrape, wait_for_metric

from bobravoz.protocol.constants import PROCESS_METHOD
from bobravoz.runtime.endpoints import parse_endpoint
from bobravoz.runtime.grpc_bridge import open_grpc_channel, open_grpc_loop
from bobravoz.runtime.handshake import BindingIdentity
from bobravoz.runtime.status import RemoteStatusError, StatusCode
from bobravoz.runtime.tls import ReloadingContext, TlsFiles
from bobravoz.sdk.local_pki import LocalPki

pytestmark = pytest.mark.integration

STORY = """
metadata: {name: pair, namespace: default}
spec:
  pattern: realtime
  steps:
    - {name: producer, ref: {name: source}}
    - {name: consumer, ref: {name: sink}, needs: [producer]}
"""
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: An HTTP/2 SETTINGS frame with no settings: what a server answers the preface with.
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def hub_env(files: TlsFiles, **extra: str) -> dict[str, str]:
    return {
        "BUBU_TRANSPORT_SECURITY_MODE": "tls",
        "BUBU_HUB_TLS_CERT_FILE": files.cert,
        "BUBU_HUB_TLS_KEY_FILE": files.key,
        "BUBU_HUB_CA_FILE": files.ca,
        **extra,
    }


def connector_env(files: TlsFiles, **extra: str) -> dict[str, str]:
    return {
        "BUBU_TRANSPORT_SECURITY_MODE": "tls",
        "BUBU_GRPC_CLIENT_CERT_FILE": files.cert,
        "BUBU_GRPC_CLIENT_KEY_FILE": files.key,
        "BUBU_GRPC_CA_FILE": files.ca,
        **extra,
    }


async def secure_hub(cluster: Cluster, pki: LocalPki, story: Path, **extra: str) -> Proc:
    hub = await cluster.hub(story, hub_env(pki.issue("hub", namespace=None).files, **extra))
    assert hub.find("ready")["tls"] == "mtls"  # type: ignore[index]
    return hub


def handshake(
    address: str,
    *,
    ca: str,
    cert: TlsFiles | None = None,
    tls12: bool = False,
) -> tuple[dict[str, object], bytes]:
    """Connect with TLS (blocking, run in a thread), send the HTTP/2 preface and an empty
    SETTINGS frame and return the server's certificate and its first bytes (b"" when it
    closed). Raises ssl.SSLError / OSError when the server refuses."""
    host, port = address.rsplit(":", 1)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca)
    context.set_alpn_protocols(["h2"])
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(cert.cert, cert.key)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(H2_PREFACE + EMPTY_SETTINGS)
        return tls.getpeercert() or {}, tls.recv(64)


async def refused_process(address: str, files: TlsFiles, *, generation: int) -> RemoteStatusError:
    """Open a Process stream for default/run-1/producer over mTLS with ``files`` and return
    the status the server refused it with (the test fails if it was admitted)."""
    identity = BindingIdentity(
        storyrun="run-1", namespace="default", step="producer", generation=generation
    )
    async with open_grpc_loop():
        context = ReloadingContext(files, "client")
        async with open_grpc_channel(parse_endpoint(address), tls=context) as channel:
            with pytest.raises(RemoteStatusError) as refused:
                async with channel.open_stream(PROCESS_METHOD, identity.headers()):
                    pass
    return refused.value


def refused_handshake(address: str, *, ca: str, cert: TlsFiles | None) -> str:
    """How the hub refused: the TLS alert's name in the error, ``closed`` for a close with
    no HTTP/2 answer, or what it answered (a failure for the caller)."""
    try:
        _, answer = handshake(address, ca=ca, cert=cert)
    except ssl.SSLError as error:
        for alert in ("CERTIFICATE_REQUIRED", "UNKNOWN_CA"):
            if alert in str(error):
                return alert
        return str(error)
    except ConnectionResetError:
        return "closed"
    return "closed" if answer == b"" else f"answered {answer!r}"


def plaintext_exchange(address: str) -> bytes:
    """Send the HTTP/2 preface in the clear and return what comes back before the close."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(H2_PREFACE + EMPTY_SETTINGS)
        received = b""
        try:
            while chunk := raw.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
        return received


async def test_producer_hub_consumer_over_mtls(tmp_path: Path) -> None:
    (tmp_path / "story.yaml").write_text(STORY)
    pki = LocalPki(tmp_path / "pki")
    async with open_cluster(tmp_path) as cluster:
        hub = await secure_hub(cluster, pki, tmp_path / "story.yaml")
        consumer = await cluster.connector(
            hub, "consumer", env=connector_env(pki.issue("consumer").files)
        )
        producer = await cluster.connector(
            hub, "producer", env=connector_env(pki.issue("producer").files)
        )
        assert producer.find("ready")["tls"] == "mtls"  # type: ignore[index]
        sink = await cluster.engram(consumer, "consumer", "sink", {})
        source = await cluster.engram(producer, "producer", "source", {"count": 200, "rate": 500})
        sent = await source.wait_for("summary", 30)
        summary = await sink.wait_for("summary", 30)
        assert summary["received"] == sent["sent"] == 200
        assert summary["out_of_order"] == 0
        samples = await trio.to_thread.run_sync(scrape, hub.find("ready")["metrics"])
        assert metric(samples, "bobravoz_packets_in_total", binding="default/run-1/producer") > 0
        assert metric(samples, "bobravoz_handshakes_rejected_total") == 0


async def test_peer_to_peer_edge_over_mtls(tmp_path: Path) -> None:
    (tmp_path / "story.yaml").write_text(STORY)
    pki = LocalPki(tmp_path / "pki")
    async with open_cluster(tmp_path) as cluster:
        hub = await secure_hub(cluster, pki, tmp_path / "story.yaml")
        downstream = await cluster.connector(
            hub,
            "consumer",
            env=connector_env(pki.issue("consumer").files, BOBRAVOZ_P2P_LISTEN="127.0.0.1:0"),
        )
        peer_address = downstream.find("ready")["p2p"]  # type: ignore[index]
        upstream = await cluster.connector(
            hub,
            "producer",
            upstream=peer_address,
            env=connector_env(pki.issue("producer").files),
        )
        sink = await cluster.engram(downstream, "consumer", "sink", {})
        source = await cluster.engram(upstream, "producer", "source", {"count": 120, "rate": 1000})
        sent = await source.wait_for("summary", 30)
        summary = await sink.wait_for("summary", 30)
        assert summary["received"] == sent["sent"] == 120
        samples = await trio.to_thread.run_sync(scrape, hub.find("ready")["metrics"])
        assert metric(samples, "bobravoz_packets_in_total", binding="default/run-1/producer") == 0
        peer = await trio.to_thread.run_sync(scrape, downstream.find("ready")["metrics"])
        link = metric(peer, "bobravoz_packets_in_total", binding="default/run-1/producer->p2p")
        assert link == sent["emitted"]

        # A peer whose certificate names another namespace is refused by the P2P listener,
        # and the refusal is counted there.
        intruder = pki.issue("intruder", namespace="other").files
        refused = await refused_process(peer_address, intruder, generation=9)
        assert refused.code == StatusCode.PERMISSION_DENIED
        assert "'default'" in refused.message
        assert "other" in refused.message
        await wait_for_metric(
            downstream.find("ready")["metrics"],  # type: ignore[index]
            "bobravoz_handshakes_rejected_total",
            1,
            reason="identity_mismatch",
        )


async def test_hub_refuses_what_is_not_mtls_with_its_ca(tmp_path: Path) -> None:
    (tmp_path / "story.yaml").write_text(STORY)
    pki = LocalPki(tmp_path / "pki")
    stranger = LocalPki(tmp_path / "other-ca")
    client = pki.issue("client").files
    async with open_cluster(tmp_path) as cluster:
        hub = await secure_hub(cluster, pki, tmp_path / "story.yaml")
        address = hub.find("ready")["listen"]  # type: ignore[index]
        ca = str(pki.ca_file)

        # The real thing answers with HTTP/2 SETTINGS: the refusals below are not a broken
        # probe.
        certificate, answer = await trio.to_thread.run_sync(
            lambda: handshake(address, ca=ca, cert=client)
        )
        assert answer[3] == 0x04  # a SETTINGS frame
        assert ("DNS", "localhost") in certificate["subjectAltName"]  # type: ignore[operator]

        # Plaintext HTTP/2: the TLS server never answers with HTTP/2.
        answer = await trio.to_thread.run_sync(plaintext_exchange, address)
        assert EMPTY_SETTINGS[:4] not in answer

        # TLS 1.2 only: the handshake fails (the hub speaks TLS 1.3 only).
        with pytest.raises(ssl.SSLError):
            await trio.to_thread.run_sync(
                lambda: handshake(address, ca=ca, cert=client, tls12=True)
            )

        # No client certificate, or one from another CA: TLS 1.3 finishes the client's side
        # of the handshake, then the hub's alert (or its close) comes instead of HTTP/2.
        foreign = stranger.issue("client").files
        for cert, alert in ((None, "CERTIFICATE_REQUIRED"), (foreign, "UNKNOWN_CA")):
            outcome = await trio.to_thread.run_sync(
                lambda cert=cert: refused_handshake(address, ca=ca, cert=cert)  # type: ignore[misc]
            )
            assert outcome in {alert, "closed"}, f"{alert}: {outcome}"

        # A valid certificate of namespace "other" claiming a StoryRun of "default".
        other = pki.issue("intruder", namespace="other").files
        refused = await refused_process(address, other, generation=1)
        assert refused.code == StatusCode.PERMISSION_DENIED
        assert "namespace other" in refused.message
        assert "'default'" in refused.message
        samples = await wait_for_metric(
            hub.find("ready")["metrics"],  # type: ignore[index]
            "bobravoz_handshakes_rejected_total",
            1,
            reason="identity_mismatch",
        )
        # Nothing else reached the handshake: the TLS refusals never became streams.
        assert metric(samples, "bobravoz_handshakes_rejected_total") == 1

        # A connector holding that certificate stops (the refusal is fatal), naming it.
        connector = await cluster.connector(hub, "producer", env=connector_env(other))
        with trio.fail_after(20):
            assert await connector.process.wait() == 3
        log = (tmp_path / "connector-producer.log").read_text()
        assert "PERMISSION_DENIED" in log


async def test_rotated_certificate_is_served_without_restart(tmp_path: Path) -> None:
    (tmp_path / "story.yaml").write_text(STORY)
    pki = LocalPki(tmp_path / "pki")
    client = pki.issue("client").files
    async with open_cluster(tmp_path) as cluster:
        first = pki.issue("hub", namespace=None)
        hub = await cluster.hub(
            tmp_path / "story.yaml", hub_env(first.files, BOBRAVOZ_TLS_RELOAD_INTERVAL="100ms")
        )
        address = hub.find("ready")["listen"]  # type: ignore[index]
        ca = str(pki.ca_file)
        consumer = await cluster.connector(
            hub, "consumer", env=connector_env(pki.issue("consumer").files)
        )
        producer = await cluster.connector(
            hub, "producer", env=connector_env(pki.issue("producer").files)
        )
        sink = await cluster.engram(consumer, "consumer", "sink", {})
        source = await cluster.engram(producer, "producer", "source", {"count": 600, "rate": 200})
        before, _ = await trio.to_thread.run_sync(lambda: handshake(address, ca=ca, cert=client))
        assert int(str(before["serialNumber"]), 16) == first.serial

        second = pki.issue("hub", namespace=None)  # same paths: what cert-manager does
        await wait_for_metric(
            hub.find("ready")["metrics"],  # type: ignore[index]
            "bobravoz_tls_reloads_total",
            1,
            outcome="ok",
            at_least=True,
        )
        after, _ = await trio.to_thread.run_sync(lambda: handshake(address, ca=ca, cert=client))
        assert int(str(after["serialNumber"]), 16) == second.serial != first.serial
        assert hub.process.returncode is None

        # The streams opened before the rotation kept flowing to the end.
        sent = await source.wait_for("summary", 30)
        summary = await sink.wait_for("summary", 30)
        assert summary["received"] == sent["sent"] == 600


async def test_up_with_tls_runs_every_hub_hop_over_mtls(tmp_path: Path) -> None:
    story = (REPO / "examples" / "stories" / "pipeline.yaml").read_text()
    (tmp_path / "pipeline.yaml").write_text(
        story.replace("{count: 2000, rate: 200, size: 256}", "{count: 300, rate: 300, size: 256}")
    )
    with trio.fail_after(90):
        done = await trio.run_process(
            [
                *CLI,
                "up",
                str(tmp_path / "pipeline.yaml"),
                "--tls",
                "--quiet",
                "--duration",
                "60",
                "--engrams-dir",
                str(REPO / "examples" / "engrams"),
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    summary = done.stdout.decode()
    assert done.returncode == 0, summary + done.stderr.decode()
    assert re.search(r"^delivered\s+300 \(expected 300\)", summary, re.MULTILINE), summary
    assert re.search(r"^lost\s+0 ", summary, re.MULTILINE), summary
    assert "mTLS on all 4 hub and connector endpoints" in summary


async def test_generation_takeover_needs_a_certificate_of_the_namespace(tmp_path: Path) -> None:
    (tmp_path / "story.yaml").write_text(STORY)
    pki = LocalPki(tmp_path / "pki")
    async with open_cluster(tmp_path) as cluster:
        hub = await secure_hub(cluster, pki, tmp_path / "story.yaml")
        metrics = hub.find("ready")["metrics"]  # type: ignore[index]
        address = parse_endpoint(hub.find("ready")["listen"])  # type: ignore[index]
        real = await cluster.connector(
            hub, "producer", env=connector_env(pki.issue("producer").files)
        )
        await wait_for_metric(metrics, "bobravoz_open_streams", 1)
        highest = BindingIdentity(
            storyrun="run-1", namespace="default", step="producer", generation=2**31 - 1
        )
        async with open_grpc_loop():
            # Another namespace's certificate cannot take the step over, whatever generation.
            intruder = ReloadingContext(pki.issue("intruder", namespace="other").files, "client")
            async with open_grpc_channel(address, tls=intruder) as channel:
                with pytest.raises(RemoteStatusError) as refused:
                    async with channel.open_stream(PROCESS_METHOD, highest.headers()):
                        pass
            assert refused.value.code == StatusCode.PERMISSION_DENIED
            samples = await trio.to_thread.run_sync(scrape, metrics)
            assert metric(samples, "bobravoz_stream_takeovers_total") == 0
            assert real.process.returncode is None

            # A certificate of the namespace can (a cutover): counted, and logged with who.
            successor = ReloadingContext(pki.issue("successor").files, "client")
            async with (
                open_grpc_channel(address, tls=successor) as channel,
                channel.open_stream(PROCESS_METHOD, highest.headers()),
            ):
                await wait_for_metric(metrics, "bobravoz_stream_takeovers_total", 1)
        log = (tmp_path / "hub.log").read_text()
        assert "generation 2147483647 of default/run-1/producer" in log
        assert "spiffe://bobravoz.local/ns/default/sa/successor" in log
