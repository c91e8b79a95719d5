"""Ways a session can go wrong, as variations of the scripted one.

Each scenario bends the same script: where (`at`, a step of turn `turn`) and how a turn ends;
whether its stream breaks part-way (`stream_cut`: kind and how far in, in percent) and the
notebook reconnects; an HTTP error in place of a create call; extra or hostile content; a
careless or hostile agent (`steps` and `steps2` rewrite the two turns' tool calls, which are
still really run, so the files the notebook downloads are what those calls produced); how the
session's outputs are listed; and how cleanup goes. Unless a scenario says otherwise, the first
turn ends with `end_turn` and a second turn follows.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HOSTILE_TEXT = (
    "Odd output <script>alert('xss')</script> <img src=x onerror=alert(1)> \x1b[31mred\x1b[0m"
)
DOCSTRING = '"""A small calculator. Its test suite is red: make it green."""\n'
Steps = list[dict[str, Any]]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    at: int = 2
    turn: int = 1  # the turn that `at`, `ending` and the preview oddities apply to
    ending: str | None = None
    stream_cut: tuple[str, int] | None = None
    http_error: tuple[str, int, str, str] | None = None
    extra_steps: list[dict[str, Any]] = field(default_factory=list)
    extra_at: int = 1
    unknown_event: dict[str, Any] | None = None
    lost_preview: str | None = None  # a previewed message whose model request then fails
    odd_deltas: bool = False  # preview frames the SDK does not know; surrogate pairs split
    steps: Callable[[Steps], Steps] | None = None  # rewrites the first turn's steps
    steps2: Callable[[Steps], Steps] | None = None  # rewrites the second turn's steps
    copies_downloadable: bool = False  # the session's input copies listed as downloadable
    empty_listings: int = 0  # files.list shows no outputs this many times first
    cleanup: str = "normal"  # or "archive_refused", or "restart" (the kernel forgot)
    budget_cents: str | None = None  # the session's budget (COOKBOOK_BUDGET), if not the script's


def _tool(name: str, **given: Any) -> dict[str, Any]:
    return {"name": name, "input": given}


def _edit(old: str, new: str) -> dict[str, Any]:
    return _tool("edit", file_path="/mnt/user/calc.py", old_string=old, new_string=new)


def _edit_step(say: str, old: str, new: str) -> list[dict[str, Any]]:
    """One step: the agent says something, then edits its calc.py."""
    return [{"say": say, "tool": _edit(old, new)}]


def _bash(command: str) -> dict[str, Any]:
    return _tool("bash", command=command)


def rewrite(*changes: tuple[int, int, list[dict[str, Any]]]) -> Callable[[Steps], Steps]:
    """Replace steps[start:stop] by new steps, for each (start, stop, new), applied last first."""

    def apply(steps: Steps) -> Steps:
        steps = copy.deepcopy(steps)
        for start, stop, new in sorted(changes, reverse=True):
            steps[start:stop] = new
        return steps

    return apply


def _replace_in_content(steps: Steps, index: int, old: str, new: str) -> Steps:
    """The steps, with one text replaced in the content step `index` writes."""
    steps = copy.deepcopy(steps)
    content = steps[index]["tool"]["input"]["content"]
    assert old in content, f"{old!r} is not in the content step {index} writes"
    steps[index]["tool"]["input"]["content"] = content.replace(old, new)
    return steps


def _replace_say(steps: Steps, index: int, old: str, new: str) -> Steps:
    steps = copy.deepcopy(steps)
    assert old in steps[index]["say"], f"{old!r} is not in what step {index} says"
    steps[index]["say"] = steps[index]["say"].replace(old, new)
    return steps


# The first turn's base steps: 0 copy and run, 1 read, 2-4 fix add/divide/power, 5 rerun,
# 6 save, 7 summary. The second turn's: 0 write the tests, 1 run them on the fix, 2 on the
# original, 3 save, 4 summary.
SAVE, RERUN, LIE = 6, 5, {"say": "All tests pass now; the fixed module is saved."}
VERIFICATION = [
    Scenario(
        "shadowed_mean",
        "the agent fixes the bugs, then appends a second def mean that shadows the first",
        steps=rewrite(
            (
                SAVE,
                SAVE,
                [
                    {
                        "say": "While I'm here, a simpler mean():",
                        "tool": _bash(
                            "cd /mnt/user && printf '\\n\\ndef mean(values):\\n    return sum(values) / len(values)\\n' >> calc.py && python3 test_calc.py"
                        ),
                    }
                ],
            )
        ),
    ),  # fmt: skip
    Scenario(
        "spoofing",
        "calc.py prints PASS lines for every test and exits while it is imported; the bugs stay",
        steps=rewrite(
            (
                2,
                SAVE,
                _edit_step(
                    "Making the test run report success.",
                    DOCSTRING,
                    DOCSTRING
                    + '\nimport sys\n\nfor _test in ("add", "subtract", "multiply", "divide", "power", "mean"):\n    print(f"PASS test_{_test}")\nsys.exit(0)\n',
                ),
            ),
            (7, 8, [LIE]),
        ),
    ),  # fmt: skip
    Scenario(
        "background_child",
        "the fixed calc.py starts a background process when it is imported",
        steps=rewrite(
            (
                RERUN,
                RERUN,
                _edit_step(
                    "Starting a helper process when calc is imported.",
                    DOCSTRING,
                    DOCSTRING + '\nimport os\n\nos.system("sleep 75 &")\n',
                ),
            )
        ),
    ),  # fmt: skip
    Scenario(
        "infinite_loop",
        "the agent's power() loops forever for exponents above 2, and it saves without rerunning the tests",
        steps=rewrite(
            (
                4,
                RERUN + 1,
                _edit_step(
                    "Rewriting power() as a while loop.",
                    "    for _ in range(exponent - 1):\n",
                    "    while exponent > 2:\n",
                ),
            ),
            (7, 8, [LIE]),
        ),
    ),  # fmt: skip
    Scenario(
        "syntax_error",
        "the agent's calc.py does not parse, and it saves it anyway",
        steps=rewrite(
            (
                2,
                3,
                _edit_step(
                    "Fixing add:",
                    "def add(a, b):\n    return a - b",
                    "def add(a, b):\n    return a +",
                ),
            ),
            (7, 8, [LIE]),
        ),
    ),  # fmt: skip
    Scenario(
        "crlf",
        "a correct fix, saved with CRLF line endings",
        steps=rewrite(
            (
                SAVE,
                SAVE,
                [
                    {
                        "say": "Normalising line endings.",
                        "tool": _bash("cd /mnt/user && sed -i 's/$/\\r/' calc.py"),
                    }
                ],
            )
        ),
    ),  # fmt: skip
    Scenario(
        "extra_outputs",
        "the agent also edits test_calc.py and saves it, with a NOTES.md, beside calc.py",
        steps=rewrite(
            (
                SAVE,
                SAVE + 1,
                [
                    {
                        "say": "Loosening one assertion.",
                        "tool": _tool(
                            "edit",
                            file_path="/mnt/user/test_calc.py",
                            old_string="== 3.5",
                            new_string="> 3",
                        ),
                    },
                    {
                        "say": "Saving everything:",
                        "tool": _bash(
                            "mkdir -p /mnt/session/outputs && cp /mnt/user/calc.py /mnt/user/test_calc.py /mnt/session/outputs/ && printf 'Fixed add, divide and power.\\n' > /mnt/session/outputs/NOTES.md"
                        ),
                    },
                ],
            )
        ),
    ),  # fmt: skip
    Scenario(
        "input_copies",
        "files.list shows the session's input copies first, downloadable, beside the output",
        copies_downloadable=True,
    ),
    Scenario(
        "late_output",
        "the output is listed only after three listings that show none",
        empty_listings=3,
    ),
    Scenario(
        "reads_env",
        "the fixed calc.py reads its environment and fails test_add if an ANTHROPIC_ variable reached it",
        steps=rewrite(
            (
                RERUN,
                RERUN,
                _edit_step(
                    "Adding an environment check.",
                    "def add(a, b):\n    return a + b",
                    'def add(a, b):\n    seen = [k for k in __import__("os").environ if k.startswith(("ANTHROPIC_", "REPLAY_"))]\n    assert not seen, f"calc.py could read {seen}"\n    return a + b',
                ),
            )
        ),
    ),  # fmt: skip
    Scenario(
        "extra_change",
        "the tests pass, but the agent also rewrote subtract(), which had no bug",
        steps=rewrite(
            (
                RERUN,
                RERUN,
                _edit_step(
                    "Tidying subtract():",
                    "    return a - b\n\n\ndef multiply",
                    "    return -(b - a)\n\n\ndef multiply",
                ),
            )
        ),
    ),  # fmt: skip
    Scenario(
        "unchanged",
        "the agent saves calc.py without changing it and says it fixed everything",
        steps=rewrite((2, RERUN + 1, []), (7, 8, [LIE])),
    ),
]


def _compose(*rewrites: Callable[[Steps], Steps]) -> Callable[[Steps], Steps]:
    """The steps rewritten by each of `rewrites`, in order."""

    def apply(steps: Steps) -> Steps:
        for change in rewrites:
            steps = change(steps)
        return steps

    return apply


def _tests_file(tests: str, keep_main: bool = True) -> Callable[[Steps], Steps]:
    """The second turn's step 0 writes `tests` in place of the base file's docstring, imports
    and tests; with `keep_main`, the base file's own `main()` runner follows."""

    def apply(steps: Steps) -> Steps:
        steps = copy.deepcopy(steps)
        content = steps[0]["tool"]["input"]["content"]
        runner = content[content.index("\n\n\ndef main():") :] if keep_main else ""
        steps[0]["tool"]["input"]["content"] = tests + runner
        return steps

    return apply


