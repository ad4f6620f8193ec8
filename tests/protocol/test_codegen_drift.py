"""The committed betterproto2 code equals a fresh generation from the .proto sources."""

from __future__ import annotations

from pathlib import Path

from bobravoz.protocol.codegen import GENERATED_ROOT, generate_into, generated_files


def test_committed_code_matches_a_fresh_generation(tmp_path: Path) -> None:
    generate_into(tmp_path)
    fresh = generated_files(tmp_path)
    committed = generated_files(GENERATED_ROOT)
    assert sorted(fresh) == sorted(committed), "file list differs: run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"regenerate with `make proto`; stale: {stale}"
