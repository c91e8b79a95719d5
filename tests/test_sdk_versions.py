"""The anthropic releases the cookbook supports, each named once: the oldest in the Makefile
(OLDEST_ANTHROPIC, what `make test-oldest` installs), the newest pinned in requirements.txt. The
notebook tells readers that range, every committed cassette names a release in it, and
tests/sdk_check.py builds its environments and reports as described."""

from __future__ import annotations

import re

import nbformat
import pytest

from tests.notebook_runner import NOTEBOOK
from tests.replay import SCENARIO_DIR, SHIPPED_CASSETTE
from tests.replay.cassette import Cassette
from tests.sdk_check import REQUIREMENTS, failures, oldest, pinned, requirements

CASSETTES = [SHIPPED_CASSETTE, *sorted(SCENARIO_DIR.glob("*.jsonl"))]


def release(version: str) -> tuple[int, ...]:
    """'2.9.1' -> (2, 9, 1), to compare releases in order."""
    return tuple(int(part) for part in re.findall(r"\d+", version))


def test_the_range_runs_from_the_oldest_to_the_pin():
    assert release(oldest()) < release(pinned())


def test_the_notebook_tells_readers_the_supported_range():
    source = "\n".join(cell.source for cell in nbformat.read(NOTEBOOK, as_version=4).cells)
    assert f'"anthropic>={oldest()}"' in source, "the first cell installs the oldest or newer"
    assert f"tested with {oldest()} to {pinned()}" in source, "the prerequisites name the range"


@pytest.mark.parametrize("path", CASSETTES, ids=lambda path: path.stem)
def test_each_committed_cassette_names_a_supported_release(path):
    """The generator writes the installed SDK into the header (test_generated.py compares the
    rest); a committed cassette was made with a release the cookbook supports."""
    sdk = Cassette.load(path).header["sdk"]
    name, _, version = sdk.partition(" ")
    assert name == "anthropic" and release(oldest()) <= release(version) <= release(pinned()), (
        f"{path.name}: {sdk!r} is not a release from {oldest()} to {pinned()}"
    )


def test_other_environments_change_only_the_anthropic_pin():
    lines = REQUIREMENTS.read_text(encoding="utf-8").splitlines()
    changed = [
        (a, b) for a, b in zip(lines, requirements("2.99.0").splitlines(), strict=True) if a != b
    ]
    assert changed == [(f"anthropic=={pinned()}", "anthropic==2.99.0")]


def test_sdk_check_names_each_failing_test_with_its_first_error_line(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(
        """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_a" name="test_ok" time="0.1"/>
<testcase classname="tests.test_a" name="test_bad[x]" time="0.1">
<failure message="AssertionError: differs&#10;assert 1 == 2">long traceback</failure></testcase>
<testcase classname="tests.test_b" name="test_broken" time="0.1">
<error message="failed on setup with &quot;ValueError: no&quot;">trace</error></testcase>
</testsuite></testsuites>""",
        encoding="utf-8",
    )
    assert failures(junit) == [
        ("tests/test_a.py::test_bad[x]", "AssertionError: differs"),
        ("tests/test_b.py::test_broken", 'failed on setup with "ValueError: no"'),
    ]
