"""The two fuzzing engines behind ``make fuzz`` and the smoke test.

**atheris** (libFuzzer, coverage-guided): each target runs in its own process
(``run.py --worker``), with ``bobravoz`` instrumented as it is imported (servers and generated
code the targets never run are left out; the pure-Python wire modules, which the targets load
from source beside the compiled ones, are instrumented function by function). libFuzzer keeps
what it finds under ``build/fuzz/<target>/corpus`` (seeded from the committed corpus), writes
crashing inputs to ``build/fuzz/<target>/crashes/`` and its log to
``build/fuzz/<target>/atheris.log``. Coverage is libFuzzer's ``cov:`` figure: the number of
instrumented edges (branch points of bobravoz's Python bytecode, and of nothing else) the
corpus reaches. Executions: libFuzzer's ``number_of_executed_units``. libFuzzer stops a target
at its first crash.

**hypothesis** (no coverage feedback): the seeds first, then inputs made by mutating the seeds
(set, insert, delete, duplicate, truncate, splice, insert a target token) or drawn at random,
in batches until the time is up; a crash is shrunk to a minimal input and saved. Coverage:
the number of distinct line-to-line arcs executed in bobravoz's source files, traced with
``sys.settrace`` (the measure coverage.py calls branch coverage; the compiled extensions are
not traced, their pure-Python twins are). Tracing costs executions; the smoke test turns it
off.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FrameType, ModuleType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from fuzz_targets import Target

HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parents[1]
#: Where runs keep their corpus, crashes and logs (git ignores ``build/``).
WORK: Final = ROOT / "build" / "fuzz"
#: Modules the targets import but never run (servers, the generated message classes):
#: not instrumented, which halves a worker's start and keeps them out of ``cov:``.
NOT_INSTRUMENTED: Final = (
    "bobravoz.runtime.grpc_bridge",
    "bobravoz.runtime.hub.service",
    "bobravoz.runtime.hub.registry",
    "bobravoz.runtime.hub.binding",
    "bobravoz.runtime.channel",
    "bobravoz.runtime.pump",
    "bobravoz.runtime.supervisor",
    "bobravoz.runtime.metrics",
    "bobravoz.runtime.metrics_http",
    "bobravoz.runtime.groups",
    "bobravoz.runtime.heap",
    "bobravoz.runtime.logs",
    "bobravoz.runtime.shutdown",
    "bobravoz.protocol.warmup",
    "bobravoz.protocol.gen",
    "bobravoz.protocol.gen.google",
    "bobravoz.protocol.gen.google.protobuf",
    "bobravoz.protocol.gen.message_pool",
    "bobravoz.protocol.gen.transport",
    "bobravoz.protocol.gen.transport.v1",
    "bobravoz.sdk.packet",
    "bobravoz.sdk.report",
)
#: The longest a single input may run before libFuzzer calls it a hang (a crash).
INPUT_TIMEOUT: Final = 30


@dataclass
class Result:
    """One target's run: what ran, how much, how far it reached, what crashed."""

    target: str
    engine: str
    seconds: float
    executions: int
    #: libFuzzer's ``cov:`` edges (atheris) or traced arcs (hypothesis); -1 when not measured.
    coverage: int
    coverage_unit: str
    #: Crashing inputs saved, and what each raised (first line).
    crashes: list[tuple[Path, str]] = field(default_factory=list)
    log: Path | None = None


def atheris_available() -> bool:
    """Whether atheris imports in this interpreter (a wheel for this CPython, or clang)."""
    try:
        import atheris
    except ImportError:
        return False
    del atheris
    return True


def _save_crash(folder: Path, data: bytes) -> Path:
    """``data`` saved as ``crash-<sha1>`` in ``folder`` (libFuzzer's naming)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    return path


def _dictionary(tokens: Sequence[bytes]) -> str:
    """libFuzzer's ``-dict`` file format: one quoted token a line, bytes as ``\\xNN``."""

    def quote(token: bytes) -> str:
        return "".join(
            chr(byte) if 0x20 <= byte < 0x7F and byte not in b'"\\' else f"\\x{byte:02x}"
            for byte in token
        )

    return "".join(f'"{quote(token)}"\n' for token in tokens)


# --- atheris ---


def _instrument_module(atheris: Any, module: ModuleType) -> None:
    """Instrument the functions and methods defined in ``module`` (one loaded from source
    outside the import system, which atheris's import hook does not see)."""
    for value in vars(module).values():
        if getattr(value, "__module__", None) != module.__name__:
            continue
        if isinstance(value, type):
            for member in vars(value).values():
                if hasattr(member, "__code__"):
                    atheris.instrument_func(member)
        elif hasattr(value, "__code__"):
            atheris.instrument_func(value)


