"""The calculator as the tests need it: the original with its three planted bugs, its tests, and
the fix that changes only add(), divide() and power()."""

from __future__ import annotations

import textwrap

from tests.replay import FIXTURES

ORIGINAL = (FIXTURES / "calc.py").read_text()
TESTS = (FIXTURES / "test_calc.py").read_text()
FIXED = ORIGINAL.replace("a - b\n\n\ndef subtract", "a + b\n\n\ndef subtract", 1)
FIXED = FIXED.replace("a // b", "a / b").replace("range(exponent - 1)", "range(exponent)")
NAMES = ["test_add", "test_subtract", "test_multiply", "test_divide", "test_power", "test_mean"]


def source(text: str) -> str:
    """Code written indented in a test, as a file holds it."""
    return textwrap.dedent(text).lstrip()
