"""What the notebook prints, from the helper's report functions (watch_and_verify.results_line,
results_table, fix_report, regression_report) and its bounds (clip, plain): every branch of the
verdicts on its exact text and numbers, every bound at and around its edge."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from watch_and_verify import (
    PROSE,
    TOOL_CHARS,
    TOOL_LINES,
    clip,
    fix_report,
    not_run,
    plain,
    regression_report,
    results_line,
    results_table,
    shown,
    text_of,
    tool_input,
)

from tests.calc_versions import FIXED, NAMES, ORIGINAL

ALL_PASS = dict.fromkeys(NAMES, "PASS")
ROOTS = ["add", "divide", "power"]
TIMED_OUT = "timed out after 2 s"
ENDED = "the test process ended early, exit status 1"


# --- bounds ---


def test_clip_cuts_lines_at_the_bound_and_says_how_many():
    at = "\n".join(f"line {n}" for n in range(TOOL_LINES))
    assert clip(at) == at, "at the bound: nothing cut, nothing said"
    over = at + "\nlast"
    assert clip(over) == at + "\n… [1 more lines]"
    assert clip("\n".join(["x"] * 1_012)) == "\n".join(["x"] * 12 + ["… [1,000 more lines]"])
    assert clip("a\nb\nc", lines=2) == "a\nb\n… [1 more lines]"


def test_clip_cuts_long_lines_at_the_bound_and_says_how_many():
    assert clip("x" * TOOL_CHARS) == "x" * TOOL_CHARS
    assert clip("x" * (TOOL_CHARS + 1)) == "x" * TOOL_CHARS + "… [1 more characters]"
    assert clip("y" * 1_300, chars=100) == "y" * 100 + "… [1,200 more characters]"
    assert PROSE == (60, 1_000)


def test_clip_strips_escapes_and_whole_surrogate_pairs_survive():
    assert clip("\x1b[31mred\x1b[0m \x1b]0;title\x07ok\x07\x00\x7f") == "red ok"
    assert clip("tab\tkept\nnew line kept") == "tab\tkept\nnew line kept"
    assert clip("party \ud83c\udf89") == "party 🎉"
    assert clip("half \ud83c") == "half "


def test_plain_lets_no_tag_form():
    assert plain("a < b, <b>x</b>, <B>, <!-- c -->, <?php, <3") == (
        "a < b, &lt;b>x&lt;/b>, &lt;B>, &lt;!-- c -->, &lt;?php, <3"
    )


def test_text_of_and_tool_input():
    class Block:
        def __init__(self, type_, text=None):
            self.type, self.text = type_, text

    assert text_of([Block("text", "one"), Block("image"), Block("text", "two")]) == (
        "one\n[image]\ntwo"
    )
    assert text_of(None) == ""
    assert text_of([SimpleNamespace(type="document")]) == "[document]"  # no text at all
    assert tool_input({"command": "ls -l"}) == "ls -l"
    assert tool_input({"file_path": "/mnt/user/calc.py"}) == "/mnt/user/calc.py"
    edit = {"file_path": "c.py", "old_string": "a\nb", "new_string": "c"}
    assert tool_input(edit) == "c.py\n- a\n- b\n+ c"
    assert tool_input({"pattern": "*.py"}) == '{"pattern": "*.py"}'


# --- result lines and tables ---


def test_results_line_counts_and_names_each_kind_of_result():
    assert results_line("Original tests", ALL_PASS) == "Original tests: 6 of 6 pass"
    results = {
        "test_a": "FAIL",
        "test_b": "PASS",
        "test_c": TIMED_OUT,
        "test_d": "FAIL",
        "test_e": ENDED,
        "test_f": TIMED_OUT,
    }
    assert results_line("Original tests", results) == (
        "Original tests: 1 of 6 pass; failing: test_a, test_d; did not run:"
        " test_c, test_f (timed out after 2 s), test_e (the test process ended early, exit status 1)"
    )
    assert results_line("X", {}) == "X: 0 of 0 pass"


def test_not_run_names_missing_results_too():
    assert not_run(["a", "b"], {"a": "PASS", "b": "FAIL"}) == ""
    assert not_run(["a", "b"], {"a": "PASS"}) == "; did not run: b (not run)"


def test_results_table_aligns_columns_and_says_did_not_run():
    table = results_table(
        {
            "before": {"test_add": "FAIL", "test_mean": "PASS"},
            "after": {"test_add": "PASS", "test_mean": TIMED_OUT},
        }
    )
    assert table == (
        "test       before  after\ntest_add   FAIL    PASS\ntest_mean  PASS    did not run"
    )
    wide = results_table({"original": {"TestRegressions.test_<b>": "FAIL"}})
    name = "TestRegressions.test_&lt;b>"  # escaped, then aligned
    assert wide == "test".ljust(len(name)) + "  original\n" + name + "  FAIL"
    assert [shown(r) for r in ("PASS", "FAIL", TIMED_OUT, None)] == [
        "PASS",
        "FAIL",
        "did not run",
        "did not run",
    ]


# --- the first turn's report ---


def report(fixed=FIXED, after=ALL_PASS, roots=ROOTS, others=()):
    return fix_report(ORIGINAL, fixed, after, roots, list(others))


def test_fixed_at_the_root():
    assert report() == [
        "Original tests: 6 of 6 pass",
        "Functions changed: add, divide, power",
        "mean(): unchanged",
        "Verdict: fixed at the root: every original test passes and only the buggy functions"
        " changed.",
    ]


def test_other_files_are_named_and_escaped():
    lines = report(others=["NOTES.md", "<img>.py"])
    assert lines[3] == "Other files the agent saved: NOTES.md, &lt;img>.py"
    assert lines[4].startswith("Verdict: fixed at the root")


def test_code_that_does_not_parse_is_not_fixed_and_nothing_is_claimed_about_it():
    broken = ORIGINAL.replace("return a - b\n\n\ndef subtract", "return a +\n\n\ndef subtract", 1)
    assert report(broken, dict.fromkeys(NAMES, ENDED), []) == [
        "Original tests: 0 of 6 pass; did not run: test_add, test_subtract, test_multiply,"
        " test_divide, test_power, test_mean (the test process ended early, exit status 1)",
        "calc.py does not parse: SyntaxError on line 5 (invalid syntax)",
        "Verdict: not fixed: the agent's calc.py does not parse.",
    ]


def test_the_original_saved_back_fixed_nothing():
    after = {**ALL_PASS, "test_add": "FAIL"}
    assert report(ORIGINAL, after, []) == [
        "Original tests: 5 of 6 pass; failing: test_add",
        "Functions changed: none",
        "mean(): unchanged",
        "Verdict: nothing was fixed: the agent's calc.py is the original.",
    ]


def test_tests_that_did_not_run_leave_the_fix_unverified():
    after = {**ALL_PASS, "test_power": TIMED_OUT}
    assert report(after=after)[0] == (
        "Original tests: 5 of 6 pass; did not run: test_power (timed out after 2 s)"
    )
    assert report(after=after)[-1] == "Verdict: not verified: 1 of 6 original tests did not run."
    failing_too = {**after, "test_add": "FAIL"}
    assert report(after=failing_too)[-1] == (
        "Verdict: not verified: 1 of 6 original tests did not run."
    )


def test_failing_tests_are_not_fixed():
    after = {**ALL_PASS, "test_add": "FAIL", "test_mean": "FAIL"}
    assert report(after=after)[-1] == "Verdict: not fixed: 2 of 6 original tests still fail."


def test_a_changed_mean_is_named_even_when_the_tests_pass():
    shadowed = FIXED + "\n\ndef mean(values):\n    return sum(values) / len(values)\n"
    assert report(shadowed)[1:] == [
        "Functions changed: add, divide, power, mean",
        "mean(): changed",
        "Verdict: the tests pass, but mean() was changed although it was correct: review the diff.",
    ]


def test_a_change_that_is_no_root_cause_is_named():
    extra = FIXED.replace("return a - b\n\n\ndef multiply", "return -(b - a)\n\n\ndef multiply")
    assert report(extra)[-1] == (
        "Verdict: the tests pass, but the agent also changed subtract(): review the diff."
    )
    assert report(roots=["add"])[-1] == (
        "Verdict: the tests pass, but the agent also changed divide(), power(): review the diff."
    )


# --- the second turn's report ---

T1, T2, T3 = "test_add_adds", "test_divide_is_true", "test_power_multiplies"


def runs(original, fix, **bugs):
    """Results per run: the original, the fix, and each root cause's single-bug version."""
    names = [T1, T2, T3]
    table = {
        "original": dict(zip(names, original, strict=True)),
        "fix": dict(zip(names, fix, strict=True)),
    }
    return table | {root: dict(zip(names, results, strict=True)) for root, results in bugs.items()}