def atheris_worker(name: str, libfuzzer_args: Sequence[str]) -> None:
    """Fuzz target ``name`` in this process with atheris; libFuzzer ends the process."""
    import atheris

    with atheris.instrument_imports(include=["bobravoz"], exclude=NOT_INSTRUMENTED):
        import fuzz_targets
    for module in fuzz_targets.PURE_MODULES:
        _instrument_module(atheris, module)
    check = fuzz_targets.find(name).check

    def one_input(data: bytes) -> None:
        check(data)

    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input)
    atheris.Fuzz()


_COV: Final = re.compile(r"\bcov: (\d+)")
_EXECUTED: Final = re.compile(r"stat::number_of_executed_units: (\d+)")
_STATUS: Final = re.compile(r"^#(\d+)\s", re.MULTILINE)
_WRITTEN: Final = re.compile(r"Test unit written to (\S+)")


def _raised(log: str) -> str:
    """The exception line of the last Python traceback in ``log`` (or libFuzzer's error)."""
    lines = log.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("Traceback (most recent call last)"):
            for line in lines[index + 1 :]:
                if line and not line.startswith(" "):
                    return line.strip()
    errors = [line for line in lines if "ERROR: libFuzzer" in line]
    return errors[-1].strip() if errors else "(see the log)"


def run_atheris(
    target: Target, seconds: float, *, work: Path = WORK, corpus: Path | None = None
) -> Result:
    """Fuzz ``target`` with atheris in a subprocess for ``seconds``; parse libFuzzer's log."""
    folder = work / target.name
    crashes = folder / "crashes"
    live = folder / "corpus"
    for path in (crashes, live):
        path.mkdir(parents=True, exist_ok=True)
    seeds = corpus / target.name if corpus is not None else target.corpus
    args = [
        str(live),
        *([str(seeds)] if seeds.is_dir() else []),
        f"-max_total_time={max(1, round(seconds))}",
        f"-artifact_prefix={crashes}{os.sep}",
        f"-max_len={target.max_len}",
        f"-timeout={INPUT_TIMEOUT}",
        "-print_final_stats=1",
    ]
    if target.tokens:
        dictionary = folder / "tokens.dict"
        dictionary.write_text(_dictionary(target.tokens))
        args.append(f"-dict={dictionary}")
    log = folder / "atheris.log"
    started = time.monotonic()
    with log.open("wb") as output:
        completed = subprocess.run(
            [sys.executable, str(HERE / "run.py"), "--worker", target.name, "--", *args],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            check=False,
        )
    elapsed = time.monotonic() - started
    text = log.read_text(errors="replace")
    executed = _EXECUTED.findall(text) or _STATUS.findall(text) or ["0"]
    coverage = _COV.findall(text)
    written = [Path(path) for path in _WRITTEN.findall(text)]
    result = Result(
        target=target.name,
        engine="atheris",
        seconds=elapsed,
        executions=int(executed[-1]),
        coverage=int(coverage[-1]) if coverage else -1,
        coverage_unit="edges",
        log=log,
    )
    if written or completed.returncode != 0:
        reason = _raised(text)
        result.crashes = [(path, reason) for path in written] or [(log, reason)]
    return result


# --- hypothesis ---


