"""The bounded test runner (watch_and_verify.run_test, run_tests, find_tests, parse_problem) on
its own, with modules written to break it: each test alone, in a clean process group, bounded in
time, its result counted only with a token the code under test could not know."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from watch_and_verify import find_tests, parse_problem, run_test, run_tests

from tests.calc_versions import FIXED, NAMES, ORIGINAL, TESTS, source


def test_the_original_fails_where_the_bugs_are_and_the_fix_passes():
    assert run_tests(ORIGINAL, TESTS, 10) == {
        "test_add": "FAIL",
        "test_subtract": "PASS",
        "test_multiply": "PASS",
        "test_divide": "FAIL",
        "test_power": "FAIL",
        "test_mean": "FAIL",
    }
    assert run_tests(FIXED, TESTS, 10) == dict.fromkeys(NAMES, "PASS")


def test_results_printed_at_import_do_not_count():
    """calc.py prints PASS lines for every test and exits while it is imported."""
    lines = "".join(f"print('PASS {n}'); print('{n} PASS {n}')\n" for n in NAMES)
    spoofing = ORIGINAL + lines + "import sys\nsys.exit(0)\n"
    assert run_tests(spoofing, TESTS, 10) == dict.fromkeys(
        NAMES, "the test process ended early, exit status 0"
    )


def test_the_token_is_unknowable_while_the_module_imports():
    """calc.py keeps its bugs and, while imported, tries to learn the token: from the harness's
    globals, and from stdin, where the token is sent. It never gets it: a read of stdin during
    the import waits until the test runs out of time."""
    thief = ORIGINAL + source(
        """
        import __main__, sys
        token = getattr(__main__, "token", None) or sys.stdin.readline().strip()
        for name in ("test_add", "test_divide", "test_power", "test_mean"):
            print(token, "PASS", name, flush=True)
        """
    )
    assert run_test(thief, TESTS, "test_calc", "test_add", 1) == "timed out after 1 s"
    # Closing the harness's own "imported" signal unread does not get the token sent either.
    closes = thief.replace(
        "import __main__, sys\n", "import __main__, os, sys\nos.close(int(sys.argv[3]))\n"
    )
    assert closes != thief
    assert run_test(closes, TESTS, "test_calc", "test_add", 1) == (
        "the test process ended early, exit status 1"  # the harness could not say it either
    )
    no_stdin = thief.replace(" or sys.stdin.readline().strip()", ' or "guess"')
    assert run_test(no_stdin, TESTS, "test_calc", "test_add", 10) == "FAIL"


def test_a_test_that_hangs_costs_only_itself():
    hangs = ORIGINAL.replace("    result = 1\n", "    result = 1\n    while True:\n        pass\n")
    started = time.monotonic()
    results = run_tests(hangs, TESTS, 1)
    assert results["test_power"] == "timed out after 1 s"
    assert results["test_subtract"] == "PASS" and results["test_mean"] == "FAIL"
    assert time.monotonic() - started < 10, "only test_power waited out its second"


def test_a_test_that_ends_its_process_costs_only_itself():
    tests = source(
        """
        import os, sys
        from calc import add

        def test_exits():
            sys.exit(0)

        def test_killed():
            os._exit(3)

        def test_fine():
            assert add(1, 1) == 2
        """
    )
    assert run_tests(FIXED, tests, 10) == {
        "test_exits": "the test process ended early, exit status 0",
        "test_killed": "the test process ended early, exit status 3",
        "test_fine": "PASS",
    }


def test_whatever_the_code_started_is_killed_with_it(tmp_path):
    marker = f"sleep 4{os.getpid() % 1000:03d}"  # a command line no one else runs
    child = ORIGINAL + f"\nimport os\nos.system('{marker} &')\n"
    assert run_test(child, TESTS, "test_calc", "test_subtract", 10) == "PASS"
    time.sleep(0.2)
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1


def test_the_code_under_test_sees_nothing_of_the_readers_environment(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-not-for-the-agent")
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    tests = source(
        """
        import os, sys

        def test_environment():
            assert sorted(os.environ) == ["HOME", "LANG", "PATH"], sorted(os.environ)
            assert os.environ["HOME"] == os.getcwd()

        def test_isolated_interpreter():
            assert sys.flags.isolated == 1
        """
    )
    assert run_tests(FIXED, tests, 10) == {
        "test_environment": "PASS",
        "test_isolated_interpreter": "PASS",
    }


def test_each_test_runs_in_a_fresh_directory():
    tests = source(
        """
        import os

        def test_first():
            open("left_behind", "w").close()

        def test_second():
            assert not os.path.exists("left_behind")
        """
    )
    assert run_tests(FIXED, tests, 10, module="test_calc2") == {
        "test_first": "PASS",
        "test_second": "PASS",
    }


def test_testcase_methods_async_tests_and_test_classes_are_run():
    tests = source(
        """
        import unittest
        from calc import add, divide

        class TestRegressions(unittest.TestCase):
            def test_add(self):
                self.assertEqual(add(2, 3), 5)

            def test_divide(self):
                self.assertEqual(divide(7, 2), 3.5)

            @unittest.skip("not today")
            def test_skipped(self):
                pass

            def helper(self):
                raise AssertionError

        class TestPlain:
            def test_plain(self):
                assert add(1, 1) == 2

        class Regressions(unittest.TestCase):  # a TestCase, whatever its name
            def test_power(self):
                self.assertEqual(add(1, 1), 2)

        async def test_async():
            assert add(1, 2) == 4
        """
    )
    assert find_tests(tests) == (
        [
            "TestRegressions.test_add",
            "TestRegressions.test_divide",
            "TestRegressions.test_skipped",
            "TestPlain.test_plain",
            "Regressions.test_power",
            "test_async",
        ],
        [],
    )
    assert run_tests(ORIGINAL, tests, 10, module="test_regressions") == {
        "TestRegressions.test_add": "FAIL",
        "TestRegressions.test_divide": "FAIL",
        "TestRegressions.test_skipped": "FAIL",  # a skipped test did not pass
        "TestPlain.test_plain": "FAIL",
        "Regressions.test_power": "FAIL",
        "test_async": "FAIL",  # awaited: a coroutine is not a pass
    }
    assert run_tests(FIXED, tests, 10, module="test_regressions") == {
        "TestRegressions.test_add": "PASS",
        "TestRegressions.test_divide": "PASS",
        "TestRegressions.test_skipped": "FAIL",
        "TestPlain.test_plain": "PASS",
        "Regressions.test_power": "PASS",
        "test_async": "FAIL",
    }


def test_names_in_file_order_once_each_the_last_definition_counting():
    tests = source(
        """
        def helper():
            pass

        def test_b():
            assert False

        def test_a():
            pass

        def test_b():
            pass

        class Helpers:
            def test_not_a_test(self):
                pass

        class TestX:
            def test_m(self):
                pass

            def test_m(self):
                pass

        testing = 1
        """
    )
    assert find_tests(tests) == (["test_b", "test_a", "TestX.test_m"], ["test_b", "TestX.test_m"])
    assert run_tests(FIXED, tests, 10, module="test_dupes") == {
        "test_b": "PASS",  # the second test_b, as Python sees it
        "test_a": "PASS",
        "TestX.test_m": "PASS",
    }


def test_a_file_without_tests_and_a_file_that_does_not_parse():
    assert find_tests("def helper():\n    pass\n") == ([], [])
    assert run_tests(FIXED, "x = 1\n", 10) == {}
    broken = "def test_a():\n    assert True\n\ndef test_b(:\n    pass\n"
    assert parse_problem(broken, "test_regressions.py") == (
        "test_regressions.py does not parse: SyntaxError on line 4 (invalid syntax)"
    )
    assert parse_problem("def test_a():\n    pass\n", "test_regressions.py") is None
    with pytest.raises(SyntaxError):
        find_tests(broken)


def test_a_test_module_that_fails_to_import_gives_no_result_and_no_output_of_ours(capfd):
    tests = "from calc import nothing_like_this\n\ndef test_a():\n    pass\n"
    assert run_test(FIXED, tests, "test_calc", "test_a", 10) == (
        "the test process ended early, exit status 1"
    )
    shown = capfd.readouterr()
    assert (shown.out, shown.err) == ("", ""), "the test process's traceback stays in its output"