GOOD = runs(
    ["FAIL"] * 3,
    ["PASS"] * 3,
    add=["FAIL", "PASS", "PASS"],
    divide=["PASS", "FAIL", "PASS"],
    power=["PASS", "PASS", "FAIL"],
)


def test_every_root_cause_guarded():
    assert regression_report(GOOD, [], ROOTS) == [
        "Regression tests: 3",
        "Catch the original bugs: 3 of 3",
        "Pass on the fix: 3 of 3",
        f"Root causes caught: add ({T1}), divide ({T2}), power ({T3})",
        "Verdict: every root cause is guarded by a test that fails without its fix and passes"
        " with it.",
    ]


def test_three_tests_on_one_root_cause_leave_two_uncaught():
    three = runs(
        ["FAIL"] * 3,
        ["PASS"] * 3,
        add=["FAIL"] * 3,
        divide=["PASS"] * 3,
        power=["PASS"] * 3,
    )
    assert regression_report(three, [], ROOTS)[1:] == [
        "Catch the original bugs: 3 of 3",
        "Pass on the fix: 3 of 3",
        f"Root causes caught: add ({T1}, {T2}, {T3})",
        "Root causes not caught: divide, power",
        "Verdict: not every root cause is guarded: no test catches divide, power.",
    ]


def test_blind_and_failing_tests_are_listed_by_name():
    two = runs(["PASS", "PASS", "FAIL"], ["FAIL", "FAIL", "PASS"], add=["FAIL"] * 3)
    assert regression_report(two, [], ["add"])[1:3] == [
        f"Catch the original bugs: 1 of 3; not: {T1}, {T2}",
        f"Pass on the fix: 1 of 3; failing: {T1}, {T2}",
    ]