class ArcTracer:
    """Distinct (code, line, next line) arcs executed in files under ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.arcs: set[tuple[CodeType, int, int]] = set()
        self._traced: dict[CodeType, bool] = {}

    def _call(self, frame: FrameType, event: str, arg: object) -> Callable[..., Any] | None:
        code = frame.f_code
        traced = self._traced.get(code)
        if traced is None:
            traced = self._traced[code] = code.co_filename.startswith(self.prefix)
        if not traced:
            return None
        arcs = self.arcs
        last = -code.co_firstlineno

        def line(frame: FrameType, event: str, arg: object) -> Callable[..., Any]:
            nonlocal last
            here = -code.co_firstlineno if event == "return" else frame.f_lineno
            arcs.add((code, last, here))
            last = here
            return line

        return line

    def start(self) -> None:
        """Trace calls made from now on (in this thread)."""
        sys.settrace(self._call)

    def stop(self) -> None:
        """Stop tracing."""
        sys.settrace(None)


def _inputs(target: Target, seeds: list[bytes]) -> Any:
    """Inputs for ``target``: a seed mutated up to eight times, or random bytes."""
    from hypothesis import strategies as st

    base = st.sampled_from(seeds) if seeds else st.just(b"")
    tokens = target.tokens or (b"\x00", b"\xff")

    @st.composite
    def mutated(draw: Any) -> bytes:
        data = bytearray(draw(base))
        for _ in range(draw(st.integers(0, 8))):
            operation = draw(st.integers(0, 6))
            at = draw(st.integers(0, len(data)))
            if operation == 0 and data:
                data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
            elif operation == 1:
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
            elif operation == 2:
                del data[at : at + draw(st.integers(1, 16))]
            elif operation == 3:
                data[at:at] = draw(st.sampled_from(tokens))
            elif operation == 4:
                start = draw(st.integers(0, len(data)))
                data[at:at] = data[start : start + draw(st.integers(1, 64))]
            elif operation == 5:
                del data[at:]
            else:
                other = draw(base)
                data[at:] = other[draw(st.integers(0, len(other))) :]
        return bytes(data[: target.max_len])

    return st.one_of(mutated(), st.binary(max_size=min(512, target.max_len)))


def run_hypothesis(
    target: Target,
    seconds: float,
    *,
    work: Path = WORK,
    corpus: Path | None = None,
    trace: bool = True,
    max_examples: int | None = None,
    seed: int | None = None,
) -> Result:
    """Run ``target``'s seeds, then mutated and random inputs until ``seconds`` pass (or
    ``max_examples`` generated inputs ran); stop at the first crash, shrink it and save it.

    ``corpus`` replaces the committed seed corpus root; ``seed`` fixes hypothesis's random
    choices (the smoke test's reproducible runs)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as seeded

    import bobravoz

    tracer = ArcTracer(os.path.join(bobravoz.__path__[0], "")) if trace else None
    check = target.check
    executions = 0
    failed: list[bytes] = []

    def once(data: bytes) -> None:
        nonlocal executions
        executions += 1
        if tracer is not None:
            tracer.start()
        try:
            check(data)
        except BaseException:
            failed.append(data)
            raise
        finally:
            if tracer is not None:
                tracer.stop()

    def result(crash: tuple[Path, str] | None) -> Result:
        return Result(
            target=target.name,
            engine="hypothesis",
            seconds=time.monotonic() - started,
            executions=executions,
            coverage=len(tracer.arcs) if tracer is not None else -1,
            coverage_unit="arcs",
            crashes=[crash] if crash is not None else [],
        )

    crashes = work / target.name / "crashes"
    started = time.monotonic()
    seeds = target.seeds(corpus)
    for data in seeds:
        try:
            once(data)
        except Exception as error:  # noqa: BLE001 - any exception from a target is a crash
            return result((_save_crash(crashes, data), f"{type(error).__name__}: {error}"))
    strategy = _inputs(target, seeds)
    base_seed = seed if seed is not None else int.from_bytes(os.urandom(4), "big")
    remaining = max_examples if max_examples is not None else 2**62
    deadline = started + seconds
    batch = 50
    round_number = 0
    while remaining > 0 and time.monotonic() < deadline:
        size = min(batch, remaining)
        round_started = time.monotonic()
        before = executions

        @seeded(base_seed + round_number)
        @settings(
            max_examples=size,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=(Phase.generate, Phase.shrink),
            report_multiple_bugs=False,
        )
        @given(strategy)
        def fuzz(data: bytes) -> None:
            once(data)

        try:
            fuzz()
        except Exception as error:  # noqa: BLE001 - the shrunk failure: a crash
            data = failed[-1]
            raised: BaseException = error
            try:
                check(data)
            except Exception as again:  # noqa: BLE001 - the minimal input's own error
                raised = again
            return result((_save_crash(crashes, data), f"{type(raised).__name__}: {raised}"))
        remaining -= size
        round_number += 1
        rate = (executions - before) / max(time.monotonic() - round_started, 1e-3)
        batch = max(10, min(5000, int(rate * min(1.0, max(deadline - time.monotonic(), 0.1)))))
    return result(None)


def summary(results: Sequence[Result]) -> str:
    """The table ``make fuzz`` prints: a line per target, then the crashes and their total."""
    lines = [f"{'target':20} {'engine':10} {'seconds':>7} {'execs':>9} {'coverage':>16} crashes"]
    for result in results:
        coverage = (
            f"{result.coverage} {result.coverage_unit}" if result.coverage >= 0 else "not measured"
        )
        lines.append(
            f"{result.target:20} {result.engine:10} {result.seconds:7.1f} "
            f"{result.executions:9} {coverage:>16} {len(result.crashes)}"
        )
    crashes = [(result, crash) for result in results for crash in result.crashes]
    for result, (path, reason) in crashes:
        lines.append(f"CRASH {result.target}: {reason}")
        lines.append(f"  input saved to {path}")
        if result.log is not None:
            lines.append(f"  log: {result.log}")
    lines.append(f"crashes: {len(crashes)}")
    return "\n".join(lines)
