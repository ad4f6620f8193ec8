"""The ``bobravoz`` command: ``hub``, ``connector``, ``engram`` and ``up``.

This module is the one place above the layers: it starts every kind of process, so it may
import the connector (declared in the import contracts). Everything else in ``sdk`` depends
on ``protocol`` and ``runtime`` only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from bobravoz.runtime.endpoints import parse_endpoint


def _endpoint(text: str) -> object:
    try:
        return parse_endpoint(text, allow_port_zero=True)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _json_object(text: str) -> str:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="bobravoz", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    hub = commands.add_parser("hub", help="run a standalone hub for a Story file")
    hub.add_argument("--listen", type=_endpoint, default="127.0.0.1:9000", help="HOST:PORT")
    hub.add_argument("--story", required=True, help="Story YAML file")
    hub.add_argument("--metrics", type=_endpoint, default=None, help="HOST:PORT for /metrics")

    commands.add_parser("connector", help="run a connector sidecar configured by environment")

    manager = commands.add_parser(
        "controller", help="run the manager: transport reconciler, hub and injection webhook"
    )
    manager.add_argument("--api-server", default=None, help="API URL (default: in-cluster)")
    manager.add_argument("--hub-listen", type=_endpoint, default="0.0.0.0:9000")
    manager.add_argument(
        "--health-listen",
        type=_endpoint,
        default="0.0.0.0:8081",
        help="/healthz, /readyz and /metrics",
    )
    manager.add_argument(
        "--metrics-listen",
        type=_endpoint,
        default=None,
        help="accepted for compatibility; metrics are on --health-listen",
    )
    manager.add_argument("--webhook-listen", type=_endpoint, default=None)
    manager.add_argument("--webhook-cert-dir", default=None, help="folder with tls.crt, tls.key")
    manager.add_argument(
        "--config-namespace", default=os.environ.get("POD_NAMESPACE", "bobravoz-system")
    )
    manager.add_argument("--config-name", default="bobravoz-grpc-operator-config")
    manager.add_argument("--leader-elect", action="store_true")
    manager.add_argument("--identity", default=os.environ.get("POD_NAME", socket.gethostname()))
    manager.add_argument("--connector-image", default=None)

    engram = commands.add_parser("engram", help="run a handler file: PATH[:FUNCTION]")
    engram.add_argument("target", help="a Python file defining `handle` (or PATH:FUNCTION)")

    render = commands.add_parser(
        "render", help="print the TransportBindings, routing and sidecar patch, offline"
    )
    render.add_argument("story", help="Story YAML file")
    render.add_argument("--storyrun", required=True, help="StoryRun name")
    render.add_argument("--transport", default=None, help="YAML file with Transport resources")
    render.add_argument(
        "--connector-image",
        default=os.environ.get("CONNECTOR_IMAGE", "ghcr.io/bubustack/bobravoz-connector:0.1.0"),
    )

    topology = commands.add_parser(
        "topology", help="print each step's routing mode (hub or p2p), its reason and targets"
    )
    topology.add_argument("story", help="Story YAML file")

    up = commands.add_parser("up", help="run a Story locally: hub, connectors and engrams")
    up.add_argument("story", help="Story YAML file")
    up.add_argument("--duration", type=float, default=60.0, help="stop after this many seconds")
    up.add_argument("--engrams-dir", default=None, help="where <engram>.py programs live")
    up.add_argument("--storyrun", default="local", help="StoryRun name to use")
    up.add_argument("--quiet", action="store_true", help="no live progress line")
    up.add_argument(
        "--inputs",
        type=_json_object,
        default=None,
        help="the StoryRun's inputs, a JSON object (templates read them as inputs.*)",
    )
    up.add_argument(
        "--tls",
        action="store_true",
        help="mTLS on every network hop, with an ephemeral CA and per-process certificates",
    )
    up.add_argument(
        "--trace",
        action="store_true",
        help="collect every process's spans (OTLP on loopback) and print the slowest "
        "packet's trace as a waterfall",
    )
    return parser


def _run_engram_file(target: str) -> int:
    from bobravoz.sdk.engram import run_engram

    path_text, _, function = target.partition(":")
    path = Path(path_text)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        print(f"bobravoz engram: cannot load {path}", file=sys.stderr)
        return 2
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = getattr(module, function or "handle", None)
    if handler is None:
        print(f"bobravoz engram: {path} defines no {function or 'handle'}", file=sys.stderr)
        return 2
    return run_engram(handler)


def _render(story: str, storyrun: str, transport: str | None, image: str) -> int:
    from bobravoz.controllers.injection import InjectionConfig
    from bobravoz.controllers.render import render_text
    from bobravoz.runtime.models import ResourceError
    from bobravoz.runtime.story import load_story
    from bobravoz.runtime.topology import TopologyError

    try:
        text = render_text(
            load_story(story),
            storyrun,
            Path(transport) if transport else None,
            InjectionConfig(image=image),
        )
    except (ResourceError, TopologyError) as error:
        print(f"bobravoz render: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def _topology(story: str) -> int:
    from bobravoz.runtime.models import ResourceError
    from bobravoz.runtime.story import load_story
    from bobravoz.runtime.topology import TopologyError, describe_topology, streaming_topology

    try:
        text = describe_topology(streaming_topology(load_story(story)))
    except (ResourceError, TopologyError) as error:
        print(f"bobravoz topology: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "hub":
        from bobravoz.runtime.hub.main import HubOptions, run_hub

        return run_hub(
            HubOptions(listen=args.listen, story=args.story, metrics=args.metrics), os.environ
        )
    if args.command == "controller":
        from bobravoz.controllers.main import ManagerOptions
        from bobravoz.controllers.main import main as manager_main

        return manager_main(
            ManagerOptions(
                api_server=args.api_server,
                hub_listen=args.hub_listen,
                health_listen=args.health_listen,
                webhook_listen=args.webhook_listen,
                webhook_cert_dir=Path(args.webhook_cert_dir) if args.webhook_cert_dir else None,
                config_namespace=args.config_namespace,
                config_name=args.config_name,
                leader_elect=args.leader_elect,
                identity=args.identity,
                connector_image=args.connector_image,
            )
        )
    if args.command == "connector":
        from bobravoz.connector.main import main as connector_main

        return connector_main()
    if args.command == "engram":
        return _run_engram_file(args.target)
    if args.command == "topology":
        return _topology(args.story)
    if args.command == "render":
        return _render(args.story, args.storyrun, args.transport, args.connector_image)
    from bobravoz.sdk.local_runner import UpOptions, run_up

    return run_up(
        UpOptions(
            story=Path(args.story),
            duration=args.duration,
            engrams_dir=Path(args.engrams_dir) if args.engrams_dir else None,
            storyrun=args.storyrun,
            live=not args.quiet,
            tls=args.tls,
            inputs=args.inputs,
            trace=args.trace,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
