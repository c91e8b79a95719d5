"""The suite proves it ran what it promises: every scenario through the notebook, nbval, and (under
CI=true) the browser test are collected by the repository's own config, and `make test` fails
(tests/ran.py) when its report does not show them passed, whatever a marker or config line says."""

from __future__ import annotations

import subprocess

from tests import ran
from tests.notebook_runner import PYTEST
from tests.replay import ROOT
from tests.replay.scenarios import SCENARIOS


def test_the_config_collects_every_scenario_nbval_and_the_browser_test():
    """`pytest --collect-only` with the repository's pytest settings (as `make test` reads them):
    nothing the README promises is deselected or ignored."""
    done = subprocess.run(
        [*PYTEST, "--collect-only"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    collected = set(done.stdout.split())
    absent = [test for test in ran.required(ci=True) if test not in collected]
    assert absent == [], f"not collected: {absent}\n{done.stdout[-2000:]}"
    assert len(ran.required(ci=True)) == len(SCENARIOS) + 2


def junit(tmp_path, cases: dict[str, str]):
    """A JUnit report: test id -> "passed", or the element pytest writes: "failure", "error",
    "skipped"."""
    rows = []
    for test, outcome in cases.items():
        module, name = test.split("::")
        classname = module.removesuffix(".py").replace("/", ".")
        inner = "" if outcome == "passed" else f"<{outcome} message='x'/>"
        rows.append(f'<testcase classname="{classname}" name="{name}">{inner}</testcase>')
    path = tmp_path / "results.xml"
    path.write_text(f"<testsuites><testsuite>{''.join(rows)}</testsuite></testsuites>")
    return path


def test_a_report_that_shows_everything_passed_is_complete(tmp_path):
    report = junit(tmp_path, dict.fromkeys(ran.required(ci=True), "passed"))
    assert ran.missing(report, ci=True) == []
    assert ran.main([str(report)]) == 0


def test_a_scenario_or_nbval_that_did_not_run_or_pass_fails_the_run(tmp_path, capsys):
    cases = dict.fromkeys(ran.required(ci=False), "passed")
    dropped = "tests/test_scenarios.py::test_scenario[dropped]"
    del cases[dropped]
    cases[ran.NBVAL] = "skipped"
    cases["tests/test_scenarios.py::test_scenario[stall]"] = "failure"
    report = junit(tmp_path, cases)
    assert ran.missing(report, ci=False) == [
        dropped,
        "tests/test_scenarios.py::test_scenario[stall]",
        ran.NBVAL,
    ]
    assert ran.main([str(report)]) == 1
    printed = capsys.readouterr().out
    assert printed.startswith("make test did not run everything it promises")
    assert all(f"  {test}\n" in printed for test in ran.missing(report, ci=False))


def test_under_ci_the_browser_test_must_have_passed(tmp_path):
    cases = dict.fromkeys(ran.required(ci=False), "passed") | {ran.BROWSER: "skipped"}
    report = junit(tmp_path, cases)
    assert ran.missing(report, ci=False) == []
    assert ran.missing(report, ci=True) == [ran.BROWSER]


def test_no_report_is_a_failure(tmp_path):
    assert ran.missing(tmp_path / "none.xml", ci=False) == [
        f"no test report at {tmp_path / 'none.xml'}: the run did not write one"
    ]


def test_ci_runs_every_check_with_ci_true():
    """.ci/run sets CI=true before `make test` (a missing Chromium then fails the run instead of
    skipping the browser test), and runs the README's test command and every other check."""
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    steps = [line for line in lines if line.startswith("make ")]
    assert "export CI=true" in lines and lines.index("export CI=true") < lines.index("make test")
    assert [step.split()[1] for step in steps] == ["test", "test-oldest", "lint", "mutate"]


def test_make_test_checks_what_ran():
    """`make test` (as make would run it) ends with tests/ran.py on the run's JUnit report."""
    done = subprocess.run(
        ["make", "-n", "test", "test-oldest"], cwd=ROOT, capture_output=True, text=True
    )
    commands = done.stdout.splitlines()
    pytest_runs = [c for c in commands if " -m pytest " in c]
    assert [("--junitxml=build/test-results" in c) for c in pytest_runs] == [True, True]
    assert [c.split(" -m tests.ran ")[1] for c in commands if " -m tests.ran " in c] == [
        "build/test-results.xml",
        "--no-browser build/test-results-oldest.xml",
    ]
