"""``make fuzz``: fuzz every decoder and parser for a set time each, then print a table.

Usage: ``python tests/fuzz/run.py [--seconds N] [--engine auto|atheris|hypothesis]
[target ...]`` (``--list`` names the targets and what counts as a crash in each). ``make
fuzz`` passes ``--seconds $(FUZZ_SECONDS)`` (60 unless set). The engine is atheris where it
imports, hypothesis otherwise (:mod:`fuzz_engines` says what each measures). The output ends
``crashes: 0``; otherwise it lists each crashing input's file and the exit status is 1. A
crash becomes a regression test (``tests/fuzz/test_fuzz_regressions.py``) before its fix.

``run.py --worker <target> -- <libFuzzer arguments>`` is the atheris subprocess.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzz_engines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the targets named (all by default); 0 when none crashed, 1 otherwise."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--worker"]:
        name = arguments[1]
        rest = arguments[2:]
        fuzz_engines.atheris_worker(name, rest[1:] if rest[:1] == ["--"] else rest)
        return 0  # not reached: libFuzzer exits the process
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("FUZZ_SECONDS", "60")),
        help="time per target (default: $FUZZ_SECONDS or 60)",
    )
    parser.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--corpus", type=Path, help="seed corpus root (default: the committed)")
    parser.add_argument("--work", type=Path, default=fuzz_engines.WORK, help="output folder")
    parser.add_argument("targets", nargs="*", help="target names (default: all)")
    options = parser.parse_args(arguments)

    import fuzz_targets

    if options.list:
        for target in fuzz_targets.ALL:
            print(f"{target.name:20} crash: {target.crash}")
        return 0
    targets = [fuzz_targets.find(name) for name in options.targets] or list(fuzz_targets.ALL)
    engine = options.engine
    if engine == "auto":
        engine = "atheris" if fuzz_engines.atheris_available() else "hypothesis"
    results = []
    for target in targets:
        print(f"fuzzing {target.name} with {engine} for {options.seconds:g} s", flush=True)
        if engine == "atheris":
            result = fuzz_engines.run_atheris(
                target, options.seconds, work=options.work, corpus=options.corpus
            )
        else:
            result = fuzz_engines.run_hypothesis(
                target, options.seconds, work=options.work, corpus=options.corpus
            )
        results.append(result)
    print(fuzz_engines.summary(results))
    return 1 if any(result.crashes for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