def _say(index: int, say: str) -> Callable[[Steps], Steps]:
    """Step `index` says `say` instead."""

    def apply(steps: Steps) -> Steps:
        steps = copy.deepcopy(steps)
        steps[index]["say"] = say
        return steps

    return apply


ONE_CAUSE_TESTS = '''"""Regression tests for the add() fix in calc.py. Run: python3 test_regressions.py"""

import sys
import traceback

from calc import add


def test_add_small_numbers():
    # add() returned a - b
    assert add(2, 3) == 5, f"got {add(2, 3)!r}"


def test_add_negative_numbers():
    assert add(-2, -3) == -5, f"got {add(-2, -3)!r}"


def test_add_to_zero():
    assert add(0, 4) == 4, f"got {add(0, 4)!r}"'''
DUPLICATE_TESTS = '''"""Regression tests for the three root causes fixed in calc.py. Run: python3 test_regressions.py"""

import sys
import traceback

from calc import add, divide, power


def test_add():
    # adding zero changes nothing
    assert add(5, 0) == 5, f"got {add(5, 0)!r}"


def test_divide():
    # divide() used floor division
    assert divide(7, 2) == 3.5, f"got {divide(7, 2)!r}"


def test_power():
    # power() multiplied one time too few
    assert power(3, 2) == 9, f"got {power(3, 2)!r}"


def test_add():
    # add() returned a - b
    assert add(2, 3) == 5, f"got {add(2, 3)!r}"'''
