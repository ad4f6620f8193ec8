"""CI's share of ``make fuzz``: every target over its committed seed corpus, then a short,
reproducible hypothesis run each; and both engines shown to count, measure and report a
crash (a planted one) the way ``make fuzz`` prints it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import fuzz_engines
import fuzz_targets
import make_corpus
import pytest
from fuzz_targets import ALL, PLANTED, Target

#: Generated inputs per target in the smoke run (the seeds run first, on top of these).
SMOKE_EXAMPLES = 120
RUN = Path(fuzz_engines.__file__).with_name("run.py")


def test_every_target_has_a_small_committed_corpus() -> None:
    assert set(make_corpus.CORPORA) == set(fuzz_targets.BY_NAME)
    for target in ALL:
        seeds = target.seeds()
        assert len(seeds) >= 4, target.name
        assert sum(map(len, seeds)) <= 6144, target.name


@pytest.mark.parametrize("target", ALL, ids=lambda target: target.name)
def test_the_seeds_run_clean_and_are_accepted_and_rejected(target: Target) -> None:
    """No seed crashes; each corpus holds inputs the parser accepts and inputs it refuses
    (``wire`` and ``environment`` accept all of theirs: every seed walks or loads somewhere)."""
    outcomes = [target.check(seed) for seed in target.seeds()]
    assert any(outcomes), f"{target.name}: no seed is accepted"
    if target.name not in ("wire", "environment", "convert_layout"):
        assert not all(outcomes), f"{target.name}: no seed is refused"


@pytest.mark.parametrize("target", ALL, ids=lambda target: target.name)
def test_a_short_fuzz_run_finds_no_crash(target: Target, tmp_path: Path) -> None:
    result = fuzz_engines.run_hypothesis(
        target, 60, work=tmp_path, trace=False, max_examples=SMOKE_EXAMPLES, seed=20251126
    )
    assert result.crashes == [], fuzz_engines.summary([result])
    assert result.executions >= len(target.seeds()) + SMOKE_EXAMPLES // 2


def test_the_hypothesis_engine_shrinks_saves_and_reports_a_crash(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / PLANTED.name).mkdir(parents=True)
    (corpus / PLANTED.name / "seed").write_bytes(b"fine")
    result = fuzz_engines.run_hypothesis(
        PLANTED, 60, work=tmp_path / "work", corpus=corpus, max_examples=2000, seed=1
    )
    assert len(result.crashes) == 1
    path, reason = result.crashes[0]
    assert path.parent == tmp_path / "work" / PLANTED.name / "crashes"
    saved = path.read_bytes()
    assert b"CRASH" in saved
    assert len(saved) <= len(b"CRASHfine")  # shrunk: the token and the seed, nothing else
    assert reason == "ZeroDivisionError: planted crash"
    assert result.coverage == 0  # the planted target is no bobravoz code
    report = fuzz_engines.summary([result])
    assert f"input saved to {path}" in report
    assert report.endswith("crashes: 1")


def test_the_hypothesis_engine_measures_coverage(tmp_path: Path) -> None:
    target = fuzz_targets.BY_NAME["env_values"]
    result = fuzz_engines.run_hypothesis(target, 60, work=tmp_path, max_examples=30, seed=2)
    assert result.crashes == []
    assert result.coverage > 20  # arcs in runtime/envconfig.py and runtime/endpoints.py
    assert fuzz_engines.summary([result]).endswith("crashes: 0")


def test_make_fuzz_with_hypothesis_ends_crashes_0(tmp_path: Path) -> None:
    command = [sys.executable, str(RUN), "--engine", "hypothesis", "--seconds", "0.3"]
    command += ["--work", str(tmp_path), "env_values", "framing"]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[-1] == "crashes: 0"
    rows = {line.split()[0]: line.split() for line in lines[-4:-1]}
    assert set(rows) == {"target", "env_values", "framing"}
    assert rows["framing"][1] == "hypothesis"
    assert int(rows["framing"][3]) > len(fuzz_targets.BY_NAME["framing"].seeds())


atheris = pytest.mark.skipif(
    not fuzz_engines.atheris_available(), reason="atheris does not install here"
)


@atheris
def test_atheris_counts_executions_and_coverage(tmp_path: Path) -> None:
    target = fuzz_targets.BY_NAME["env_values"]
    result = fuzz_engines.run_atheris(target, 1, work=tmp_path)
    assert result.crashes == [], result.log.read_text() if result.log else ""
    assert result.executions > len(target.seeds())
    assert result.coverage > 20  # libFuzzer's cov: edges in bobravoz's instrumented code
    assert list((tmp_path / "env_values" / "corpus").iterdir())  # it kept what it found


@atheris
def test_make_fuzz_with_atheris_saves_the_crash_and_exits_1(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / PLANTED.name).mkdir(parents=True)
    (corpus / PLANTED.name / "seed").write_bytes(b"a CRASH b")
    work = tmp_path / "work"
    command = [sys.executable, str(RUN), "--engine", "atheris", "--seconds", "5"]
    command += ["--corpus", str(corpus), "--work", str(work), PLANTED.name]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert completed.stdout.splitlines()[-1] == "crashes: 1"
    assert "CRASH planted_crash: ZeroDivisionError: planted crash" in completed.stdout
    [saved] = (work / PLANTED.name / "crashes").iterdir()
    assert saved.read_bytes() == b"a CRASH b"
    assert f"input saved to {saved}" in completed.stdout
