"""The calc fixtures: the original fails exactly where the bugs are; the agent's output fixes them."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.notebook_runner import PYTEST
from tests.replay import FIXTURES, SHIPPED_CASSETTE
from tests.replay.cassette import Cassette

ROOT_CAUSES = {"test_add", "test_divide", "test_power"}
CONSEQUENCES = {"test_mean"}  # mean() is correct but calls add() and divide()
ALL_TESTS = {"test_add", "test_subtract", "test_multiply", "test_divide", "test_power", "test_mean"}


def run_suite(calc_source: str, tmp_path: Path) -> tuple[dict[str, str], int]:
    (tmp_path / "calc.py").write_text(calc_source)
    (tmp_path / "test_calc.py").write_text((FIXTURES / "test_calc.py").read_text())
    done = subprocess.run(
        [sys.executable, "test_calc.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    results = {
        name: result for result, name in re.findall(r"^(PASS|FAIL) (\w+)$", done.stdout, re.M)
    }
    return results, done.returncode


def agent_output(name: str = "calc.py") -> str:
    """A file the shipped cassette serves as the agent's output (its newest listing names it)."""
    exchanges = Cassette.load(SHIPPED_CASSETTE).exchanges
    listings = [
        ex
        for ex in exchanges
        if ex["request"]["path"] == "/v1/files" and ex["request"]["method"] == "GET"
    ]
    [file_id] = [
        f["id"]
        for f in listings[-1]["response"]["json"]["data"]
        if f["filename"] == name and f["downloadable"]
    ]
    [download] = [ex for ex in exchanges if ex["request"]["path"] == f"/v1/files/{file_id}/content"]
    return download["response"]["text"]


def function_source(source: str, name: str) -> str:
    tree = ast.parse(source)
    return next(
        ast.get_source_segment(source, n) for n in tree.body if getattr(n, "name", None) == name
    )


def test_original_fails_exactly_the_planted_bugs(tmp_path):
    results, code = run_suite((FIXTURES / "calc.py").read_text(), tmp_path)
    assert {n for n, r in results.items() if r == "FAIL"} == ROOT_CAUSES | CONSEQUENCES
    assert {n for n, r in results.items() if r == "PASS"} == ALL_TESTS - ROOT_CAUSES - CONSEQUENCES
    assert code != 0


def test_agent_output_passes_everything_and_leaves_mean_alone(tmp_path):
    fixed = agent_output()
    results, code = run_suite(fixed, tmp_path)
    assert results == dict.fromkeys(sorted(ALL_TESTS), "PASS") and code == 0
    assert function_source(fixed, "mean") == function_source(
        (FIXTURES / "calc.py").read_text(), "mean"
    )


def test_suite_runs_under_pytest_too(tmp_path):
    (tmp_path / "calc.py").write_text(agent_output())
    (tmp_path / "test_calc.py").write_text((FIXTURES / "test_calc.py").read_text())
    done = subprocess.run(
        [*PYTEST, "-c", "/dev/null", "test_calc.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},  # plain pytest, no plugins
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "6 passed" in done.stdout, done.stdout


@pytest.mark.parametrize("name", sorted(ROOT_CAUSES))
def test_each_bug_is_in_its_own_function(name, tmp_path):
    """Fixing one root cause turns exactly its own test green (mean needs both add and divide)."""
    fixed, original = agent_output(), (FIXTURES / "calc.py").read_text()
    function = name.removeprefix("test_")
    patched = original.replace(
        function_source(original, function), function_source(fixed, function)
    )
    results, _ = run_suite(patched, tmp_path)
    assert results[name] == "PASS"
    assert {n for n, r in results.items() if r == "FAIL"} == ROOT_CAUSES - {name} | CONSEQUENCES


def test_the_agents_regression_tests_fail_on_the_original_and_pass_on_the_fix(tmp_path):
    """The second turn's output, as scripted: each test guards one of the three fixes."""
    (tmp_path / "test_regressions.py").write_text(agent_output("test_regressions.py"))
    for calc, outcome in ((FIXTURES / "calc.py").read_text(), "FAIL"), (agent_output(), "PASS"):
        (tmp_path / "calc.py").write_text(calc)
        done = subprocess.run(
            [sys.executable, "test_regressions.py"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert re.findall(r"^(PASS|FAIL) test_", done.stdout, re.M) == [outcome] * 3, done.stdout
