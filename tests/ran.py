"""`make test`'s last step: prove the run ran what the README promises, whatever the config said.

`python -m tests.ran [--no-browser] build/test-results.xml` reads pytest's JUnit report of the run and fails,
naming what is missing, unless every scenario of tests/replay/scenarios.py ran through the
notebook and passed, nbval ran the committed notebook and passed, and, under CI=true, the
real-browser test passed. A marker, an `--ignore`, a `-k` or a skip in a config file cannot
make `make test` green without them: this reads what ran, not what was asked for.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.replay.scenarios import SCENARIOS

NBVAL = "tests/test_notebook.py::test_nbval_runs_the_committed_notebook_strictly"
BROWSER = "tests/test_browser.py::test_a_person_runs_the_notebook_in_jupyterlab"


def required(ci: bool) -> list[str]:
    """The test ids a full run must have passed."""
    scenarios = [f"tests/test_scenarios.py::test_scenario[{name}]" for name in sorted(SCENARIOS)]
    return [*scenarios, NBVAL, *([BROWSER] if ci else [])]


def passed(report: Path) -> set[str]:
    """The ids of the tests a JUnit report says passed (not failed, errored or skipped)."""
    ids = set()
    for case in ET.parse(report).iter("testcase"):
        if any(case.find(tag) is not None for tag in ("failure", "error", "skipped")):
            continue
        module = case.get("classname", "").replace(".", "/")
        ids.add(f"{module}.py::{case.get('name')}")
    return ids


def missing(report: Path, ci: bool) -> list[str]:
    """What a full run must have passed and this report does not show as passed."""
    if not report.is_file():
        return [f"no test report at {report}: the run did not write one"]
    ran = passed(report)
    return [test for test in required(ci) if test not in ran]


def main(argv: list[str]) -> int:
    """`[--no-browser] REPORT`: --no-browser for a run that leaves the browser test out on
    purpose (`make test-oldest`)."""
    browser = "--no-browser" not in argv
    argv = [arg for arg in argv if arg != "--no-browser"]
    report = Path(argv[0]) if argv else Path("build/test-results.xml")
    ci = browser and os.environ.get("CI") == "true"
    if absent := missing(report, ci):
        print(
            f"make test did not run everything it promises ({len(absent)} missing or not passed):"
        )
        print("".join(f"  {test}\n" for test in absent), end="")
        return 1
    print(f"make test ran every scenario, nbval{' and the browser test' if ci else ''}.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