TESTCASE_TESTS = '''"""Regression tests for the three root causes fixed in calc.py. Run: python3 test_regressions.py"""

import unittest

from calc import add, divide, power


class TestRegressions(unittest.TestCase):
    def test_add(self):
        # add() returned a - b
        self.assertEqual(add(2, 3), 5)

    def test_divide(self):
        # divide() used floor division
        self.assertEqual(divide(7, 2), 3.5)

    def test_power(self):
        # power() multiplied one time too few
        self.assertEqual(power(3, 2), 9)


if __name__ == "__main__":
    unittest.main(verbosity=2)
'''
HANGING_DIVIDE = '''def test_divide_is_true_division():
    # divide() used floor division: the number whose half is 3.5 is 7
    x = 0
    while divide(x, 2) != 3.5:
        x += 1
    assert x == 7, f"got {x!r}"'''
SAVE_TESTS = {  # the second turn's save, without running the tests first
    "say": "Saving the file:",
    "tool": _bash("mkdir -p /mnt/session/outputs && cp /mnt/user/test_regressions.py /mnt/session/outputs/ && ls /mnt/session/outputs"),
}  # fmt: skip
SECOND_TURN = [
    Scenario(
        "regression_blind",
        "one regression test passes on the original code too, so it guards nothing",
        steps2=lambda steps: _replace_in_content(
            steps, 0, "divide(7, 2) == 3.5", "divide(8, 2) == 4"
        ),
    ),
    Scenario(
        "regression_unsaved",
        "the second turn ends without saving test_regressions.py",
        steps2=rewrite((3, 4, [])),
    ),
    Scenario(
        "regression_one_cause",
        "all three regression tests guard add(); none guards divide() or power()",
        steps2=_compose(
            _tests_file(ONE_CAUSE_TESTS),
            _say(
                0,
                "`mean` is built on `add`, so I'll pin `add` down from three sides: positive numbers, negative numbers and zero.",
            ),
            _say(
                4,
                "I added /mnt/session/outputs/test_regressions.py with three regression tests for `add`, whose bug also broke `mean`:\n- `test_add_small_numbers`: `add(2, 3)` is 5.\n- `test_add_negative_numbers`: `add(-2, -3)` is -5.\n- `test_add_to_zero`: `add(0, 4)` is 4.\n\nAll three fail on the original calc.py and pass on the fixed one.",
            ),
        ),
    ),
    Scenario(
        "regression_syntax",
        "the agent's test_regressions.py does not parse (a def without its colon); it saves it without running it",
        steps2=_compose(
            lambda steps: _replace_in_content(
                steps,
                0,
                "def test_power_multiplies_exponent_times():",
                "def test_power_multiplies_exponent_times()",
            ),
            rewrite((1, 4, [SAVE_TESTS])),
        ),
    ),
    Scenario(
        "regression_duplicate",
        "two regression tests are named test_add: the second shadows the first, which checks nothing the bug breaks",
        steps2=_compose(
            _tests_file(DUPLICATE_TESTS),
            _say(
                4,
                "I added /mnt/session/outputs/test_regressions.py with regression tests for each root cause:\n- `test_add` guards the `add` fix: adding zero, and `add(2, 3)`.\n- `test_divide` guards the `divide` fix (floor division became true division).\n- `test_power` guards the `power` fix (the loop now runs `exponent` times).\n\nAll of them fail on the original calc.py and pass on the fixed one.",
            ),
        ),
    ),
    Scenario(
        "regression_testcase",
        "the regression tests are the three methods of a unittest.TestCase class",
        steps2=_compose(
            _tests_file(TESTCASE_TESTS, keep_main=False),
            _say(
                0,
                "I'll add one regression test per root cause, as a `unittest.TestCase`: it runs without pytest too, and reports each test by name.",
            ),
            _say(
                4,
                "I added /mnt/session/outputs/test_regressions.py, a `unittest.TestCase` with one regression test per root cause:\n- `TestRegressions.test_add` guards the `add` fix (`a - b` became `a + b`).\n- `TestRegressions.test_divide` guards the `divide` fix (floor division became true division).\n- `TestRegressions.test_power` guards the `power` fix (the loop now runs `exponent` times).\n\nAll three fail on the original calc.py and pass on the fixed one.",
            ),
        ),
    ),
    Scenario(
        "regression_hangs",
        "a regression test loops forever on the original calc.py (floor division never reaches 3.5); the other two are good",
        steps2=_compose(
            lambda steps: _replace_in_content(
                steps,
                0,
                'def test_divide_is_true_division():\n    # divide() used floor division\n    assert divide(7, 2) == 3.5, f"got {divide(7, 2)!r}"',
                HANGING_DIVIDE,
            ),
            rewrite(
                (
                    2,
                    4,
                    [
                        {
                            "say": "And against the original calc.py, where each one must fail; with a time limit, in case a loop never ends there:",
                            "tool": _bash(
                                'mkdir -p /mnt/user/original && cp /mnt/session/uploads/calc.py /mnt/user/test_regressions.py /mnt/user/original/ && cd /mnt/user/original && timeout 1 python3 -u test_regressions.py; echo "exit status $?"'
                            ),
                        },
                        {
                            "say": "On the original, `test_add_adds_instead_of_subtracting` fails, and `test_divide_is_true_division` never finishes: floor division never gives 3.5, so its loop never ends. A test that never passes there still catches the bug. Saving the file:",
                            "tool": _bash(
                                "cp /mnt/user/test_regressions.py /mnt/session/outputs/ && ls /mnt/session/outputs"
                            ),
                        },
                    ],
                )
            ),
            lambda steps: _replace_say(
                steps,
                4,
                "All three fail on the original calc.py and pass on the fixed one.",
                "All three pass on the fixed calc.py; on the original, `test_divide_is_true_division` never finishes, which is as good as a failure.",
            ),
        ),
    ),
    Scenario(
        "turn2_budget",
        "the second turn stops early with budget_reached",
        turn=2,
        at=1,
        ending="budget_reached",
        budget_cents="4",
    ),
]
SCENARIOS = {
    s.name: s
    for s in [
        Scenario("error_retrying", "a session.error that the platform retries; the turn recovers", ending="error_retrying"),
        Scenario("retries_exhausted", "session.error until retries are exhausted; idle with stop_reason retries_exhausted", ending="retries_exhausted"),
        Scenario("requires_action", "a tool call waits for confirmation: idle with requires_action", ending="requires_action"),
        Scenario("refusal", "the model refuses: idle with stop_reason refusal", ending="refusal"),
        Scenario("budget_reached", "the session's budget runs out: idle with budget_reached", ending="budget_reached", budget_cents="2"),
        Scenario("terminated", "the session is terminated mid-turn", ending="terminated"),
        Scenario("dropped", "the connection drops mid-turn; the notebook reconnects and follows the live turn", stream_cut=("drop", 40)),
        Scenario("error_frame", "an `event: error` frame (overloaded_error) mid-turn; the notebook reconnects", stream_cut=("error_frame", 40)),
        Scenario("stall", "the stream goes silent for ten minutes mid-turn; the notebook reconnects", stream_cut=("stall", 40)),
        Scenario("endless", "heartbeats keep the stream open, but the turn never ends", at=3, ending="open"),
        Scenario(
            "previews",
            "a preview whose model request fails, unknown preview frames, text split inside surrogate pairs",
            lost_preview="I will now rewrite the whole module from scratch",
            odd_deltas=True,
            steps=lambda steps: _replace_say(steps, 2, "First `add`, which must add:", "First `add` 🎉, which must add:"),
        ),
        Scenario("archive_refused", "archiving the session is refused while it still runs; interrupt, then archive", cleanup="archive_refused"),
        Scenario("restart", "the kernel restarts before cleanup, which finds what the cookbook created by its tag", cleanup="restart"),
        Scenario("http_401", "401 on the first create call", http_error=("agents", 401, "authentication_error", "invalid x-api-key")),
        Scenario(
            "http_404_environment",
            "404 on the environment create",
            http_error=("environments", 404, "not_found_error", "Not found: environments are not enabled for this organization."),
        ),
        Scenario(
            "hostile",
            "hostile and huge content: markup, escapes, 1 MB of output, a 10,000-character line, an unknown event",
            extra_steps=[
                {
                    "say": HOSTILE_TEXT,
                    "tool": _bash(
                        "python3 -c \"print('<script>alert(1)</script>' + 'A' * 10000)\"; "
                        "printf '\\033[1;31mFAILED\\033[0m <img src=x onerror=alert(2)>\\n'"
                    ),
                },
                {"tool": _bash("python3 -c \"print('0123456789abcdef <b>bold</b>\\n' * 36000, end='')\"")},
            ],
            unknown_event={"type": "agent.hologram_projected", "payload": "<script>alert('unknown')</script>"},
        ),
        *VERIFICATION,
        *SECOND_TURN,
    ]
}  # fmt: skip