def test_a_blind_test_and_an_uncaught_root_cause():
    blind = runs(
        ["FAIL", "PASS", "FAIL"],
        ["PASS"] * 3,
        add=["FAIL", "PASS", "PASS"],
        divide=["PASS", "PASS", "PASS"],
        power=["PASS", "PASS", "FAIL"],
    )
    assert regression_report(blind, [], ROOTS)[1:] == [
        f"Catch the original bugs: 2 of 3; not: {T2}",
        "Pass on the fix: 3 of 3",
        f"Root causes caught: add ({T1}), power ({T3})",
        "Root causes not caught: divide",
        "Verdict: not every root cause is guarded: no test catches divide.",
    ]


def test_a_test_that_does_not_run_on_a_version_catches_nothing_there_and_says_why():
    hangs = runs(
        [TIMED_OUT, "FAIL", "FAIL"],
        ["PASS"] * 3,
        add=[TIMED_OUT, "PASS", "PASS"],
        divide=["PASS", "FAIL", "PASS"],
        power=["PASS", "PASS", "FAIL"],
    )
    assert regression_report(hangs, [], ROOTS)[1:] == [
        f"Catch the original bugs: 2 of 3; did not run: {T1} (timed out after 2 s)",
        "Pass on the fix: 3 of 3",
        f"Root causes caught: divide ({T2}), power ({T3})",
        f"Root causes not caught: add (did not run: {T1} (timed out after 2 s))",
        "Verdict: not every root cause is guarded: no test catches add.",
    ]


def test_tests_that_fail_or_do_not_run_on_the_fix_prove_nothing():
    broken = runs(
        ["FAIL"] * 3,
        ["FAIL", ENDED, "PASS"],
        add=["FAIL", "PASS", "PASS"],
        divide=["PASS", "FAIL", "PASS"],
        power=["PASS", "PASS", "FAIL"],
    )
    assert regression_report(broken, [], ROOTS)[1:] == [
        "Catch the original bugs: 3 of 3",
        f"Pass on the fix: 1 of 3; failing: {T1}; did not run: {T2} (the test process ended"
        " early, exit status 1)",
        f"Root causes caught: power ({T3})",  # only a test that passes on the fix catches
        "Root causes not caught: add, divide",
        "Verdict: not proven: 2 of 3 regression tests do not pass on the fix.",
    ]


def test_names_defined_twice_are_said_once_each():
    assert regression_report(GOOD, [T1, T3], ROOTS)[:3] == [
        "Regression tests: 3",
        f"{T1} is defined twice; the last definition counts",
        f"{T3} is defined twice; the last definition counts",
    ]


def test_a_file_without_tests_and_a_fix_without_root_causes():
    empty = {"original": {}, "fix": {}, "add": {}}
    assert regression_report(empty, [], ["add"]) == [
        "Regression tests: 0",
        "Catch the original bugs: 0 of 0",
        "Pass on the fix: 0 of 0",
        "Root causes not caught: add",
        "Verdict: the file defines no test functions.",
    ]
    no_roots = {"original": GOOD["original"], "fix": GOOD["fix"]}
    assert regression_report(no_roots, [], [])[-1] == (
        "Verdict: there is no root cause to guard: no single change of the fix is needed by the"
        " tests."
    )


@pytest.mark.parametrize("verdict", ["guarded", "not guarded", "not proven", "no tests"])
def test_the_verdict_claims_a_guard_only_when_it_holds(verdict):
    """The one claim the second report makes: it says "every root cause is guarded" exactly when
    no root cause is uncaught and every test passes on the fix."""
    cases = {
        "guarded": GOOD,
        "not guarded": {**GOOD, "divide": GOOD["fix"]},
        "not proven": {**GOOD, "fix": {**GOOD["fix"], T3: "FAIL"}},
        "no tests": {"original": {}, "fix": {}, "add": {}, "divide": {}, "power": {}},
    }
    claims = regression_report(cases[verdict], [], ROOTS)[-1].startswith(
        "Verdict: every root cause is guarded"
    )
    assert claims == (verdict == "guarded")
