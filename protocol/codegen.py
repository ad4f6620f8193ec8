"""Generates the betterproto2 code in ``protocol/gen`` from the ``.proto`` sources.

``make proto`` runs ``python -m bobravoz.protocol.codegen``; the drift test calls
:func:`generate_into` on a scratch folder and compares it with the committed tree.
Needs the ``dev`` extras (grpcio-tools, betterproto2-compiler).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent / "proto"
GENERATED_ROOT = Path(__file__).resolve().parent / "gen"
PROTO_FILES = ("transport/v1/transport.proto", "transport/v1/hub.proto")


def generate_into(target: Path) -> None:
    """Run protoc with the betterproto2 plugin, writing the package tree under ``target``.

    Raises ``RuntimeError`` with protoc's output when generation fails.
    """
    target.mkdir(parents=True, exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_betterproto2_out={target}",
        "--python_betterproto2_opt=client_generation=async,server_generation=async",
        *(str(PROTO_ROOT / name) for name in PROTO_FILES),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"protoc failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def generated_files(root: Path) -> dict[str, bytes]:
    """Map each generated file's path relative to ``root`` to its bytes (caches excluded)."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def regenerate() -> None:
    """Replace the committed ``protocol/gen`` tree with a fresh generation."""
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch) / "gen"
        generate_into(fresh)
        if GENERATED_ROOT.exists():
            shutil.rmtree(GENERATED_ROOT)
        shutil.copytree(fresh, GENERATED_ROOT)


if __name__ == "__main__":
    regenerate()
    print(f"regenerated {GENERATED_ROOT}")
